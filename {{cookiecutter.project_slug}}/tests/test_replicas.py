"""Read replicas and primary failover, on real PostgreSQL streaming replication.

The routing test uses TEST_REPLICA_URL, a streaming replica of TEST_DATABASE_URL's server. The
tests that stop, pause, promote or demote a server build a primary and a standby of their own
(tests/clusters.py), so they never disturb a server someone else is using.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from uuid import uuid4

import pytest
from alembic import command
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient, Response
from pydantic import SecretStr
from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.db import Connection, ReadConnection
from {{ cookiecutter.package_name }}.db.replicas import Replica, ReplicaState
from {{ cookiecutter.package_name }}.models import Item
from {{ cookiecutter.package_name }}.settings import Settings

from .clusters import DATABASE, PASSWORD, ROLE, Pair, cluster_tools_problem
from .conftest import alembic_config
from .conftest import serving as serving_app

REPLICA_EXAMPLE = "postgresql+asyncpg://app:secret@127.0.0.1:5433/app_test"

probes = APIRouter(prefix="/probe")


@probes.post("/write-then-read")
async def write_then_read(reader: ReadConnection, writer: Connection) -> dict[str, int]:
    """Asks for the read-only view first, so the request starts out at a replica."""
    name = f"own write {uuid4().hex}"
    await writer.execute(insert(Item).values(name=name))
    seen = await reader.scalar(select(func.count()).select_from(Item).where(Item.name == name))
    return {"seen": seen, "port": await reader.scalar(select(func.inet_server_port()))}


@probes.get("/read-port")
async def read_port(reader: ReadConnection) -> int:
    """The port of the server that a request which only reads is served by."""
    port: int = await reader.scalar(select(func.inet_server_port()))
    return port


def skip_unless_required(reason: str) -> None:
    if os.environ.get("REQUIRE_REPLICA") == "1":
        pytest.fail(f"{reason} (REQUIRE_REPLICA=1 makes this a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def replica_url(migrated_database: str) -> str:
    if not migrated_database.startswith("postgresql"):
        pytest.skip("needs PostgreSQL and a streaming replica: set TEST_DATABASE_URL")
    url = os.environ.get("TEST_REPLICA_URL")
    if not url:
        skip_unless_required(
            "needs a streaming replica: TEST_REPLICA_URL, a replica of TEST_DATABASE_URL's server,"
            f" e.g. {REPLICA_EXAMPLE}"
        )
    assert url is not None
    return url


def build_pair() -> Pair:
    pair = Pair()
    try:
        pair.build()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DATABASE_URL", pair.primary.url().render_as_string(hide_password=False))
            command.upgrade(alembic_config(), "head")
        pair.build_standby()
    except BaseException:
        pair.drop()
        raise
    return pair


def pair_tools(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL and a streaming replica: set TEST_DATABASE_URL")
    problem = cluster_tools_problem()
    if problem:
        skip_unless_required(f"needs a streaming replica of its own: {problem}")


@contextmanager
def streaming_pair(database_url: str) -> Iterator[Pair]:
    """A primary and its standby, dropped afterwards."""
    pair_tools(database_url)
    built = build_pair()
    try:
        yield built
    finally:
        built.drop()


@pytest.fixture(scope="module")
def pair(database_url: str) -> Iterator[Pair]:
    """For this module's tests, which leave the pair streaming."""
    with streaming_pair(database_url) as built:
        yield built


@pytest.fixture
def doomed_pair(database_url: str) -> Iterator[Pair]:
    """For one test that fails the primary over."""
    with streaming_pair(database_url) as built:
        yield built


def with_replicas(
    settings: Settings, primary: URL | str, *replicas: URL | str, max_lag: float = 1.0
) -> Settings:
    def plain(url: URL | str) -> str:
        return url if isinstance(url, str) else url.render_as_string(hide_password=False)

    return settings.model_copy(
        update={
            "database_url": SecretStr(plain(primary)),
            "database_replica_urls": SecretStr(",".join(plain(url) for url in replicas)),
            "db_replica_max_lag": max_lag,
            "db_replica_check_interval": 0.2,
            "ready_timeout": 2.0,
            "db_pool_size": 5,
            "db_pool_timeout": 5.0,
        }
    )


def shared(settings: Settings, replica_url: str) -> Settings:
    """TEST_REPLICA_URL: other suites may write through its primary at the same time, so its
    lag can pass a second now and then. Lag is tested on a pair of the tests' own."""
    return with_replicas(settings, settings.url, replica_url, max_lag=60)


def both_hosts(pair: Pair) -> URL:
    """The asyncpg dialect's multi-host URL: new connections find whichever is the primary."""
    hosts = [f"127.0.0.1:{pair.primary.port}", f"127.0.0.1:{pair.standby.port}"]
    return URL.create(
        "postgresql+asyncpg",
        ROLE,
        PASSWORD,
        database=DATABASE,
        query={"host": hosts, "target_session_attrs": "read-write"},
    )


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    async with serving_app(settings, probes) as served:
        yield served


