"""Request IDs, logs a team can search, and metrics that add up over every worker."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.logging_config import JsonFormatter, RequestFilter, log_config
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import running_server

ITEMS_COUNT = "http_server_request_duration_seconds_count"


def requests_counted(exposition: str, route: str) -> float:
    """Requests to `route` in a scrape, over every method, status and worker."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == ITEMS_COUNT and sample.labels["http_route"] == route
    )


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of the output, each of which must be a JSON object."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


async def test_response_carries_the_clients_request_id(client: AsyncClient) -> None:
    response = await client.get("/items", headers={"X-Request-ID": "checkout-42.retry_1"})

    assert response.headers["X-Request-ID"] == "checkout-42.retry_1"


# Empty, too long, outside [A-Za-z0-9._-], or not ASCII.
UNSAFE_IDS = [
    "",
    "a" * 129,
    "has space",
    "new\\nline",
    "<script>",
    "caf\N{LATIN SMALL LETTER E WITH ACUTE}",
]


@pytest.mark.parametrize("sent", [None, *UNSAFE_IDS])
async def test_response_gets_a_new_request_id_instead_of_an_unsafe_one(
    client: AsyncClient, sent: str | None
) -> None:
    headers = {} if sent is None else {b"X-Request-ID": sent.encode()}
    response = await client.get("/health/live", headers=headers)

    assert len(response.headers["X-Request-ID"]) == 32
    assert response.headers["X-Request-ID"] != sent
    int(response.headers["X-Request-ID"], 16)


async def test_every_response_has_a_request_id(client: AsyncClient) -> None:
    responses = [
        await client.get("/items"),
        await client.get("/items/0"),  # 422
        await client.get("/nowhere"),  # 404, no route
        await client.post("/items", json={"name": "x"}),
        await client.get("/metrics"),
    ]

    assert all(len(response.headers["X-Request-ID"]) == 32 for response in responses)
    assert len({response.headers["X-Request-ID"] for response in responses}) == len(responses)


async def test_unhandled_error_is_a_500_with_a_request_id_and_is_counted(
    settings: Settings,
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "bug-1"})
            exposition = (await client.get("/metrics")).text

    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "bug-1"
    assert 'http_response_status_code="500",http_route="/boom"' in exposition


async def test_requests_are_counted_by_route_template_never_by_path(
    client: AsyncClient,
) -> None:
    for item_id in (1, 2, 3):
        await client.get(f"/items/{item_id}")
    await client.get("/nowhere")
    exposition = (await client.get("/metrics")).text

    assert requests_counted(exposition, "/items/{item_id}") == 3
    assert "/items/1" not in exposition
    assert "/nowhere" not in exposition
    assert requests_counted(exposition, "") == 1


async def test_two_applications_in_one_process_count_separately(
    client: AsyncClient, running_app: FastAPI
) -> None:
    other = create_app(running_app.state.database.settings)
    await client.get("/items")

    assert requests_counted((await client.get("/metrics")).text, "/items") == 1
    assert requests_counted(generate_latest(other.state.metrics_registry).decode(), "/items") == 0


