"""Two of the four pooling lessons as tests (the other two are `python -m bench`).

Lesson 3, leaks exhaust the pool: a route that never gives its connection back drains a small pool,
while the release-safe dependency serves any number of requests from it.
Lesson 4, async needs an async pool: a query stuck waiting on the database does not stop the event
loop from answering `/health/live`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from fastapi import APIRouter, FastAPI, Request
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.db import Connection
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import pool_of

POOL_SIZE = 2
SELECT_ONE = text("SELECT 1")
COUNT_ITEMS = text("SELECT count(*) FROM items")
leaked: list[AsyncConnection] = []
counting = asyncio.Event()
counted = asyncio.Event()
lessons = APIRouter(prefix="/lesson")


@lessons.get("/leak")
async def leak(request: Request) -> None:
    """The bug the dependency prevents: a connection taken from the engine and never returned."""
    connection = await request.app.state.database.engine.connect()
    await connection.execute(SELECT_ONE)
    leaked.append(connection)


@lessons.get("/borrow")
async def borrow(connection: Connection) -> None:
    await connection.execute(SELECT_ONE)


@lessons.get("/count")
async def count(connection: Connection) -> int:
    if connection.dialect.name == "postgresql":
        # Bounded, so that a blocked event loop fails the test instead of hanging it (SQLite's
        # driver waits 5 s for a lock by default).
        await connection.execute(text("SET LOCAL lock_timeout = '10s'"))
    counting.set()
    try:
        return int((await connection.execute(COUNT_ITEMS)).scalar_one())
    finally:
        counted.set()


@pytest.fixture
def settings(migrated_database: str) -> Settings:
    """Pool 2 without overflow and a short wait, so a drained pool shows in half a second."""
    return Settings(
        database_url=migrated_database,
        db_pool_size=POOL_SIZE,
        db_max_overflow=0,
        db_pool_timeout=0.5,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    app.include_router(lessons)
    return app


@pytest.fixture
async def leaks(running_app: FastAPI) -> AsyncIterator[list[AsyncConnection]]:
    """The leaked connections, closed after the test so that the pool can be disposed."""
    leaked.clear()
    yield leaked
    for connection in leaked:
        await connection.close()
    leaked.clear()


async def test_leaking_route_drains_the_pool_and_later_requests_get_503(
    client: AsyncClient, running_app: FastAPI, leaks: list[AsyncConnection]
) -> None:
    for _ in range(POOL_SIZE):
        assert (await client.get("/lesson/leak")).status_code == 200

    assert pool_of(running_app).checked_out == POOL_SIZE
    assert (await client.get("/items")).status_code == 503
    assert (await client.get("/lesson/borrow")).status_code == 503


async def test_release_safe_dependency_does_not_drain_the_pool(
    client: AsyncClient, running_app: FastAPI
) -> None:
    statuses = [(await client.get("/lesson/borrow")).status_code for _ in range(10 * POOL_SIZE)]

    assert statuses == [200] * 10 * POOL_SIZE
    assert pool_of(running_app).checked_out == 0
    assert (await client.get("/items")).status_code == 200


async def test_query_waiting_on_the_database_does_not_delay_liveness(
    client: AsyncClient, running_app: FastAPI, migrated_database: str
) -> None:
    counting.clear()
    counted.clear()
    async with items_table_locked(migrated_database):
        waiting = asyncio.create_task(client.get("/lesson/count"))
        with anyio.fail_after(5):
            await counting.wait()

        live = await client.get("/health/live")

        assert live.status_code == 200
        assert not counted.is_set(), "the query ended before liveness answered"
    response = await waiting

    assert response.status_code == 200
    assert response.json() == 0


@asynccontextmanager
async def items_table_locked(url: str) -> AsyncIterator[None]:
    """Hold a lock that makes every read of `items` wait, until the caller is done."""
    if make_url(url).get_backend_name() == "sqlite":
        holder = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
            yield
            await connection.rollback()
    finally:
        await engine.dispose()
