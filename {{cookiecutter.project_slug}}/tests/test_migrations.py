"""Alembic migrations build the schema on the target database and match the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from .conftest import PROJECT_ROOT, alembic_config


@pytest.fixture
def database_env(migrated_database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", migrated_database)
    yield migrated_database
    command.upgrade(alembic_config(), "head")


def table_names(url: str) -> set[str]:
    async def inspect_tables() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
                return set(names)
        finally:
            await engine.dispose()

    return asyncio.run(inspect_tables())


def test_downgrade_drops_and_upgrade_recreates_the_schema(database_env: str) -> None:
    command.downgrade(alembic_config(), "base")
    assert "items" not in table_names(database_env)

    command.upgrade(alembic_config(), "head")
    assert "items" in table_names(database_env)


def test_models_match_migrations(database_env: str) -> None:
    command.check(alembic_config())


def test_documented_alembic_command_upgrades(database_env: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": database_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