async def test_pool_warning_carries_the_route_and_request_id(
    running_app: FastAPI, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The logging filter reads the request's context; here on pytest's own log handler."""
    caplog.handler.addFilter(RequestFilter())
    database = running_app.state.database
    async with database.place("holder"), database.place("holder"):
        response = await client.get("/items", headers={"X-Request-ID": "shed-me"})

    assert response.status_code == 503
    assert response.headers["X-Request-ID"] == "shed-me"
    [warning] = [r for r in caplog.records if "no database connection" in r.getMessage()]
    line = json.loads(JsonFormatter().format(warning))
    assert (line["request_id"], line["http_route"]) == ("shed-me", "/items")
    assert line["level"] == "WARNING"
    assert {"time", "logger", "message"} <= set(line)


def wait_for_both_workers(url: str) -> None:
    """The server answers as soon as one worker is up: wait for the second one too."""
    deadline = time.monotonic() + 30
    limits = httpx.Limits(max_keepalive_connections=0)  # either worker may accept each one
    with httpx.Client(base_url=url, timeout=10, limits=limits) as client:
        while len({client.get("/health/live").json()["pid"] for _ in range(8)}) < 2:
            assert time.monotonic() < deadline, "the second worker did not start"


def test_every_scrape_counts_every_workers_requests(migrated_database: str) -> None:
    """WEB_CONCURRENCY=2: N requests spread over both workers, then K scrapes, each answered by
    whichever worker accepts it, and every one reports all N."""
    requests, scrapes = 40, 40

    def fresh_get(path: str) -> httpx.Response:
        # A new connection each time, so that either worker may accept it.
        return httpx.get(f"{server.url}{path}", timeout=10)

    with running_server(
        DATABASE_URL=migrated_database, WEB_CONCURRENCY="2", LOG_FORMAT="json"
    ) as server:
        wait_for_both_workers(server.url)
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = [r.status_code for r in pool.map(fresh_get, ["/items"] * requests)]
        # A request is counted as its response is sent: wait for the last to be counted.
        deadline = time.monotonic() + 10
        while requests_counted(fresh_get("/metrics").text, "/items") < requests:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Several at once, as with the requests: one after another, one worker may take them all.
        with ThreadPoolExecutor(max_workers=8) as pool:
            scraped = pool.map(fresh_get, ["/metrics"] * scrapes)
            counted = [requests_counted(response.text, "/items") for response in scraped]
    scraped_by = {
        line["pid"]
        for line in json_lines(server.output)
        if line["logger"] == "uvicorn.access" and "/metrics" in line["message"]
    }
    served_by = {
        line["pid"]
        for line in json_lines(server.output)
        if line["logger"] == "uvicorn.access" and "/items" in line["message"]
    }
    print(f"\n{requests} requests (workers {sorted(served_by)}); {scrapes} scrapes: {counted}")

    assert statuses == [200] * requests
    assert counted == [requests] * scrapes
    assert len(served_by) == 2
    assert len(scraped_by) == 2


async def test_json_logs_of_both_workers_name_the_route_and_request_id_of_a_503(
    migrated_database: str, admin: AsyncEngine
) -> None:
    """WEB_CONCURRENCY=2, LOG_FORMAT=json: a locked table makes requests queue and get 503s."""
    sent = [f"client-{number}-{uuid4().hex[:8]}" for number in range(6)]

    async def get_items(client: httpx.AsyncClient, request_id: str) -> httpx.Response:
        return await client.get("/items", headers={"X-Request-ID": request_id})

    with running_server(
        DATABASE_URL=migrated_database,
        WEB_CONCURRENCY="2",
        LOG_FORMAT="json",
        DB_POOL_SIZE="1",
        DB_MAX_OVERFLOW="0",
        DB_POOL_TIMEOUT="0.5",
    ) as server:
        await asyncio.to_thread(wait_for_both_workers, server.url)
        async with admin.connect() as locker:
            await locker.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
            # No keep-alive: each request may go to either worker.
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=limits) as client:
                shed = asyncio.gather(*(get_items(client, request_id) for request_id in sent))
                await asyncio.sleep(2)
                await locker.rollback()
                responses = await shed
    lines = json_lines(server.output)
    answered = {response.headers["X-Request-ID"]: response.status_code for response in responses}
    warnings = [line for line in lines if "no database connection" in line["message"]]
    print("\none 503's log line:", warnings[0] if warnings else None)

    assert set(answered) == set(sent)
    assert 503 in answered.values()
    workers = {line["pid"] for line in lines if line["message"] == "Application startup complete."}
    assert len(workers) == 2
    assert warnings
    for warning in warnings:
        assert warning["level"] == "WARNING"
        assert warning["http_route"] == "/items"
        assert answered[warning["request_id"]] == 503
    assert {"time", "level", "logger", "message", "request_id"} <= set(warnings[0])


def test_log_format_is_text_by_default_and_applies_to_uvicorn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text_config = log_config(Settings(_env_file=None))
    json_config = log_config(Settings(_env_file=None, log_format="JSON"))

    assert "format" in text_config["formatters"]["default"]
    assert json_config["formatters"]["default"]["()"] is JsonFormatter
    for config in (text_config, json_config):
        assert config["loggers"]["uvicorn.access"] == {"handlers": [], "propagate": True}
        assert config["root"]["handlers"] == ["default"]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("line",), None)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "-"