@asynccontextmanager
async def serving_the_pair(
    settings: Settings, pair: Pair
) -> AsyncIterator[tuple[AsyncClient, Replica]]:
    """The service on the pair's primary, with its standby as a usable replica."""
    async with serving(with_replicas(settings, pair.primary.url(), pair.standby.url())) as (
        app,
        client,
    ):
        replica = the_replica(app)
        await until(lambda: replica.state is ReplicaState.USABLE)
        yield client, replica


def the_replica(app: FastAPI) -> Replica:
    replica: Replica = app.state.replicas.replicas[0]
    return replica


async def until(condition: Callable[[], bool], within: float = 15) -> float:
    """Seconds until `condition()` holds."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"not within {within} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement the service sends through `engine` while the block runs.

    Counted in the process, not from the server's `pg_stat_activity`: that shows only each
    session's latest statement, and the replica's health check runs on the same sessions."""
    sent: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def reads_of_items(statements: list[str]) -> int:
    return sum(1 for sql in statements if sql.startswith("SELECT") and "FROM items" in sql)


async def test_reads_are_served_by_the_replica_and_writes_by_the_primary(
    settings: Settings, replica_url: str, admin: AsyncEngine
) -> None:
    async with serving(shared(settings, replica_url)) as (app, client):
        await until(lambda: the_replica(app).state is ReplicaState.USABLE)
        replica_server = make_url(replica_url).port or 5432

        with (
            statements_sent(the_replica(app).database.engine) as at_replica,
            statements_sent(app.state.database.engine) as at_primary,
        ):
            for _ in range(3):
                assert (await client.get("/items")).status_code == 200
            created = await client.post("/items", json={"name": "written on the primary"})
            read_port = await client.get("/probe/read-port")

        assert reads_of_items(at_replica) >= 3  # a read retried on a lost connection counts twice
        assert reads_of_items(at_primary) == 0
        assert read_port.json() == replica_server
        assert created.status_code == 201
        async with admin.connect() as connection:
            found = select(Item.name).where(Item.id == created.json()["id"])
            assert await connection.scalar(found) == "written on the primary"


async def test_a_request_that_writes_then_reads_sees_its_write_on_the_primary(
    settings: Settings, replica_url: str
) -> None:
    async with serving(shared(settings, replica_url)) as (app, client):
        await until(lambda: the_replica(app).state is ReplicaState.USABLE)

        response = await client.post("/probe/write-then-read")

        assert response.status_code == 200
        assert response.json() == {"seen": 1, "port": settings.url.port or 5432}
        # The place the request took at the replica, before it wrote, was given back.
        assert the_replica(app).database.queue.admitted == 0
        assert app.state.database.queue.admitted == 0


async def test_reads_survive_the_replica_stopping_and_return_to_it(
    settings: Settings, pair: Pair
) -> None:
    async with serving_the_pair(settings, pair) as (client, replica):
        answers: list[Response] = []
        done = asyncio.Event()

        async def read_until_done() -> None:
            while not done.is_set():
                answers.append(await client.get("/items", params={"limit": 5}))

        readers = [asyncio.create_task(read_until_done()) for _ in range(20)]
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(pair.standby.ctl, "stop", "-m", "fast")
            await until(lambda: replica.state is ReplicaState.DOWN, within=5)
            await asyncio.sleep(1)
            served_while_down = len(answers)
            restarted = time.monotonic()
            await asyncio.to_thread(pair.standby.ctl, "start")
            await until(lambda: replica.state is ReplicaState.USABLE, within=30)
            back_after = time.monotonic() - restarted
            with statements_sent(replica.database.engine) as sent_after_restart:
                await asyncio.sleep(0.5)
        finally:
            done.set()
            await asyncio.gather(*readers)
        used_again = reads_of_items(sent_after_restart)

    statuses = sorted({answer.status_code for answer in answers})
    print(
        f"\nreplica stopped under 20 concurrent reads: {len(answers)} reads, statuses {statuses};"
        f" usable again {back_after:.1f} s after it was started"
    )
    assert statuses == [200]
    assert served_while_down > 0
    assert used_again >= 1


async def test_reads_move_to_the_primary_while_the_replica_lags(
    settings: Settings, pair: Pair
) -> None:
    async with serving_the_pair(settings, pair) as (client, replica):
        await asyncio.to_thread(pair.standby.sql, "SELECT pg_wal_replay_pause()")
        try:
            created = await client.post("/items", json={"name": "while replay is paused"})
            detected = await until(lambda: replica.state is ReplicaState.LAGGING, within=10)
            # Only the primary has the new item: the replica has not replayed it.
            read_while_lagging = await client.get(f"/items/{created.json()['id']}")
        finally:
            await asyncio.to_thread(pair.standby.sql, "SELECT pg_wal_replay_resume()")
        back_after = await until(lambda: replica.state is ReplicaState.USABLE)
        with statements_sent(replica.database.engine) as sent_after_resuming:
            read_again = await client.get("/items")
        used_again = reads_of_items(sent_after_resuming)

    print(f"\nlag: skipped after {detected:.1f} s, usable {back_after:.1f} s after resuming")
    assert read_while_lagging.status_code == 200
    assert read_again.status_code == 200
    assert used_again >= 1


