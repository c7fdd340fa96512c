"""Read replicas: a pool per replica, a watch on each one's health, and the choice of server.

A request that only reads is served by a *usable* replica: one that a background check, run every
DB_REPLICA_CHECK_INTERVAL seconds, reached and found at most DB_REPLICA_MAX_LAG seconds behind the
primary. A replica that is *lagging* or *down* (unreachable, or a read on it lost its connection)
is skipped until a check finds it usable again; with none usable, reads go to the primary. The
choice costs a request no round trip: the checks run beside the requests, not in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from ..settings import Settings
from .budget import check_connection_budget
from .database import Database, error_name
from .engine import PoolStatus
from .errors import DatabaseUnavailableError, PoolExhaustedError

logger = logging.getLogger(__name__)
# Seconds the replica's replay is behind. A replica that has replayed all it received is not
# behind (the age of the last replayed transaction only says the primary was idle); one that is
# not in recovery was promoted: it is a primary.
LAG = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0"
    " WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)
# SQLSTATE of a read that a replica cancelled because it conflicted with replaying the primary's
# changes ("canceling statement due to conflict with recovery").
RECOVERY_CONFLICT = "40001"


class ReplicaState(enum.StrEnum):
    USABLE = "usable"
    LAGGING = "lagging"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    name: str
    server: str
    state: ReplicaState
    lag: float | None
    pool: PoolStatus


class Replica:
    """One read replica: its own pool and queue (a `Database`), and what the last check found."""

    __slots__ = ("database", "lag", "name", "server", "state")

    def __init__(self, name: str, settings: Settings, registry: CollectorRegistry | None) -> None:
        self.name = name
        self.database = Database(settings, pool_name=name, registry=registry)
        self.server = server_of(settings.url)
        self.state: ReplicaState | None = None  # not checked yet
        self.lag: float | None = None

    def status(self) -> ReplicaStatus:
        state = self.state or ReplicaState.DOWN
        return ReplicaStatus(self.name, self.server, state, self.lag, self.database.status())


class Replicas:
    """The read replicas of one process (DATABASE_REPLICA_URLS), created in the lifespan."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        """`registry`: the application's, where each replica's pool metrics get its name."""
        self.settings = settings
        self.replicas = [
            Replica(f"replica-{number}", replica_settings(settings, url), registry)
            for number, url in enumerate(settings.replica_urls, start=1)
        ]
        self._usable: tuple[Database, ...] = ()
        self._turn = 0
        self._watches: list[asyncio.Task[None]] = []

    def __bool__(self) -> bool:
        return bool(self.replicas)

    def choose(self) -> Database | None:
        """The usable replica with the fewest requests, in turns on a tie; None: the primary."""
        usable = self._usable
        if len(usable) <= 1:
            return usable[0] if usable else None
        self._turn = (self._turn + 1) % len(usable)
        return min(usable[self._turn :] + usable[: self._turn], key=busy)

    def failed(self, database: Database, error: BaseException) -> None:
        """A read on `database` failed for the replica's sake: skip it until a check says so."""
        for replica in self.replicas:
            if replica.database is database:
                self._update(replica, ReplicaState.DOWN, None, error_name(error))

    def status(self) -> list[ReplicaStatus]:
        return [replica.status() for replica in self.replicas]

    async def start(self) -> None:
        """Check each replica's connection budget and state, then watch each in the background."""
        for replica in self.replicas:
            await check_connection_budget(
                replica.database.engine, replica.database.settings, server=replica.name
            )
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))
        loop = asyncio.get_running_loop()
        self._watches = [loop.create_task(self._watch(replica)) for replica in self.replicas]

    async def dispose(self) -> None:
        for watch in self._watches:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        for replica in self.replicas:
            await replica.database.dispose()

    async def _watch(self, replica: Replica) -> None:
        while True:
            await asyncio.sleep(self.settings.db_replica_check_interval)
            await self._check(replica)

    async def _check(self, replica: Replica) -> None:
        """Measure the replica's lag within READY_TIMEOUT, through its own queue and pool."""
        database = replica.database
        timeout = self.settings.ready_timeout
        try:
            async with asyncio.timeout(timeout):
                await database.queue.enter(timeout / 2)
                try:
                    async with database.engine.connect() as connection:
                        lag = await connection.scalar(LAG)
                finally:
                    database.queue.leave()
        except PoolExhaustedError:
            return  # every connection is busy serving reads: it is up; its lag is as last seen
        except (SQLAlchemyError, OSError) as error:  # TimeoutError is an OSError
            self._update(replica, ReplicaState.DOWN, None, error_name(error))
            return
        if lag is None:
            self._update(replica, ReplicaState.LAGGING, None, "replay position unknown")
        elif (lag := float(lag)) > self.settings.db_replica_max_lag:
            self._update(replica, ReplicaState.LAGGING, lag, f"{lag:.1f} s behind")
        else:
            self._update(replica, ReplicaState.USABLE, lag)

    def _update(
        self, replica: Replica, state: ReplicaState, lag: float | None, reason: str = ""
    ) -> None:
        was, replica.state, replica.lag = replica.state, state, lag
        if state is was:
            return
        self._usable = tuple(
            each.database for each in self.replicas if each.state is ReplicaState.USABLE
        )
        where = f"replica {replica.name} ({replica.server})"
        if state is not ReplicaState.USABLE:
            logger.warning("%s is %s (%s): reads skip it until it recovers", where, state, reason)
        elif was is None:
            logger.info("%s is usable: %.1f s behind", where, lag)
        else:
            logger.warning("%s is usable again: %.1f s behind", where, lag)


def busy(database: Database) -> int:
    return database.queue.admitted + database.queue.waiting


def is_replica_trouble(error: BaseException) -> bool:
    """Whether a read failed for the replica's sake (down, gone, silent, or replaying a conflicting
    change) rather than the statement's own: the primary can serve it instead."""
    if isinstance(error, (DatabaseUnavailableError, PoolExhaustedError, TimeoutError)):
        return True
    if isinstance(error, DBAPIError):
        return (
            error.connection_invalidated
            or isinstance(error, (OperationalError, InterfaceError))
            or getattr(error.orig, "sqlstate", None) == RECOVERY_CONFLICT
        )
    return False


def replica_settings(settings: Settings, url: URL) -> Settings:
    """The service's settings with a replica's URL: the same pool sizes, timeouts and names."""
    return settings.model_copy(
        update={
            "database_url": SecretStr(url.render_as_string(hide_password=False)),
            "database_replica_urls": SecretStr(""),
        }
    )


def server_of(url: URL) -> str:
    """`host:port/database`: where a server is, without credentials."""
    bare = url.set(drivername="postgresql", username=None, password=None)
    return bare.render_as_string().removeprefix("postgresql://")
