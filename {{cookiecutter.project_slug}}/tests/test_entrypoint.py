"""`python -m {{ cookiecutter.package_name }}` starts the server, or refuses bad settings cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_environment(**overrides: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DB_")}
    environment.update(overrides)
    return environment


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
    result = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}"],
        env=service_environment(**{variable: value}),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) <= 3


def start_server(port: int, **environment: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}"],
        env=service_environment(HOST="127.0.0.1", PORT=str(port), **environment),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_live(server: subprocess.Popen[str], port: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
        except httpx.TransportError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.2)


def test_serves_on_host_and_port_from_environment(migrated_database: str) -> None:
    port = free_port()
    server = start_server(port, DATABASE_URL=migrated_database)
    try:
        live = wait_until_live(server, port)
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        assert live.status_code == 200
        assert ready.status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)

    assert server.returncode == 0
    assert f"http://127.0.0.1:{port}" in output


def test_web_concurrency_workers_all_serve_and_stop_cleanly(migrated_database: str) -> None:
    """Each worker is its own process with its own engine; SIGINT stops every one of them."""
    workers = 2
    port = free_port()
    server = start_server(port, DATABASE_URL=migrated_database, WEB_CONCURRENCY=str(workers))
    base = f"http://127.0.0.1:{port}"

    def one_round(number: int) -> tuple[int, list[int]]:
        # A fresh connection each time, so that any worker may accept it.
        with httpx.Client(base_url=base, timeout=10) as client:
            created = client.post("/items", json={"name": f"worker-{number}"})
            fetched = client.get(f"/items/{created.json()['id']}")
            live = client.get("/health/live")
        return live.json()["pid"], [created.status_code, fetched.status_code, live.status_code]

    pids: set[int] = set()
    statuses: list[int] = []
    try:
        wait_until_live(server, port)
        deadline = time.monotonic() + 30
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(pids) < workers and time.monotonic() < deadline:
                for pid, answered in pool.map(one_round, range(16)):
                    pids.add(pid)
                    statuses += answered
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    print(f"\nWEB_CONCURRENCY={workers}: {len(statuses)} responses from worker pids {sorted(pids)}")

    assert len(pids) == workers, output
    assert set(statuses) == {200, 201}
    assert server.returncode == 0, output
    assert output.count("Application shutdown complete") == workers
    for pid in pids:
        assert f"Finished server process [{pid}]" in output
