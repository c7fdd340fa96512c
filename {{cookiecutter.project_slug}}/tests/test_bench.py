"""The benchmark's report: the knee, the pooled/unpooled ratio, the table, the CSV and the chart;
and the ORM page that the template's comparison run measures as its target (e).

Running the benchmark itself is tested by the template; this checks what it makes of the figures.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from bench.load import LoadResult
from bench.orm_app import create_app as create_orm_app
from bench.report import (
    Measurement,
    knee,
    pooled_over_null,
    table,
    write_chart,
    write_csv,
)
from {{ cookiecutter.package_name }}.settings import Settings


def measured(pool_size: int | None, rps: float) -> Measurement:
    name = "no pool (null)" if pool_size is None else f"pool {pool_size}"
    result = LoadResult(
        requests=int(rps * 10),
        seconds=10,
        errors=0,
        mean_ms=5,
        p50_ms=4,
        p99_ms=20,
        max_ms=30,
    )
    return Measurement(name, pool_size, result)


SWEEP = [
    measured(1, 300),
    measured(2, 560),
    measured(5, 960),
    measured(10, 1000),
    measured(20, 990),
    measured(None, 100),
]


def test_knee_is_the_smallest_pool_within_95_percent_of_the_best() -> None:
    found = knee(SWEEP)

    assert found is not None
    assert found.pool_size == 5


def test_knee_needs_a_pooled_measurement() -> None:
    assert knee([measured(None, 100)]) is None


def test_pooled_over_null_compares_the_best_pool_with_no_pool() -> None:
    assert pooled_over_null(SWEEP) == 10


def test_table_names_every_scenario_the_knee_and_the_ratio() -> None:
    lines = table(SWEEP).splitlines()

    assert lines[0].split() == ["scenario", "requests/s", "p50", "ms", "p99", "ms", "errors"]
    assert [line.split()[1] for line in lines[1:6]] == ["1", "2", "5", "10", "20"]
    assert lines[6].split()[:2] == ["no", "pool"]
    assert lines[7].startswith("knee: pool 5 ")
    assert lines[8] == "pooled / no pool (DB_POOL_MODE=null): 10.0x requests/s"


def test_csv_has_a_row_per_run(tmp_path: Path) -> None:
    write_csv(SWEEP, tmp_path / "sweep.csv")

    with (tmp_path / "sweep.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["pool_size"] for row in rows] == ["1", "2", "5", "10", "20", ""]
    assert rows[3]["requests_per_second"] == "1000.0"


def test_chart_is_a_png(tmp_path: Path) -> None:
    write_chart(SWEEP, tmp_path / "sweep.png", "test sweep")

    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The service plus `GET /orm/items`, which the `client` fixture serves."""
    return create_orm_app(settings)


async def test_orm_page_is_the_core_page(client: AsyncClient) -> None:
    for n in range(5):
        description = None if n % 2 else f"description {n}"
        item = {"name": f"item-{n}", "description": description}
        assert (await client.post("/items", json=item)).status_code == 201
    page = {"limit": 3, "offset": 1}

    core = await client.get("/items", params=page)
    orm = await client.get("/orm/items", params=page)

    assert orm.status_code == 200
    assert len(orm.json()) == 3
    assert orm.json() == core.json()
    assert (await client.get("/orm/items", params={"limit": 101})).status_code == 422
