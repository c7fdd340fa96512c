"""Bounded in every failure: a silent server, a silent network, a locked table, every class of
database error, a huge body and a SIGTERM each get an answer within the promised time."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from alembic import command
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.db import Connection, ReadConnection
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import alembic_config, pool_of, running_server, through_pgbouncer
from .conftest import serving as serving_app
from .pgbouncer import PgBouncer
from .proxy import SeveringProxy

probes = APIRouter(prefix="/probe")


@probes.get("/sleep/read")
async def sleep_through_a_read(reads: ReadConnection) -> None:
    await reads.execute(text("SELECT pg_sleep(30)"))


@probes.get("/sleep/write")
async def sleep_through_a_write(connection: Connection) -> None:
    await connection.execute(text("SELECT pg_sleep(30)"))


@probes.post("/sql")
async def run_sql(statement: str, connection: Connection) -> None:
    await connection.execute(text(statement))


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    async with serving_app(settings, probes) as served:
        yield served


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    app.include_router(probes)
    return app


@asynccontextmanager
async def black_hole() -> AsyncIterator[int]:
    """A server that accepts connections and never answers: a hung database, a half-dead path."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def timed(request: Awaitable[httpx.Response]) -> tuple[int, float]:
    started = time.perf_counter()
    response = await request
    return response.status_code, time.perf_counter() - started


async def test_a_silent_server_gets_bounded_start_up_and_fast_503s(settings: Settings) -> None:
    """Start-up within DB_CONNECT_TIMEOUT + 1 s, each request of a burst answered 503 within
    DB_POOL_TIMEOUT + 1 s, readiness within READY_TIMEOUT (+ 1 s for a loaded machine)."""
    async with black_hole() as port:
        hung = settings.model_copy(
            update={
                "database_url": SecretStr(f"postgresql+asyncpg://app:secret@127.0.0.1:{port}/app"),
                "db_connect_timeout": 1,
                "db_pool_timeout": 2,
                "ready_timeout": 1,
            }
        )
        app = create_app(hung)
        started = time.perf_counter()
        async with LifespanManager(app, startup_timeout=30):
            start_up = time.perf_counter() - started
            transport = ASGITransport(app=app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://test") as client:
                burst = await asyncio.gather(*(timed(client.get("/items")) for _ in range(8)))
                ready = await timed(client.get("/health/ready"))

    print(f"silent server: start-up {start_up:.2f} s, burst {burst}, readiness {ready}")
    assert start_up < hung.db_connect_timeout + 1
    assert {status for status, _ in burst} == {503}
    assert max(seconds for _, seconds in burst) < hung.db_pool_timeout + 1
    assert ready[0] == 503
    assert ready[1] < hung.ready_timeout + 1


@pytest.mark.parametrize("dependency", ["read", "write"])
async def test_a_network_gone_silent_mid_statement_is_bounded_by_the_statement_timeout(
    postgres_url: str, settings: Settings, admin: AsyncEngine, dependency: str
) -> None:
    """No reset, no answer: the client gives up at DB_STATEMENT_TIMEOUT (+ 0.5 s) and the pool
    replaces the connection."""
    async with SeveringProxy(make_url(postgres_url)) as proxy:
        behind = settings.model_copy(
            update={
                "database_url": SecretStr(proxy.url.render_as_string(hide_password=False)),
                "db_statement_timeout": 1,
            }
        )
        async with serving(behind) as (app, client):
            assert (await client.get("/items")).status_code == 200
            request = asyncio.create_task(timed(client.get(f"/probe/sleep/{dependency}")))
            # The statement has reached the server (else a read would simply run again).
            deadline = time.monotonic() + 10
            while not await app_sessions(admin, behind.db_application_name, "active"):
                assert time.monotonic() < deadline, "the statement never reached the server"
                await asyncio.sleep(0.02)
            assert proxy.sever() >= 1
            status, seconds = await request
            after = (await client.get("/items")).status_code
            lent = pool_of(app).checked_out

    print(f"silent network during a {dependency}: {status} after {seconds:.2f} s, then {after}")
    assert status == 503
    assert seconds < behind.db_statement_timeout + 1
    assert after == 200
    assert lent == 0


async def app_sessions(admin: AsyncEngine, application_name: str, state: str) -> int:
    async with admin.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = :name AND state = :state"
            ),
            {"name": application_name, "state": state},
        )
    return int(count or 0)


