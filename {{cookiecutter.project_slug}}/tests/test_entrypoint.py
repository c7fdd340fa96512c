"""`python -m {{ cookiecutter.package_name }}` starts the server, or refuses bad settings cleanly."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from .conftest import PROJECT_ROOT, running_server, service_environment


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
    with running_server(DATABASE_URL=migrated_database) as server:
        live = httpx.get(f"{server.url}/health/live", timeout=5)
        ready = httpx.get(f"{server.url}/health/ready", timeout=5)

    assert live.status_code == 200
    assert ready.status_code == 200
    assert server.process.returncode == 0
    assert server.url in server.output
