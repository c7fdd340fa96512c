"""The baked projects' own test suites, run beside the template tests instead of after them.

A suite takes one and a half to three minutes, and much of that time it waits (pool timeouts,
servers starting, replicas catching up), so every selected suite starts when the session does, each
in a thread that runs it as a subprocess: in a copy of its bake (the template tests read the bake
itself, and a suite leaves `__pycache__` behind), from a virtual environment of its own (two
variants may install the same package name) and, on PostgreSQL, in a database of its own (a suite
empties its tables), created beside TEST_DATABASE_URL's and dropped afterwards; TEST_REPLICA_URL,
a replica of the whole cluster, gets the same database name. `test_generated_test_suite_passes`
waits for the outcome.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import (
    BAKE_VENVS,
    POSTGRES_MISSING,
    PYTHON_MISSING,
    BakeEnvironment,
    check_answer_names,
    find_pgbouncer,
    find_python,
    postgres_url,
    run,
    skip_unless_required,
    variant_id,
)

# A suite's own tests stop after 120 s each (its pytest-timeout); this bounds the whole suite.
SUITE_TIMEOUT = 900
# Creates (or, with "drop", removes) a database beside the given one, with the service's driver.
DATABASE_SCRIPT = """
import asyncio, sys
import asyncpg

async def main(url: str, name: str, action: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if action == "create":
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()

asyncio.run(main(*sys.argv[1:]))
"""


@dataclass
class SuiteRun:
    stdout: str
    stderr: str
    returncode: int | None  # None: stopped after SUITE_TIMEOUT
    seconds: float

    @property
    def summary(self) -> str:
        return self.stdout.strip().splitlines()[-1] if self.stdout.strip() else "no output"


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


class GeneratedSuites:
    """Bakes the variants (once: the template tests share these bakes) and runs their suites,
    all at once unless `jobs` is smaller."""

    def __init__(self, cookies: Any, workdir: Path, jobs: int) -> None:
        self._cookies = cookies
        self._workdir = workdir
        self._executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="suite")
        self._bakes: dict[str, Any] = {}
        self._runs: dict[str, Future[SuiteRun]] = {}
        self._not_run: dict[str, tuple[str, str]] = {}
        self._processes: set[subprocess.Popen[str]] = set()  # the suites running

    def bake(self, answers: dict[str, str]) -> Any:
        key = variant_id(answers)
        if key not in self._bakes:
            check_answer_names(answers)
            self._bakes[key] = self._cookies.bake(extra_context=answers)
        return self._bakes[key]

    def start(self, answers: dict[str, str]) -> None:
        """Starts the suite, or records why it cannot run here (for `outcome` to skip or fail)."""
        key = variant_id(answers)
        baked = self.bake(answers)
        if baked.exit_code != 0 or key in self._runs:
            return  # test_bakes_without_error reports a failed bake
        version = str(baked.context["python_version"])
        interpreter = find_python(version)
        postgresql = baked.context["database"] == "postgresql"
        if interpreter is None:
            self._not_run[key] = (PYTHON_MISSING.format(version=version), "REQUIRE_PYTHONS")
        elif postgresql and not postgres_url():
            self._not_run[key] = (POSTGRES_MISSING, "REQUIRE_POSTGRES")
        else:
            # Read here, in the main thread: a test may be changing os.environ when a thread runs.
            name = hashlib.sha1(key.encode()).hexdigest()[:10]
            server = postgres_url() if postgresql else None
            variables = suite_variables(server, name)
            job = self._executor.submit(self._run, baked, interpreter, name, variables, server)
            self._runs[key] = job

    def outcome(self, answers: dict[str, str]) -> SuiteRun:
        key = variant_id(answers)
        if key in self._not_run:
            skip_unless_required(*self._not_run[key])
        if key not in self._runs:
            pytest.fail(f"the bake failed, so its suite never ran: {self.bake(answers).exception}")
        return self._runs[key].result()

    def close(self) -> None:
        """Stops whatever still runs (a failed or interrupted session) and waits for the threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in list(self._processes):
            stop(process)
        self._executor.shutdown(wait=True)

    def _run(
        self,
        baked: Any,
        interpreter: str,
        name: str,
        variables: dict[str, str],
        server: str | None,
    ) -> SuiteRun:
        project = self._workdir / name / baked.project_path.name
        shutil.copytree(baked.project_path, project, symlinks=True)
        environment = BakeEnvironment(BAKE_VENVS / f"suite-{name}", interpreter)
        environment.create()
        environment.install(project)
        if server:
            self._database(environment.python, server, variables, "create")
        try:
            return run_pytest(
                environment.python, project, variables, SUITE_TIMEOUT, self._processes
            )
        finally:
            if server:
                self._database(environment.python, server, variables, "drop")

    def _database(self, python: Path, server: str, variables: dict[str, str], action: str) -> None:
        """Creates (or drops) the suite's database, connected to the one it is named after."""
        name = urlsplit(variables["TEST_DATABASE_URL"]).path.lstrip("/")
        plain = urlsplit(server)._replace(scheme="postgresql").geturl()
        command = [str(python), "-c", DATABASE_SCRIPT, plain, name, action]
        result = run(command, env=variables, cwd=self._workdir, timeout=120)
        assert result.returncode == 0, f"{action} database {name}: {result.stderr[-2000:]}"


def suite_variables(server: str | None, name: str) -> dict[str, str]:
    """The suite's environment: for a PostgreSQL bake (`server`, TEST_DATABASE_URL),
    TEST_DATABASE_URL and TEST_REPLICA_URL name a database of its own, `<database>_<name>`."""
    variables = {
        variable: value
        for variable, value in os.environ.items()
        if variable not in {"TEST_DATABASE_URL", "REQUIRE_POSTGRES", "DATABASE_URL"}
    }
    if server:
        database = f"{urlsplit(server).path.lstrip('/')}_{name}"
        variables["TEST_DATABASE_URL"] = with_database(server, database)
        if replica := os.environ.get("TEST_REPLICA_URL"):
            variables["TEST_REPLICA_URL"] = with_database(replica, database)
        # REQUIRE_POSTGRES=1 also makes a missing PgBouncer fail the bake's suite.
        if find_pgbouncer() or os.environ.get("REQUIRE_POSTGRES") == "1":
            variables["REQUIRE_POSTGRES"] = "1"
    return variables


def run_pytest(
    python: Path, project: Path, variables: dict[str, str], timeout: float, running: set[Any]
) -> SuiteRun:
    """The project's suite as CI runs it; stopped, with its servers, after `timeout` seconds.
    `running` holds the process meanwhile, for `GeneratedSuites.close` to stop."""
    started = time.monotonic()
    process = subprocess.Popen(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=variables,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, with the servers it starts
    )
    running.add(process)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        stop(process)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            stdout, stderr = "", "(stopped; a process it left behind still holds its output)"
        returncode = None
    finally:
        running.discard(process)
    return SuiteRun(stdout, stderr, returncode, time.monotonic() - started)


def stop(process: subprocess.Popen[str]) -> None:
    """Kills the process's group: the suite and any server it left running."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def jobs(suites: int) -> int:
    """How many suites run at once: SUITE_JOBS, or all of them."""
    return int(os.environ.get("SUITE_JOBS", "0")) or max(suites, 1)
