"""The generated project's benchmark and this repository's comparison run work end to end, for a
second per point, and write what they promise.

They measure nothing here: figures come from full-length runs (`python -m bench` in a
project, `scripts/compare` in this repository), never from a timed test.
"""

from __future__ import annotations

import csv
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, BakeEnvironment, BakeEnvironments, run

SWEEP = ["pool 1", "pool 2", "pool 5", "pool 10", "pool 20", "pool 40", "no pool (null)"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def project(default_project: Path) -> Path:
    return default_project


@pytest.fixture(scope="module")
def environment(project: Path, bake_environments: BakeEnvironments) -> BakeEnvironment:
    return bake_environments.for_version("3.11")


def run_bench(
    project: Path, environment: BakeEnvironment, out: Path, *arguments: str, path: str
) -> Any:
    variables = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DB_") and key not in {"DATABASE_URL", "TEST_DATABASE_URL"}
    }
    variables.update(DATABASE_URL=f"sqlite+aiosqlite:///{out / 'bench.db'}", PATH=path)
    environment.install(project)
    command = [str(environment.python), "-m", "bench", "--duration", "1"]
    command += ["--warmup", "0", "--out", str(out), *arguments]
    return run(command, cwd=project, env=variables, timeout=600)


def csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "pool-sweep.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_benchmark_prints_the_table_and_writes_csv_and_chart(
    project: Path, environment: BakeEnvironment, tmp_path: Path, require_wrk: str
) -> None:
    result = run_bench(project, environment, tmp_path, path=os.environ["PATH"])

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "load: wrk, 50 connections" in result.stdout
    table = result.stdout[result.stdout.index("scenario ") :]
    assert table.splitlines()[0].split() == [
        "scenario",
        "requests/s",
        "p50",
        "ms",
        "p99",
        "ms",
        "errors",
    ]
    for scenario in SWEEP:
        assert f"\n{scenario} " in table
    assert "knee: pool " in table
    assert "pooled / no pool (DB_POOL_MODE=null): " in table
    rows = csv_rows(tmp_path)
    assert [row["scenario"] for row in rows] == SWEEP
    assert [row["pool_size"] for row in rows] == ["1", "2", "5", "10", "20", "40", ""]
    assert all(float(row["requests_per_second"]) > 0 for row in rows)
    assert all(row["errors"] == "0" for row in rows)
    assert png_size(tmp_path / "pool-sweep.png") == (1100, 450)


