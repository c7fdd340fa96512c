"""`python -m {{ cookiecutter.package_name }}` starts the server, or refuses bad settings cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

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


def test_serves_on_host_and_port_from_environment(migrated_database: str) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}"],
        env=service_environment(DATABASE_URL=migrated_database, HOST="127.0.0.1", PORT=str(port)),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        assert live.status_code == 200
        assert ready.status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)

    assert server.returncode == 0
    assert f"http://127.0.0.1:{port}" in output
