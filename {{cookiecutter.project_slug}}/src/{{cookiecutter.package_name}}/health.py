"""Liveness (the process answers) and readiness (the database answers, and how the pool is)."""

from __future__ import annotations

import logging
import os
from typing import Literal

import anyio
from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .database import PoolStatus, pool_status
from .dependencies import get_engine

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/health", tags=["health"])
PING = text("SELECT 1")


class Liveness(BaseModel):
    status: Literal["ok"]
    pid: int  # which worker process answered (WEB_CONCURRENCY > 1 runs several)


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]
    pool: PoolStatus


@router.get("/live")
async def live() -> Liveness:
    return Liveness(status="ok", pid=os.getpid())


@router.get("/ready", responses={503: {"model": Readiness}})
async def ready(request: Request, response: Response) -> Readiness:
    engine = get_engine(request)
    timeout: float = request.app.state.settings.db_pool_timeout
    try:
        with anyio.fail_after(timeout):
            async with engine.connect() as connection:
                await connection.execute(PING)
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        logger.warning("readiness check failed: %s", type(error).__name__)
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Readiness(status="unavailable", database="unreachable", pool=pool_status(engine))
    return Readiness(status="ok", database="ok", pool=pool_status(engine))