def test_open_loop_runs_every_round_and_shows_the_median_round(
    project: Path, environment: BakeEnvironment, tmp_path: Path, require_wrk: str
) -> None:
    result = run_bench(
        project,
        environment,
        tmp_path,
        "--open-loop",
        "0.5x",
        "--rounds",
        "2",
        path=os.environ["PATH"],
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for number in (1, 2):
        assert f"round {number}/2 capacity (closed loop, 50 connections): " in result.stdout
        assert f"round {number}/2 offered " in result.stdout
    assert "open loop, 1 s per rate, the median of 2 rounds" in result.stdout
    table = result.stdout[result.stdout.index("offered/s ") :].splitlines()
    assert table[0].split()[:4] == ["offered/s", "goodput/s", "of", "cap"]
    assert table[2].startswith("capacity (closed loop, requests/s), in the rounds shown: ")
    with (tmp_path / "open-loop.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["round"], row["status"]) for row in rows] == [
        (str(number), status)
        for number in (1, 2)
        for status in ("2xx", "503", "other", "unanswered")
    ]
    assert all(float(row["capacity_per_second"]) > 0 for row in rows)
    served = [row for row in rows if row["status"] == "2xx"]
    assert all(int(row["count"]) > 0 for row in served)


def test_benchmark_without_wrk_says_so_and_uses_the_python_load_generator(
    project: Path, environment: BakeEnvironment, tmp_path: Path
) -> None:
    result = run_bench(
        project, environment, tmp_path, "--pool-sizes", "2", path=str(environment.bin)
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "wrk not found on PATH (Debian/Ubuntu: apt-get install wrk)" in result.stdout
    assert "load: python (httpx)" in result.stdout
    assert [row["scenario"] for row in csv_rows(tmp_path)] == ["pool 2", "no pool (null)"]
    assert all(float(row["requests_per_second"]) > 0 for row in csv_rows(tmp_path))
    assert png_size(tmp_path / "pool-sweep.png") == (1100, 450)


def test_benchmark_asked_for_wrk_without_wrk_fails_with_the_install_hint(
    project: Path, environment: BakeEnvironment, tmp_path: Path
) -> None:
    result = run_bench(project, environment, tmp_path, "--load", "wrk", path=str(environment.bin))

    assert result.returncode != 0
    assert "apt-get install wrk" in result.stderr
    assert not (tmp_path / "pool-sweep.csv").exists()


def test_comparison_run_reports_every_target_the_ratios_and_the_page_size_axis(
    cookies_session: Any,
    bake_environments: BakeEnvironments,
    tmp_path: Path,
    require_postgres: str,
    require_wrk: str,
) -> None:
    baked = cookies_session.bake(extra_context={"database": "postgresql"})
    environment = bake_environments.for_version("3.11")
    environment.install(baked.project_path)
    variables = {key: value for key, value in os.environ.items() if not key.startswith("DB_")}
    variables["DATABASE_URL"] = require_postgres

    command = [str(environment.python), str(ROOT / "bench" / "compare.py")]
    command += ["--project", str(baked.project_path), "--rounds", "1", "--duration", "1"]
    command += ["--warmup", "0", "--out", str(tmp_path)]

    result = run(command, env=variables, timeout=600)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("\nGET /items?limit=20 ") :]
    for label in (
        "(a) Starlette",
        "(b) FastAPI",
        "(c) typical",
        "(d) baked service",
        "(e) baked, ReadSession + ORM",
        "(d) baked, DB_POOL_MODE",
        "(d) baked, DB_POOL_PRE_PING",
    ):
        assert f"\n{label}" in table
    for ratio in ("d/b ", "d/a ", "d/c ", "d/null ", "d/ping ", "e/c ", "e/d "):
        assert f"\n  {ratio}" in table
    assert "(d) p99 / mean latency" in table
    assert "(e) p99 / mean latency" in table
    axis = table[table.index("\npage-size axis, d/b by server CPU/request") :].splitlines()
    assert axis[2].split()[0] == "limit"
    assert axis[2].endswith("d/b CPU  d/b req/s")
    assert [line.split()[0] for line in axis[3:6]] == ["1", "20", "100"]
    with (tmp_path / "compare.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted((row["limit"], row["target"]) for row in rows) == [
        ("1", "b"),
        ("1", "d"),
        ("100", "b"),
        ("100", "d"),
        *(("20", target) for target in ["a", "b", "c", "d", "e", "null", "ping"]),
    ]
    assert all(float(row["rps"]) > 0 for row in rows)
    # Without a pool, 50 connections at once may meet a shared server's connection limit.
    assert all(row["errors"] == "0" for row in rows if row["target"] != "null")


@pytest.mark.parametrize("limits", ["0,20", "1,101", "1,x"])
def test_comparison_run_refuses_a_page_size_the_services_would_not_serve(
    bake_environments: BakeEnvironments, tmp_path: Path, limits: str
) -> None:
    python = bake_environments.for_version("3.11").python
    command = [str(python), str(ROOT / "bench" / "compare.py"), "--project", str(tmp_path)]
    command += ["--limits", limits]

    result = run(command)

    assert result.returncode == 2
    assert "--limits" in result.stderr


def test_profile_summary_gives_own_time_by_library_and_by_frame(
    bake_environments: BakeEnvironments, tmp_path: Path
) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "run (uvicorn/main.py:1);execute (asyncpg/connection.py:377) 3\n"
        "run (uvicorn/main.py:1);_SelectorSocketTransport.write (asyncio/selector_events.py:1) 1\n"
    )
    script = (
        "import pathlib, sys, compare; print(compare.summarise_profile(pathlib.Path(sys.argv[1])))"
    )

    result = run(
        [str(bake_environments.for_version("3.11").python), "-c", script, str(raw)],
        cwd=ROOT / "bench",
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "4 samples; own time by library:"
    assert lines[1] == "   75.0%  asyncpg"
    assert lines[2].startswith("   25.0%  socket writes")
    assert "   75.0%  execute (asyncpg/connection.py:377)" in lines
