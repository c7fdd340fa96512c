"""The service as users run it: `python -m {{ cookiecutter.package_name }}` in a subprocess on a free
loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO

import httpx

SERVICE_MODULE = "{{ cookiecutter.package_name }}"
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30


class ServiceStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_service(settings: Mapping[str, str]) -> Iterator[str]:
    """Serve with the environment plus `settings` (e.g. `DB_POOL_SIZE`); yield the base URL once
    `/health/ready` answers 200, and stop the service with Ctrl+C's signal afterwards."""
    port = free_port()
    environment = {**os.environ, **settings, "HOST": HOST, "PORT": str(port)}
    environment["LOG_LEVEL"] = "warning"  # access logs would cost throughput
    base_url = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(  # noqa: S603 - this interpreter, this service
            [sys.executable, "-m", SERVICE_MODULE],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_ready(server, base_url, log)
            yield base_url
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_until_ready(server: subprocess.Popen[bytes], base_url: str, log: IO[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            if httpx.get(f"{base_url}/health/ready", timeout=5).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    log.seek(0)
    raise ServiceStartError(f"the service did not become ready:\n{log.read()[-3000:]}")
