"""One run, one database, the same rows: what the baked service costs against hand-written code.

Interleaved rounds, one uvicorn worker each, wrk with 50 connections. At `GET /items?limit=20`:
(a) Starlette + asyncpg pool, (b) FastAPI + asyncpg through a `scope="function"` dependency with a
response model, (c) the typical template (AsyncSession per request), (d) the baked service, (e) the
baked service's unit of work through `ReadSession` and an ORM select (the baked project's
`bench/orm_app.py`, at `/orm/items`), and (d) again with `DB_POOL_MODE=null` and with
`DB_POOL_PRE_PING=true`. Then the page-size axis: (b) and (d) at the other `--limits` as well.
Run through `scripts/compare`, which bakes the service and installs it; this file imports the
baked benchmark's wrk driver and seeding.
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    app: str | None = None
    """An ASGI app in this folder, or None: the baked service, `python -m <package>`."""
    factory: str | None = None
    """Else an app factory in the baked project, served like the others by uvicorn."""
    route: str = "/items"
    environment: dict[str, str] = field(default_factory=dict)


TARGETS: dict[str, Target] = {
    "a": Target("(a) Starlette + asyncpg pool", app="raw_starlette:app"),
    "b": Target("(b) FastAPI + asyncpg, Depends", app="fastapi_asyncpg:app"),
    "c": Target("(c) typical template (Session)", app="typical_template:app"),
    "d": Target("(d) baked service"),
    "e": Target(
        "(e) baked, ReadSession + ORM", factory="bench.orm_app:create_app", route="/orm/items"
    ),
    "null": Target("(d) baked, DB_POOL_MODE=null", environment={"DB_POOL_MODE": "null"}),
    "ping": Target("(d) baked, DB_POOL_PRE_PING=true", environment={"DB_POOL_PRE_PING": "true"}),
}
# (top, bottom, comparison, target): top should be at least target times as fast as bottom.
RATIOS = [
    ("d", "b", ">=", 0.70),
    ("d", "a", "", 0.0),
    ("d", "c", ">=", 2.0),
    ("d", "null", ">=", 8.0),
    ("d", "ping", "", 0.0),
    ("e", "c", ">=", 1.5),
    ("e", "d", "", 0.0),
]
TAIL_TARGET = 3.0
TAILS = ["d", "e"]
# The page-size axis: these two at every `--limits` size, d/b against AXIS_TARGET.
AXIS = ("d", "b")
AXIS_TARGET = 0.70
MIN_ROWS = 120
MAX_LIMIT = 100  # what (b) and the service accept
# Start-up and shutdown of one point, on top of --warmup and --duration.
SECONDS_BETWEEN_POINTS = 2


@dataclass(frozen=True, slots=True)
class Run:
    target: str
    limit: int
    """The page size: `?limit=` of every request of the run."""
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
    parser.add_argument("--rounds", type=int, default=3, help="0: no comparison, --profile only")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--limit", type=page_size, default=20, help="the page size every target is measured at"
    )
    parser.add_argument(
        "--limits",
        type=page_sizes,
        default="1,20,100",
        help="the page-size axis: (b) and (d) at each of these too (--limits 20: no axis)",
    )
    parser.add_argument("--out", type=Path, default=BENCH.parent / "build" / "compare" / "results")
    parser.add_argument(
        "--profile", type=int, default=0, help="afterwards, py-spy a target for this many seconds"
    )
    parser.add_argument("--profile-target", choices=("d", "e"), default="d")
    return parser.parse_args(argv)


def page_size(value: str) -> int:
    size = int(value)
    if not 1 <= size <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"a page size is 1 to {MAX_LIMIT}, not {value}")
    return size


def page_sizes(value: str) -> list[int]:
    return sorted({page_size(size) for size in value.split(",")})


def points(arguments: argparse.Namespace) -> list[tuple[str, int]]:
    """Every target at --limit, then (b) and (d) side by side at each other size of the axis."""
    axis = [(target, n) for n in arguments.limits if n != arguments.limit for target in AXIS]
    return [(target, arguments.limit) for target in TARGETS] + axis


def url_of(base_url: str, target: str, limit: int) -> str:
    return f"{base_url}{TARGETS[target].route}?limit={limit}"


def pool_capacity(package: ModuleType) -> int:
    """(a) and (b) get as many connections as the baked service may open."""
    settings = package.Settings()
    return int(settings.db_pool_size + settings.db_max_overflow)


@contextmanager
def serving(
    target: str, arguments: argparse.Namespace, extra: dict[str, str]
) -> Iterator[tuple[str, int]]:
    server_module = importlib.import_module("bench.server")
    port = server_module.free_port()
    served = TARGETS[target]
    if served.app is not None:
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH), served.app]
    elif served.factory is not None:
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(arguments.project)]
        argv += ["--factory", served.factory]
    else:
        argv = [sys.executable, "-m", arguments.package]  # reads HOST and PORT
    if argv[2] == "uvicorn":
        # As the service runs (its __main__): at WARNING no access line is written, so none is
        # formatted either.
        argv += ["--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"]
    variables = {**os.environ, **served.environment, **extra, "HOST": HOST, "PORT": str(port)}
    variables["LOG_LEVEL"] = "warning"
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(argv, env=variables, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(server, url_of(f"http://{HOST}:{port}", target, 1), log)
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
    """Each round starts at a different point, spread over the order, so no target always runs
    first or last; the axis keeps (b) and (d) of one size next to each other."""
    order = points(arguments)
    runs: list[Run] = []
    for round_number in range(1, arguments.rounds + 1):
        shift = (round_number - 1) * len(order) // arguments.rounds
        for target, limit in order[shift:] + order[:shift]:
            with serving(target, arguments, extra) as (base_url, pid):
                url = url_of(base_url, target, limit)
                if arguments.warmup:
                    load(url, arguments.connections, arguments.warmup)
                cpu_before = cpu_seconds(pid)
                result = load(url, arguments.connections, arguments.duration)
                cpu = cpu_seconds(pid) - cpu_before
            run = Run(
                target,
                limit,
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
                f"round {round_number}/{arguments.rounds} {TARGETS[target].label:<34}"
                f"limit {limit:<4}{run.rps:7.0f} requests/s  p99 {run.p99_ms:7.1f} ms"
                f"  errors {run.errors}  CPU {run.cpu_ms:.2f} ms/request",
                flush=True,
            )
    return runs


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def per_round_ratios(
    runs: Sequence[Run], top: str, bottom: str, limit: int, cpu: bool = False
) -> list[float]:
    """How much faster `top` is than `bottom` at one page size in each round: by requests/s, or
    by CPU per request (inverted). Ratios of runs from the same round: drift on a busy machine
    cancels."""
    by_round = {(run.target, run.round): run for run in runs if run.limit == limit}
    ratios = []
    for r in sorted({run.round for run in runs}):
        high, low = by_round[top, r], by_round[bottom, r]
        ratio = low.cpu_ms / high.cpu_ms if cpu else high.rps / low.rps if low.rps else math.nan
        ratios.append(ratio)
    return ratios


def per_round_ratio(
    runs: Sequence[Run], top: str, bottom: str, limit: int, cpu: bool = False
) -> float:
    """The median of the per-round ratios."""
    return median(per_round_ratios(runs, top, bottom, limit, cpu))


def rounds_of(runs: Sequence[Run], top: str, bottom: str, limit: int) -> str:
    """Each round's ratio by requests/s | by CPU, for the reader who wants the spread."""
    by_rps = " ".join(f"{ratio:.2f}" for ratio in per_round_ratios(runs, top, bottom, limit))
    by_cpu = " ".join(
        f"{ratio:.2f}" for ratio in per_round_ratios(runs, top, bottom, limit, cpu=True)
    )
    return f"rounds {by_rps} | {by_cpu}"


