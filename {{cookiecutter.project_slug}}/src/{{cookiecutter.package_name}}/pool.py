"""Every checkout goes through here: a fair wait, a bounded wait, metrics and leak detection."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import anyio
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from .database import CheckoutCounter, PoolStatus, create_engine, pool_capacity, pool_status
from .gate import CheckoutGate, PoolExhaustedError
from .metrics import PoolMetrics
from .settings import Settings

logger = logging.getLogger(__name__)


class DatabaseUnavailableError(Exception):
    """The pool could not open a connection: the server is down, unreachable or refuses us."""


class Database:
    """The engine of one process, created in the lifespan and disposed with it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(settings)
        self._counter = CheckoutCounter.for_engine(self.engine)
        self.gate = CheckoutGate(pool_capacity(self.engine, settings))
        self.metrics = PoolMetrics(self.status)
        self.metrics.watch(self.engine)

    def status(self) -> PoolStatus:
        return replace(pool_status(self.engine, self._counter), waiting=self.gate.waiting)

    @asynccontextmanager
    async def connection(
        self, purpose: str, max_wait: float | None = None
    ) -> AsyncIterator[AsyncConnection]:
        """Lend a connection, waiting at most `max_wait` (default DB_POOL_TIMEOUT) in arrival order.

        Raises PoolExhaustedError when none is free in time. The connection goes back to the
        pool when the block exits, even when the task is being cancelled.
        """
        wait = self.settings.db_pool_timeout if max_wait is None else max_wait
        started = time.perf_counter()
        async with AsyncExitStack() as held:
            try:
                await held.enter_async_context(self.gate.admit(wait))
                connection = await self.engine.connect()
            except (PoolExhaustedError, PoolTimeoutError) as error:
                self.metrics.checkout_timeouts.inc()
                logger.warning(
                    "no database connection for %s within %g s; pool: %s",
                    purpose,
                    wait,
                    self.status(),
                )
                raise PoolExhaustedError(wait) from error
            except (DBAPIError, OSError) as error:
                # The server's message names the user at most, never the password.
                logger.warning(
                    "cannot connect to the database for %s: %s", purpose, error_name(error)
                )
                raise DatabaseUnavailableError(error_name(error)) from error
            self.metrics.checkout_wait.observe(time.perf_counter() - started)
            held.push_async_callback(_close_shielded, connection)
            threshold = self.settings.db_leak_threshold
            if threshold:
                loop = asyncio.get_running_loop()
                alarm = loop.call_later(threshold, _warn_held_too_long, purpose, threshold)
                held.callback(alarm.cancel)
            yield connection

    async def dispose(self) -> None:
        await self.engine.dispose()


async def _close_shielded(connection: AsyncConnection) -> None:
    with anyio.CancelScope(shield=True):
        await connection.close()


def _warn_held_too_long(purpose: str, threshold: float) -> None:
    logger.warning(
        "possible connection leak: %s has held a database connection for more than %g s",
        purpose,
        threshold,
    )


def error_name(error: BaseException) -> str:
    """The driver's exception class, e.g. `InvalidPasswordError`, without its message."""
    original = getattr(error, "orig", None) or error
    return type(original).__name__
