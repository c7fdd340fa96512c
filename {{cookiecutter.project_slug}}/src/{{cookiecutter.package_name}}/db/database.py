"""The database of one process: its engine, the pool's queue, metrics and the leak watch."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from dataclasses import replace
from typing import Self

from prometheus_client import CollectorRegistry
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from ..settings import Settings
from .engine import CheckoutCounter, PoolStatus, create_engine, pool_capacity, pool_status
from .errors import DatabaseUnavailableError, PoolExhaustedError
from .metrics import PoolMetrics
from .queue import CheckoutQueue

logger = logging.getLogger(__name__)


class Database:
    """The engine of one process, created in the lifespan and disposed with it."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool_name: str = "primary",
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`pool_name` labels the pool's metrics; `registry` is the application's."""
        self.settings = settings
        self.engine = create_engine(settings)
        self._counter = CheckoutCounter.for_engine(self.engine)
        self.queue = CheckoutQueue(pool_capacity(self.engine, settings))
        self.metrics = PoolMetrics(
            self.status, self.queue.capacity, pool_name=pool_name, registry=registry
        )
        self.metrics.watch(self.engine)
        # When each lent connection was lent, and the borrower's context (its request ID) for
        # the leak watch's warning (DB_LEAK_THRESHOLD).
        self._loans: dict[Place, tuple[float, contextvars.Context]] = {}
        self._leak_watch: asyncio.Task[None] | None = None

    def status(self) -> PoolStatus:
        return replace(pool_status(self.engine, self._counter), waiting=self.queue.waiting)

    def place(self, purpose: str, max_wait: float | None = None) -> Place:
        """A place in the queue, waited for at most `max_wait` (default DB_POOL_TIMEOUT).

        `purpose` names the borrower in warnings. Requests take theirs through a `UnitOfWork`.
        """
        wait = self.settings.db_pool_timeout if max_wait is None else max_wait
        return Place(self, purpose, wait)

    def exhausted(self, purpose: str, waited: float) -> PoolExhaustedError:
        self.metrics.timeouts.inc()
        logger.warning(
            "no database connection for %s within %g s; pool: %s", purpose, waited, self.status()
        )
        return PoolExhaustedError(waited)

    def lent(self, place: Place, since: float) -> None:
        threshold = self.settings.db_leak_threshold
        if not threshold:
            return
        self._loans[place] = (since, contextvars.copy_context())
        if self._leak_watch is None:
            # A context of its own, not that of the request that happened to start it.
            self._leak_watch = asyncio.get_running_loop().create_task(
                self._watch_for_leaks(threshold), context=contextvars.Context()
            )

    def returned(self, place: Place) -> None:
        self._loans.pop(place, None)

    async def _watch_for_leaks(self, threshold: float) -> None:
        """Warn, once per loan, about a connection held longer than `threshold`, while it is
        still held. One task watches every loan; a timer per checkout would cost each request."""
        while True:
            await asyncio.sleep(min(threshold / 4, 1.0))
            overdue = time.perf_counter() - threshold
            for place, (since, borrower) in list(self._loans.items()):
                if since < overdue:
                    self._loans[place] = (math.inf, borrower)  # reported
                    self.metrics.leaks.inc()
                    borrower.run(
                        logger.warning,
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
        await self.metrics.close()
        await self.engine.dispose()


class Place:
    """A place in the queue: the right to one of the pool's connections (see queue.py)."""

    __slots__ = ("_max_wait", "database", "deadline", "purpose")

    def __init__(self, database: Database, purpose: str, max_wait: float) -> None:
        self.database = database
        self.purpose = purpose
        self._max_wait = max_wait
        # DB_POOL_TIMEOUT bounds queueing and connecting together: see engine.connect_deadline.
        self.deadline: float | None = None

    async def __aenter__(self) -> Self:
        database = self.database
        self.deadline = time.monotonic() + self._max_wait
        started = time.perf_counter()
        try:
            await database.queue.enter(self._max_wait)
        except PoolExhaustedError:
            raise database.exhausted(self.purpose, self._max_wait) from None
        admitted = time.perf_counter()
        database.metrics.wait_time.observe(admitted - started)
        database.lent(self, admitted)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.database.returned(self)
        self.database.queue.leave()

    def at(self, database: Database) -> Place:
        """A place for the same borrower in another server's queue (see replicas.py)."""
        return Place(database, self.purpose, self._max_wait)

    def unavailable(self, error: Exception) -> Exception:
        """What a failure to check out a connection becomes: a 503, never a 500."""
        if isinstance(error, PoolTimeoutError):
            return self.database.exhausted(self.purpose, self._max_wait)
        # The server's message names the user at most, never the password.
        logger.warning("cannot connect to the database for %s: %s", self.purpose, error_name(error))
        return DatabaseUnavailableError(error_name(error))


def error_name(error: BaseException) -> str:
    """The driver's exception class, e.g. `InvalidPasswordError`, without its message."""
    original = getattr(error, "orig", None) or error
    return type(original).__name__
