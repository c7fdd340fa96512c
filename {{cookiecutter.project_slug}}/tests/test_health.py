"""Liveness needs no database; readiness reports the database and the pool."""

from __future__ import annotations

import os

from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.settings import Settings


def unreachable(settings: Settings) -> Settings:
    """The same kind of database, at an address where nothing answers."""
    url = settings.url
    if url.get_backend_name() == "sqlite":
        broken = url.set(database="/nonexistent-directory/for/tests.db")
    else:
        broken = url.set(host="127.0.0.1", port=1)
    return settings.model_copy(
        update={"database_url": SecretStr(broken.render_as_string(hide_password=False))}
    )


async def test_live_answers_without_the_database(client: AsyncClient) -> None:
    response = await client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "pid": os.getpid()}


async def test_ready_reports_database_and_pool(client: AsyncClient) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert body["pool"] == {
        "size": 2,
        "checked_in": 1,
        "checked_out": 0,
        "overflow": 0,
        "waiting": 0,
    }


async def test_unreachable_database_gives_503_not_500(settings: Settings) -> None:
    app = create_app(unreachable(settings))

    transport = ASGITransport(app=app)
    async with (
        LifespanManager(app),
        AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        ready = await client.get("/health/ready")
        items = await client.get("/items")
        live = await client.get("/health/live")

    assert ready.status_code == 503
    assert ready.json()["database"] == "unreachable"
    assert items.status_code == 503
    assert items.headers["Retry-After"].isdigit()
    assert live.status_code == 200
