"""Under pressure the pool stays bounded, answers 503 fast, loses nothing and leaks nothing."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from uuid import uuid4

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI, Request
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.db import (
    Connection,
    PoolExhaustedError,
    ReadConnection,
    ReadSession,
    Session,
)
from {{ cookiecutter.package_name }}.db.budget import ConnectionBudgetExceededError
from {{ cookiecutter.package_name }}.db.engine import reject_closed_connection
from {{ cookiecutter.package_name }}.db.queue import CheckoutQueue
from {{ cookiecutter.package_name }}.logging_config import JsonFormatter, RequestFilter
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import pool_of, running_server
from .proxy import SeveringProxy

probes = APIRouter(prefix="/probe")


@probes.get("/hold")
async def hold(connection: Connection, request: Request) -> None:
    """Keeps its connection until the test sets `app.state.release`."""
    await connection.execute(text("SELECT 1"))
    await request.app.state.release.wait()


@probes.get("/hold-briefly")
async def hold_briefly(connection: Connection) -> None:
    await connection.execute(text("SELECT 1"))
    await asyncio.sleep(2)


@probes.get("/read-without-retry")
async def read_without_retry(connection: Connection) -> None:
    """Reads through `Connection`, which never runs a statement twice, unlike `ReadConnection`."""
    await connection.execute(text("SELECT 1"))


@probes.get("/statement-timeout/write")
async def statement_timeout(connection: Connection) -> None:
    async with asyncio.timeout(0.2):
        await connection.execute(text("SELECT pg_sleep(5)"))


@probes.get("/statement-timeout/read")
async def read_timeout(reads: ReadConnection) -> None:
    async with asyncio.timeout(0.2):
        await reads.execute(text("SELECT pg_sleep(5)"))


@probes.get("/statement-timeout/session")
async def session_timeout(session: Session) -> None:
    async with asyncio.timeout(0.2):
        await session.execute(text("SELECT pg_sleep(5)"))


@probes.get("/statement-timeout/read-session")
async def read_session_timeout(session: ReadSession) -> None:
    async with asyncio.timeout(0.2):
        await session.execute(select(func.pg_sleep(5)))


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    app.include_router(probes)
    app.state.release = asyncio.Event()
    return app


@pytest.fixture
async def holding_the_pool(client: AsyncClient, running_app: FastAPI) -> AsyncIterator[None]:
    """Both pooled connections held by requests that wait for `release`."""
    holders = [asyncio.create_task(client.get("/probe/hold")) for _ in range(2)]
    await until(lambda: pool_of(running_app).checked_out == 2)
    yield
    running_app.state.release.set()
    await asyncio.gather(*holders)


async def until(condition: Callable[[], bool], within: float = 10) -> None:
    """Poll a condition on state the test cannot subscribe to (pool counters, the queue)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def metric_values(exposition: str) -> dict[str, float]:
    """Each sample but the buckets, by name and its labels other than pool_name:
    `db_client_connection_max`, `db_client_connection_count(state="used")`."""
    values = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = {k: v for k, v in sorted(sample.labels.items()) if k != "pool_name"}
            if "le" not in labels:
                shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
                values[f"{sample.name}" + (f"({shown})" if shown else "")] = sample.value
    return values


async def app_sessions(admin: AsyncEngine, application_name: str, state: str | None = None) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
    if state is not None:
        query += " AND state = :state"
    async with admin.connect() as connection:
        count: int = (
            await connection.execute(text(query), {"name": application_name, "state": state})
        ).scalar_one()
    return count


