"""Request dependencies: a pooled connection lent for exactly one request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from sqlalchemy import Executable, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from .pool import Database

logger = logging.getLogger(__name__)


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def route_of(request: Request) -> str:
    """`GET /items/{item_id}` rather than the concrete path, so logs group by route."""
    route = request.scope.get("route")
    return f"{request.method} {route.path if route is not None else request.url.path}"


async def transaction(request: Request) -> AsyncIterator[AsyncConnection]:
    """Lend a connection inside one transaction: commit on success, roll back on any error.

    The engine runs in autocommit mode unless DB_PGBOUNCER is set (see
    database.isolation_level); this switches the connection to the server's default isolation
    level so that its statements form one transaction. The clean-up is shielded from
    cancellation, so a client that disconnects or a task that is cancelled still gives the
    connection back to the pool.
    """
    async with get_database(request).connection(route_of(request)) as connection:
        await connection.execution_options(
            isolation_level=connection.dialect.default_isolation_level
        )
        try:
            yield connection
            await connection.commit()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.rollback()
            raise


class ReadOnlyConnection:
    """A pooled connection for handlers that only read, in autocommit mode.

    Each statement is its own transaction, which saves the BEGIN and COMMIT round trips of
    `transaction` (behind PgBouncer, with DB_PGBOUNCER, reads keep a transaction: see
    database.isolation_level). A read that fails because the server dropped the connection
    (a restart, a failover, a killed session) runs once more on a new connection: a read can
    safely run twice, and this is what spares every checkout a ping (DB_POOL_PRE_PING).
    Writes made through it could run twice and cannot be rolled back: use `Connection`.
    """

    __slots__ = ("connection",)

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        try:
            return await self.connection.execute(statement, parameters)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            logger.info("database connection lost during a read; reading again on a new one")
        # The invalidated connection is already back in the pool; after the rollback, the next
        # statement checks out a new one.
        await self.connection.rollback()
        return await self.connection.execute(statement, parameters)


async def read_only(request: Request) -> AsyncIterator[ReadOnlyConnection]:
    """Lend a `ReadOnlyConnection`: autocommit, reads retried once on a lost connection."""
    async with get_database(request).connection(route_of(request)) as connection:
        yield ReadOnlyConnection(connection)


# scope="function": the connection is back in the pool before the response is sent.
Connection = Annotated[AsyncConnection, Depends(transaction, scope="function")]
ReadConnection = Annotated[ReadOnlyConnection, Depends(read_only, scope="function")]
