"""The /items example resource, in both styles: Core statements and the ORM.

Pick the dependency by what the handler does: `ReadConnection` or `ReadSession` for a handler
that only reads (they refuse writes), `Connection` or `Session` for one that writes. Any mix in
one handler shares one transaction; it commits when the handler succeeds.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, delete, select

from ..db import Connection, ReadConnection, ReadSession, Session
from ..models import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH, Item

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
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None


ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]
# Routes are matched in the order they are declared: the reads, most frequent, come first.
router = APIRouter(prefix="/items", tags=["items"])

# Core statements built once; every request only binds parameters.
SELECT_PAGE = (
    select(Item.id, Item.name, Item.description)
    .order_by(Item.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)
DELETE_ONE = delete(Item).where(Item.id == bindparam("id"))


def _not_found(item_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"item {item_id} not found")


# The busiest route: Core rows as plain dicts, which the response model validates in one pass.
@router.get("", response_model=list[ItemRead])
async def list_items(
    connection: ReadConnection,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[dict[str, Any]]:
    result = await connection.execute(SELECT_PAGE, {"limit": limit, "offset": offset})
    columns, rows = tuple(result.keys()), result.all()
    # Every row has exactly one value per column: zip need not check.
    return [dict(zip(columns, row, strict=False)) for row in rows]


@router.get("/{item_id}")
async def read_item(item_id: ItemId, session: ReadSession) -> ItemRead:
    item = await session.get(Item, item_id)
    if item is None:
        raise _not_found(item_id)
    return ItemRead.model_validate(item)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_item(data: ItemCreate, session: Session) -> ItemRead:
    item = Item(**data.model_dump())
    session.add(item)
    await session.flush()  # assigns the id; the commit comes when the response is a success
    return ItemRead.model_validate(item)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(item_id: ItemId, connection: Connection) -> Response:
    result = await connection.execute(DELETE_ONE, {"id": item_id})
    if result.rowcount == 0:
        raise _not_found(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
