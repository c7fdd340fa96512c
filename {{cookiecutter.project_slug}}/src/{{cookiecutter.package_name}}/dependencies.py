"""Request dependencies: a pooled connection lent for exactly one request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from .pool import Database, Reader


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


async def read_only(request: Request) -> AsyncIterator[Reader]:
    """Hold a place at the pool for the request and lend a `Reader` for its statements.

    Each statement runs in autocommit on a pooled connection of its own, which saves the BEGIN
    and COMMIT round trips of `transaction` (behind PgBouncer, with DB_PGBOUNCER, reads keep a
    transaction: see database.isolation_level), and a read that finds its connection lost runs
    once more on a new one. Writes made through it could run twice: use `Connection`.
    """
    async with get_database(request).place(route_of(request)) as place:
        yield Reader(place)


# scope="function": the connection is back in the pool before the response is sent.
Connection = Annotated[AsyncConnection, Depends(transaction, scope="function")]
ReadConnection = Annotated[Reader, Depends(read_only, scope="function")]