@pytest.mark.usefixtures("holding_the_pool")
async def test_exhausted_pool_answers_503_with_retry_after_instead_of_hanging(
    client: AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.perf_counter()
    responses = await asyncio.gather(*(client.get("/items") for _ in range(8)))
    waited = time.perf_counter() - started

    assert [response.status_code for response in responses] == [503] * 8
    problem = responses[0]
    assert problem.headers["Retry-After"] == "1"
    assert problem.headers["content-type"] == "application/problem+json"
    assert problem.json()["status"] == 503
    assert waited < settings.db_pool_timeout + 3, "a request waited far past DB_POOL_TIMEOUT"
    assert "no database connection for GET /items within 1 s" in caplog.text
    assert "checked_out=2" in caplog.text


async def test_service_recovers_when_the_pressure_ends(
    client: AsyncClient, running_app: FastAPI
) -> None:
    async with anyio.create_task_group() as holders:
        holders.start_soon(client.get, "/probe/hold")
        holders.start_soon(client.get, "/probe/hold")
        await until(lambda: pool_of(running_app).checked_out == 2)
        assert (await client.get("/items")).status_code == 503
        running_app.state.release.set()

    statuses = [
        response.status_code
        for response in await asyncio.gather(*(client.get("/items") for _ in range(10)))
    ]
    assert statuses == [200] * 10
    assert pool_of(running_app).checked_out == 0


@pytest.mark.usefixtures("holding_the_pool")
async def test_readiness_answers_busy_quickly_when_the_pool_is_exhausted(
    client: AsyncClient, settings: Settings
) -> None:
    started = time.perf_counter()
    response = await client.get("/health/ready")
    waited = time.perf_counter() - started

    # Busy is not unready: a pod taken out of rotation for it would overload the others.
    assert response.status_code == 200
    assert response.json()["status"] == "busy"
    assert response.json()["database"] == "busy"
    assert response.json()["pool"]["checked_out"] == 2
    assert waited < settings.ready_timeout + 3


async def test_metrics_report_pool_state_and_counters(
    client: AsyncClient, running_app: FastAPI
) -> None:
    assert (await client.get("/items")).status_code == 200
    async with anyio.create_task_group() as holders:
        holders.start_soon(client.get, "/probe/hold")
        holders.start_soon(client.get, "/probe/hold")
        await until(lambda: pool_of(running_app).checked_out == 2)
        assert (await client.get("/items")).status_code == 503
        response = await client.get("/metrics")
        running_app.state.release.set()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = metric_values(response.text)
    assert values['db_client_connection_count(state="used")'] == 2
    assert values['db_client_connection_count(state="idle")'] == 0
    assert values["db_client_connection_max"] == 2
    assert values["db_client_connection_idle_max"] == 2
    assert values["db_client_connection_pending_requests"] == 0
    assert values["db_client_connection_create_time_seconds_count"] >= 2
    assert values["db_client_connection_use_time_seconds_count"] >= 1
    assert values["db_client_connection_timeouts_total"] == 1
    assert values["db_client_connection_wait_time_seconds_count"] >= 3
    assert values["db_client_connection_leaks_total"] == 0
    count = "http_server_request_duration_seconds_count"
    for status in (200, 503):
        series = f'http_request_method="GET",http_response_status_code="{status}"'
        assert values[f'{count}({series},http_route="/items")'] == 1


async def test_queue_serves_waiters_before_newcomers() -> None:
    """A place freed while someone waits goes to the waiter, even if a newcomer asks first."""
    queue = CheckoutQueue(capacity=1)
    served: list[str] = []

    async def take(name: str) -> None:
        await queue.enter(max_wait=5)
        served.append(name)
        queue.leave()

    await queue.enter(max_wait=5)
    waiter = asyncio.create_task(take("waiter"))
    await until(lambda: queue.waiting == 1)
    queue.leave()
    await take("newcomer")  # asks in the same instant the place is freed
    await waiter

    assert served == ["waiter", "newcomer"]


async def test_queue_wait_is_bounded_by_the_timeout() -> None:
    queue = CheckoutQueue(capacity=1)

    await queue.enter(max_wait=5)
    started = time.perf_counter()
    with pytest.raises(PoolExhaustedError):
        await queue.enter(max_wait=0.05)

    assert time.perf_counter() - started < 3  # without the bound it would wait for ever
    assert queue.waiting == 0
    queue.leave()
    await queue.enter(max_wait=0.05)  # the place given back is free again


async def test_connection_held_too_long_is_reported_with_its_route(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning names the request that holds the connection, not the one that happened to
    start the leak watch; the logging filter reads it from the request's context."""
    caplog.handler.addFilter(RequestFilter())
    # A threshold well above what a quick request takes on a busy machine, well below the hold.
    app = create_app(settings.model_copy(update={"db_leak_threshold": 1.0}))
    app.include_router(probes)

    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        assert (await client.get("/items", headers={"X-Request-ID": "quick"})).status_code == 200
        assert "possible connection leak" not in caplog.text
        holder = await client.get("/probe/hold-briefly", headers={"X-Request-ID": "holds-long"})
        values = metric_values((await client.get("/metrics")).text)

    assert holder.status_code == 200
    [leak] = [record for record in caplog.records if "possible connection leak" in record.message]
    assert "possible connection leak: GET /probe/hold-briefly" in leak.message
    assert (leak.__dict__["request_id"], leak.__dict__["http_route"]) == (
        "holds-long",
        "/probe/hold-briefly",
    )
    assert values["db_client_connection_leaks_total"] == 1


async def test_locked_table_gives_fast_503s_within_the_pool_limit(
    client: AsyncClient, running_app: FastAPI, admin: AsyncEngine, settings: Settings
) -> None:
    """The issue's scenario: pool 2 + 0, 1 s timeout, 10 concurrent requests, table locked."""

    async def timed_get() -> tuple[int, float]:
        started = time.perf_counter()
        response = await client.get("/items")
        return response.status_code, time.perf_counter() - started

    async with admin.connect() as locker:
        await locker.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
        requests = [asyncio.create_task(timed_get()) for _ in range(10)]
        await until(lambda: sum(request.done() for request in requests) == 8)
        sessions = await app_sessions(admin, settings.db_application_name)
        await locker.rollback()
    results = [await request for request in requests]

    print("statuses and seconds under a locked table:", [(s, round(t, 3)) for s, t in results])
    assert sorted(status for status, _ in results) == [200] * 2 + [503] * 8
    assert max(t for status, t in results if status == 503) < settings.db_pool_timeout + 3
    assert sessions <= settings.db_pool_size + settings.db_max_overflow
    assert pool_of(running_app).checked_out == 0


async def terminate_sessions(admin: AsyncEngine, application_name: str) -> int:
    async with admin.connect() as connection:
        ended = await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = :name AND pid <> pg_backend_pid()"
            ),
            {"name": application_name},
        )
        return len(ended.all())


