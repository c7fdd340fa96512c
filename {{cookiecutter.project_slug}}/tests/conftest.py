"""Fixtures that run the real application: real settings, real lifespan, real pool."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import httpx
import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.db import Connection, ReadConnection, ReadSession, Session
from {{ cookiecutter.package_name }}.db.engine import PoolStatus
from {{ cookiecutter.package_name }}.models import Item
from {{ cookiecutter.package_name }}.settings import Settings

if TYPE_CHECKING:
    from .pgbouncer import PgBouncer

# The four dependencies, by name, for tests that run the same handler with each.
VIEWS: dict[str, Any] = {
    "connection": Connection,
    "read_connection": ReadConnection,
    "session": Session,
    "read_session": ReadSession,
}
WRITERS = ("connection", "session")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The database this project targets; TEST_DATABASE_URL always wins.
PROJECT_DATABASE = "{{ cookiecutter.database }}"
POSTGRES_EXAMPLE = "postgresql+asyncpg://app:secret@127.0.0.1:5432/app_test"


def required_tool(found: str | None, reason: str, variable: str) -> str:
    """The tool's path; without it, a skip with `reason`, or a failure when `variable`=1 (CI)."""
    if found:
        return found
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason}; {variable}=1 makes this a failure")
    pytest.skip(reason)


def postgres_required() -> bool:
    return os.environ.get("REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        if postgres_required() and not url.startswith("postgresql"):
            pytest.fail(f"REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not PostgreSQL: {url!r}")
        return url
    reason = f"PostgreSQL tests need TEST_DATABASE_URL, e.g. {POSTGRES_EXAMPLE}"
    if postgres_required():
        pytest.fail(f"{reason} (REQUIRE_POSTGRES=1 makes this a failure)")
    if PROJECT_DATABASE == "postgresql":
        pytest.skip(reason)
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


def alembic_config() -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    """The test database, migrated to head through Alembic once per session."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", database_url)
        command.upgrade(alembic_config(), "head")
    return database_url


@pytest.fixture
def settings(migrated_database: str) -> Settings:
    """Pool 2 + 0 and a 1 s wait, so pool behaviour shows quickly; a session name of its own
    to find this test's server sessions in pg_stat_activity."""
    return Settings(
        database_url=migrated_database,
        db_pool_size=2,
        db_max_overflow=0,
        db_pool_timeout=1,
        ready_timeout=0.5,
        db_application_name=f"test-{uuid4().hex[:12]}",
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def running_app(app: FastAPI) -> AsyncIterator[FastAPI]:
    """The application with its lifespan started (engine created) and an empty items table."""
    async with LifespanManager(app):
        async with app.state.database.engine.begin() as connection:
            await connection.execute(delete(Item))
        yield app


@pytest.fixture
async def client(running_app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=running_app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def pool_of(app: FastAPI) -> PoolStatus:
    status: PoolStatus = app.state.database.status()
    return status


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip(f"needs PostgreSQL: set TEST_DATABASE_URL, e.g. {POSTGRES_EXAMPLE}")
    return database_url


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A connection outside the service's pool, to lock tables and inspect or end sessions."""
    engine = create_async_engine(postgres_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_environment(**overrides: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DB_")}
    environment.update(overrides)
    return environment


class Server:
    """A started service and what it prints. Its output is read while it runs: a pipe that no one
    reads fills after 64 KiB of log lines, and then the service blocks on its next one."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.output = ""
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self._lines.extend(self.process.stdout)

    def finish(self, timeout: float = 30) -> str:
        """Wait for the process to end; then `output` is everything it printed."""
        self.process.wait(timeout)
        self._reader.join(timeout)
        self.output = "".join(self._lines)
        return self.output


@contextmanager
def running_server(**environment: str) -> Iterator[Server]:
    """`python -m {{ cookiecutter.package_name }}` as a real process, stopped with Ctrl+C afterwards.

    The port is free when chosen but not reserved: if another process takes it first, the
    service exits with "address already in use" and starts again on another port."""
    for _ in range(3):
        server = start_server(environment)
        if server is not None:
            break
    else:
        raise AssertionError("no free port for the service in 3 tries")
    try:
        yield server
    finally:
        server.process.send_signal(signal.SIGINT)
        server.finish()


def start_server(environment: dict[str, str]) -> Server | None:
    """The service, answering on a port of its own; None if the port was taken meanwhile."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}"],
        env=service_environment(HOST="127.0.0.1", PORT=str(port), **environment),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(process, port)
    deadline = time.monotonic() + 30
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the service did not answer within 30 s:\n{server.finish()}")
        try:
            answer = httpx.get(f"{server.url}/health/live", timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if is_ours(pid_of(answer), process.pid):
            return server
        time.sleep(0.1)  # a stranger's server on the port: this one exits when it cannot bind
    output = server.finish()
    if "address already in use" in output.lower():
        return None
    raise AssertionError(f"the service exited with {process.returncode}:\n{output}")


def pid_of(answer: httpx.Response) -> int | None:
    """The process that answered `/health/live`, if the service did."""
    try:
        return int(answer.json()["pid"])
    except (ValueError, KeyError, TypeError):  # another kind of server on the port
        return None


def is_ours(pid: int | None, parent: int) -> bool:
    """`pid` is the service's process or one of its workers, not another suite's server."""
    if pid is None:
        return False
    if pid == parent:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not Path("/proc/self").exists()  # without /proc the owner cannot be checked
    return int(stat.rsplit(")", 1)[1].split()[1]) == parent


# PgBouncer's server connections for the test database.
PGBOUNCER_SERVER_POOL_SIZE = 4


@pytest.fixture(scope="session")
def pgbouncer(migrated_database: str) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode in front of the test database, for the session."""
    from .pgbouncer import PgBouncer, find_pgbouncer  # noqa: PLC0415 (it imports free_port)

    server = make_url(migrated_database)
    binary = find_pgbouncer()
    reason = None
    if server.get_backend_name() != "postgresql":
        reason = "PgBouncer tests need a PostgreSQL TEST_DATABASE_URL"
    elif binary is None:
        reason = "PgBouncer tests need pgbouncer (apt-get install pgbouncer, or set PGBOUNCER)"
    if reason:
        if postgres_required():
            pytest.fail(f"{reason} (REQUIRE_POSTGRES=1 makes this a failure)")
        pytest.skip(reason)
    assert binary is not None
    bouncer = PgBouncer(binary, server, pool_size=PGBOUNCER_SERVER_POOL_SIZE)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@asynccontextmanager
async def serving(
    settings: Settings, *routers: APIRouter
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """The application with these settings (and extra routes), started, and a client for it."""
    app = create_app(settings)
    for router in routers:
        app.include_router(router)
    async with (
        LifespanManager(app, startup_timeout=30),
        AsyncClient(
            transport=ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test"
        ) as client,
    ):
        yield app, client


def through_pgbouncer(settings: Settings, bouncer: PgBouncer) -> Settings:
    """`settings`, reaching the database through PgBouncer, with DB_PGBOUNCER set."""
    return settings.model_copy(
        update={
            "database_url": SecretStr(bouncer.url.render_as_string(hide_password=False)),
            "db_pgbouncer": True,
            "db_application_name": bouncer.application_name,
        }
    )
