"""Bring the configured database to the latest migration and give the benchmark rows to read."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.models import Item
from {{ cookiecutter.package_name }}.settings import Settings

ALEMBIC_INI = Path("alembic.ini")
ROW_PREFIX = "bench-item-"


def migrate() -> None:
    if not ALEMBIC_INI.is_file():
        raise FileNotFoundError(
            "alembic.ini not found: run the benchmark from the project directory"
        )
    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def ensure_rows(settings: Settings, count: int) -> int:
    """Add rows until the items table holds at least `count`; return how many were added."""
    return asyncio.run(_ensure_rows(settings, count))


async def _ensure_rows(settings: Settings, count: int) -> int:
    engine = create_async_engine(settings.url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            present = (await connection.scalar(select(func.count()).select_from(Item))) or 0
            missing = max(count - present, 0)
            if missing:
                rows = [
                    {"name": f"{ROW_PREFIX}{n}", "description": "seeded by the benchmark"}
                    for n in range(present, present + missing)
                ]
                await connection.execute(insert(Item), rows)
            return missing
    finally:
        await engine.dispose()