async def test_no_request_is_lost_after_every_backend_is_killed(
    client: AsyncClient, running_app: FastAPI, admin: AsyncEngine, settings: Settings
) -> None:
    await asyncio.gather(*(client.get("/items") for _ in range(4)))
    assert await terminate_sessions(admin, settings.db_application_name) >= 1

    statuses = [(await client.get("/items")).status_code for _ in range(50)]

    print("successes out of 50 after killing every backend:", statuses.count(200))
    assert statuses == [200] * 50
    values = metric_values((await client.get("/metrics")).text)
    assert values["db_client_connection_invalidated_total"] >= 1


async def test_closed_connections_are_replaced_without_a_ping_or_a_retry(
    client: AsyncClient, admin: AsyncEngine, settings: Settings
) -> None:
    """The checkout check alone: connections the server has visibly closed never reach a read,
    even one that bypasses ReadConnection's retry."""
    assert not settings.db_pool_pre_ping
    await asyncio.gather(*(client.get("/items") for _ in range(4)))
    assert await terminate_sessions(admin, settings.db_application_name) >= 1
    with anyio.fail_after(10):
        while await app_sessions(admin, settings.db_application_name):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the closed sockets reach the event loop: the case checked here

    statuses = [(await client.get("/probe/read-without-retry")).status_code for _ in range(50)]

    assert statuses == [200] * 50


async def test_without_the_closed_connection_check_killed_backends_answer_503(
    client: AsyncClient, running_app: FastAPI, admin: AsyncEngine, settings: Settings
) -> None:
    """The counter-proof: without the ping, the checkout check and the retry, dead connections
    reach requests, and the answer is then an honest 503, not a 500."""
    pool = running_app.state.database.engine.sync_engine.pool
    event.remove(pool, "checkout", reject_closed_connection)
    await asyncio.gather(*(client.get("/items") for _ in range(4)))
    assert await terminate_sessions(admin, settings.db_application_name) >= 1

    statuses = [(await client.get("/probe/read-without-retry")).status_code for _ in range(10)]

    assert 503 in statuses
    assert 500 not in statuses


