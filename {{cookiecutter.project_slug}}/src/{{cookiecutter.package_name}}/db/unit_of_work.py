"""One unit of work per request: one place in the queue, one transaction once the request writes.

A request's unit of work takes its place in the pool's queue on first use, and only one, however
many database dependencies the request asks for. A request that only reads runs each statement
on a pooled connection of its own, in autocommit, and a read that finds its connection lost runs
once more on a new one. A request that writes (it asked for `Connection` or `Session`) holds one
connection in one transaction; its Core and ORM statements, reads included, all go through it, so
its reads see its writes. The transaction commits when the response is a success and rolls back
otherwise (see dependencies.py).

With read replicas (replicas.py), a request that only reads takes its place in a usable replica's
queue instead, and a read that the replica fails runs on the primary. A request that asks for
`Connection` or `Session` after reading moves to the primary's queue: it waits there holding its
replica's place, which cannot deadlock, since nobody holding a primary's place waits for a
replica's.

The read-only views refuse writes: a statement SQLAlchemy knows writes (INSERT, UPDATE, DELETE,
DDL, an ORM flush) raises `ReadOnlyError` before anything is sent, and a statement it cannot see
into (`text()`, a SELECT with a data-modifying CTE) runs where the database itself refuses writes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any, Self, TypeVar, cast

import anyio
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Executable, Result, ScalarResult, Transaction
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session as SyncSession
from sqlalchemy.sql.ddl import ExecutableDDLElement
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import CTE
from sqlalchemy.sql.visitors import iterate
from sqlalchemy.util import greenlet_spawn

from .database import Database, Place
from .engine import REFUSING_WRITES, connect_deadline
from .errors import ReadOnlyError
from .replicas import Replicas, is_replica_trouble

logger = logging.getLogger(__name__)
T = TypeVar("T")
Parameters = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
# ORM results are loaded whole before the connection goes back, as AsyncSession does.
PREBUFFER = {"prebuffer_rows": True}


class UnitOfWork:
    """Everything one request (or one job) does with the database.

    `async with UnitOfWork(database, "nightly clean-up") as work:` outside a request: it commits
    when the block succeeds and rolls back when it raises. Requests get theirs from the
    dependencies in dependencies.py.
    """

    __slots__ = (
        "_connection",
        "_entered",
        "_finished",
        "_place",
        "_read_session",
        "_reading",
        "_replicas",
        "_session",
        "database",
    )

    def __init__(
        self,
        database: Database,
        purpose: str,
        max_wait: float | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        """`replicas`: where a unit that only reads may read (see replicas.py)."""
        self.database = database
        self._replicas = replicas
        # In the primary's queue, or in a replica's while the unit only reads.
        self._place: Place = database.place(purpose, max_wait)
        self._entered = False
        self._finished = False
        self._connection: AsyncConnection | None = None
        self._session: AsyncSession | None = None
        self._read_session: SyncSession | None = None
        self._reading: asyncio.Lock | None = None

    @property
    def writes(self) -> bool:
        """Whether the unit of work holds a transaction (it asked for a read-write view)."""
        return self._connection is not None

    @property
    def finished(self) -> bool:
        """Whether `finish` has run: the place is given back and nothing is left to end."""
        return self._finished

    async def enter(self, *, reading: bool = False) -> None:
        """Take the place in the queue, once: raises PoolExhaustedError after DB_POOL_TIMEOUT.

        `reading`: the unit takes its place to read, so a usable replica may serve it.
        """
        if self._finished:
            raise RuntimeError(
                f"the unit of work of {self._place.purpose} has ended: the database is not "
                "available to a background task or a streamed body of its request"
            )
        if not self._entered:
            if reading and self._replicas is not None:
                replica = self._replicas.choose()
                if replica is not None:
                    self._place = self._place.at(replica)
            await self._place.__aenter__()
            self._entered = True

    async def _move_to_primary(self) -> None:
        """Leave the replica's queue for the primary's: the unit writes, or the replica failed."""
        replica_place = self._place
        primary_place = replica_place.at(self.database)
        await primary_place.__aenter__()  # failing, the unit still holds the replica's place
        self._place = primary_place
        await replica_place.__aexit__()

    async def connection(self) -> AsyncConnection:
        """The connection of the unit's transaction, checked out and begun on first use."""
        if self._connection is None or self._finished:
            await self.enter()
            if self._place.database is not self.database:
                async with self._reading or nullcontext():  # no read still uses the replica
                    await self._move_to_primary()
            engine = self.database.engine
            deadline = connect_deadline.set(self._place.deadline)
            try:
                connection = await engine.connect()
            except (PoolTimeoutError, DBAPIError, OSError) as error:
                raise self._place.unavailable(error) from error
            finally:
                connect_deadline.reset(deadline)
            self._place.deadline = None  # later connections get DB_CONNECT_TIMEOUT each
            try:
                # The engine runs in autocommit (see engine.isolation_level); this connection
                # runs one transaction at the server's default isolation level.
                await connection.execution_options(
                    isolation_level=connection.dialect.default_isolation_level
                )
                await connection.begin()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await connection.close()
                raise
            self._connection = connection
        return self._connection

    async def session(self) -> AsyncSession:
        """An ORM session in the unit's transaction: it joins the transaction and never ends it,
        so `session.commit()` in a handler flushes, and the unit commits once, at the end."""
        if self._session is None or self._finished:
            # Bound to a connection in a transaction, the session joins it (SQLAlchemy's
            # "conditional_savepoint"): its commit does not end the transaction.
            self._session = AsyncSession(bind=await self.connection(), expire_on_commit=False)
        return self._session

    def read_connection(self) -> ReadOnlyConnection:
        return ReadOnlyConnection(self)

    def read_session(self) -> ReadOnlySession:
        return ReadOnlySession(self)

    async def flush(self) -> None:
        """Send the ORM session's pending changes, so that a failing write fails the request."""
        if self._session is not None:
            await self._session.flush()

    async def finish(self, *, commit: bool, error: BaseException | None = None) -> None:
        """Commit (or roll back), give the connection back to the pool, then leave the queue.

        Safe to call more than once; after a failed commit the transaction is rolled back. After
        a statement that timed out (`error`), the connection is discarded, not rolled back: a
        server that answered nothing will not answer a ROLLBACK either.
        """
        if self._finished:
            return
        self._finished = True
        try:
            if self._connection is not None:
                if isinstance(error, TimeoutError):
                    with anyio.CancelScope(shield=True):
                        await self._connection.invalidate()
                else:
                    await self._end_transaction(self._connection, commit=commit)
        finally:
            if self._entered:
                await self._place.__aexit__()

    async def _end_transaction(self, connection: AsyncConnection, *, commit: bool) -> None:
        try:
            if commit:
                await connection.run_sync(_commit_and_close, self._session)
                return
        except BaseException:
            logger.warning("commit failed for %s; rolling back", self._place.purpose)
            with anyio.CancelScope(shield=True):
                await connection.close()
            raise
        # Closing rolls back what is still open; that must finish even while this task is
        # being cancelled (a client that went away).
        with anyio.CancelScope(shield=True):
            await connection.close()

    async def read(self, run: Callable[[SyncConnection], T]) -> T:
        """Run a read: in the unit's transaction once it writes, else on a connection of its own.

        Reads started together (`asyncio.gather`) take turns: a place is one connection.
        """
        await self.enter(reading=True)
        if self._reading is None:
            self._reading = asyncio.Lock()
        async with self._reading:
            if self._connection is not None:
                return await self._connection.run_sync(_flushed_then, self._session, run)
            try:
                return await run_in_one_greenlet(self._read_retrying, run)
            except Exception as error:
                replica = self._place.database
                if replica is self.database or not is_replica_trouble(error):
                    raise
                if self._replicas is not None:
                    self._replicas.failed(replica, error)
            # Replica trouble never fails a read: the primary serves it, and the unit's next ones.
            await self._move_to_primary()
            return await run_in_one_greenlet(self._read_retrying, run)

    def _read_retrying(self, run: Callable[[SyncConnection], T]) -> T:
        try:
            return self._read_once(run)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        # A restart, a failover or a killed session dropped the connection, which the pool has
        # discarded; a read can safely run twice. This is what spares every checkout a ping.
        logger.info("database connection lost during a read; reading again on a new one")
        return self._read_once(run)

    def _read_once(self, run: Callable[[SyncConnection], T]) -> T:
        deadline = connect_deadline.set(self._place.deadline)
        try:
            connection = self._place.database.engine.sync_engine.connect()
        except (PoolTimeoutError, DBAPIError, OSError) as error:
            raise self._place.unavailable(error) from error
        finally:
            connect_deadline.reset(deadline)
        self._place.deadline = None  # later connections get DB_CONNECT_TIMEOUT each
        with connection:
            try:
                return run(connection)
            except TimeoutError:
                # The server answered nothing within DB_STATEMENT_TIMEOUT: never pool it again.
                connection.invalidate()
                raise

    def sync_read_session(self) -> SyncSession:
        """The ORM session behind `ReadSession`, bound to each read's connection in turn."""
        if self._read_session is None:
            self._read_session = _NeverFlushingSession(expire_on_commit=False, autoflush=False)
        return self._read_session

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if kind is None:
            try:
                await self.flush()
            except BaseException as failure:
                await self.finish(commit=False, error=failure)
                raise
        await self.finish(commit=kind is None, error=error)


