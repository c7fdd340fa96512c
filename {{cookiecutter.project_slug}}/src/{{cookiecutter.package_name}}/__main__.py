"""`python -m <package>`: validate the settings, then serve with uvicorn."""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from pydantic import ValidationError

from .db.budget import ConnectionBudgetExceededError, check_connection_budget
from .db.engine import create_engine
from .db.replicas import replica_settings
from .logging_config import log_config
from .metrics import process_group_directory
from .settings import Settings, describe_validation_error


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_validation_error(error), file=sys.stderr)
        return 2
    refusal = budget_refusal(settings)
    if refusal:
        print(f"Refusing to start: {refusal}", file=sys.stderr)
        return 2
    # uvicorn applies log_config in each worker too; the workers find the metrics directory
    # in the environment they are spawned with.
    with process_group_directory(settings.web_concurrency):
        uvicorn.run(
            f"{__package__}.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=log_config(settings),
            # Above INFO no access line is written: uvicorn then does not format one per request.
            access_log=settings.log_level in {"debug", "info"},
            workers=settings.web_concurrency,
        )
    return 0


def budget_refusal(settings: Settings) -> str | None:
    """With DB_BUDGET_STRICT, check every server's connection budget before any worker starts,
    so that a refusal is one line here rather than a traceback from each worker's start-up."""
    if not settings.db_budget_strict:
        return None

    async def check(server: Settings, name: str) -> None:
        engine = create_engine(server)
        try:
            await check_connection_budget(engine, server, server=name)
        finally:
            await engine.dispose()

    servers = [(settings, "primary")] + [
        (replica_settings(settings, url), f"replica-{number}")
        for number, url in enumerate(settings.replica_urls, start=1)
    ]
    try:
        for server, name in servers:
            asyncio.run(check(server, name))
    except ConnectionBudgetExceededError as error:
        return str(error)
    return None


if __name__ == "__main__":
    sys.exit(main())