@asynccontextmanager
async def behind_a_proxy(
    postgres_url: str, settings: Settings
) -> AsyncIterator[tuple[SeveringProxy, AsyncClient, FastAPI]]:
    """The application, started, reaching the database through a SeveringProxy."""
    async with SeveringProxy(make_url(postgres_url)) as proxy:
        url = SecretStr(proxy.url.render_as_string(hide_password=False))
        app = create_app(settings.model_copy(update={"database_url": url}))
        app.include_router(probes)
        async with (
            LifespanManager(app),
            AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
        ):
            yield proxy, client, app


async def test_reads_run_again_when_the_connection_was_lost_silently(
    postgres_url: str, settings: Settings
) -> None:
    """No ping, and nothing for the checkout check to see: the read finds its connection gone
    when it sends, and runs once more on a new one."""
    assert not settings.db_pool_pre_ping
    async with behind_a_proxy(postgres_url, settings) as (proxy, client, app):
        await asyncio.gather(*(client.get("/items") for _ in range(4)))
        severed = proxy.sever()
        statuses = [(await client.get("/items")).status_code for _ in range(10)]
        values = metric_values((await client.get("/metrics")).text)

    print(f"GET /items after {severed} pooled connections were lost silently:", statuses)
    assert severed >= 1
    assert statuses == [200] * 10
    assert values["db_client_connection_invalidated_total"] >= 1
    assert pool_of(app).checked_out == 0


async def test_without_the_retry_a_silently_lost_connection_answers_503(
    postgres_url: str, settings: Settings
) -> None:
    """The counter-proof: the same loss, read through the bare connection, is a 503."""
    async with behind_a_proxy(postgres_url, settings) as (proxy, client, _):
        assert (await client.get("/probe/read-without-retry")).status_code == 200
        assert proxy.sever() == 1

        response = await client.get("/probe/read-without-retry")

    assert response.status_code == 503


@pytest.mark.parametrize("dependency", ["write", "read", "session", "read-session"])
async def test_statement_cancelled_by_a_timeout_returns_its_connection(
    client: AsyncClient,
    running_app: FastAPI,
    admin: AsyncEngine,
    settings: Settings,
    dependency: str,
) -> None:
    """Cut short in the driver, mid-statement: the connection and the place go back."""
    assert (await client.get(f"/probe/statement-timeout/{dependency}")).status_code == 503

    assert pool_of(running_app).checked_out == 0
    assert await app_sessions(admin, settings.db_application_name, "idle in transaction") == 0
    assert (await client.get("/items")).status_code == 200
    # Both places are free again: two requests can hold both connections at once.
    holders = [asyncio.create_task(client.get("/probe/hold")) for _ in range(2)]
    await until(lambda: pool_of(running_app).checked_out == 2)
    running_app.state.release.set()
    assert [(await holder).status_code for holder in holders] == [200, 200]


async def test_impatient_clients_leave_no_connection_or_transaction_behind(
    postgres_url: str, admin: AsyncEngine
) -> None:
    name = f"impatient-{uuid4().hex[:12]}"
    with running_server(
        DATABASE_URL=postgres_url,
        DB_POOL_SIZE="2",
        DB_MAX_OVERFLOW="0",
        DB_POOL_TIMEOUT="1",
        DB_APPLICATION_NAME=name,
        REQUESTS_PER_CONNECTION="16",  # all 32 are taken in: none is shed with a 503
    ) as server:
        async with admin.connect() as locker:
            await locker.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
            async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as impatient:
                # One route per dependency: ReadConnection, ReadSession, Session, Connection.
                requests = [impatient.get("/items") for _ in range(8)]
                requests += [impatient.get("/items/1") for _ in range(8)]
                requests += [impatient.post("/items", json={"name": "gone"}) for _ in range(8)]
                requests += [impatient.delete("/items/1") for _ in range(8)]
                outcomes = await asyncio.gather(*requests, return_exceptions=True)
            await locker.rollback()
        assert all(isinstance(outcome, httpx.TimeoutException) for outcome in outcomes)

        async with httpx.AsyncClient(base_url=server.url, timeout=5) as patient:
            for _ in range(100):
                pool = (await patient.get("/health/ready")).json()["pool"]
                if pool["checked_out"] == 0:
                    break
                await asyncio.sleep(0.05)
        idle_in_transaction = await app_sessions(admin, name, "idle in transaction")

    print(
        "after 32 impatient clients: checked out",
        pool["checked_out"],
        "idle in transaction",
        idle_in_transaction,
    )
    assert pool["checked_out"] == 0
    assert idle_in_transaction == 0


