"""`python -m bench --open-loop 0.5x,1.5x,3x`: the service's closed-loop capacity, then open-loop
load at multiples of it (or at absolute rates), each against a fresh service; print a table per
status class and write a CSV. With `--rounds N` that is repeated N times and the table shows, per
rate, the round with the median goodput: on a shared machine one run can be far off.

On a machine with two cores or more the service is pinned to one core and the load generator to
the others, so that the generator never takes CPU from the worker it measures.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .load import LoadResult
from .openloop import STATUS_CLASSES, OpenLoopResult, run_open_loop
from .server import running_service

T = TypeVar("T")

CSV_NAME = "open-loop.csv"

Load = Callable[[str, int, int], LoadResult]


@dataclass(frozen=True, slots=True)
class Rate:
    value: float
    relative: bool
    """True: a multiple of the measured capacity ("1.5x"); False: requests per second."""

    def per_second(self, capacity: float | None) -> float:
        if not self.relative:
            return self.value
        if capacity is None:
            raise ValueError("a relative rate needs the capacity")
        return self.value * capacity


def rates(value: str) -> list[Rate]:
    """`500,1500` (requests/s) or `0.5x,1.5x,3x` (multiples of the closed-loop capacity)."""
    parsed = []
    for text in value.split(","):
        relative = text.strip().lower().endswith("x")
        try:
            number = float(text.strip().lower().removesuffix("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a rate (500 or 1.5x)") from None
        if not number > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: a rate must be more than 0")
        parsed.append(Rate(number, relative))
    return parsed


@dataclass(frozen=True, slots=True)
class Cores:
    service: set[int]
    client: set[int]


def split_cores() -> Cores | None:
    """One core for the service (one worker), the rest for the client; None on one core."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:  # noqa: PLR2004
        return None
    return Cores(service={cores[0]}, client=set(cores[1:]))


@contextmanager
def pinned_service(settings: dict[str, str], cores: Cores | None) -> Iterator[str]:
    """The service started while this process runs on the service's core (a child inherits its
    parent's affinity); then this process moves to the client's cores."""
    if cores is None:
        with running_service(settings) as base_url:
            yield base_url
        return
    os.sched_setaffinity(0, cores.service)
    try:
        with running_service(settings) as base_url:
            os.sched_setaffinity(0, cores.client)
            yield base_url
    finally:
        os.sched_setaffinity(0, cores.client)


def allow_many_connections() -> None:
    """Both ends hold one file per connection: raise the soft limit (the service inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@dataclass(frozen=True, slots=True)
class OpenLoopPoint:
    """One open-loop run, with the closed-loop capacity measured in the same round."""

    round: int
    capacity: float | None
    result: OpenLoopResult

    @property
    def share(self) -> float | None:
        """Goodput as a share of the capacity."""
        return self.result.goodput / self.capacity if self.capacity else None


def measure_open_loop(  # noqa: PLR0913 (the benchmark's options, passed on by name)
    offered: Sequence[Rate],
    *,
    path: str,
    seconds: int,
    warmup: int,
    connections: int,
    load: Load,
    progress: Callable[[str], None],
    rounds: int = 1,
    settings: dict[str, str] | None = None,
) -> list[list[OpenLoopPoint]]:
    """Per rate, one point per round. A round measures the closed-loop capacity (if a rate is
    relative), then runs each rate once: drift on a busy machine spreads over every rate."""
    settings = settings or {}
    cores = split_cores()
    allow_many_connections()
    points: list[list[OpenLoopPoint]] = [[] for _ in offered]
    for number in range(1, rounds + 1):
        capacity = None
        if any(rate.relative for rate in offered):
            # Capacity is what the worker serves when nothing is refused.
            unshed = {**settings, "REQUESTS_PER_CONNECTION": str(connections)}
            with pinned_service(unshed, cores) as base_url:
                if warmup:
                    load(base_url + path, connections, warmup)
                capacity = load(base_url + path, connections, seconds).rps
            progress(
                f"round {number}/{rounds} capacity (closed loop, {connections} connections): "
                f"{capacity:.0f} requests/s"
            )
        for index, rate in enumerate(offered):
            with pinned_service(settings, cores) as base_url:
                # The warm-up is the same open loop, uncounted: the service warms up and the
                # client opens its connections before the count starts.
                url = base_url + path
                result = run_open_loop(url, rate.per_second(capacity), seconds, warmup=warmup)
            point = OpenLoopPoint(number, capacity, result)
            points[index].append(point)
            progress(f"round {number}/{rounds} {summary(point)}")
    return points


def median_point(points: Sequence[OpenLoopPoint]) -> OpenLoopPoint:
    """The round with the median goodput (as a share of its round's capacity, if measured),
    whole, so that its latencies belong to its goodput."""

    def goodput(point: OpenLoopPoint) -> float:
        return point.result.goodput if point.share is None else point.share

    return median_by(points, goodput)


def median_by(items: Sequence[T], key: Callable[[T], float]) -> T:
    """The item with the median `key` (of an even number, the lower one), whole."""
    ordered = sorted(items, key=key)
    return ordered[(len(ordered) - 1) // 2]


def summary(point: OpenLoopPoint) -> str:
    result = point.result
    share = f" ({point.share:.0%} of capacity)" if point.share is not None else ""
    served = result.statuses["2xx"]
    return (
        f"offered {result.rate:6.0f}/s: goodput {result.goodput:6.0f}/s{share}, 2xx p99 "
        f"{served.p99_ms:.0f} ms, 503 {result.statuses['503'].count}, "
        f"unanswered {result.unanswered}; client: {result.connections} connections, "
        f"sent late by {result.late_p99_ms:.0f} ms (p99)"
    )


def open_loop_table(points: Sequence[OpenLoopPoint]) -> str:
    """One row per offered rate: goodput, then count, p50 and p99 per status class."""
    columns = ["offered/s", "goodput/s", "of cap"]
    for name in STATUS_CLASSES:
        columns += [name, "p50 ms", "p99 ms"]
    rows = [columns]
    for point in points:
        result = point.result
        share = f"{point.share:.0%}" if point.share is not None else "-"
        row = [f"{result.rate:.0f}", f"{result.goodput:.0f}", share]
        for name in STATUS_CLASSES:
            figures = result.statuses[name]
            row += [str(figures.count), f"{figures.p50_ms:.1f}", f"{figures.p99_ms:.1f}"]
        rows.append(row)
    widths = [max(len(row[index]) for row in rows) for index in range(len(columns))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    capacities = sorted({point.capacity for point in points if point.capacity})
    if capacities:
        measured = ", ".join(f"{capacity:.0f}" for capacity in capacities)
        lines.append(f"capacity (closed loop, requests/s), in the rounds shown: {measured}")
    return "\n".join(lines)


def write_open_loop_csv(points: Sequence[OpenLoopPoint], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "round",
                "capacity_per_second",
                "offered_per_second",
                "seconds",
                "status",
                "count",
                "p50_ms",
                "p99_ms",
            ]
        )
        for point in points:
            result = point.result
            for name in STATUS_CLASSES:
                figures = result.statuses[name]
                row = [point.round, point.capacity or "", result.rate, result.seconds, name]
                writer.writerow([*row, figures.count, figures.p50_ms, figures.p99_ms])
