"""Request dependencies: a pooled connection lent for exactly one request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def transaction(request: Request) -> AsyncIterator[AsyncConnection]:
    """Lend a connection inside one transaction: commit on success, roll back on any error.

    The clean-up is shielded from cancellation, so a client that disconnects or a task that is
    cancelled still gives the connection back to the pool.
    """
    connection = await get_engine(request).connect()
    try:
        yield connection
        await connection.commit()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await connection.rollback()
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await connection.close()


# scope="function": the connection is back in the pool before the response is sent.
Connection = Annotated[AsyncConnection, Depends(transaction, scope="function")]
