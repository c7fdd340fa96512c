"""The engine is built from the settings, fits the driver, and lives in the lifespan."""

from __future__ import annotations

import asyncio
import gc

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.db.engine import create_engine
from {{ cookiecutter.package_name }}.settings import Settings


async def test_pool_settings_from_environment_reach_the_engine(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", migrated_database)
    monkeypatch.setenv("DB_POOL_SIZE", "3")
    monkeypatch.setenv("DB_MAX_OVERFLOW", "4")
    monkeypatch.setenv("DB_POOL_TIMEOUT", "1.5")
    monkeypatch.setenv("DB_POOL_RECYCLE", "600")
    monkeypatch.setenv("DB_POOL_PRE_PING", "true")
    app = create_app()

    async with LifespanManager(app):
        pool = app.state.database.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool._timeout, pool._recycle, pool._pre_ping) == (
            3,
            4,
            1.5,
            600,
            True,
        )
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
            ready = (await client.get("/health/ready")).json()
        assert ready["pool"]["size"] == 3


async def test_the_lifespan_opens_the_engine_and_closes_its_server_connections(
    postgres_url: str, settings: Settings, admin: AsyncEngine
) -> None:
    app = create_app(settings)
    assert not hasattr(app.state, "database")

    async with LifespanManager(app):
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
            await asyncio.gather(*(client.get("/items") for _ in range(4)))
        during = await server_sessions(admin, settings.db_application_name)

    assert 1 <= during <= settings.db_pool_size
    assert await server_sessions(admin, settings.db_application_name) == 0


async def test_what_start_up_built_is_kept_out_of_full_collections_while_serving(
    settings: Settings,
) -> None:
    """Frozen while the application serves, so that the collector's full passes skip the
    modules, the application and its pools; given back to the collector at shutdown."""
    app = create_app(settings)

    async with LifespanManager(app):
        frozen = gc.get_freeze_count()

    assert frozen > 10_000
    assert gc.get_freeze_count() == 0


async def server_sessions(admin: AsyncEngine, application_name: str) -> int:
    async with admin.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        )
    return int(count or 0)


async def test_in_memory_sqlite_gets_one_shared_connection_without_sizing() -> None:
    """StaticPool rejects pool_size with a TypeError: the engine must not pass it."""
    engine = create_engine(Settings(database_url="sqlite+aiosqlite:///:memory:", db_pool_size=7))
    try:
        assert isinstance(engine.pool, StaticPool)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_null_pool_mode_opens_a_connection_per_checkout(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"db_pool_mode": "null"}))

    async with LifespanManager(app):
        assert isinstance(app.state.database.engine.pool, NullPool)
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.post("/items", json={"name": "unpooled"})).status_code == 201
            ready = await client.get("/health/ready")
    assert ready.json()["pool"] == {
        "size": 0,
        "checked_in": 0,
        "checked_out": 0,
        "overflow": 0,
        "waiting": 0,
    }
