"""Behind a real PgBouncer in transaction mode, DB_PGBOUNCER=true is what makes the service work."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import delete, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.models import Item
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import PGBOUNCER_SERVER_POOL_SIZE, PROJECT_ROOT
from .pgbouncer import PgBouncer

SERVER_POOL_SIZE = PGBOUNCER_SERVER_POOL_SIZE
CONCURRENCY = 50
REQUESTS = 450


@pytest.fixture
async def direct_engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    """Straight to PostgreSQL, past PgBouncer: to set up data and to watch the server."""
    engine = create_async_engine(migrated_database, poolclass=NullPool)
    async with engine.begin() as connection:
        await connection.execute(delete(Item))
    yield engine
    await engine.dispose()


def settings_through(bouncer: PgBouncer, *, db_pgbouncer: bool) -> Settings:
    """An application pool far larger than PgBouncer's server pool, as with many workers."""
    return Settings(
        database_url=bouncer.url.render_as_string(hide_password=False),
        db_pgbouncer=db_pgbouncer,
        db_pool_size=10,
        db_max_overflow=10,
        db_pool_timeout=30,
        # PgBouncer passes the client's application_name on to the server sessions.
        db_application_name=bouncer.application_name,
    )


@dataclass
class LoadResult:
    requests: int
    errors: int
    statuses: Counter[int]
    most_server_connections: int


async def count_server_connections(engine: AsyncEngine, bouncer: PgBouncer) -> int:
    async with engine.connect() as connection:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
        return int(
            (await connection.execute(query, {"name": bouncer.application_name})).scalar_one()
        )


async def mixed_load(
    settings: Settings, bouncer: PgBouncer, direct_engine: AsyncEngine
) -> LoadResult:
    """REQUESTS requests, CONCURRENCY at a time: writes, reads of one item, and pages."""
    async with direct_engine.begin() as connection:
        seed = (
            await connection.execute(insert(Item).values(name="seed").returning(Item.id))
        ).scalar_one()
    app = create_app(settings)
    statuses: Counter[int] = Counter()
    errors = 0
    most_server_connections = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(REQUESTS):
        queue.put_nowait(number)

    async def worker(client: AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            number = queue.get_nowait()
            if number % 3 == 0:
                response = await client.post("/items", json={"name": f"load-{number}"})
                expected = 201
            elif number % 3 == 1:
                response = await client.get(f"/items/{seed}")
                expected = 200
            else:
                response = await client.get("/items", params={"limit": 10})
                expected = 200
            statuses[response.status_code] += 1
            errors += response.status_code != expected

    async def watch_server(done: asyncio.Event) -> None:
        nonlocal most_server_connections
        while not done.is_set():
            most_server_connections = max(
                most_server_connections, await count_server_connections(direct_engine, bouncer)
            )
            await asyncio.sleep(0.05)

    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        LifespanManager(app),
        AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        done = asyncio.Event()
        watcher = asyncio.create_task(watch_server(done))
        async with asyncio.timeout(120):
            await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
        done.set()
        await watcher
    return LoadResult(REQUESTS, errors, statuses, most_server_connections)


def report(name: str, result: LoadResult) -> None:
    print(
        f"\n{name}: {result.errors} errors out of {result.requests} requests at concurrency "
        f"{CONCURRENCY}; statuses {dict(sorted(result.statuses.items()))}; at most "
        f"{result.most_server_connections} PostgreSQL server connections "
        f"(PgBouncer pool {SERVER_POOL_SIZE}, application pool 20)"
    )


async def test_mixed_load_through_pgbouncer_has_no_errors_with_db_pgbouncer(
    pgbouncer: PgBouncer, direct_engine: AsyncEngine
) -> None:
    result = await mixed_load(
        settings_through(pgbouncer, db_pgbouncer=True), pgbouncer, direct_engine
    )
    report("DB_PGBOUNCER=true", result)

    assert result.errors == 0, result.statuses
    assert 1 <= result.most_server_connections <= SERVER_POOL_SIZE


async def test_mixed_load_through_pgbouncer_fails_without_db_pgbouncer(
    pgbouncer: PgBouncer, direct_engine: AsyncEngine
) -> None:
    """The naive engine's prepared statements outlive their transaction: the setting matters."""
    result = await mixed_load(
        settings_through(pgbouncer, db_pgbouncer=False), pgbouncer, direct_engine
    )
    report("DB_PGBOUNCER=false", result)

    assert result.errors > 0
    assert all(status >= 500 for status in set(result.statuses) - {200, 201}), result.statuses


async def leave_prepared_statements_on_every_server_connection(bouncer: PgBouncer) -> None:
    """What any client with asyncpg's defaults does: names from `__asyncpg_stmt_1__` up stay
    prepared on the server connection after the transaction that made them."""
    url = bouncer.url
    connections = [
        await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
        )
        for _ in range(SERVER_POOL_SIZE)
    ]
    transactions = [connection.transaction() for connection in connections]
    try:
        for transaction in transactions:
            await transaction.start()  # each holds its own server connection from here on
        for connection in connections:
            for number in range(20):
                await connection.prepare(f"SELECT {number}")
    finally:
        for transaction in transactions:
            await transaction.commit()
        for connection in connections:
            await connection.close()


def alembic(*arguments: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *arguments],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "DB_PGBOUNCER": "true"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_migrations_run_through_pgbouncer_with_db_pgbouncer(
    pgbouncer: PgBouncer, migrated_database: str
) -> None:
    await leave_prepared_statements_on_every_server_connection(pgbouncer)
    through_pgbouncer = pgbouncer.url.render_as_string(hide_password=False)

    try:
        downgrade = await asyncio.to_thread(
            alembic, "downgrade", "base", database_url=through_pgbouncer
        )
        upgrade = await asyncio.to_thread(
            alembic, "upgrade", "head", database_url=through_pgbouncer
        )
    finally:
        await asyncio.to_thread(alembic, "upgrade", "head", database_url=migrated_database)

    assert downgrade.returncode == 0, downgrade.stderr[-3000:]
    assert upgrade.returncode == 0, upgrade.stderr[-3000:]
