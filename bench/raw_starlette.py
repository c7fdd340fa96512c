"""(a) The physical reference: Starlette and an asyncpg pool, hand-written SQL, no validation."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SELECT_PAGE = "SELECT id, name, description FROM items ORDER BY id LIMIT $1 OFFSET $2"


def dsn() -> str:
    """asyncpg takes libpq URLs: the SQLAlchemy driver suffix has to go."""
    return os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    size = int(os.environ.get("POOL_SIZE", "10"))
    async with asyncpg.create_pool(dsn(), min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


async def list_items(request: Request) -> JSONResponse:
    limit = int(request.query_params.get("limit", "20"))
    offset = int(request.query_params.get("offset", "0"))
    async with request.app.state.pool.acquire() as connection:
        rows = await connection.fetch(SELECT_PAGE, limit, offset)
    return JSONResponse([dict(row) for row in rows])


app = Starlette(routes=[Route("/items", list_items)], lifespan=lifespan)