def verdict(ratio: float, target: float) -> str:
    return "met" if ratio >= target else "MISSED"


def report(runs: Sequence[Run], arguments: argparse.Namespace) -> str:
    connections, limit = arguments.connections, arguments.limit
    lines = [
        f"GET /items?limit={limit} ((e): /orm/items?limit={limit}), medians of "
        f"{len({run.round for run in runs})} round(s)",
        f"{'target':<32}{'requests/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'p99/mean':>10}"
        f"{'errors':>8}{'CPU ms/req':>12}",
    ]
    for target, served in TARGETS.items():
        mine = [run for run in runs if run.target == target and run.limit == limit]
        rps = median([run.rps for run in mine])
        mean_ms = connections / rps * 1000 if rps else math.nan
        lines.append(
            f"{served.label:<32}{rps:>11.0f}{median([run.p50_ms for run in mine]):>9.1f}"
            f"{median([run.p99_ms for run in mine]):>9.1f}"
            f"{median([run.p99_ms for run in mine]) / mean_ms:>10.1f}"
            f"{sum(run.errors for run in mine):>8d}{median([run.cpu_ms for run in mine]):>12.2f}"
        )
    lines.append("")
    lines.append(
        "speed ratios, median of per-round ratios: by requests/s (judged) | by server CPU/request"
    )
    for top, bottom, sign, target in RATIOS:
        ratio = per_round_ratio(runs, top, bottom, limit)
        by_cpu = per_round_ratio(runs, top, bottom, limit, cpu=True)
        goal = f"(target {sign} {target:g})" if sign else "(reference)"
        judged = f" {verdict(ratio, target)}" if sign else ""
        lines.append(
            f"  {top}/{bottom:<5} {ratio:6.2f} | {by_cpu:6.2f}  {goal + judged:<22}  "
            + rounds_of(runs, top, bottom, limit)
        )
    for target in TAILS:
        mine = [run for run in runs if run.target == target and run.limit == limit and run.rps]
        tails = [run.p99_ms / (connections / run.rps * 1000) for run in mine]
        tail = median(tails)
        lines.append(
            f"  ({target}) p99 / mean latency {tail:.1f} (mean = {connections} / requests/s; "
            f"target <= {TAIL_TARGET:g}) {'met' if tail <= TAIL_TARGET else 'MISSED'}  rounds "
            + " ".join(f"{one:.1f}" for one in tails)
        )
    lines.append("")
    lines.append(page_size_axis(runs, arguments.limits))
    return "\n".join(lines)


