"""One run, one database, the same rows: what the baked service costs against hand-written code.

Interleaved rounds of `GET /items?limit=20`, one uvicorn worker each, wrk with 50 connections:
(a) Starlette + asyncpg pool, (b) FastAPI + asyncpg through a `scope="function"` dependency with a
response model, (c) the typical template (AsyncSession per request), (d) the baked service, and
(d) again with `DB_POOL_MODE=null` and with `DB_POOL_PRE_PING=true`. Run through
`scripts/compare`, which bakes the service and installs it; this file imports the baked
benchmark's wrk driver and seeding.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
# Each target: a label, the ASGI app in this folder (None: the baked service, started with
# `python -m <package>`), and environment variables of its own.
TARGETS: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "a": ("(a) Starlette + asyncpg pool", "raw_starlette:app", {}),
    "b": ("(b) FastAPI + asyncpg, Depends", "fastapi_asyncpg:app", {}),
    "c": ("(c) typical template (Session)", "typical_template:app", {}),
    "d": ("(d) baked service", None, {}),
    "null": ("(d) baked, DB_POOL_MODE=null", None, {"DB_POOL_MODE": "null"}),
    "ping": ("(d) baked, DB_POOL_PRE_PING=true", None, {"DB_POOL_PRE_PING": "true"}),
}
# (top, bottom, comparison, target): top should be at least target times as fast as bottom.
RATIOS = [
    ("d", "b", ">=", 0.70),
    ("d", "a", "", 0.0),
    ("d", "c", ">=", 2.0),
    ("d", "null", ">=", 8.0),
    ("d", "ping", "", 0.0),
]
TAIL_TARGET = 3.0


@dataclass(frozen=True, slots=True)
class Run:
    target: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    cpu_ms: float
    """The server process's CPU time (user + system) per request: steadier than requests/s on a
    busy machine, since it does not count the time the process waited for a core."""


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", type=Path, required=True, help="the baked project")
    parser.add_argument("--package", default="my_service")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--path", default="/items?limit=20")
    parser.add_argument("--out", type=Path, default=BENCH.parent / "build" / "compare" / "results")
    parser.add_argument(
        "--profile", type=int, default=0, help="afterwards, py-spy (d) for this many seconds"
    )
    return parser.parse_args(argv)


def pool_capacity(package: ModuleType) -> int:
    """(a) and (b) get as many connections as the baked service may open."""
    settings = package.Settings()
    return int(settings.db_pool_size + settings.db_max_overflow)


@contextmanager
def serving(target: str, package: str, extra: dict[str, str]) -> Iterator[tuple[str, int]]:
    server_module = importlib.import_module("bench.server")
    port = server_module.free_port()
    _, app, environment = TARGETS[target]
    if app is None:
        argv = [sys.executable, "-m", package]
    else:
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH), app]
        argv += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
    variables = {**os.environ, **environment, **extra, "HOST": HOST, "PORT": str(port)}
    variables["LOG_LEVEL"] = "warning"
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(argv, env=variables, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(server, f"http://{HOST}:{port}/items?limit=1", log)
            yield f"http://{HOST}:{port}", server.pid
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def wait_until_serving(server: subprocess.Popen[bytes], url: str, log: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    log.seek(0)
    raise RuntimeError(f"{url} did not come up:\n{log.read()[-3000:]}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(arguments: argparse.Namespace, load: Any, extra: dict[str, str]) -> list[Run]:
    """Round r starts at a different target, so no target always runs first or last."""
    order = list(TARGETS)
    runs: list[Run] = []
    for round_number in range(1, arguments.rounds + 1):
        shift = (round_number - 1) % len(order)
        for target in order[shift:] + order[:shift]:
            with serving(target, arguments.package, extra) as (base_url, pid):
                url = base_url + arguments.path
                if arguments.warmup:
                    load(url, arguments.connections, arguments.warmup)
                cpu_before = cpu_seconds(pid)
                result = load(url, arguments.connections, arguments.duration)
                cpu = cpu_seconds(pid) - cpu_before
            run = Run(
                target,
                round_number,
                result.rps,
                result.p50_ms,
                result.p99_ms,
                result.mean_ms,
                result.errors,
                cpu * 1000 / result.requests if result.requests else float("nan"),
            )
            runs.append(run)
            print(
                f"round {round_number}/{arguments.rounds} {TARGETS[target][0]:<32}"
                f"{run.rps:8.0f} requests/s  p99 {run.p99_ms:7.1f} ms  errors {run.errors}"
                f"  CPU {run.cpu_ms:.2f} ms/request",
                flush=True,
            )
    return runs


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def per_round_ratio(runs: Sequence[Run], top: str, bottom: str, cpu: bool = False) -> float:
    """How much faster `top` is than `bottom`: by requests/s, or by CPU per request (inverted).

    Ratios of runs from the same round, then their median: drift on a busy machine cancels.
    """
    by_round = {(run.target, run.round): run for run in runs}
    ratios = []
    for r in sorted({run.round for run in runs}):
        high, low = by_round[top, r], by_round[bottom, r]
        ratio = low.cpu_ms / high.cpu_ms if cpu else high.rps / low.rps if low.rps else math.nan
        ratios.append(ratio)
    return median(ratios)


def report(runs: Sequence[Run], connections: int) -> str:
    lines = [
        f"{'target':<32}{'requests/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'p99/mean':>10}"
        f"{'errors':>8}{'CPU ms/req':>12}"
    ]
    for target, (label, _, _) in TARGETS.items():
        mine = [run for run in runs if run.target == target]
        rps = median([run.rps for run in mine])
        mean_ms = connections / rps * 1000 if rps else math.nan
        lines.append(
            f"{label:<32}{rps:>11.0f}{median([run.p50_ms for run in mine]):>9.1f}"
            f"{median([run.p99_ms for run in mine]):>9.1f}"
            f"{median([run.p99_ms for run in mine]) / mean_ms:>10.1f}"
            f"{sum(run.errors for run in mine):>8d}{median([run.cpu_ms for run in mine]):>12.2f}"
        )
    lines.append("")
    lines.append("speed ratios, median of per-round ratios: by requests/s | by server CPU/request")
    for top, bottom, sign, target in RATIOS:
        ratio = per_round_ratio(runs, top, bottom)
        by_cpu = per_round_ratio(runs, top, bottom, cpu=True)
        goal = f"(target {sign} {target:g})" if sign else "(reference)"
        verdict = "" if not sign else ("met" if ratio >= target else "MISSED")
        lines.append(f"  {top}/{bottom:<5} {ratio:6.2f} | {by_cpu:6.2f}  {goal} {verdict}")
    d = [run for run in runs if run.target == "d" and run.rps]
    tail = median([run.p99_ms / (connections / run.rps * 1000) for run in d])
    verdict = "met" if tail <= TAIL_TARGET else "MISSED"
    lines.append(
        f"  (d) p99 / mean latency {tail:.1f} (mean = {connections} / requests/s; "
        f"target <= {TAIL_TARGET:g}) {verdict}"
    )
    return "\n".join(lines)


def write_csv(runs: Sequence[Run], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[field.name for field in fields(Run)])
        writer.writeheader()
        writer.writerows(asdict(run) for run in runs)


def profile(arguments: argparse.Namespace, load: Any, seconds: int) -> None:
    """Sample (d) under the same load with py-spy; print where its time goes."""
    raw = arguments.out / "profile-d.txt"
    with serving("d", arguments.package, {}) as (base_url, pid):
        url = base_url + arguments.path
        load(url, arguments.connections, 2)
        spy = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--nonblocking",
        ]
        spy += ["--duration", str(seconds), "--format", "raw", "--output", str(raw)]
        recorder = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = load(url, arguments.connections, seconds + 2)
        recorder.wait(60)
    print(f"\nprofile of (d) at {result.rps:.0f} requests/s, {seconds} s: {raw}")
    print(summarise_profile(raw))


def summarise_profile(raw: Path, top: int = 15) -> str:
    """Own time by library, then by frame. py-spy's raw format has one line per stack (frames
    joined by ';', innermost last) and its sample count. SQLAlchemy's greenlets split stacks, so
    inclusive times would mislead; own times do not."""
    by_library: Counter[str] = Counter()
    by_frame: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frame = stack.split(";")[-1]
        by_frame[frame] += int(count)
        by_library[library_of(frame)] += int(count)
    total = sum(by_frame.values())
    lines = [f"{total} samples; own time by library:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_library.most_common(top)]
    lines.append("own time by frame:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in by_frame.most_common(top)]
    return "\n".join(lines)


def library_of(frame: str) -> str:
    """`Connection.execute (asyncpg/connection.py:377)` -> `asyncpg`."""
    if frame.startswith("_SelectorSocketTransport.write "):
        return "socket writes (asyncio transport: the send system call)"
    location = frame.rpartition(" (")[2]
    return location.split("/")[0].split(":")[0].removesuffix(".py") or "?"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    arguments.out = arguments.out.resolve()
    arguments.out.mkdir(parents=True, exist_ok=True)
    os.chdir(arguments.project)  # where the baked alembic.ini is
    package = importlib.import_module(f"{arguments.package}.settings")
    sys.path.insert(0, str(arguments.project))  # the baked project's own bench package
    load_module = importlib.import_module("bench.load")
    seed = importlib.import_module("bench.seed")
    capacity = pool_capacity(package)
    extra = {"POOL_SIZE": str(capacity)}
    seed.migrate()
    seed.ensure_rows(package.Settings(), 100)
    load_average = os.getloadavg()
    print(
        f"{arguments.rounds} interleaved rounds x {len(TARGETS)} targets, {arguments.duration} s "
        f"each, wrk {arguments.connections} connections, GET {arguments.path}; asyncpg pools of "
        f"{capacity} for (a) and (b); load average {load_average[0]:.2f} {load_average[1]:.2f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    runs = measure(arguments, load_module.run_wrk, extra)
    write_csv(runs, arguments.out / "compare.csv")
    print()
    print(report(runs, arguments.connections))
    print(
        f"\nload average at the end {os.getloadavg()[0]:.2f}; every run: "
        f"{arguments.out / 'compare.csv'}"
    )
    if arguments.profile:
        profile(arguments, load_module.run_wrk, arguments.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
