"""Turn an exhausted pool or an unreachable database into an honest 503, never a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from ..db import DatabaseUnavailableError, PoolExhaustedError

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 1


def service_unavailable(detail: str) -> JSONResponse:
    """An RFC 9457 problem document, with a hint of when to try again."""
    return JSONResponse(
        {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": status.HTTP_503_SERVICE_UNAVAILABLE,
            "detail": detail,
        },
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        media_type="application/problem+json",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def pool_exhausted_handler(request: Request, error: Exception) -> JSONResponse:
    # db.database.Place has already logged the route and the pool's state.
    return service_unavailable("every database connection is busy; retry shortly")


async def database_error_handler(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, DBAPIError) and (
        error.connection_invalidated or isinstance(error, (OperationalError, InterfaceError))
    ):
        logger.warning(
            "database unavailable for %s %s: %s",
            request.method,
            request.url.path,
            type(error.orig).__name__,
        )
        return service_unavailable("the database is unavailable; retry shortly")
    raise error


async def database_unavailable_handler(request: Request, error: Exception) -> JSONResponse:
    # db.database.Place has already logged the route and the driver's error.
    return service_unavailable("the database is unavailable; retry shortly")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PoolExhaustedError, pool_exhausted_handler)
    app.add_exception_handler(DBAPIError, database_error_handler)
    app.add_exception_handler(DatabaseUnavailableError, database_unavailable_handler)
