"""One unit of work per request: any mix of the four dependencies, reads that see the request's
own writes, a commit only for a successful response, and read-only views that cannot write."""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import pytest
from fastapi import APIRouter, Depends, FastAPI, Response
from fastapi.exceptions import DependencyScopeError
from fastapi.responses import JSONResponse, RedirectResponse
from httpx import AsyncClient
from pydantic import SecretStr
from sqlalchemy import (
    Executable,
    MetaData,
    Table,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateTable

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.db import (
    Connection,
    ReadConnection,
    ReadOnlyError,
    ReadSession,
    Session,
    UnitOfWork,
)
from {{ cookiecutter.package_name }}.models import Item
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import VIEWS, WRITERS, pool_of, through_pgbouncer
from .conftest import serving as serving_app
from .pgbouncer import PgBouncer
from .proxy import SeveringProxy

COMBINATIONS = [
    combination for size in range(1, 5) for combination in itertools.combinations(VIEWS, size)
]


def count_of(name: str) -> Executable:
    return select(func.count()).select_from(Item).where(Item.name == name)


async def counted(view_name: str, view: Any, name: str) -> int:
    """How many items named `name` this view sees, in its own style (Core or ORM)."""
    if view_name in ("connection", "read_connection"):
        return int((await view.execute(count_of(name))).scalar_one())
    return int(await view.scalar(count_of(name)))


def combination_route(names: tuple[str, ...]) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A handler that asks for exactly `names` among the four dependencies: each writer writes
    one item, then every view counts what the request wrote."""

    async def handler(**views: Any) -> dict[str, Any]:
        name = f"mix-{uuid4().hex}"
        if "connection" in views:
            await views["connection"].execute(insert(Item).values(name=name))
        if "session" in views:
            views["session"].add(Item(name=name))
            await views["session"].flush()
        await asyncio.sleep(0.01)  # hold the place a while, so requests overlap
        seen = {view: await counted(view, views[view], name) for view in views}
        return {"name": name, "seen": seen}

    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=VIEWS[name])
            for name in names
        ]
    )
    return handler


def combination_path(names: tuple[str, ...]) -> str:
    return "/mix/" + "+".join(names)


mixes = APIRouter()
for combination in COMBINATIONS:
    mixes.add_api_route(combination_path(combination), combination_route(combination))

probes = APIRouter(prefix="/probe")


@probes.post("/returns/{status_code}")
async def write_then_return(status_code: int, connection: Connection, session: Session) -> Response:
    """Writes through both writers, then returns (does not raise) a response of that status."""
    await connection.execute(insert(Item).values(name=f"returned-{status_code}-core"))
    session.add(Item(name=f"returned-{status_code}-orm"))
    if 300 <= status_code < 400:
        return RedirectResponse("/items", status_code=status_code)
    return JSONResponse({"status": status_code}, status_code=status_code)


@probes.post("/sets-status/{status_code}", status_code=201)
async def write_then_set_status(status_code: int, session: Session, response: Response) -> None:
    session.add(Item(name=f"set-{status_code}"))
    response.status_code = status_code


@probes.post("/failing-flush")
async def write_then_fail_at_flush(connection: Connection, session: Session) -> dict[str, str]:
    """The Core write succeeds; the ORM one can only fail when it is flushed, after the handler."""
    await connection.execute(insert(Item).values(name="half-written"))
    existing = (await connection.execute(select(Item.id).limit(1))).scalar_one()
    session.add(Item(id=existing, name="duplicate key"))
    return {"status": "handler done"}


@probes.post("/read-your-writes/orm")
async def orm_read_your_writes(session: Session, reads: ReadSession) -> dict[str, int]:
    session.add(Item(name="pending"))  # not flushed: a read must still see it
    return {
        "read_session": int(await reads.scalar(count_of("pending"))),
        "session": int(await session.scalar(count_of("pending"))),
    }


@probes.post("/read-your-writes/core")
async def core_read_your_writes(connection: Connection, reads: ReadConnection) -> dict[str, int]:
    await connection.execute(insert(Item).values(name="written"))
    return {"read_connection": int((await reads.execute(count_of("written"))).scalar_one())}


def writes_through(view_name: str, how: str) -> Callable[[Any], Awaitable[object]]:
    """One way of writing, attempted through a read-only view."""
    name = f"sneaky-{how}"
    statements: dict[str, Executable] = {
        "insert": insert(Item).values(name=name),
        "update": update(Item).values(name=name),
        "delete": delete(Item),
        "text-insert": text("INSERT INTO items (name) VALUES (:name)").bindparams(name=name),
        "cte-insert": select(insert(Item).values(name=name).returning(Item.id).cte("written").c.id),
        "ddl": CreateTable(Table("sneaky_table", MetaData(), *[])),
        "text-ddl": text("CREATE TABLE sneaky_table (id integer)"),
    }
    if how == "orm-add":

        async def add_and_flush(view: Any) -> None:
            view.add(Item(name=name))
            await view.flush()

        return add_and_flush
    if how == "orm-change":

        async def change_a_loaded_item(view: Any) -> None:
            item = await view.scalar(select(Item).limit(1))
            item.name = name
            await view.execute(select(Item.id))  # the next read would write the change back

        return change_a_loaded_item
    statement = statements[how]
    return lambda view: view.execute(statement)


WRITE_ATTEMPTS = ["insert", "update", "delete", "text-insert", "cte-insert", "ddl", "text-ddl"]
READ_ONLY_CASES = [("read_connection", how) for how in WRITE_ATTEMPTS] + [
    ("read_session", how) for how in [*WRITE_ATTEMPTS, "orm-add", "orm-change"]
]


def refusal_route(view_name: str, how: str, *, beside_a_writer: bool) -> Callable[..., Any]:
    attempt = writes_through(view_name, how)

    async def handler(**views: Any) -> JSONResponse:
        try:
            await attempt(views[view_name])
        except ReadOnlyError as error:
            return JSONResponse({"refused": str(error)}, status_code=409)
        return JSONResponse({"refused": None}, status_code=200)

    parameters = [
        inspect.Parameter(view_name, inspect.Parameter.KEYWORD_ONLY, annotation=VIEWS[view_name])
    ]
    if beside_a_writer:
        parameters.append(
            inspect.Parameter("writer", inspect.Parameter.KEYWORD_ONLY, annotation=Connection)
        )
    handler.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return handler


for view_name, how in READ_ONLY_CASES:
    for beside_a_writer in (False, True):
        probes.add_api_route(
            f"/refuse/{view_name}/{how}/{'beside' if beside_a_writer else 'alone'}",
            refusal_route(view_name, how, beside_a_writer=beside_a_writer),
            methods=["POST"],
        )


@probes.get("/gather")
async def reads_started_together(reads: ReadConnection, orm: ReadSession) -> list[int]:
    core = [reads.scalar(select(func.count()).select_from(Item)) for _ in range(3)]
    objects = [orm.scalar(select(func.count()).select_from(Item)) for _ in range(3)]
    return list(await asyncio.gather(*core, *objects))


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    async with serving_app(settings, mixes, probes) as served:
        yield served


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    app.include_router(mixes)
    app.include_router(probes)
    return app


async def item_names(app: FastAPI) -> list[str]:
    async with app.state.database.engine.connect() as connection:
        return list((await connection.execute(select(Item.name))).scalars())


async def run_mix(
    app: FastAPI, client: AsyncClient, names: tuple[str, ...], pool_size: int
) -> None:
    """Concurrency 4x the pool: every request succeeds, every view sees the request's writes,
    and the pool never lends more than its size."""
    most_lent = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal most_lent
        while not stop.is_set():
            most_lent = max(most_lent, pool_of(app).checked_out)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    responses = await asyncio.gather(
        *(client.get(combination_path(names)) for _ in range(4 * pool_size))
    )
    stop.set()
    await watcher

    assert [response.status_code for response in responses] == [200] * (4 * pool_size), [
        response.text for response in responses if response.status_code != 200
    ]
    writes = sum(name in WRITERS for name in names)
    for body in (response.json() for response in responses):
        assert body["seen"] == dict.fromkeys(names, writes), body
    assert most_lent <= pool_size
    assert pool_of(app).checked_out == 0
    assert app.state.database.queue.admitted == 0
    stored = await item_names(app)
    for body in (response.json() for response in responses):
        assert stored.count(body["name"]) == writes


@pytest.mark.parametrize("pool_size", [1, 2])
@pytest.mark.parametrize("names", COMBINATIONS, ids="+".join)
async def test_any_mix_of_dependencies_in_one_handler_shares_one_place(
    settings: Settings, names: tuple[str, ...], pool_size: int
) -> None:
    """Two places per request would deadlock here: with the pool at 1, a handler that asks for
    a writer and a reader would wait for itself until the 503."""
    mixed = settings.model_copy(update={"db_pool_size": pool_size, "db_pool_timeout": 10})
    async with serving(mixed) as (app, client):
        await run_mix(app, client, names, pool_size)


async def test_any_mix_of_dependencies_works_behind_pgbouncer(
    pgbouncer: PgBouncer, settings: Settings
) -> None:
    through = through_pgbouncer(settings, pgbouncer).model_copy(update={"db_pool_timeout": 10})
    async with serving(through) as (app, client):
        for names in COMBINATIONS:
            await run_mix(app, client, names, through.db_pool_size)


async def test_reads_started_together_take_turns_on_the_request_s_one_place(
    settings: Settings,
) -> None:
    """`asyncio.gather` over reads must not make one request hold two connections."""
    async with serving(settings.model_copy(update={"db_pool_size": 1})) as (app, client):
        responses = await asyncio.gather(*(client.get("/probe/gather") for _ in range(4)))

        assert [response.status_code for response in responses] == [200] * 4
        assert pool_of(app).checked_out == 0


async def test_a_unit_of_work_refuses_use_after_it_ended(running_app: FastAPI) -> None:
    """A background task or a streamed body would otherwise bypass the queue."""
    async with UnitOfWork(running_app.state.database, "test") as work:
        reads = work.read_connection()
        await reads.execute(select(Item.id))

    with pytest.raises(RuntimeError, match="has ended"):
        await reads.execute(select(Item.id))
    with pytest.raises(RuntimeError, match="has ended"):
        await work.session()


@pytest.mark.parametrize("view_name", VIEWS)
def test_a_dependency_that_outlives_the_handler_cannot_take_a_view(view_name: str) -> None:
    """A request-scoped generator dependency runs its clean-up after the response, when the
    unit of work has ended: FastAPI refuses the route as it is declared, not at run time."""

    async def audited(view: Any) -> AsyncIterator[None]:
        yield
        await view.execute(select(1))

    audited.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("view", inspect.Parameter.KEYWORD_ONLY, annotation=VIEWS[view_name])]
    )
    router = APIRouter()

    with pytest.raises(DependencyScopeError, match="scope"):
        router.get("/audited", dependencies=[Depends(audited)])(lambda: None)


async def test_core_reads_in_a_writing_request_see_its_writes(client: AsyncClient) -> None:
    response = await client.post("/probe/read-your-writes/core")

    assert response.json() == {"read_connection": 1}


async def test_orm_reads_in_a_writing_request_see_its_pending_writes(client: AsyncClient) -> None:
    response = await client.post("/probe/read-your-writes/orm")

    assert response.json() == {"read_session": 1, "session": 1}


@pytest.mark.parametrize("status_code", [400, 404, 409, 422, 500, 503])
async def test_a_returned_error_response_commits_nothing(
    client: AsyncClient, running_app: FastAPI, status_code: int
) -> None:
    response = await client.post(f"/probe/returns/{status_code}")

    assert response.status_code == status_code
    assert not [name for name in await item_names(running_app) if name.startswith("returned")]
    assert pool_of(running_app).checked_out == 0


@pytest.mark.parametrize("status_code", [200, 201, 303])
async def test_a_returned_success_or_redirect_commits(
    client: AsyncClient, running_app: FastAPI, status_code: int
) -> None:
    response = await client.post(f"/probe/returns/{status_code}", follow_redirects=False)

    assert response.status_code == status_code
    assert sorted(await item_names(running_app)) == [
        f"returned-{status_code}-core",
        f"returned-{status_code}-orm",
    ]


@pytest.mark.parametrize(("status_code", "committed"), [(202, True), (400, False)])
async def test_a_status_set_on_the_response_decides_the_commit(
    client: AsyncClient, running_app: FastAPI, status_code: int, committed: bool
) -> None:
    response = await client.post(f"/probe/sets-status/{status_code}")

    assert response.status_code == status_code
    assert (f"set-{status_code}" in await item_names(running_app)) is committed


async def test_a_write_that_fails_after_the_handler_leaves_nothing_half_written(
    client: AsyncClient, running_app: FastAPI
) -> None:
    assert (await client.post("/items", json={"name": "existing"})).status_code == 201

    response = await client.post("/probe/failing-flush")

    assert response.status_code >= 400
    assert await item_names(running_app) == ["existing"]
    assert pool_of(running_app).checked_out == 0


async def refusals(client: AsyncClient, cases: list[tuple[str, str]], where: str) -> list[str]:
    """Each attempt's outcome: the error's message, or 'WROTE' if nothing refused it."""
    outcomes = []
    for view_name, how in cases:
        response = await client.post(f"/probe/refuse/{view_name}/{how}/{where}")
        outcomes.append(response.json()["refused"] or f"WROTE {view_name} {how}")
    return outcomes


async def assert_writes_refused(
    app: FastAPI, client: AsyncClient, cases: list[tuple[str, str]], where: str
) -> None:
    assert (await client.post("/items", json={"name": "original"})).status_code == 201

    outcomes = await refusals(client, cases, where)

    for (view_name, _), outcome in zip(cases, outcomes, strict=True):
        twin = {"read_connection": "Use Connection", "read_session": "Use Session"}[view_name]
        dependency = {"read_connection": "ReadConnection", "read_session": "ReadSession"}
        assert f"{dependency[view_name]} is read-only" in outcome, outcome
        assert twin in outcome
    assert await item_names(app) == ["original"]
    async with app.state.database.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: sync.dialect.get_table_names(sync))
    assert "sneaky_table" not in tables
    assert pool_of(app).checked_out == 0


@pytest.mark.parametrize("where", ["alone", "beside"])
async def test_a_write_through_a_read_only_dependency_is_refused(
    client: AsyncClient, running_app: FastAPI, where: str
) -> None:
    """Refused with a message naming the dependency to use, and nothing written, whether the
    request only reads or also writes through `Connection`."""
    await assert_writes_refused(running_app, client, READ_ONLY_CASES, where)


async def test_a_write_through_a_read_only_dependency_is_refused_behind_pgbouncer(
    pgbouncer: PgBouncer, settings: Settings
) -> None:
    through = through_pgbouncer(settings, pgbouncer)
    async with serving(through) as (app, client):
        async with app.state.database.engine.begin() as connection:
            await connection.execute(delete(Item))
        await assert_writes_refused(app, client, READ_ONLY_CASES, "alone")
        await client.post("/items", json={"name": "original"})  # kept for the next run
        await assert_writes_refused_again(app, client)


async def assert_writes_refused_again(app: FastAPI, client: AsyncClient) -> None:
    """Beside a writer too, in the same PgBouncer set-up (same rows as before)."""
    outcomes = await refusals(client, READ_ONLY_CASES, "beside")
    assert all("is read-only" in outcome for outcome in outcomes), outcomes
    assert sorted(await item_names(app)) == ["original", "original"]


async def test_a_write_through_a_read_only_dependency_is_refused_after_a_lost_connection(
    postgres_url: str, settings: Settings
) -> None:
    """The lost connection makes a read run again; a write must not run at all, never twice."""
    async with SeveringProxy(make_url(postgres_url)) as proxy:
        behind = settings.model_copy(
            update={"database_url": SecretStr(proxy.url.render_as_string(hide_password=False))}
        )
        async with serving(behind) as (app, client):
            async with app.state.database.engine.begin() as connection:
                await connection.execute(delete(Item))
            assert (await client.post("/items", json={"name": "original"})).status_code == 201
            outcomes = []
            for view_name, how in READ_ONLY_CASES:
                await asyncio.gather(*(client.get("/items") for _ in range(2)))
                assert proxy.sever() >= 1
                outcomes += await refusals(client, [(view_name, how)], "alone")
            names = await item_names(app)

    assert all("is read-only" in outcome for outcome in outcomes), outcomes
    assert names == ["original"]


async def test_read_only_views_offer_the_read_api_of_their_twins(
    client: AsyncClient, running_app: FastAPI
) -> None:
    """Moving a route from `Session` to `ReadSession` (or `Connection` to `ReadConnection`) is
    a one-word change: the reads it makes exist on both."""
    created = (await client.post("/items", json={"name": "twin"})).json()

    async with serving_probe(running_app) as read:
        assert await read("read_connection") == await read("connection")
        assert await read("read_session") == await read("session")
    assert (await read_twin_results(created["id"], running_app)) == ["twin"] * 4


def serving_probe(app: FastAPI) -> Any:
    @asynccontextmanager
    async def probe() -> AsyncIterator[Callable[[str], Awaitable[list[Any]]]]:
        async def read(view_name: str) -> list[Any]:
            async with UnitOfWork(app.state.database, "test") as work:
                view = {
                    "connection": work.connection,
                    "session": work.session,
                }.get(view_name)
                if view is not None:
                    target: Any = await view()
                elif view_name == "read_connection":
                    target = work.read_connection()
                else:
                    target = work.read_session()
                one: Any = literal_column("1")
                return [
                    (await target.execute(select(one))).scalar_one(),
                    await target.scalar(select(one)),
                    list(await target.scalars(select(Item.name))),
                ]

        yield read

    return probe()


async def read_twin_results(item_id: int, app: FastAPI) -> list[str]:
    async with UnitOfWork(app.state.database, "test") as work:
        session, reads = await work.session(), work.read_session()
        found = [await session.get(Item, item_id), await reads.get(Item, item_id)]
        found += [await session.get_one(Item, item_id), await reads.get_one(Item, item_id)]
    return [item.name for item in found if item is not None]
