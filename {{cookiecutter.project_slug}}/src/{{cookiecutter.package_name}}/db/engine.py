"""The async engine and its pool: options that fit the driver, and the pool's state."""

from __future__ import annotations

import socket
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import URL, ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from ..settings import Settings


@dataclass(frozen=True, slots=True)
class PoolStatus:
    size: int
    checked_in: int
    checked_out: int
    overflow: int
    waiting: int = 0


def is_in_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def unique_statement_name() -> str:
    """A prepared statement name no other client of a shared server connection can be using."""
    return f"__asyncpg_{uuid4().hex}__"


# How much longer than DB_STATEMENT_TIMEOUT the client waits for a server that answers nothing
# at all, when the server enforces the timeout itself.
CLIENT_BACKSTOP = 0.5
# sqlite3's busy timeout when DB_STATEMENT_TIMEOUT is 0 (its own default).
SQLITE_BUSY_TIMEOUT = 5.0
# A pooled connection whose server vanished without a reset (a dead host, a dropped network path)
# is noticed within about KEEPALIVE_IDLE + KEEPALIVE_INTERVAL x KEEPALIVE_COUNT seconds when idle,
# and within UNACKNOWLEDGED_TIMEOUT when a statement sent to it goes unacknowledged.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3
UNACKNOWLEDGED_TIMEOUT_MS = 20_000
# When the current request's connection budget (DB_POOL_TIMEOUT, from its arrival) runs out.
connect_deadline: ContextVar[float | None] = ContextVar("connect_deadline", default=None)


def connect_args(settings: Settings) -> dict[str, Any]:
    """Driver arguments; the migrations use them too, so they also work through PgBouncer."""
    if settings.url.get_backend_name() != "postgresql":
        return {}
    # Names the service's sessions in pg_stat_activity.
    arguments: dict[str, Any] = {
        "server_settings": {"application_name": settings.db_application_name}
    }
    if settings.db_pgbouncer:
        # Transaction pooling hands each transaction any server connection: nothing prepared may
        # outlive its transaction, and no name may collide with another client's statement.
        arguments.update(
            statement_cache_size=0,
            prepared_statement_cache_size=0,
            prepared_statement_name_func=unique_statement_name,
        )
    return arguments


def service_connect_args(settings: Settings) -> dict[str, Any]:
    """`connect_args` plus the service's time bounds (a migration may run as long as it needs).

    DB_CONNECT_TIMEOUT bounds each connection attempt. DB_STATEMENT_TIMEOUT is enforced by
    PostgreSQL itself (the statement is cancelled with SQLSTATE 57014), and by the client a moment
    later for a server that answers nothing at all. PgBouncer refuses `statement_timeout` as a
    start-up parameter, so behind it the client enforces the bound: asyncpg cancels the statement
    through PgBouncer, which passes the cancel request on to the server.
    """
    arguments = connect_args(settings)
    statement_timeout = settings.db_statement_timeout
    if settings.url.get_backend_name() == "sqlite":
        # How long a statement waits for another connection's lock ("database is locked").
        return arguments | {"timeout": statement_timeout or SQLITE_BUSY_TIMEOUT}
    if settings.url.get_backend_name() != "postgresql":
        return arguments
    arguments["timeout"] = settings.db_connect_timeout
    if statement_timeout:
        if settings.db_pgbouncer:
            arguments["command_timeout"] = statement_timeout
        else:
            arguments["command_timeout"] = statement_timeout + CLIENT_BACKSTOP
            arguments["server_settings"] = arguments["server_settings"] | {
                "statement_timeout": str(round(statement_timeout * 1000))
            }
    return arguments


def isolation_level(settings: Settings) -> str | None:
    """AUTOCOMMIT: reads need no BEGIN/COMMIT and a pre-ping costs one round trip, not three;
    a unit of work that writes opens a real transaction (see unit_of_work.py).

    Not behind PgBouncer: asyncpg prepares a statement and runs it in separate messages, and
    outside a transaction, transaction pooling may hand those to different server connections.
    """
    return None if settings.db_pgbouncer else "AUTOCOMMIT"


