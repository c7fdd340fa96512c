"""Load shedding: above REQUESTS_PER_CONNECTION requests per pool connection, a request is refused
at once with 503; health checks and `/metrics` never are; the requests taken in are served."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from {{ cookiecutter.package_name }}.api.shedding import LoadShedding
from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.settings import Settings

PROBLEM = {
    "type": "about:blank",
    "title": "Service Unavailable",
    "status": 503,
    "detail": "the service is overloaded; retry shortly",
}
LIMIT = 2


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """Pool 2 and one request per connection: two in flight at most. `GET /test/hold` stays in
    flight until the test sets `app.state.release`; `app.state.held` is set once two are held."""
    app = create_app(settings.model_copy(update={"requests_per_connection": 1}))
    app.state.release = asyncio.Event()
    app.state.held = asyncio.Event()
    holding = 0

    @app.get("/test/hold")
    async def hold() -> dict[str, str]:
        nonlocal holding
        holding += 1
        if holding == LIMIT:
            app.state.held.set()
        await app.state.release.wait()
        return {"status": "released"}

    return app


def shedding_of(app: FastAPI) -> LoadShedding:
    layer = app.middleware_stack
    while not isinstance(layer, LoadShedding):
        layer = layer.app  # type: ignore[union-attr]
    return layer


async def hold_the_limit(client: AsyncClient, app: FastAPI) -> list[asyncio.Task[Response]]:
    held = [asyncio.create_task(client.get("/test/hold")) for _ in range(LIMIT)]
    async with asyncio.timeout(10):
        await app.state.held.wait()
    return held


async def shed_total(client: AsyncClient) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("http_server_requests_shed_total "):
            return float(line.split()[1])
    raise AssertionError("no http_server_requests_shed_total in /metrics")


async def test_request_above_the_limit_is_refused_at_once_with_a_problem(
    client: AsyncClient, running_app: FastAPI
) -> None:
    held = await hold_the_limit(client, running_app)

    refused = await client.get("/items")

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json() == PROBLEM
    assert "x-request-id" in refused.headers  # observed like any other answer
    running_app.state.release.set()
    assert [response.status_code for response in await asyncio.gather(*held)] == [200] * LIMIT


async def test_health_checks_and_metrics_are_never_refused(
    client: AsyncClient, running_app: FastAPI
) -> None:
    held = await hold_the_limit(client, running_app)

    paths = ("/health/live", "/health/ready", "/metrics")

    statuses = {path: (await client.get(path)).status_code for path in paths}

    assert statuses == dict.fromkeys(paths, 200)
    running_app.state.release.set()
    await asyncio.gather(*held)


async def test_requests_are_served_again_once_those_in_flight_finish(
    client: AsyncClient, running_app: FastAPI
) -> None:
    held = await hold_the_limit(client, running_app)
    assert (await client.get("/items")).status_code == 503

    running_app.state.release.set()
    await asyncio.gather(*held)

    assert shedding_of(running_app).in_flight == 0
    assert (await client.post("/items", json={"name": "after"})).status_code == 201
    assert (await client.get("/items")).status_code == 200


async def test_each_refusal_is_counted_and_one_warning_is_logged(
    client: AsyncClient, running_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    held = await hold_the_limit(client, running_app)
    caplog.set_level(logging.WARNING, logger="{{ cookiecutter.package_name }}.api.shedding")

    statuses = [(await client.get("/items")).status_code for _ in range(5)]

    assert statuses == [503] * 5
    assert await shed_total(client) == 5
    warnings = [r for r in caplog.records if r.name == "{{ cookiecutter.package_name }}.api.shedding"]
    assert len(warnings) == 1
    assert "REQUESTS_PER_CONNECTION" in warnings[0].getMessage()
    running_app.state.release.set()
    await asyncio.gather(*held)


async def test_a_request_that_fails_leaves_the_flight(
    client: AsyncClient, running_app: FastAPI
) -> None:
    """A handler that raises (here: the client's bad body) still gives its slot back."""
    statuses = [(await client.post("/items", content=b"not json")).status_code for _ in range(3)]

    assert statuses == [422] * 3
    assert shedding_of(running_app).in_flight == 0
