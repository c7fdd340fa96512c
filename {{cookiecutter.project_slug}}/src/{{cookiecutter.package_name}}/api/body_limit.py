"""MAX_BODY_BYTES: a larger request body gets 413 before it is read, and memory stays flat.

Starlette's `RequestBodyLimitMiddleware` answers 413 as soon as `Content-Length` says so, and stops
reading a chunked body the moment it passes the limit. It is applied once, here, and only to
requests that carry a body: FastAPI's own `max_body_size` would check again at every router and
route of every request (about 10 µs of a `GET`).
"""

from __future__ import annotations

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# An HTTP/1.1 request has a body exactly when it sends one of these headers.
BODY_HEADERS = (b"content-length", b"transfer-encoding")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.limited = RequestBodyLimitMiddleware(app, max_body_size=max_body_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name in BODY_HEADERS for name, _ in scope["headers"]):
            await self.limited(scope, receive, send)
        else:
            await self.app(scope, receive, send)
