"""Every checkout goes through here: a fair wait, a bounded wait, metrics and leak detection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
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
        # When each lent connection was lent, for the leak watch (DB_LEAK_THRESHOLD).
        self._loans: dict[Checkout, float] = {}
        self._leak_watch: asyncio.Task[None] | None = None

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

    def lent(self, checkout: Checkout, since: float) -> None:
        threshold = self.settings.db_leak_threshold
        if not threshold:
            return
        self._loans[checkout] = since
        if self._leak_watch is None:
            self._leak_watch = asyncio.get_running_loop().create_task(
                self._watch_for_leaks(threshold)
            )

    def returned(self, checkout: Checkout) -> None:
        self._loans.pop(checkout, None)

    async def _watch_for_leaks(self, threshold: float) -> None:
        """Warn, once per loan, about a connection held longer than `threshold`, while it is
        still held. One task watches every loan; a timer per checkout would cost each request."""
        while True:
            await asyncio.sleep(min(threshold / 4, 1.0))
            overdue = time.perf_counter() - threshold
            for checkout, since in list(self._loans.items()):
                if since < overdue:
                    self._loans[checkout] = math.inf  # reported
                    logger.warning(
                        "possible connection leak: %s has held a database connection for "
                        "more than %g s",
                        checkout.purpose,
                        threshold,
                    )

    async def dispose(self) -> None:
        if self._leak_watch is not None:
            self._leak_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leak_watch
        await self.engine.dispose()


class Checkout:
    """One loan of a pooled connection, from `Database.connection`.

    A class rather than a generator-based context manager, which would cost every request more.
    """

    __slots__ = ("_connection", "_database", "_max_wait", "purpose")
    _connection: AsyncConnection

    def __init__(self, database: Database, purpose: str, max_wait: float) -> None:
        self._database = database
        self.purpose = purpose
        self._max_wait = max_wait

    async def __aenter__(self) -> AsyncConnection:
        database = self._database
        started = time.perf_counter()
        try:
            await database.gate.enter(self._max_wait)
        except PoolExhaustedError:
            raise database.exhausted(self.purpose, self._max_wait) from None
        try:
            self._connection = await database.engine.connect()
        except PoolTimeoutError as error:
            database.gate.leave()
            raise database.exhausted(self.purpose, self._max_wait) from error
        except (DBAPIError, OSError) as error:
            database.gate.leave()
            # The server's message names the user at most, never the password.
            logger.warning(
                "cannot connect to the database for %s: %s", self.purpose, error_name(error)
            )
            raise DatabaseUnavailableError(error_name(error)) from error
        except BaseException:
            database.gate.leave()
            raise
        lent = time.perf_counter()
        database.metrics.checkout_wait.observe(lent - started)
        database.lent(self, lent)
        return self._connection

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._database.returned(self)
        try:
            if kind is None:
                # After a commit, or in autocommit, there is nothing to roll back and closing
                # does not wait. (A cancellation that lands here anyway makes SQLAlchemy discard
                # the connection rather than pool it.) The shield costs ~20 µs a request.
                await self._connection.close()
            else:
                # Closing rolls back what is still open; that must finish even while this task
                # is being cancelled.
                with anyio.CancelScope(shield=True):
                    await self._connection.close()
        finally:
            self._database.gate.leave()


def error_name(error: BaseException) -> str:
    """The driver's exception class, e.g. `InvalidPasswordError`, without its message."""
    original = getattr(error, "orig", None) or error
    return type(original).__name__
