"""The /items example resource: plain SQL through the pooled, release-safe connection."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, delete, insert, select

from .dependencies import Connection, ReadConnection
from .models import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH, Item

MAX_ID = 2**31 - 1  # the largest value of the INTEGER primary key on every supported database


def _without_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[
        str, Field(min_length=1, max_length=NAME_MAX_LENGTH), AfterValidator(_without_nul)
    ]
    description: Annotated[
        str | None, Field(max_length=DESCRIPTION_MAX_LENGTH), AfterValidator(_without_nul)
    ] = None


class ItemRead(BaseModel):
    id: int
    name: str
    description: str | None


ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]
# Routes are matched in the order they are declared: the reads, most frequent, come first.
router = APIRouter(prefix="/items", tags=["items"])

# Built once; every request only binds parameters.
_columns = (Item.id, Item.name, Item.description)
INSERT_ITEM = insert(Item).returning(*_columns)
SELECT_PAGE = (
    select(*_columns).order_by(Item.id).limit(bindparam("limit")).offset(bindparam("offset"))
)
SELECT_ONE = select(*_columns).where(Item.id == bindparam("id"))
DELETE_ONE = delete(Item).where(Item.id == bindparam("id"))


def _not_found(item_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"item {item_id} not found")


# The response model validates the page in one pass, from plain dicts: for a page of 20, query
# included, that took a third fewer instructions than validating SQLAlchemy's RowMappings, and a
# fifth fewer than reading rows by attribute.
@router.get("", response_model=list[ItemRead])
async def list_items(
    connection: ReadConnection,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[dict[str, Any]]:
    result = await connection.execute(SELECT_PAGE, {"limit": limit, "offset": offset})
    columns, rows = tuple(result.keys()), result.all()  # all at once: cheaper than row by row
    # Not strict: every row has exactly one value per column, and the check costs ~5 µs a page.
    return [dict(zip(columns, row, strict=False)) for row in rows]


@router.get("/{item_id}")
async def read_item(item_id: ItemId, connection: ReadConnection) -> ItemRead:
    row = (await connection.execute(SELECT_ONE, {"id": item_id})).mappings().one_or_none()
    if row is None:
        raise _not_found(item_id)
    return ItemRead.model_validate(row)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_item(item: ItemCreate, connection: Connection) -> ItemRead:
    row = (await connection.execute(INSERT_ITEM, item.model_dump())).mappings().one()
    return ItemRead.model_validate(row)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(item_id: ItemId, connection: Connection) -> Response:
    result = await connection.execute(DELETE_ONE, {"id": item_id})
    if result.rowcount == 0:
        raise _not_found(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
