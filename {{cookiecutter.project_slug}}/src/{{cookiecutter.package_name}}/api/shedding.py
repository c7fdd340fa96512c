"""Load shedding: when more requests arrive than the worker can serve, refuse the excess at once.

A worker that takes in every request serves all of them late: the queue forms in front of the
pool and, on a busy CPU, in the event loop and the socket buffers, where no timeout sees it. This
middleware takes in at most `REQUESTS_PER_CONNECTION` requests per pool connection (those holding
a connection and those queued for one, in first-come, first-served order) and answers the rest
503 with `Retry-After` straight away.

Refusing must cost far less than serving, or at a few times the capacity the refusals alone fill
the CPU: the answer is encoded once, and a refusal logs nothing (a counter counts it, and a
warning says how many were refused at most once a minute). Health checks and `/metrics` are
never refused.
"""

from __future__ import annotations

import json
import logging
import math
import time

from fastapi import FastAPI, status
from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..settings import Settings
from .drain import Drain
from .errors import RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)
NEVER_SHED = frozenset({"/health/live", "/health/ready", "/metrics"})
WARN_EVERY_SECONDS = 60.0

_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": status.HTTP_503_SERVICE_UNAVAILABLE,
        "detail": "the service is overloaded; retry shortly",
    }
).encode()
_START: Message = {
    "type": "http.response.start",
    "status": status.HTTP_503_SERVICE_UNAVAILABLE,
    "headers": [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(_BODY)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    ],
}
_END: Message = {"type": "http.response.body", "body": _BODY}


class LoadShedding:
    """Counts the requests in flight and refuses any above `limit`."""

    def __init__(self, app: ASGIApp, limit: int, registry: CollectorRegistry, drain: Drain) -> None:
        self.app = app
        self.limit = limit
        # The drain counts the requests in flight: SIGTERM waits for them (see drain.py).
        self.drain = drain
        self.refused = 0
        self._counter = Counter(
            "http_server_requests_shed",
            "Requests answered 503 at once because REQUESTS_PER_CONNECTION were in flight.",
            registry=registry,
        )
        self._warned_at = -math.inf
        self._refused_when_warned = 0

    @property
    def in_flight(self) -> int:
        return self.drain.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drain = self.drain
        if scope["type"] != "http" or scope["path"] in NEVER_SHED:
            await self.app(scope, receive, send)
        elif drain.draining:
            await drain.refuse(scope, receive, send)
        elif drain.in_flight >= self.limit:
            self._count_refusal()
            # Responses must not share header lists: a middleware outside may append to them.
            await send({**_START, "headers": list(_START["headers"])})
            await send(_END)
        else:
            drain.started()
            try:
                await self.app(scope, receive, send)
            finally:
                drain.ended()

    def _count_refusal(self) -> None:
        self.refused += 1
        self._counter.inc()
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            logger.warning(
                "overloaded: %d requests in flight; answered %d more with 503 since the last "
                "warning (REQUESTS_PER_CONNECTION)",
                self.in_flight,
                self.refused - self._refused_when_warned,
            )
            self._warned_at = now
            self._refused_when_warned = self.refused


def install_load_shedding(
    app: FastAPI, settings: Settings, registry: CollectorRegistry, drain: Drain
) -> None:
    """Add it outside every middleware but the one that counts each answer (RequestObservability):
    a refusal then skips their work and is still counted."""
    capacity = settings.db_pool_size + settings.db_max_overflow
    limit = settings.requests_per_connection * capacity
    app.add_middleware(LoadShedding, limit=limit, registry=registry, drain=drain)
