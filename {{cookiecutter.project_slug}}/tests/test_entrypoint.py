"""`python -m {{ cookiecutter.package_name }}` starts the server, or refuses bad settings cleanly."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import PROJECT_ROOT, running_server, service_environment


def start_service(**environment: str) -> subprocess.CompletedProcess[str]:
    """`python -m {{ cookiecutter.package_name }}` that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}"],
        env=service_environment(**environment),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_POOL_SIZE", "abc"),
        ("DB_POOL_TIMEOUT", "-5"),
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "oracle://u:p@localhost/app"),
    ],
)
def test_bad_setting_stops_start_with_a_short_message(variable: str, value: str) -> None:
    result = start_service(**{variable: value})

    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) <= 3


def test_a_strict_budget_refuses_to_start_in_one_line(postgres_url: str) -> None:
    """DB_BUDGET_STRICT and pools larger than the server allows: one line, and no worker starts."""
    result = start_service(
        DATABASE_URL=postgres_url, DB_POOL_SIZE="100000", DB_BUDGET_STRICT="true"
    )

    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("Refusing to start: the primary: WEB_CONCURRENCY (1)")
    assert "DB_BUDGET_STRICT is set" in result.stderr
    assert "pool-test-secret" not in result.stderr


def test_serves_on_host_and_port_from_environment(migrated_database: str) -> None:
    with running_server(DATABASE_URL=migrated_database) as server:
        live = httpx.get(f"{server.url}/health/live", timeout=5)
        ready = httpx.get(f"{server.url}/health/ready", timeout=5)

    assert live.status_code == 200
    assert ready.status_code == 200
    assert server.process.returncode == 0
    assert server.url in server.output


def test_web_concurrency_workers_all_serve_and_stop_cleanly(migrated_database: str) -> None:
    """Each worker is its own process with its own engine; SIGINT stops every one of them."""
    workers = 2

    def one_round(number: int) -> tuple[int, list[int]]:
        # A fresh connection each time, so that any worker may accept it.
        with httpx.Client(base_url=server.url, timeout=10) as client:
            created = client.post("/items", json={"name": f"worker-{number}"})
            fetched = client.get(f"/items/{created.json()['id']}")
            live = client.get("/health/live")
        return live.json()["pid"], [created.status_code, fetched.status_code, live.status_code]

    pids: set[int] = set()
    statuses: list[int] = []
    with running_server(DATABASE_URL=migrated_database, WEB_CONCURRENCY=str(workers)) as server:
        deadline = time.monotonic() + 30
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(pids) < workers and time.monotonic() < deadline:
                for pid, answered in pool.map(one_round, range(16)):
                    pids.add(pid)
                    statuses += answered
    print(f"\nWEB_CONCURRENCY={workers}: {len(statuses)} responses from worker pids {sorted(pids)}")

    assert len(pids) == workers, server.output
    assert set(statuses) == {200, 201}
    assert server.process.returncode == 0, server.output
    assert server.output.count("Application shutdown complete") == workers
    for pid in pids:
        assert f"Finished server process [{pid}]" in server.output
