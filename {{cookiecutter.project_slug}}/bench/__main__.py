"""Sweep the pool size at a fixed concurrency, then run without a pool; print, CSV and chart.

Every point starts the service afresh as a real uvicorn subprocess with that pool, warms it up,
and drives `GET /items?limit=20` with wrk (or the Python fallback) over loopback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from {{ cookiecutter.package_name }}.settings import Settings, describe_validation_error

try:
    from .load import WRK_MISSING, LoadResult, run_python, run_wrk, wrk_path
    from .overload import CSV_NAME as OPEN_LOOP_CSV
    from .overload import (
        measure_open_loop,
        median_by,
        median_point,
        open_loop_table,
        rates,
        write_open_loop_csv,
    )
    from .report import Measurement, table, write_chart, write_csv
    from .seed import ensure_rows, migrate
    from .server import running_service
except ModuleNotFoundError as missing:
    raise SystemExit(f"{missing.name} is not installed: pip install '.[bench]'") from None

DEFAULT_POOL_SIZES = "1,2,5,10,20,40"
CSV_NAME = "pool-sweep.csv"
CHART_NAME = "pool-sweep.png"

Load = Callable[[str, int, int], LoadResult]


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--pool-sizes", default=DEFAULT_POOL_SIZES, type=_sizes)
    parser.add_argument("--connections", default=50, type=_positive, help="concurrent clients")
    parser.add_argument("--duration", default=10, type=_positive, help="seconds per point")
    parser.add_argument("--warmup", default=2, type=_not_negative, help="seconds before each")
    parser.add_argument("--rounds", default=1, type=_positive, help="interleaved repeats")
    parser.add_argument("--rows", default=100, type=_positive, help="rows to make sure exist")
    parser.add_argument("--path", default="/items?limit=20", help="what every request asks for")
    parser.add_argument("--out", default=Path("bench-results"), type=Path, help="output folder")
    parser.add_argument(
        "--load",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator; auto: wrk if installed, else the Python fallback",
    )
    parser.add_argument(
        "--open-loop",
        metavar="RATE[,RATE...]",
        type=rates,
        help="instead of the sweep, offer requests on a fixed schedule at each rate: requests/s "
        "(500) or multiples of the closed-loop capacity (0.5x,1.5x,3x); see bench/openloop.py",
    )
    return parser.parse_args(argv)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return number


def _not_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return number


def _sizes(value: str) -> list[int]:
    return [_positive(size) for size in value.split(",")]


def choose_load(name: str) -> tuple[str, Load]:
    if name == "wrk" or (name == "auto" and wrk_path() is not None):
        if wrk_path() is None:
            raise SystemExit("wrk not found on PATH (Debian/Ubuntu: apt-get install wrk)")
        return "wrk", run_wrk
    if name == "auto":
        print(f"NOTE: {WRK_MISSING}\n")
    return "python (httpx)", run_python


def scenarios(pool_sizes: Sequence[int]) -> list[tuple[str, int | None, dict[str, str]]]:
    """Pools without overflow, so the size is the number of connections; then no pool at all."""
    pooled = [
        (f"pool {size}", size, {"DB_POOL_MODE": "queue", "DB_POOL_SIZE": str(size)})
        for size in pool_sizes
    ]
    return [*pooled, ("no pool (null)", None, {"DB_POOL_MODE": "null"})]


def measure(arguments: argparse.Namespace, load: Load) -> list[list[Measurement]]:
    """Each round runs every scenario once, so drift on a busy machine spreads over all of them."""
    runs: list[list[Measurement]] = [[] for _ in scenarios(arguments.pool_sizes)]
    for round_number in range(1, arguments.rounds + 1):
        for index, (name, size, settings) in enumerate(scenarios(arguments.pool_sizes)):
            # The sweep measures the pool: every connection of the closed loop is taken in.
            unshed = {"REQUESTS_PER_CONNECTION": str(arguments.connections)}
            with running_service({**settings, **unshed, "DB_MAX_OVERFLOW": "0"}) as base_url:
                url = base_url + arguments.path
                if arguments.warmup:
                    load(url, arguments.connections, arguments.warmup)
                result = load(url, arguments.connections, arguments.duration)
            runs[index].append(Measurement(name, size, result, round_number))
            print(
                f"round {round_number}/{arguments.rounds} {name:<15} {result.rps:8.0f} requests/s"
                f"  p99 {result.p99_ms:7.1f} ms  errors {result.errors}",
                flush=True,
            )
    return runs


def median_run(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median throughput, whole, so its latencies belong to its throughput."""
    return median_by(runs, lambda run: run.result.rps)


def open_loop(arguments: argparse.Namespace, load: Load) -> int:
    points = measure_open_loop(
        arguments.open_loop,
        path=arguments.path,
        seconds=arguments.duration,
        warmup=arguments.warmup,
        connections=arguments.connections,
        load=load,
        progress=lambda line: print(line, flush=True),
        rounds=arguments.rounds,
    )
    arguments.out.mkdir(parents=True, exist_ok=True)
    write_open_loop_csv([point for rate in points for point in rate], arguments.out / OPEN_LOOP_CSV)
    rounds = ""
    if arguments.rounds > 1:
        rounds = f", the median of {arguments.rounds} rounds (each row one round, whole)"
    print(f"\nopen loop, {arguments.duration} s per rate{rounds}:")
    print(open_loop_table([median_point(rate) for rate in points]))
    print(f"\nwrote {arguments.out / OPEN_LOOP_CSV}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_validation_error(error), file=sys.stderr)
        return 2
    loader, load = choose_load(arguments.load)
    migrate()
    added = ensure_rows(settings, arguments.rows)
    print(
        f"database: {settings.url} ({added} rows added); load: {loader}, "
        f"{arguments.connections} connections, {arguments.duration} s per point, "
        f"{arguments.rounds} round(s); load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    if arguments.open_loop:
        return open_loop(arguments, load)
    runs = measure(arguments, load)
    medians = [median_run(scenario_runs) for scenario_runs in runs]

    arguments.out.mkdir(parents=True, exist_ok=True)
    write_csv([run for scenario_runs in runs for run in scenario_runs], arguments.out / CSV_NAME)
    rounds = f", median of {arguments.rounds} rounds" if arguments.rounds > 1 else ""
    title = (
        f"GET {arguments.path}: {arguments.connections} connections, "
        f"{arguments.duration} s per point{rounds}, {loader}"
    )
    write_chart(medians, arguments.out / CHART_NAME, title)
    print()
    print(table(medians))
    print(f"\nwrote {arguments.out / CSV_NAME} and {arguments.out / CHART_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
