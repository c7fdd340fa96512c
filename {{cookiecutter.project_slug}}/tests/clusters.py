"""Throwaway PostgreSQL servers for the replica and failover tests: a primary and its streaming
standby, made with Debian's postgresql-common (`pg_createcluster`) on free ports, dropped after.

They are the tests' own, so stopping, pausing, promoting or demoting them disturbs nobody else's
server. Everything runs as the `postgres` user (directly when root, else through `sudo -n`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from uuid import uuid4

from sqlalchemy.engine import URL

from .conftest import free_port

ROLE, PASSWORD, DATABASE = "replica_test", "replica-test-secret", "app"
# Small and unsafe on a crash: these servers live for one test session.
SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def cluster_tools_problem() -> str | None:
    """Why throwaway clusters cannot be made here, or None when they can."""
    if shutil.which("pg_createcluster") is None:
        return "pg_createcluster (Debian's postgresql-common) is not installed"
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], check=False).returncode:
        return "making PostgreSQL clusters needs root or password-less sudo"
    if not installed_versions():
        return "no PostgreSQL server version is installed in /usr/lib/postgresql"
    return None


def installed_versions() -> list[str]:
    root = Path("/usr/lib/postgresql")
    found = [path.name for path in root.glob("*") if (path / "bin" / "postgres").exists()]
    return sorted(found, key=lambda version: [int(part) for part in version.split(".")])


def as_postgres_user() -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    return ["sudo", "-n", "-u", "postgres"]


def as_postgres(*command: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [*as_postgres_user(), *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


class Cluster:
    """One PostgreSQL server on a free loopback port."""

    def __init__(self, version: str, name: str) -> None:
        self.version, self.name, self.port = version, name, free_port()

    def create(self) -> None:
        options = [argument for setting in SERVER_SETTINGS for argument in ("-o", setting)]
        as_postgres(
            "pg_createcluster", self.version, self.name, "-p", str(self.port), *options,
            "--", "--no-sync",
        )  # fmt: skip

    @property
    def data_directory(self) -> str:
        return f"/var/lib/postgresql/{self.version}/{self.name}"

    def ctl(self, action: str, *options: str) -> None:
        as_postgres("pg_ctlcluster", self.version, self.name, action, *options)

    def sql(self, statement: str, database: str = "postgres") -> str:
        return as_postgres(
            "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", str(self.port), "-d", database,
            "-c", statement,
        )  # fmt: skip

    def url(self) -> URL:
        return URL.create("postgresql+asyncpg", ROLE, PASSWORD, "127.0.0.1", self.port, DATABASE)

    def drop(self) -> None:
        subprocess.run(
            [*as_postgres_user(), "pg_dropcluster", "--stop", self.version, self.name],
            capture_output=True,
            check=False,
            timeout=60,
            cwd="/",
        )


class Pair:
    """A primary with a role and database for the service, and its streaming standby."""

    def __init__(self) -> None:
        version = installed_versions()[-1]
        tag = uuid4().hex[:8]
        self.primary = Cluster(version, f"test_{tag}_primary")
        self.standby = Cluster(version, f"test_{tag}_standby")

    def build(self) -> None:
        """The primary, up, with the service's role and database; migrate, then build_standby."""
        primary = self.primary
        primary.create()
        primary.ctl("start")
        primary.sql(f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        primary.sql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def build_standby(self) -> None:
        """After the schema is in: `pg_basebackup -R` copies it, then the standby streams."""
        primary, standby = self.primary, self.standby
        standby.create()
        as_postgres("rm", "-rf", standby.data_directory)
        as_postgres(
            "pg_basebackup", "-D", standby.data_directory, "-R", "-X", "stream", "-c", "fast",
            "-p", str(primary.port),
        )  # fmt: skip
        standby.ctl("start")
        self.wait_until_caught_up()

    def wait_until_caught_up(self, timeout: float = 30) -> None:
        target = self.primary.sql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        query = f"SELECT pg_is_in_recovery() AND pg_last_wal_replay_lsn() >= '{target}'"
        while self.standby.sql(query) != "t":
            assert time.monotonic() < deadline, "the standby did not catch up with the primary"
            time.sleep(0.1)

    def drop(self) -> None:
        self.standby.drop()
        self.primary.drop()
