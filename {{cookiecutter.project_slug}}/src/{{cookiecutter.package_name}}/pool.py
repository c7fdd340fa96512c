"""Every checkout goes through here: a fair wait, a bounded wait, metrics and leak detection."""

from __future__ import annotations

import asyncio
import logging
import time
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

    def connection(self, purpose: str, max_wait: float | None = None) -> Checkout:
        """Lend a connection, waiting at most `max_wait` (default DB_POOL_TIMEOUT) in arrival order.

        `async with database.connection("GET /items") as connection:` raises PoolExhaustedError
        when none is free in time. The connection goes back to the pool when the block exits,
        even when the task is being cancelled. `purpose` names the borrower in warnings.
        """
        wait = self.settings.db_pool_timeout if max_wait is None else max_wait
        return Checkout(self, purpose, wait)

    def exhausted(self, purpose: str, waited: float) -> PoolExhaustedError:
        self.metrics.checkout_timeouts.inc()
        logger.warning(
            "no database connection for %s within %g s; pool: %s", purpose, waited, self.status()
        )
        return PoolExhaustedError(waited)

    async def dispose(self) -> None:
        await self.engine.dispose()


class Checkout:
    """One loan of a pooled connection, from `Database.connection`.

    A class rather than a generator-based context manager: this runs twice per request.
    """

    __slots__ = ("_alarm", "_connection", "_database", "_max_wait", "_purpose")
    _connection: AsyncConnection

    def __init__(self, database: Database, purpose: str, max_wait: float) -> None:
        self._database = database
        self._purpose = purpose
        self._max_wait = max_wait
        self._alarm: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> AsyncConnection:
        database = self._database
        started = time.perf_counter()
        try:
            await database.gate.enter(self._max_wait)
        except PoolExhaustedError:
            raise database.exhausted(self._purpose, self._max_wait) from None
        try:
            self._connection = await database.engine.connect()
        except PoolTimeoutError as error:
            database.gate.leave()
            raise database.exhausted(self._purpose, self._max_wait) from error
        except (DBAPIError, OSError) as error:
            database.gate.leave()
            # The server's message names the user at most, never the password.
            logger.warning(
                "cannot connect to the database for %s: %s", self._purpose, error_name(error)
            )
            raise DatabaseUnavailableError(error_name(error)) from error
        except BaseException:
            database.gate.leave()
            raise
        database.metrics.checkout_wait.observe(time.perf_counter() - started)
        threshold = database.settings.db_leak_threshold
        if threshold:
            self._alarm = asyncio.get_running_loop().call_later(
                threshold, _warn_held_too_long, self._purpose, threshold
            )
        return self._connection

    async def __aexit__(self, *_: object) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        try:
            # Closing rolls back what is still open; that must finish even in a cancelled task.
            with anyio.CancelScope(shield=True):
                await self._connection.close()
        finally:
            self._database.gate.leave()


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
