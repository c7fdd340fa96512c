"""Every checkout goes through here: a fair wait, a bounded wait, metrics and leak detection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Self

import anyio
from sqlalchemy import CursorResult, Executable
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import greenlet_spawn

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
        self._loans: dict[Place, float] = {}
        self._leak_watch: asyncio.Task[None] | None = None

    def status(self) -> PoolStatus:
        return replace(pool_status(self.engine, self._counter), waiting=self.gate.waiting)

    def connection(self, purpose: str, max_wait: float | None = None) -> Checkout:
        """Lend a connection, waiting at most `max_wait` (default DB_POOL_TIMEOUT) in arrival order.

        `async with database.connection("GET /items") as connection:` raises PoolExhaustedError
        when none is free in time. The connection goes back to the pool when the block exits,
        even when the task is being cancelled. `purpose` names the borrower in warnings.
        """
        return Checkout(self.place(purpose, max_wait))

    def place(self, purpose: str, max_wait: float | None = None) -> Place:
        """`async with database.place("GET /items") as place:` waits like `connection` for the
        right to one connection, without taking one: `Reader(place)` takes them per statement."""
        wait = self.settings.db_pool_timeout if max_wait is None else max_wait
        return Place(self, purpose, wait)

    def exhausted(self, purpose: str, waited: float) -> PoolExhaustedError:
        self.metrics.checkout_timeouts.inc()
        logger.warning(
            "no database connection for %s within %g s; pool: %s", purpose, waited, self.status()
        )
        return PoolExhaustedError(waited)

    def lent(self, place: Place, since: float) -> None:
        threshold = self.settings.db_leak_threshold
        if not threshold:
            return
        self._loans[place] = since
        if self._leak_watch is None:
            self._leak_watch = asyncio.get_running_loop().create_task(
                self._watch_for_leaks(threshold)
            )

    def returned(self, place: Place) -> None:
        self._loans.pop(place, None)

    async def _watch_for_leaks(self, threshold: float) -> None:
        """Warn, once per loan, about a connection held longer than `threshold`, while it is
        still held. One task watches every loan; a timer per checkout would cost each request."""
        while True:
            await asyncio.sleep(min(threshold / 4, 1.0))
            overdue = time.perf_counter() - threshold
            for place, since in list(self._loans.items()):
                if since < overdue:
                    self._loans[place] = math.inf  # reported
                    logger.warning(
                        "possible connection leak: %s has held a database connection for "
                        "more than %g s",
                        place.purpose,
                        threshold,
                    )

    async def dispose(self) -> None:
        if self._leak_watch is not None:
            self._leak_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leak_watch
        await self.engine.dispose()


class Place:
    """A place at the gate: the right to one of the pool's connections, held for one request."""

    __slots__ = ("_max_wait", "database", "purpose")

    def __init__(self, database: Database, purpose: str, max_wait: float) -> None:
        self.database = database
        self.purpose = purpose
        self._max_wait = max_wait

    async def __aenter__(self) -> Self:
        database = self.database
        started = time.perf_counter()
        try:
            await database.gate.enter(self._max_wait)
        except PoolExhaustedError:
            raise database.exhausted(self.purpose, self._max_wait) from None
        admitted = time.perf_counter()
        database.metrics.checkout_wait.observe(admitted - started)
        database.lent(self, admitted)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.database.returned(self)
        self.database.gate.leave()

    def unavailable(self, error: Exception) -> Exception:
        """What a failure to check out a connection becomes: a 503, never a 500."""
        if isinstance(error, PoolTimeoutError):
            return self.database.exhausted(self.purpose, self._max_wait)
        # The server's message names the user at most, never the password.
        logger.warning("cannot connect to the database for %s: %s", self.purpose, error_name(error))
        return DatabaseUnavailableError(error_name(error))


class Checkout:
    """One loan of a pooled connection for a whole request, from `Database.connection`.

    A class rather than a generator-based context manager, which would cost every request more.
    """

    __slots__ = ("_connection", "_place")
    _connection: AsyncConnection

    def __init__(self, place: Place) -> None:
        self._place = place

    async def __aenter__(self) -> AsyncConnection:
        place = await self._place.__aenter__()
        try:
            self._connection = await place.database.engine.connect()
        except (PoolTimeoutError, DBAPIError, OSError) as error:
            await place.__aexit__()
            raise place.unavailable(error) from error
        except BaseException:
            await place.__aexit__()
            raise
        return self._connection

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
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
            await self._place.__aexit__()


class Reader:
    """Runs a request's reads, each on a pooled connection of its own (in autocommit, except
    behind PgBouncer), within the request's place at the gate: a read never queues for the pool.

    Check-out, statement and check-in run in one greenlet: `AsyncConnection` would start one
    for each, and on CPython every new greenlet maps and unmaps a fresh frame stack (~20 µs).
    A read that fails because the server dropped its connection (a restart, a failover, a
    killed session) runs once more on a new one: a read can safely run twice, and this is
    what spares every checkout a ping (DB_POOL_PRE_PING).
    """

    __slots__ = ("_engine", "_place")

    def __init__(self, place: Place) -> None:
        self._place = place
        self._engine = place.database.engine.sync_engine

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> CursorResult[Any]:
        """The result comes back whole (the driver fetches every row), its connection pooled."""
        return await greenlet_spawn(self._read, statement, parameters)

    def _read(
        self, statement: Executable, parameters: Mapping[str, Any] | None
    ) -> CursorResult[Any]:
        try:
            return self._read_once(statement, parameters)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        # The lost connection has been discarded; the next checkout opens a new one.
        logger.info("database connection lost during a read; reading again on a new one")
        return self._read_once(statement, parameters)

    def _read_once(
        self, statement: Executable, parameters: Mapping[str, Any] | None
    ) -> CursorResult[Any]:
        try:
            connection = self._engine.connect()
        except (PoolTimeoutError, DBAPIError, OSError) as error:
            raise self._place.unavailable(error) from error
        with connection:
            return connection.execute(statement, parameters)


def error_name(error: BaseException) -> str:
    """The driver's exception class, e.g. `InvalidPasswordError`, without its message."""
    original = getattr(error, "orig", None) or error
    return type(original).__name__
