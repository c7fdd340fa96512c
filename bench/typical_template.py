"""(c) What most FastAPI templates ship: an AsyncSession per request, an ORM select built per
request, commit in `finally`, and the engine's defaults (pool 5 + overflow 10, no pre-ping)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy import String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

engine = create_async_engine(os.environ["DATABASE_URL"])
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None


async def get_db() -> AsyncIterator[AsyncSession]:
    session = SessionLocal()
    try:
        yield session
    finally:
        await session.commit()
        await session.close()


app = FastAPI()


@app.get("/items", response_model=list[ItemRead])
async def list_items(
    limit: int = 20,
    offset: int = 0,
    db: AsyncSession = Depends(get_db),  # noqa: B008 - written the way those templates write it
) -> list[Item]:
    result = await db.execute(select(Item).order_by(Item.id).limit(limit).offset(offset))
    return list(result.scalars().all())
