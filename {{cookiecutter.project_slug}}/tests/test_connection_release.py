"""Every database dependency gives its connection and its place back: on success, error and
cancellation, before the response is sent."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg
import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Request
from httpx import ASGITransport, AsyncClient
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Executable, event, insert, select
from starlette.types import Message, Receive, Scope, Send

from {{ cookiecutter.package_name }}.api.items import MAX_ID
from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.db import Connection, ReadConnection
from {{ cookiecutter.package_name }}.models import Item
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import VIEWS, WRITERS, pool_of, serving

probes = APIRouter(prefix="/probe")


async def use(view_name: str, view: Any) -> None:
    """A read through any view, and a write through a read-write one (something to undo)."""
    if view_name == "connection":
        await view.execute(insert(Item).values(name="doomed"))
    elif view_name == "session":
        view.add(Item(name="doomed"))
        await view.flush()
    await view.execute(select(Item.id).limit(1))


def route_using(view_name: str, then: Callable[[Request], Awaitable[None]]) -> Callable[..., Any]:
    async def handler(view: Any, request: Request) -> None:
        await use(view_name, view)
        await then(request)

    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("view", inspect.Parameter.KEYWORD_ONLY, annotation=VIEWS[view_name]),
            inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
        ]
    )
    return handler


async def succeed(_: Request) -> None:
    return


async def not_found(_: Request) -> None:
    raise HTTPException(404, detail="not found after using the database")


async def crash(_: Request) -> None:
    raise RuntimeError("handler crashed after using the database")


async def hold_until_cancelled(request: Request) -> None:
    request.app.state.holding.set()
    await asyncio.sleep(60)


for name in VIEWS:
    for outcome, then in [
        ("succeed", succeed),
        ("not-found", not_found),
        ("crash", crash),
        ("hold", hold_until_cancelled),
    ]:
        probes.add_api_route(f"/{name}/{outcome}", route_using(name, then), methods=["POST"])


@probes.post("/write-then-fail/{how}")
async def write_then_fail(how: str, connection: Connection) -> None:
    await connection.execute(insert(Item).values(name="doomed"))
    if how == "http":
        raise HTTPException(409, detail="conflict after a write")
    raise RuntimeError("handler crashed after a write")


async def in_transaction_after(
    request: Request, statement: Executable, run: Callable[[Executable], Awaitable[object]]
) -> bool:
    """Right after `statement`: does the driver hold a transaction open (not SQLAlchemy's view)?"""
    states: list[bool] = []

    def record(connection: SyncConnection, *_: object) -> None:
        driver = connection.connection.driver_connection
        assert driver is not None
        in_transaction = (
            driver.is_in_transaction()
            if isinstance(driver, asyncpg.Connection)
            else driver.in_transaction
        )
        states.append(bool(in_transaction))

    engine = request.app.state.database.engine.sync_engine
    event.listen(engine, "after_cursor_execute", record)
    try:
        await run(statement)
    finally:
        event.remove(engine, "after_cursor_execute", record)
    assert len(states) == 1
    return states[0]


@probes.get("/in-transaction/read-only")
async def read_only_transaction_state(reads: ReadConnection, request: Request) -> bool:
    return await in_transaction_after(request, select(Item.id).limit(1), reads.execute)


@probes.get("/in-transaction/read-write")
async def read_write_transaction_state(connection: Connection, request: Request) -> bool:
    statement = insert(Item).values(name="probe")
    return await in_transaction_after(request, statement, connection.execute)


@probes.get("/checked-out-between-reads")
async def checked_out_between_reads(reads: ReadConnection, request: Request) -> list[int]:
    """How many connections are lent after each of two reads, while the handler still runs."""
    lent = []
    for _ in range(2):
        await reads.execute(select(Item.id).limit(1))
        lent.append(pool_of(request.app).checked_out)
    return lent


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The real application plus probe routes that use the real dependency."""
    app = create_app(settings)
    app.include_router(probes)
    app.state.holding = asyncio.Event()
    return app


async def names(client: AsyncClient) -> list[str]:
    return [item["name"] for item in (await client.get("/items", params={"limit": 100})).json()]


@pytest.mark.parametrize("view", VIEWS)
async def test_connection_and_place_return_after_success(
    client: AsyncClient, running_app: FastAPI, view: str
) -> None:
    assert (await client.post(f"/probe/{view}/succeed")).status_code == 200

    assert pool_of(running_app).checked_out == 0
    assert running_app.state.database.queue.admitted == 0
    assert ("doomed" in await names(client)) is (view in WRITERS)


async def test_read_gives_its_connection_back_as_soon_as_its_statement_has_run(
    client: AsyncClient,
) -> None:
    """A read handler holds its place at the pool, not a connection, while it works on rows."""
    response = await client.get("/probe/checked-out-between-reads")

    assert response.status_code == 200
    assert response.json() == [0, 0]


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize(("outcome", "status"), [("not-found", 404), ("crash", 500)])
async def test_connection_and_place_return_and_writes_roll_back_on_error(
    client: AsyncClient, running_app: FastAPI, view: str, outcome: str, status: int
) -> None:
    assert (await client.post(f"/probe/{view}/{outcome}")).status_code == status

    assert pool_of(running_app).checked_out == 0
    assert running_app.state.database.queue.admitted == 0
    assert "doomed" not in await names(client)


async def test_many_more_requests_than_connections_all_succeed(settings: Settings) -> None:
    """Pool 2 + 0 overflow: every request gives its place and connection back, whatever its
    outcome. (Waits of up to 10 s: on a busy machine 20 requests at once can take longer than
    the fixture's 1 s to pass through 2 connections, which is not what this test is about.)"""
    patient = settings.model_copy(update={"db_pool_timeout": 10})
    async with serving(patient, probes) as (app, client):
        statuses = [(await client.get(f"/items/{MAX_ID}")).status_code for _ in range(10)]
        statuses += [
            (await client.post("/probe/write-then-fail/http")).status_code for _ in range(10)
        ]
        statuses += [
            response.status_code
            for response in await asyncio.gather(*(client.get("/items") for _ in range(20)))
        ]

        assert statuses == [404] * 10 + [409] * 10 + [200] * 20
        assert pool_of(app).checked_out == 0
        assert app.state.database.queue.admitted == 0


async def test_read_connection_runs_without_a_transaction_and_writes_in_one(
    client: AsyncClient,
) -> None:
    """Reads skip BEGIN/COMMIT round trips; writes keep their all-or-nothing transaction."""
    assert (await client.get("/probe/in-transaction/read-only")).json() is False
    assert (await client.get("/probe/in-transaction/read-write")).json() is True


@pytest.mark.parametrize("view", VIEWS)
async def test_connection_is_back_in_pool_before_response_is_sent(
    running_app: FastAPI, view: str
) -> None:
    lent_while_sending: list[tuple[int, int]] = []

    async def watch_sending(scope: Scope, receive: Receive, send: Send) -> None:
        async def spy(message: Message) -> None:
            if message["type"].startswith("http.response"):
                lent = pool_of(running_app).checked_out
                lent_while_sending.append((lent, running_app.state.database.queue.admitted))
            await send(message)

        await running_app(scope, receive, spy)

    async with AsyncClient(
        transport=ASGITransport(app=watch_sending), base_url="http://test"
    ) as client:
        response = await client.post(f"/probe/{view}/succeed")

    assert response.status_code == 200
    assert lent_while_sending, "the response was never sent"
    assert set(lent_while_sending) == {(0, 0)}


@pytest.mark.parametrize("view", VIEWS)
async def test_connection_returns_to_pool_when_request_is_cancelled(
    client: AsyncClient, running_app: FastAPI, view: str
) -> None:
    """Cancelled the way Starlette cancels a disconnected client: by a cancel scope that stays
    cancelled, so any unshielded await in the clean-up is cancelled too."""
    async with anyio.create_task_group() as requests:
        requests.start_soon(client.post, f"/probe/{view}/hold")
        with anyio.fail_after(5):
            await running_app.state.holding.wait()
        assert running_app.state.database.queue.admitted == 1
        assert pool_of(running_app).checked_out == (1 if view in WRITERS else 0)
        requests.cancel_scope.cancel()

    assert pool_of(running_app).checked_out == 0
    assert running_app.state.database.queue.admitted == 0
    assert "doomed" not in await names(client)
