"""Drive a running service over HTTP: wrk when it is installed, else a bounded Python client."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

WRK_MISSING = (
    "wrk not found on PATH (Debian/Ubuntu: apt-get install wrk); using the built-in Python load "
    "generator instead. It shares the CPU with the service and saturates early, so its requests/s "
    "are a lower bound: compare rows with each other, not with wrk figures."
)
# wrk's own summary is text; this prints the figures it keeps as one JSON line instead.
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "mean_us": %.1f, '
    .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int
    """Failed connections, timeouts and responses with a status of 400 or more."""
    mean_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, connections: int, seconds: int, threads: int = 1) -> LoadResult:
    """A closed loop of `connections` keep-alive connections; the timeout is long so that slow
    answers count in the latency instead of vanishing as wrk timeouts."""
    wrk = wrk_path()
    if wrk is None:
        raise FileNotFoundError(WRK_MISSING)
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory) / "report.lua"
        script.write_text(WRK_REPORT)
        command = [wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s"]
        command += ["--timeout", "60s", "-s", str(script), url]
        result = subprocess.run(  # noqa: S603 - wrk from PATH, arguments built here
            command, capture_output=True, text=True, timeout=seconds + 120, check=True
        )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return LoadResult(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        errors=report["errors"],
        mean_ms=report["mean_us"] / 1000,
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        max_ms=report["max_us"] / 1000,
    )


def run_python(url: str, connections: int, seconds: float) -> LoadResult:
    """The same closed loop as wrk, in Python: bounded by `seconds` and a per-request timeout."""
    return asyncio.run(_python_load(url, connections, seconds))


async def _python_load(url: str, connections: int, seconds: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def user() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                errors += response.is_error

        await asyncio.gather(*(user() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        errors=errors,
        mean_ms=statistics.fmean(latencies) * 1000 if latencies else 0.0,
        p50_ms=_percentile(latencies, 50) * 1000,
        p99_ms=_percentile(latencies, 99) * 1000,
        max_ms=max(latencies, default=0.0) * 1000,
    )


def _percentile(values: list[float], percent: int) -> float:
    if len(values) < 2:  # noqa: PLR2004 (quantiles needs two values)
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]