async def write_load(
    client: AsyncClient, done: asyncio.Event, answers: list[tuple[float, Response]]
) -> None:
    while not done.is_set():
        answer = await client.post("/items", json={"name": "during failover"})
        answers.append((time.monotonic(), answer))
        if answer.status_code != 201:
            await asyncio.sleep(0.05)


def check_only_503s(answers: list[tuple[float, Response]]) -> list[int]:
    failed = [answer for _, answer in answers if answer.status_code >= 300]
    assert all(answer.status_code == 503 for answer in failed), [a.text for a in failed]
    assert all(answer.headers.get("Retry-After", "").isdigit() for answer in failed)
    return sorted({answer.status_code for _, answer in answers})


async def test_writes_find_the_promoted_standby_after_the_primary_stops(
    settings: Settings, doomed_pair: Pair
) -> None:
    pair = doomed_pair
    answers: list[tuple[float, Response]] = []
    reads: list[Response] = []
    done = asyncio.Event()
    async with serving(with_replicas(settings, both_hosts(pair), pair.standby.url())) as (
        app,
        client,
    ):
        await until(lambda: the_replica(app).state is ReplicaState.USABLE)

        async def read_until_done() -> None:
            while not done.is_set():
                reads.append(await client.get("/items", params={"limit": 5}))

        load = [asyncio.create_task(write_load(client, done, answers)) for _ in range(4)]
        load += [asyncio.create_task(read_until_done()) for _ in range(4)]
        try:
            await asyncio.sleep(0.5)
            stopped = time.monotonic()
            await asyncio.to_thread(pair.primary.ctl, "stop", "-m", "fast")
            await asyncio.sleep(1)
            promoted = time.monotonic()
            await asyncio.to_thread(pair.standby.ctl, "promote")
            await until(lambda: any(t > promoted and a.status_code == 201 for t, a in answers))
            await asyncio.sleep(0.5)
        finally:
            done.set()
            await asyncio.gather(*load)

    statuses = check_only_503s(answers)
    last_failure = max((t for t, a in answers if a.status_code == 503), default=promoted)
    back = min(t for t, a in answers if a.status_code == 201 and t > last_failure)
    print(
        f"\nfailover: {len(answers)} writes {statuses}, {len(reads)} reads"
        f" {sorted({r.status_code for r in reads})}; writes back {back - promoted:.2f} s after"
        f" the promotion, {back - stopped:.2f} s after the primary stopped"
    )
    assert not [read for read in reads if read.status_code >= 500 and read.status_code != 503]


async def test_a_primary_turned_read_only_answers_503_and_its_connections_are_replaced(
    settings: Settings, doomed_pair: Pair
) -> None:
    pair = doomed_pair
    name = settings.db_application_name
    async with serving(with_replicas(settings, both_hosts(pair))) as (_, client):
        warm = await asyncio.gather(*(client.post("/items", json={"name": "x"}) for _ in range(5)))
        assert {answer.status_code for answer in warm} == {201}
        for statement in (
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        ):
            await asyncio.to_thread(pair.primary.sql, statement)
        # A new session shows that the server has reloaded; it has then signalled the pooled
        # sessions, which take the new default before their next statement.
        await until(lambda: pair.primary.sql("SHOW default_transaction_read_only") == "on")

        refused = [await client.post("/items", json={"name": "refused"}) for _ in range(3)]

        promoted = time.monotonic()
        await asyncio.to_thread(pair.standby.ctl, "promote")
        answers: list[tuple[float, Response]] = []
        done = asyncio.Event()
        load = asyncio.create_task(write_load(client, done, answers))
        try:
            await until(lambda: any(a.status_code == 201 for _, a in answers))
        finally:
            done.set()
            await load
        back = min(t for t, a in answers if a.status_code == 201) - promoted
        # A rejected candidate is terminated without waiting: its session may linger a moment.
        still_there = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}'"
        deadline = time.monotonic() + 5
        while (left_on_old_primary := pair.primary.sql(still_there)) != "0":
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)

    print(
        f"\nread-only primary: writes {[a.status_code for a in refused]};"
        f" back {back:.2f} s after the standby's promotion"
    )
    assert [answer.status_code for answer in refused] == [503, 503, 503]
    assert all(answer.headers["Retry-After"].isdigit() for answer in refused)
    check_only_503s(answers)
    assert left_on_old_primary == "0"
