"""Honest answers for database failures: 503 for what passes, 409 for conflicts, 500 for bugs.

- 503 with `Retry-After`: no connection in time, the server unreachable, a connection lost, a
  statement timed out, a serialization failure, a deadlock, a lock not available, too many
  connections, the server shutting down, SQLite's "database is locked".
- 409: a constraint violated (SQLSTATE class 23: unique, foreign key, not null, check).
- 500: anything else from the database (SQL syntax, a missing table or column) and a write through
  a read-only dependency; the driver's message and the stack go to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError

from ..db import DatabaseUnavailableError, PoolExhaustedError, ReadOnlyError
from ..db.dependencies import route_of

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 1
# PostgreSQL conditions that pass by themselves: the same request may well succeed if retried.
TRANSIENT_SQLSTATES = {
    "40001",  # serialization failure
    "40P01",  # deadlock detected
    "55P03",  # lock not available (NOWAIT, lock_timeout)
    "57014",  # statement cancelled: DB_STATEMENT_TIMEOUT
    "53300",  # too many connections
    "57P01",  # the server is shutting down
}
SQLITE_TRANSIENT = {"SQLITE_BUSY", "SQLITE_LOCKED"}  # "database is locked"


def problem(status_code: int, title: str, detail: str) -> JSONResponse:
    """An RFC 9457 problem document."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status_code == 503 else None  # noqa: PLR2004
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status_code, "detail": detail},
        status_code=status_code,
        media_type="application/problem+json",
        headers=headers,
    )


def service_unavailable(detail: str) -> JSONResponse:
    """503 with a hint of when to try again."""
    return problem(status.HTTP_503_SERVICE_UNAVAILABLE, "Service Unavailable", detail)


def internal_error() -> JSONResponse:
    return problem(
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        "Internal Server Error",
        "the service failed to handle the request; the error is in its log",
    )


def kind_of_failure(error: DBAPIError) -> Literal["transient", "conflict", "bug"]:
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None)
    if error.connection_invalidated or isinstance(error, InterfaceError):
        return "transient"
    if sqlstate is not None:
        if sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08"):
            return "transient"
        return "conflict" if sqlstate.startswith("23") else "bug"
    if getattr(original, "sqlite_errorname", None) in SQLITE_TRANSIENT:
        return "transient"
    return "conflict" if isinstance(error, IntegrityError) else "bug"


async def pool_exhausted_handler(request: Request, error: Exception) -> JSONResponse:
    # db.database.Place has already logged the route and the pool's state.
    return service_unavailable("every database connection is busy; retry shortly")


async def database_unavailable_handler(request: Request, error: Exception) -> JSONResponse:
    # db.database.Place has already logged the route and the driver's error.
    return service_unavailable("the database is unavailable; retry shortly")


async def database_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DBAPIError)
    kind = kind_of_failure(error)
    name = type(error.orig).__name__
    if kind == "transient":
        logger.warning("database unavailable for %s: %s", route_of(request), name)
        return service_unavailable("the database could not serve the request now; retry shortly")
    if kind == "conflict":
        logger.info("constraint violated in %s: %s", route_of(request), name)
        return problem(
            status.HTTP_409_CONFLICT,
            "Conflict",
            "the request conflicts with the stored data (a uniqueness or other constraint)",
        )
    logger.error("database error in %s: %s", route_of(request), error.orig, exc_info=error)
    return internal_error()


async def timeout_handler(request: Request, error: Exception) -> JSONResponse:
    logger.warning("no answer in time for %s: %s", route_of(request), error or "timed out")
    return service_unavailable("the database did not answer in time; retry shortly")


async def read_only_handler(request: Request, error: Exception) -> JSONResponse:
    logger.error("%s: %s", route_of(request), error, exc_info=error)
    return internal_error()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PoolExhaustedError, pool_exhausted_handler)
    app.add_exception_handler(DatabaseUnavailableError, database_unavailable_handler)
    app.add_exception_handler(DBAPIError, database_error_handler)
    app.add_exception_handler(TimeoutError, timeout_handler)
    app.add_exception_handler(ReadOnlyError, read_only_handler)
