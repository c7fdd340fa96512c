"""Operational endpoints: liveness, readiness (database and pool) and Prometheus metrics."""

from __future__ import annotations

import logging
import os
from typing import Literal

import anyio
from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import Executable, literal_column, select
from sqlalchemy.exc import SQLAlchemyError

from ..db import DatabaseUnavailableError, PoolExhaustedError, UnitOfWork, get_database
from ..db.dependencies import get_replicas
from ..db.engine import PoolStatus
from ..db.replicas import ReplicaStatus
from ..metrics import exposition

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
PING: Executable = select(literal_column("1"))


class Liveness(BaseModel):
    status: Literal["ok"]
    pid: int  # which worker process answered (WEB_CONCURRENCY > 1 runs several)


class Readiness(BaseModel):
    # 503 only for "unavailable" (the database is unreachable) and "draining" (SIGTERM): a busy
    # pod stays in rotation, or its load would move to the others and overload them in turn.
    status: Literal["ok", "busy", "unavailable", "draining"]
    database: Literal["ok", "unreachable", "busy"]
    pool: PoolStatus  # the primary's
    # One per read replica; a replica never makes the service unready (reads use the primary).
    replicas: list[ReplicaStatus] = []


@router.get("/health/live")
async def live() -> Liveness:
    return Liveness(status="ok", pid=os.getpid())


@router.get("/health/ready", responses={503: {"model": Readiness}})
async def ready(request: Request, response: Response) -> Readiness:
    """Answers within READY_TIMEOUT, also when the pool is exhausted or the database is down."""
    database = get_database(request)
    timeout = database.settings.ready_timeout
    state: Literal["ok", "unreachable", "busy"] = "ok"
    try:
        with anyio.fail_after(timeout):
            # The queue gives up first, so that a busy pool reads as busy, not as unreachable.
            work = UnitOfWork(database, "readiness check", max_wait=timeout * 0.8)
            async with work:
                await work.read_connection().execute(PING)
    except PoolExhaustedError:
        state = "busy"
    except (DatabaseUnavailableError, SQLAlchemyError, OSError, TimeoutError) as error:
        logger.warning("readiness check failed: %s", type(error).__name__)
        state = "unreachable"
    overall: Literal["ok", "busy", "unavailable", "draining"] = (
        "unavailable" if state == "unreachable" else state
    )
    if request.app.state.drain.draining:
        overall = "draining"
    if overall in ("unavailable", "draining"):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    replicas = get_replicas(request)
    return Readiness(
        status=overall,
        database=state,
        pool=database.status(),
        replicas=replicas.status() if replicas is not None else [],
    )


@router.get(
    "/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}}
)
async def metrics(request: Request) -> Response:
    """The whole process group's figures, whichever worker answers (see metrics.py)."""
    return Response(exposition(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
