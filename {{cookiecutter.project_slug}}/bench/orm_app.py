"""The service plus `GET /orm/items`: the `/items` page through `ReadSession` and the ORM.

A benchmark target, not a route of the service: the template's comparison run serves it with
`uvicorn --factory bench.orm_app:create_app` to measure what ORM objects cost on the same unit
of work, against the Core route `GET /items` and against the usual `AsyncSession` per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from sqlalchemy import bindparam, select

from {{ cookiecutter.package_name }}.api.items import MAX_ID, ItemRead
from {{ cookiecutter.package_name }}.app import create_app as create_service
from {{ cookiecutter.package_name }}.db import ReadSession
from {{ cookiecutter.package_name }}.models import Item
from {{ cookiecutter.package_name }}.settings import Settings

router = APIRouter(prefix="/orm/items", tags=["benchmark"])
# Built once, as the service builds its Core statements: each request only binds parameters.
SELECT_PAGE = select(Item).order_by(Item.id).limit(bindparam("limit")).offset(bindparam("offset"))


@router.get("", response_model=list[ItemRead])
async def list_items_through_the_orm(
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Sequence[Item]:
    return (await session.scalars(SELECT_PAGE, {"limit": limit, "offset": offset})).all()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service(settings)
    app.include_router(router)
    return app
