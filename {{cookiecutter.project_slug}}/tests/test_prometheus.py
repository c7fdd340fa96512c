"""A real Prometheus scrapes the running service (two workers) while a locked table exhausts its
pools: the shipped alert rules fire, and every metric the dashboard queries is in the scrape."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .conftest import free_port, required_tool, running_server
from .test_monitoring import MONITORING, dashboard_queries, metric_names

EXPECTED_ALERTS = {"DatabasePoolSaturated", "RequestsShedWith503"}
# The shipped rules wait minutes before firing; the test renders them with a few seconds.
SHORT_FOR = "2s"
WITHIN = 45  # seconds for both alerts to fire


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return required_tool(
        os.environ.get("PROMETHEUS") or shutil.which("prometheus"),
        "Prometheus tests need prometheus on PATH (Debian: apt-get install prometheus)",
        "REQUIRE_PROMETHEUS",
    )


@contextmanager
def prometheus(binary: str, target: str, workdir: Path) -> Iterator[str]:
    """Prometheus on a free loopback port, scraping `target` every second with the alert rules."""
    shipped = (MONITORING / "alerts.yml").read_text()
    rules = re.sub(r"(?m)^(\s+for:) \S+$", rf"\1 {SHORT_FOR}", shipped)
    (workdir / "alerts.yml").write_text(rules)
    (workdir / "prometheus.yml").write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        "  - job_name: app\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"Prometheus did not start: {process.communicate()[1][-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.communicate(timeout=30)


@contextmanager
def load(url: str, clients: int) -> Iterator[list[int]]:
    """`clients` threads sending GET /items, each on a new connection, until the block ends."""
    statuses: list[int] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            try:
                statuses.append(httpx.get(f"{url}/items", timeout=10).status_code)
            except httpx.TransportError:
                statuses.append(0)

    threads = [threading.Thread(target=send) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def scraped_names(exposition: str) -> set[str]:
    return {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


@pytest.mark.timeout(120)
async def test_alerts_fire_on_a_real_prometheus_while_a_locked_table_exhausts_the_pools(
    prometheus_binary: str, postgres_url: str, admin: AsyncEngine, tmp_path: Path
) -> None:
    """Two workers with pools of 2 + 0 and a 1 s timeout; 12 clients; `items` locked."""
    with (
        running_server(
            DATABASE_URL=postgres_url,
            WEB_CONCURRENCY="2",
            DB_POOL_SIZE="2",
            DB_MAX_OVERFLOW="0",
            DB_POOL_TIMEOUT="1",
        ) as server,
        prometheus(prometheus_binary, server.url.removeprefix("http://"), tmp_path) as prom,
    ):
        async with (
            httpx.AsyncClient(base_url=prom, timeout=5) as api,
            httpx.AsyncClient(base_url=server.url, timeout=5) as service,
            admin.connect() as locker,
        ):
            await locker.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
            locked = time.monotonic()
            fired: dict[str, float] = {}
            with load(server.url, clients=12) as statuses:
                while set(fired) < EXPECTED_ALERTS and time.monotonic() - locked < WITHIN:
                    await asyncio.sleep(0.5)
                    for alert in (await api.get("/api/v1/alerts")).json()["data"]["alerts"]:
                        if alert["state"] == "firing":
                            name = alert["labels"]["alertname"]
                            fired.setdefault(name, round(time.monotonic() - locked, 1))
                exposition = (await service.get("/metrics")).text
                await locker.rollback()
    print(f"\nalerts firing, seconds after the table was locked: {fired}")
    print(f"responses during the exhaustion: {sorted(set(statuses))}, {len(statuses)} in all")

    assert set(fired) >= EXPECTED_ALERTS, f"only {fired} fired within {WITHIN} s"
    assert 503 in statuses
    queried = set().union(*(metric_names(query) for query in dashboard_queries()))
    assert queried - scraped_names(exposition) == set()
