"""The application factory; the engine lives exactly as long as the application's lifespan."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from .api import health, items
from .api.body_limit import BodyLimit
from .api.drain import Drain
from .api.errors import install_error_handlers
from .api.observability import RequestObservability
from .api.shedding import install_load_shedding
from .db import Database, install_unit_of_work
from .db.budget import check_connection_budget
from .db.replicas import Replicas
from .metrics import forget_dead_workers, forget_worker
from .settings import Settings
from .tracing import install_tracing, shutdown_tracing, trace_engine


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    drain = Drain()
    # The application's own metrics, so that applications in one process never share figures.
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        forget_dead_workers()
        database = Database(settings, registry=registry)
        replicas = Replicas(settings, registry)
        for pool in [database, *(replica.database for replica in replicas.replicas)]:
            trace_engine(app, pool.engine)
        try:
            await check_connection_budget(database.engine, settings)
            await replicas.start()
            app.state.database = database
            drain.start_on_sigterm(settings.shutdown_timeout)
            app.state.replicas = replicas or None
            # What start-up built (modules, the application, its pools) lives as long as the
            # application: the collector's full passes skip it while it serves.
            gc.freeze()
            yield
        finally:
            gc.unfreeze()
            await replicas.dispose()
            await database.dispose()
            shutdown_tracing(app)
            forget_worker(os.getpid())

    app = FastAPI(
        title={{ cookiecutter.project_name | python_string }},
        summary={{ cookiecutter.description | python_string }},
        lifespan=lifespan,
        # This service's telemetry is its own (api/observability.py, tracing.py): FastAPI's
        # built-in telemetry would only look for OpenTelemetry providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.drain = drain
    app.state.metrics_registry = registry
    # Each request is matched against the routers in this order: the busiest first.
    app.include_router(items.router)
    app.include_router(health.router)
    install_error_handlers(app)
    install_unit_of_work(app)
    app.add_middleware(BodyLimit, max_body_size=settings.max_body_bytes)
    install_load_shedding(app, settings, registry, drain)
    # Outermost: every response, whichever middleware gives it, gets its ID and is counted.
    app.add_middleware(RequestObservability, registry=registry)
    install_tracing(app)
    return app
