"""Request IDs and HTTP server metrics, in one pure ASGI middleware.

Each request gets an ID: the client's `X-Request-ID` when it is a sane value, else a new one. It is
set for the request's log lines (see logging_config.py) and returned in the response's
`X-Request-ID`. `http_server_request_duration_seconds` counts the request by method, route
template (never the raw path, so an ID in a URL cannot add series) and status.
"""

from __future__ import annotations

import os
import re
import time

from prometheus_client import CollectorRegistry, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logging_config import REQUEST, RequestContext

HEADER = b"x-request-id"
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# OpenTelemetry's advice for http.server.request.duration.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Any other method is counted as "_OTHER", so a client cannot add series with made-up methods.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
INTERNAL_ERROR = b"Internal Server Error"


class RequestObservability:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.duration = Histogram(
            "http_server_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["http_request_method", "http_route", "http_response_status_code"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # Label lookups are the costly part of an observation: each series is looked up once.
        self._series: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # 128 random bits in hex, like uuid4().hex at a quarter of its cost.
        request_id = incoming_request_id(scope) or os.urandom(16).hex()
        header = (HEADER, request_id.encode())
        status: int | None = None  # until the response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST.set(RequestContext(request_id, scope))
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status is None:  # nothing sent: answer 500 with the ID, then let it propagate
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": INTERNAL_ERROR})
            raise
        finally:
            REQUEST.reset(token)
            self._observe(scope, status or 500, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "_OTHER"
        route = getattr(scope.get("route"), "path", "")
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self.duration.labels(method, route, str(status))
        series.observe(seconds)


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER:
            return value.decode() if SANE_REQUEST_ID.fullmatch(value) else None
    return None
