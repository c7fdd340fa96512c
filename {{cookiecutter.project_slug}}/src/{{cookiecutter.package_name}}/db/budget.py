"""Check at start-up that every worker's pool fits in the server's connection limit.

Each server counts on its own: the primary and every read replica get a pool of the same size
from each worker, so each must allow WEB_CONCURRENCY x (DB_POOL_SIZE + DB_MAX_OVERFLOW).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..settings import Settings

logger = logging.getLogger(__name__)
LIMITS = text(
    "SELECT current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " coalesce(current_setting('reserved_connections', true)::int, 0)"
)


class ConnectionBudgetExceededError(RuntimeError):
    """Raised instead of a warning when DB_BUDGET_STRICT is true."""


@dataclass(frozen=True)
class ConnectionBudget:
    workers: int
    per_worker: int
    max_connections: int
    reserved: int

    @property
    def needed(self) -> int:
        return self.workers * self.per_worker

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    def describe(self) -> str:
        formula = f"WEB_CONCURRENCY ({self.workers}) x (DB_POOL_SIZE + DB_MAX_OVERFLOW)"
        server = f"max_connections {self.max_connections} - {self.reserved} reserved"
        return (
            f"{formula} ({self.per_worker}) = {self.needed} connections,"
            f" but the server allows {self.available} ({server})"
        )


async def read_budget(engine: AsyncEngine, settings: Settings) -> ConnectionBudget:
    async with engine.connect() as connection:
        max_connections, superuser_reserved, reserved = (await connection.execute(LIMITS)).one()
    return ConnectionBudget(
        workers=settings.web_concurrency,
        per_worker=settings.db_pool_size + settings.db_max_overflow,
        max_connections=max_connections,
        reserved=superuser_reserved + reserved,
    )


async def check_connection_budget(
    engine: AsyncEngine, settings: Settings, server: str = "primary"
) -> None:
    """Warn (or refuse to start) when the pools could ask PostgreSQL for more than it allows.

    `server` names the server in the messages: "primary", or a replica's name.
    """
    if engine.dialect.name != "postgresql" or settings.db_pool_mode == "null":
        return
    if settings.db_pgbouncer:
        # The pools' connections count against PgBouncer's max_client_conn; only PgBouncer's
        # own pools count against max_connections (see the README's "Scaling out").
        logger.info("connection budget: not checked behind PgBouncer (DB_PGBOUNCER=true)")
        return
    try:
        # Start-up waits no longer than one connection attempt: an unanswering server is
        # reported by readiness, not by a service that never starts.
        async with asyncio.timeout(settings.db_connect_timeout):
            budget = await read_budget(engine, settings)
    except (SQLAlchemyError, OSError) as error:  # TimeoutError is an OSError
        logger.warning(
            "could not read the connection limit of the %s: %s", server, type(error).__name__
        )
        return
    if budget.needed <= budget.available:
        logger.info(
            "connection budget of the %s: %d of %d connections",
            server,
            budget.needed,
            budget.available,
        )
        return
    if settings.db_budget_strict:
        raise ConnectionBudgetExceededError(
            f"the {server}: {budget.describe()}; DB_BUDGET_STRICT is set"
        )
    logger.warning("connection budget exceeded on the %s: %s", server, budget.describe())