async def until_none_active(admin: AsyncEngine, application_name: str, within: float) -> float:
    """Seconds until no session of `application_name` runs a statement; fails after `within`."""
    started = time.perf_counter()
    while await app_sessions(admin, application_name, "active"):
        assert time.perf_counter() - started < within, "the server still runs the statement"
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


@asynccontextmanager
async def items_locked(admin: AsyncEngine) -> AsyncIterator[None]:
    async with admin.connect() as locker:
        await locker.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await locker.rollback()


@pytest.mark.parametrize("route", ["GET /items", "POST /items", "GET /items/1"])
async def test_a_statement_blocked_by_a_lock_answers_503_at_the_statement_timeout(
    settings: Settings, admin: AsyncEngine, route: str
) -> None:
    limited = settings.model_copy(update={"db_statement_timeout": 1, "db_pool_timeout": 5})
    method, path = route.split()
    async with serving(limited) as (app, client), items_locked(admin):
        started = time.perf_counter()
        response = await client.request(method, path, json={"name": "blocked"})
        seconds = time.perf_counter() - started

    print(f"{route} behind a table lock: {response.status_code} after {seconds:.2f} s")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= seconds < limited.db_statement_timeout + 1
    assert pool_of(app).checked_out == 0
    assert await app_sessions(admin, limited.db_application_name, "idle in transaction") == 0


async def test_the_statement_timeout_holds_behind_pgbouncer(
    pgbouncer: PgBouncer, settings: Settings, admin: AsyncEngine
) -> None:
    """PgBouncer refuses `statement_timeout` at connection start: the client cancels the
    statement instead, through PgBouncer, and the server stops it."""
    through = through_pgbouncer(settings, pgbouncer).model_copy(update={"db_statement_timeout": 1})
    async with serving(through) as (_, client), items_locked(admin):
        started = time.perf_counter()
        response = await client.get("/items")
        seconds = time.perf_counter() - started
        # The cancel request reaches the server through PgBouncer, while the lock still holds.
        stopped = await until_none_active(admin, pgbouncer.application_name, within=5)

    print(
        f"behind PgBouncer, a locked table: {response.status_code} after {seconds:.2f} s;"
        f" the server stopped the statement {stopped:.2f} s later"
    )
    assert response.status_code == 503
    assert seconds < through.db_statement_timeout + 1