async def max_connections(admin: AsyncEngine) -> int:
    async with admin.connect() as connection:
        return int((await connection.execute(text("SHOW max_connections"))).scalar_one())


async def test_pools_larger_than_the_server_allows_are_reported(
    admin: AsyncEngine, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    limit = await max_connections(admin)
    too_many = settings.model_copy(update={"web_concurrency": limit, "db_pool_size": 1})

    async with LifespanManager(create_app(too_many)):
        pass

    assert f"WEB_CONCURRENCY ({limit}) x (DB_POOL_SIZE + DB_MAX_OVERFLOW) (1)" in caplog.text
    assert f"max_connections {limit}" in caplog.text


async def test_strict_budget_refuses_to_start(admin: AsyncEngine, settings: Settings) -> None:
    limit = await max_connections(admin)
    strict = settings.model_copy(update={"db_pool_size": limit, "db_budget_strict": True})

    with pytest.raises(ConnectionBudgetExceededError, match="DB_BUDGET_STRICT"):
        async with LifespanManager(create_app(strict)):
            pass


async def test_budget_is_left_to_pgbouncer_behind_it(
    admin: AsyncEngine, settings: Settings
) -> None:
    limit = await max_connections(admin)
    pooled = settings.model_copy(
        update={"db_pool_size": limit, "db_budget_strict": True, "db_pgbouncer": True}
    )

    async with LifespanManager(create_app(pooled)):
        pass


async def test_pools_within_budget_start_quietly(
    admin: AsyncEngine, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with LifespanManager(create_app(settings.model_copy(update={"db_budget_strict": True}))):
        pass

    assert "connection budget exceeded" not in caplog.text


async def exercise(settings: Settings) -> list[str]:
    """Every kind of answer the service gives, as text: to look for a secret in."""
    app = create_app(settings)
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        responses = [
            await client.post("/items", json={"name": "probe"}),
            await client.post("/items", json={"name": ""}),
            await client.get("/items"),
            await client.get("/items/999999"),
            await client.get("/health/ready"),
            await client.get("/metrics"),
            await client.get("/openapi.json"),
        ]
    return [f"{response.headers}\n{response.text}" for response in responses]


@pytest.mark.parametrize("password", ["right", "wrong"])
async def test_database_password_never_leaves_the_service(
    postgres_url: str, settings: Settings, caplog: pytest.LogCaptureFixture, password: str
) -> None:
    url = make_url(postgres_url)
    if password == "wrong":
        url = url.set(password=f"wrong-{uuid4().hex}")
    secret = url.password
    assert secret
    if secret in {url.username, url.database, url.host}:
        pytest.skip("the test database's password equals another part of its URL")
    probe = Settings(
        **{
            **settings.model_dump(),
            "database_url": url.render_as_string(hide_password=False),
            "db_echo": True,
        }
    )

    # The JSON lines of LOG_FORMAT=json, as its handler writes them.
    json_log = io.StringIO()
    json_handler = logging.StreamHandler(json_log)
    json_handler.setFormatter(JsonFormatter())
    json_handler.addFilter(RequestFilter())
    logging.getLogger().addHandler(json_handler)
    try:
        with caplog.at_level(logging.DEBUG):
            answers = await exercise(probe)
    finally:
        logging.getLogger().removeHandler(json_handler)

    assert all(secret not in answer for answer in answers)
    assert secret not in caplog.text
    assert json_log.getvalue().count("\n") >= len(caplog.records) > 0
    assert secret not in json_log.getvalue()
    assert secret not in repr(probe)
