"""The application factory; the engine lives exactly as long as the application's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .api import health, items
from .api.errors import install_error_handlers
from .db import Database, install_unit_of_work
from .db.budget import check_connection_budget
from .settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        try:
            await check_connection_budget(database.engine, settings)
            app.state.database = database
            yield
        finally:
            await database.dispose()

    app = FastAPI(
        title={{ cookiecutter.project_name | python_string }},
        summary={{ cookiecutter.description | python_string }},
        lifespan=lifespan,
    )
    # Each request is matched against the routers in this order: the busiest first.
    app.include_router(items.router)
    app.include_router(health.router)
    install_error_handlers(app)
    install_unit_of_work(app)
    return app