class _Reads:
    """`scalar` and `scalars`, from the read-only view's `execute`."""

    __slots__ = ()

    async def execute(self, statement: Executable, parameters: Parameters = None) -> Result[Any]:
        raise NotImplementedError

    async def scalar(self, statement: Executable, parameters: Parameters = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def scalars(
        self, statement: Executable, parameters: Parameters = None
    ) -> ScalarResult[Any]:
        return (await self.execute(statement, parameters)).scalars()


class ReadOnlyConnection(_Reads):
    """`ReadConnection`: the read API of `AsyncConnection`. A write raises `ReadOnlyError`.

    Results come back whole (the driver has fetched every row), their connection already pooled.
    """

    __slots__ = ("_work",)
    dependency = "ReadConnection"

    def __init__(self, work: UnitOfWork) -> None:
        self._work = work

    async def execute(self, statement: Executable, parameters: Parameters = None) -> Result[Any]:
        return await self._work.read(partial(self._execute, statement, parameters))

    def _execute(
        self, statement: Executable, parameters: Parameters, connection: SyncConnection
    ) -> Result[Any]:
        with read_only(connection, statement, self.dependency):
            return connection.execute(statement, parameters)


class ReadOnlySession(_Reads):
    """`ReadSession`: the read API of `AsyncSession` (`execute`, `scalar`, `scalars`, `get`).

    Objects it loads keep their loaded attributes (nothing expires) and are never written back:
    adding, deleting, flushing or committing raises `ReadOnlyError`, as does a statement that
    writes, and so does the next read after a loaded object was changed.
    """

    __slots__ = ("_work",)
    dependency = "ReadSession"

    def __init__(self, work: UnitOfWork) -> None:
        self._work = work

    async def execute(
        self, statement: Executable, parameters: Parameters = None, **options: Any
    ) -> Result[Any]:
        def execute(session: SyncSession) -> Result[Any]:
            return session.execute(statement, parameters, execution_options=PREBUFFER | options)

        return await self._run(execute, statement)

    async def get(self, entity: type[T], ident: Any) -> T | None:
        return await self._run(lambda session: session.get(entity, ident))

    async def get_one(self, entity: type[T], ident: Any) -> T:
        return await self._run(lambda session: session.get_one(entity, ident))

    def add(self, _instance: object) -> None:
        raise ReadOnlyError(self.dependency)

    def add_all(self, _instances: object) -> None:
        raise ReadOnlyError(self.dependency)

    async def delete(self, _instance: object) -> None:
        raise ReadOnlyError(self.dependency)

    async def flush(self) -> None:
        raise ReadOnlyError(self.dependency)

    async def commit(self) -> None:
        raise ReadOnlyError(self.dependency)

    async def _run(
        self, read: Callable[[SyncSession], T], statement: Executable | None = None
    ) -> T:
        work = self._work
        session = work.sync_read_session()
        return await work.read(partial(_in_read_session, session, read, statement))


class _NeverFlushingSession(SyncSession):
    """The ORM session behind `ReadSession`: a flush with anything to write raises."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:  # noqa: ARG002
        if self.new or self.deleted or self.dirty:
            raise ReadOnlyError(ReadOnlySession.dependency)


def _in_read_session(
    session: SyncSession,
    read: Callable[[SyncSession], T],
    statement: Executable | None,
    connection: SyncConnection,
) -> T:
    """Run `read` on this statement's connection; the session keeps its objects between reads."""
    with nullcontext() if statement is None else read_only(connection, statement, "ReadSession"):
        session.bind = connection
        try:
            result = read(session)
        except BaseException:
            session.close()  # detaches what it loaded, attributes intact; the next read rebinds
            raise
        session.commit()  # ends the session's use of this connection; never commits a write
    return result


def _flushed_then(
    connection: SyncConnection, session: AsyncSession | None, run: Callable[[SyncConnection], T]
) -> T:
    """A read in a unit that writes sees the ORM session's pending changes too."""
    if session is not None:
        session.sync_session.flush()
    return run(connection)


def _commit_and_close(connection: SyncConnection, session: AsyncSession | None) -> None:
    """Flush, commit and give the connection back in one greenlet (see run_in_one_greenlet)."""
    if session is not None:
        session.sync_session.flush()
    connection.commit()
    connection.close()


class Kind(enum.Enum):
    READS = "reads"  # a SELECT: runs as is, and may run again
    WRITES = "writes"  # INSERT, UPDATE, DELETE, DDL, or a SELECT with a data-modifying CTE
    OPAQUE = "opaque"  # text() and the like: only the database can tell


# What each statement does, remembered: most are built once, at import.
_kinds: weakref.WeakKeyDictionary[Executable, Kind] = weakref.WeakKeyDictionary()


def kind_of(statement: Executable) -> Kind:
    kind = _kinds.get(statement)
    if kind is None:
        if statement.is_dml or isinstance(statement, ExecutableDDLElement):
            kind = Kind.WRITES
        elif statement.is_select:
            writing_cte = any(
                isinstance(element, CTE) and element.element.is_dml
                for element in iterate(cast("ClauseElement", statement))
            )
            kind = Kind.WRITES if writing_cte else Kind.READS
        else:
            kind = Kind.OPAQUE
        _kinds[statement] = kind
    return kind


@contextmanager
def read_only(connection: SyncConnection, statement: Executable, dependency: str) -> Iterator[None]:
    """Refuse `statement` if it writes; let the database refuse it where we cannot tell."""
    kind = kind_of(statement)
    if kind is Kind.READS:
        yield
        return
    if kind is Kind.WRITES:
        raise ReadOnlyError(dependency)
    try:
        with writes_refused_by_the_database(connection):
            yield
    except DBAPIError as error:
        if is_read_only_violation(error):
            raise ReadOnlyError(dependency) from error
        raise


@contextmanager
def writes_refused_by_the_database(connection: SyncConnection) -> Iterator[None]:
    """PostgreSQL: a read-only transaction (a savepoint inside one that writes), rolled back.
    SQLite: the connection's `query_only` switch, turned off again afterwards."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA query_only = ON")
        try:
            yield
        finally:
            connection.exec_driver_sql("PRAGMA query_only = OFF")
        return
    transaction: Transaction
    if connection.in_transaction():
        transaction = connection.begin_nested()
    else:
        connection.execution_options(isolation_level=connection.dialect.default_isolation_level)
        transaction = connection.begin()
    try:
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        info = connection.info  # kept: a connection lost in the statement has none any more
        info[REFUSING_WRITES] = True  # a 25006 now is ours, not a demoted server's
        try:
            yield
        finally:
            info.pop(REFUSING_WRITES, None)
    finally:
        transaction.rollback()


def is_read_only_violation(error: DBAPIError) -> bool:
    """PostgreSQL's SQLSTATE 25006, or SQLite's `attempt to write a readonly database`."""
    original = error.orig
    return getattr(original, "sqlstate", None) == "25006" or "readonly database" in str(original)


async def run_in_one_greenlet(function: Callable[..., T], *arguments: Any) -> T:
    """Check-out, statement and check-in in one greenlet.

    `AsyncConnection` starts a greenlet for each, and on CPython every new greenlet maps and unmaps
    a fresh frame stack; this calls SQLAlchemy's own bridge, `greenlet_spawn`, once.
    """
    result: T = await greenlet_spawn(function, *arguments)
    return result