# Real errors from the real server: the conditions that pass are raised by PostgreSQL itself with
# their SQLSTATE; the others are what a bug or a conflict really sends.
def raised(sqlstate: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{sqlstate}'; END $$"


# name: (PostgreSQL statement, SQLite statement or None, expected status)
DATABASE_ERRORS: dict[str, tuple[str, str | None, int]] = {
    "serialization-failure": (raised("40001"), None, 503),
    "deadlock": (raised("40P01"), None, 503),
    "lock-not-available": (raised("55P03"), None, 503),
    "query-cancelled": (raised("57014"), None, 503),
    "too-many-connections": (raised("53300"), None, 503),
    "admin-shutdown": (raised("57P01"), None, 503),
    "connection-failure": (raised("08006"), None, 503),
    "unique-violation": ("INSERT INTO items (id, name) VALUES (1, 'a'), (1, 'b')",) * 2 + (409,),
    "not-null-violation": ("INSERT INTO items (name) VALUES (NULL)",) * 2 + (409,),
    "syntax-error": ("SELEC 1", "SELEC 1", 500),
    "missing-table": ("SELECT * FROM no_such_table",) * 2 + (500,),
    "missing-column": ("SELECT no_such_column FROM items",) * 2 + (500,),
}


@pytest.mark.parametrize("name", DATABASE_ERRORS)
async def test_each_class_of_database_error_gets_its_honest_status(
    client: AsyncClient,
    running_app: FastAPI,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    on_postgres, on_sqlite, expected = DATABASE_ERRORS[name]
    statement = on_postgres if settings.url.get_backend_name() == "postgresql" else on_sqlite
    if statement is None:
        pytest.skip(f"needs PostgreSQL: {name} is a PostgreSQL condition (SQLite's own is below)")

    response = await client.post("/probe/sql", params={"statement": statement})

    body = response.json()
    print(f"{name}: {response.status_code} {body}")
    assert response.status_code == expected, body
    assert response.headers["content-type"] == "application/problem+json"
    assert body["status"] == expected
    assert ("Retry-After" in response.headers) is (expected == 503)
    if expected == 500:
        # The driver's message and the stack in the log, never in the body.
        assert "no_such" in caplog.text or "syntax" in caplog.text
        assert "Traceback" in caplog.text
        assert "no_such" not in response.text
        assert "SELEC" not in response.text
    assert pool_of(running_app).checked_out == 0


async def test_a_locked_sqlite_database_answers_503(tmp_path: Path, settings: Settings) -> None:
    """SQLite's "database is locked", after its busy timeout (DB_STATEMENT_TIMEOUT)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", url)
        await asyncio.to_thread(command.upgrade, alembic_config(), "head")
    locked = settings.model_copy(
        update={"database_url": SecretStr(url), "db_statement_timeout": 0.5}
    )
    holder = sqlite3.connect(tmp_path / "locked.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        async with serving(locked) as (_, client):
            response = await client.post("/items", json={"name": "waits"})
    finally:
        holder.rollback()
        holder.close()

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def send_body(port: int, *, chunked: bool, size: int) -> bytes:
    """Send a request with a `size`-byte body the raw way; what the server answered."""
    head = "POST /items HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n"
    chunk = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall((head + "\r\n").encode())
        try:
            for _ in range(size // len(chunk)):
                framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
                connection.sendall(framed)
        except OSError:
            pass  # the server answered and closed while the client was still sending
        return connection.recv(65536)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_body_is_refused_without_growing_the_worker(
    migrated_database: str, chunked: bool
) -> None:
    with running_server(DATABASE_URL=migrated_database) as server:
        before = resident_kib(server.process.pid)
        answer = send_body(server.port, chunked=chunked, size=100 << 20)
        growth = resident_kib(server.process.pid) - before

    print(
        f"100 MB body ({'chunked' if chunked else 'Content-Length'}): {answer[:12]!r}, "
        f"resident memory grew {growth} KiB"
    )
    assert answer.startswith(b"HTTP/1.1 413")
    assert growth < 20 * 1024, f"grew {growth} KiB"


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_the_requests_in_flight_then_exits(
    postgres_url: str, admin: AsyncEngine, workers: int
) -> None:
    """Requests holding connections (behind a table lock, about a second) all finish with 201;
    readiness answers 503 during the drain; the process exits by itself."""
    name = f"test-drain-{uuid4().hex[:12]}"
    with running_server(
        DATABASE_URL=postgres_url,
        WEB_CONCURRENCY=str(workers),
        SHUTDOWN_TIMEOUT="20",
        DB_APPLICATION_NAME=name,
    ) as server:
        process = server.process
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            async with admin.connect() as locker:
                await locker.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
                in_flight = [
                    asyncio.create_task(client.post("/items", json={"name": f"drained-{n}"}))
                    for n in range(3)
                ]
                # All three hold a connection, waiting for the lock.
                deadline = time.monotonic() + 15
                while await app_sessions(admin, name, "active") < 3:
                    assert time.monotonic() < deadline, "the requests never reached the lock"
                    await asyncio.sleep(0.05)
                process.send_signal(signal.SIGTERM)
                # Several workers hear of it from their supervisor, within half a second.
                ready = await client.get("/health/ready")
                deadline = time.monotonic() + 5
                while ready.status_code == 200 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    ready = await client.get("/health/ready")
                await locker.rollback()
            statuses = [(await request).status_code for request in in_flight]
        exit_code = await asyncio.to_thread(process.wait, 30)

    print(f"drain with {workers} worker(s): in flight {statuses}, readiness {ready.status_code}")
    assert statuses == [201, 201, 201]
    assert ready.status_code == 503
    assert ready.json()["status"] == "draining"
    assert exit_code in (0, -signal.SIGTERM)
