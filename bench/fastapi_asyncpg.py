"""(b) Hand-written SQL in the same framework as the service: FastAPI, an asyncpg pool lent through
a `scope="function"` dependency, validated query parameters and a pydantic response model."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, FastAPI, Query, Request
from pydantic import BaseModel

SELECT_PAGE = "SELECT id, name, description FROM items ORDER BY id LIMIT $1 OFFSET $2"


class ItemRead(BaseModel):
    id: int
    name: str
    description: str | None


def dsn() -> str:
    return os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("POOL_SIZE", "10"))
    async with asyncpg.create_pool(dsn(), min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


async def connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with request.app.state.pool.acquire() as lent:
        yield lent


Connection = Annotated[asyncpg.Connection, Depends(connection, scope="function")]
# FastAPI's built-in telemetry off, as in the service: the comparison is of the data layer.
app = FastAPI(lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False})


@app.get("/items", response_model=list[ItemRead])
async def list_items(
    db: Connection,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, object]]:
    return [dict(row) for row in await db.fetch(SELECT_PAGE, limit, offset)]
