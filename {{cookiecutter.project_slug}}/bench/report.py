"""What the sweep found: a table on the terminal, a CSV, and a chart."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from .load import LoadResult

NULL_LABEL = "no pool (DB_POOL_MODE=null)"
KNEE_SHARE = 0.95
"""The knee is the smallest pool within this share of the best throughput."""


@dataclass(frozen=True, slots=True)
class Measurement:
    scenario: str
    pool_size: int | None
    """None: `DB_POOL_MODE=null`, a new connection for every request."""
    result: LoadResult
    round: int = 1


def knee(measurements: Sequence[Measurement]) -> Measurement | None:
    pooled = [m for m in measurements if m.pool_size is not None]
    if not pooled:
        return None
    best = max(m.result.rps for m in pooled)
    return min(
        (m for m in pooled if m.result.rps >= KNEE_SHARE * best), key=lambda m: m.pool_size or 0
    )


def pooled_over_null(measurements: Sequence[Measurement]) -> float | None:
    """The best pooled throughput over the unpooled one (lesson 1: reuse is faster)."""
    null = [m.result.rps for m in measurements if m.pool_size is None]
    pooled = [m.result.rps for m in measurements if m.pool_size is not None]
    if not null or not pooled or not null[0]:
        return None
    return max(pooled) / null[0]


def table(measurements: Sequence[Measurement]) -> str:
    lines = [f"{'scenario':<16}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}"]
    for m in measurements:
        r = m.result
        lines.append(
            f"{m.scenario:<16}{r.rps:>12.0f}{r.p50_ms:>10.1f}{r.p99_ms:>10.1f}{r.errors:>9d}"
        )
    found = knee(measurements)
    if found is not None:
        lines.append(
            f"knee: pool {found.pool_size} (the smallest pool within {KNEE_SHARE:.0%} of the best "
            "throughput; larger pools add connections, not requests/s)"
        )
    ratio = pooled_over_null(measurements)
    if ratio is not None:
        lines.append(f"pooled / no pool (DB_POOL_MODE=null): {ratio:.1f}x requests/s")
    return "\n".join(lines)


def write_csv(measurements: Sequence[Measurement], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "round",
                "scenario",
                "pool_size",
                "requests_per_second",
                "p50_ms",
                "p99_ms",
                "mean_ms",
                "max_ms",
                "requests",
                "errors",
                "seconds",
            ]
        )
        for m in measurements:
            r = m.result
            writer.writerow(
                [
                    m.round,
                    m.scenario,
                    "" if m.pool_size is None else m.pool_size,
                    f"{r.rps:.1f}",
                    f"{r.p50_ms:.2f}",
                    f"{r.p99_ms:.2f}",
                    f"{r.mean_ms:.2f}",
                    f"{r.max_ms:.2f}",
                    r.requests,
                    r.errors,
                    f"{r.seconds:.2f}",
                ]
            )


def write_chart(measurements: Sequence[Measurement], path: Path, title: str) -> None:
    """Throughput and p99 against pool size, with the unpooled figures as dashed lines."""
    pooled = sorted(
        (m for m in measurements if m.pool_size is not None), key=lambda m: m.pool_size or 0
    )
    null = next((m for m in measurements if m.pool_size is None), None)
    sizes = [m.pool_size or 0 for m in pooled]
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    throughput, tail = figure.subplots(1, 2)
    for axes, values, label in (
        (throughput, [m.result.rps for m in pooled], "requests/s"),
        (tail, [m.result.p99_ms for m in pooled], "p99 latency (ms)"),
    ):
        axes.plot(sizes, values, marker="o", label="pooled (DB_POOL_SIZE, no overflow)")
        if null is not None:
            value = null.result.rps if axes is throughput else null.result.p99_ms
            axes.axhline(value, color="tab:red", linestyle="--", label=NULL_LABEL)
        axes.set_xscale("log")
        axes.set_xticks(sizes, [str(size) for size in sizes])
        axes.minorticks_off()
        axes.set_xlabel("pool size")
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend()
    found = knee(measurements)
    if found is not None:
        throughput.annotate(
            f"knee: {found.pool_size}",
            (found.pool_size or 0, found.result.rps),
            textcoords="offset points",
            xytext=(0, -18),
            ha="center",
        )
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
