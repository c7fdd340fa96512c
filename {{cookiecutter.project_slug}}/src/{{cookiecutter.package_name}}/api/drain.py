"""Graceful drain: on SIGTERM, finish what is in flight before the pools close.

When uvicorn serves the application, the first SIGTERM starts the drain instead of the shutdown:
readiness answers 503 at once (so the load balancer stops sending), new requests are refused with
503 (the health endpoints still answer), and the requests in flight finish, for up to
SHUTDOWN_TIMEOUT seconds. Then uvicorn's own shutdown runs: it stops listening, and the lifespan
disposes the pools. A second SIGTERM, or SIGINT, shuts down at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType, MethodType

import uvicorn
from starlette.types import Receive, Scope, Send

from .errors import service_unavailable

logger = logging.getLogger(__name__)


class Drain:
    """The requests in flight (health checks and `/metrics` aside), counted by the middleware
    that admits them (shedding.py), which refuses new ones while draining."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()

    def started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def ended(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = service_unavailable("the service is shutting down; retry elsewhere")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def finished(self, within: float) -> bool:
        """Wait until no request is in flight, at most `within` seconds; True if none is."""
        if not self.in_flight:
            return True
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def start_on_sigterm(self, timeout: float) -> None:
        """Drain on SIGTERM when uvicorn serves this process; elsewhere (tests), do nothing."""
        server_exit = signal.getsignal(signal.SIGTERM)
        if not isinstance(server_exit, MethodType):
            return
        if not isinstance(server_exit.__self__, uvicorn.Server):
            return
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()

        async def drain_then_exit() -> None:
            if not await self.finished(timeout):
                logger.warning(
                    "drain: %d request(s) still in flight after %g s", self.in_flight, timeout
                )
            server_exit(signal.SIGTERM, None)

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.draining:
                server_exit(sig, frame)
                return
            self.draining = True
            logger.info(
                "SIGTERM: draining %d request(s) in flight, for up to %g s", self.in_flight, timeout
            )
            loop.call_soon_threadsafe(lambda: tasks.add(loop.create_task(drain_then_exit())))

        signal.signal(signal.SIGTERM, on_sigterm)
