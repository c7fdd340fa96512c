"""Logging of every process in one format, text or JSON lines (LOG_FORMAT), each line naming the
request it belongs to.

uvicorn applies `log_config()` in the parent and again in each worker it spawns, so the workers'
lines look like the parent's. The request ID and route come from `REQUEST`, a context variable
that api/observability.py sets for each request; `RequestFilter` copies them onto every record.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, NamedTuple

from starlette.types import Scope

from .settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
NO_REQUEST = "-"


class RequestContext(NamedTuple):
    id: str
    scope: Scope

    @property
    def route(self) -> str:
        """The route template (`/items/{item_id}`), known once the router matched the path."""
        route = self.scope.get("route")
        return getattr(route, "path", NO_REQUEST)


REQUEST: ContextVar[RequestContext | None] = ContextVar("request", default=None)


class RequestFilter(logging.Filter):
    """Adds `request_id` and `http_route` to every record ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = REQUEST.get()
        record.request_id = request.id if request is not None else NO_REQUEST
        record.http_route = request.route if request is not None else NO_REQUEST
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, http_route, pid."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", NO_REQUEST),
            "http_route": getattr(record, "http_route", NO_REQUEST),
            "pid": record.process,  # which worker, with WEB_CONCURRENCY > 1
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn's `log_config`: one handler for every logger."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if settings.log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request"],
            }
        },
        "root": {"handlers": ["default"], "level": settings.log_level.upper()},
        # uvicorn's own loggers write through the same handler instead of their own.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