def page_size_axis(runs: Sequence[Run], limits: Sequence[int]) -> str:
    """d/b at every page size: does the service's cost grow faster than the reference's?"""
    top, bottom = AXIS
    lines = [
        f"page-size axis, {top}/{bottom} by server CPU/request (the target, >= {AXIS_TARGET:g}) "
        "| by requests/s:",
        f"{'limit':>7}{'(b) req/s':>11}{'(d) req/s':>11}{'(b) CPU ms':>12}{'(d) CPU ms':>12}"
        f"{'d/b CPU':>9}{'d/b req/s':>11}",
    ]
    for limit in limits:
        cells = []
        for target in (bottom, top):
            mine = [run for run in runs if run.target == target and run.limit == limit]
            cells.append((median([run.rps for run in mine]), median([r.cpu_ms for r in mine])))
        by_cpu = per_round_ratio(runs, top, bottom, limit, cpu=True)
        by_rps = per_round_ratio(runs, top, bottom, limit)
        lines.append(
            f"{limit:>7}{cells[0][0]:>11.0f}{cells[1][0]:>11.0f}{cells[0][1]:>12.2f}"
            f"{cells[1][1]:>12.2f}{by_cpu:>9.2f}{by_rps:>11.2f}  "
            f"{verdict(by_cpu, AXIS_TARGET)} | {verdict(by_rps, AXIS_TARGET):<8}"
            + rounds_of(runs, top, bottom, limit)
        )
    return "\n".join(lines)


def write_csv(runs: Sequence[Run], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[field.name for field in fields(Run)])
        writer.writeheader()
        writer.writerows(asdict(run) for run in runs)


def profile(arguments: argparse.Namespace, load: Any, seconds: int) -> None:
    """Sample (d), or (e), under the same load with py-spy; print where its time goes."""
    target = arguments.profile_target
    raw = arguments.out / f"profile-{target}.txt"
    with serving(target, arguments, {}) as (base_url, pid):
        url = url_of(base_url, target, arguments.limit)
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
    print(f"\nprofile of ({target}) at {result.rps:.0f} requests/s, {seconds} s: {raw}")
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
    arguments.project = arguments.project.resolve()
    os.chdir(arguments.project)  # where the baked alembic.ini is
    package = importlib.import_module(f"{arguments.package}.settings")
    sys.path.insert(0, str(arguments.project))  # the baked project's own bench package
    load_module = importlib.import_module("bench.load")
    seed = importlib.import_module("bench.seed")
    capacity = pool_capacity(package)
    extra = {"POOL_SIZE": str(capacity)}
    rows = max(MIN_ROWS, arguments.limit, *arguments.limits)
    seed.migrate()
    seed.ensure_rows(package.Settings(), rows)
    order = points(arguments)
    minutes = (
        arguments.rounds
        * len(order)
        * (arguments.duration + arguments.warmup + SECONDS_BETWEEN_POINTS)
        / 60
    )
    load_average = os.getloadavg()
    print(
        f"{arguments.rounds} interleaved rounds x {len(order)} points ({len(TARGETS)} targets at "
        f"limit {arguments.limit}; (b) and (d) at limits {','.join(map(str, arguments.limits))}),"
        f" {arguments.duration} s each, about {minutes:.0f} min; wrk {arguments.connections} "
        f"connections over {rows}+ rows; asyncpg pools of {capacity} for (a) and (b); "
        f"load average {load_average[0]:.2f} {load_average[1]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    runs = measure(arguments, load_module.run_wrk, extra)
    if runs:  # --rounds 0 --profile N: only the profile
        write_csv(runs, arguments.out / "compare.csv")
        print()
        print(report(runs, arguments))
        print(
            f"\nload average at the end {os.getloadavg()[0]:.2f}; every run: "
            f"{arguments.out / 'compare.csv'}"
        )
    if arguments.profile:
        profile(arguments, load_module.run_wrk, arguments.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