def engine_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `create_async_engine`, limited to what the chosen pool accepts."""
    options: dict[str, Any] = {
        "echo": settings.db_echo,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "isolation_level": isolation_level(settings),
        "connect_args": service_connect_args(settings),
    }
    if settings.db_pool_mode == "null":
        options["poolclass"] = NullPool
    elif is_in_memory_sqlite(settings.url):
        # Each new connection would be a new, empty database: share one. StaticPool takes no sizing.
        options["poolclass"] = StaticPool
    else:
        options.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_recycle=settings.db_pool_recycle,
        )
    return options


def create_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(settings.url, **engine_options(settings))
    event.listen(engine.sync_engine.pool, "checkout", reject_closed_connection)
    event.listen(engine.sync_engine, "handle_error", lose_read_only_server)
    if settings.url.get_backend_name() == "postgresql":
        event.listen(engine.sync_engine, "do_connect", connect_within_the_deadline)
        event.listen(engine.sync_engine.pool, "connect", detect_dead_peers)
        if not settings.db_pgbouncer:
            # Behind PgBouncer the client's timeout is the bound itself, and its cancel request
            # must get through to stop the statement on the server.
            event.listen(engine.sync_engine.pool, "invalidate", abort_unanswered)
    return engine


def connect_within_the_deadline(
    _dialect: object, _record: object, _cargs: object, cparams: dict[str, Any]
) -> None:
    """Shorten the connect timeout to what is left of the request's DB_POOL_TIMEOUT, so that
    queueing and connecting together never take longer than that."""
    deadline = connect_deadline.get()
    if deadline is not None:
        left = deadline - time.monotonic()
        cparams["timeout"] = max(min(cparams.get("timeout", left), left), 0.001)


def detect_dead_peers(dbapi_connection: Any, _record: object) -> None:
    """TCP keepalive and an unacknowledged-data timeout on each new server connection.

    asyncpg has no option for them: this reaches its socket through the connection's asyncio
    transport (a private attribute of asyncpg's), the one place that does.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    transport = getattr(driver, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", UNACKNOWLEDGED_TIMEOUT_MS),
    ):
        if hasattr(socket, option):  # Linux has all four; macOS and Windows only some
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def abort_unanswered(dbapi_connection: Any, _record: object, error: BaseException | None) -> None:
    """Abort a connection given up on after DB_STATEMENT_TIMEOUT instead of closing it politely.

    A polite close waits for asyncpg's cancel request and the server's goodbye (up to 2 s more),
    from a server that has already failed to answer.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if isinstance(error, TimeoutError) and isinstance(driver, asyncpg.Connection):
        driver.terminate()


def reject_closed_connection(dbapi_connection: Any, _record: object, _proxy: object) -> None:
    """Swap a pooled connection the server has closed for a fresh one, at no round trip.

    A restarted server or `pg_terminate_backend` closes the socket; asyncpg notices while the
    connection sits idle in the pool. Raising DisconnectionError here makes the pool replace it
    without the ping's round trip. The ping (DB_POOL_PRE_PING) still covers what this cannot see:
    a close that has not reached the event loop yet, or a network that dropped silently.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if isinstance(driver, asyncpg.Connection) and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


# In a pooled connection's `info` while a read-only view has PostgreSQL refuse writes.
REFUSING_WRITES = "read_only.refusing_writes"
READ_ONLY_SQL_TRANSACTION = "25006"


def lose_read_only_server(context: ExceptionContext) -> None:
    """A write refused as read-only (SQLSTATE 25006) where no read-only view asked for that: the
    server was demoted to a standby by a failover, or made read-only. Treat it as a lost
    connection: SQLAlchemy discards it and every connection pooled before it (they reach the
    same server), the request gets a 503, and new connections find the new primary."""
    if getattr(context.original_exception, "sqlstate", None) != READ_ONLY_SQL_TRANSACTION:
        return
    connection = context.connection
    if connection is not None and not connection.info.get(REFUSING_WRITES):
        context.is_disconnect = True


class CheckoutCounter:
    """Counts lent connections for pools that do not track them (NullPool, StaticPool)."""

    def __init__(self) -> None:
        self.checked_out = 0

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> CheckoutCounter | None:
        """A counter listening to the engine's pool, or None when the pool counts itself."""
        pool = engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            return None
        counter = cls()
        event.listen(pool, "checkout", counter._on_checkout)
        event.listen(pool, "checkin", counter._on_checkin)
        return counter

    def _on_checkout(self, *_: object) -> None:
        self.checked_out += 1

    def _on_checkin(self, *_: object) -> None:
        self.checked_out -= 1


def pool_capacity(engine: AsyncEngine, settings: Settings) -> int | None:
    """How many connections the pool can lend at once; None when it sets no limit."""
    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool):
        return settings.db_pool_size + settings.db_max_overflow
    return 1 if isinstance(pool, StaticPool) else None


def pool_status(engine: AsyncEngine, counter: CheckoutCounter | None) -> PoolStatus:
    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool):
        return PoolStatus(
            size=pool.size(),
            checked_in=pool.checkedin(),
            checked_out=pool.checkedout(),
            overflow=max(pool.overflow(), 0),
        )
    checked_out = counter.checked_out if counter is not None else 0
    size = 1 if isinstance(pool, StaticPool) else 0
    return PoolStatus(
        size=size, checked_in=max(size - checked_out, 0), checked_out=checked_out, overflow=0
    )
