"""Prometheus metrics of the whole process group, whichever worker answers the scrape.

One process (WEB_CONCURRENCY=1, and tests) keeps its metrics in the application's registry.
Several workers use prometheus-client's multiprocess mode: `python -m` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start, each worker writes its
figures to files there, and `/metrics` adds up every worker's files. A worker that stops drops its
gauges (its counters stay in the sum, so totals never go back); the directory goes at exit.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# A live gauge's file, named for the worker that writes it, e.g. gauge_liveall_4242.db
LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def multiprocess() -> bool:
    """Whether this process writes its metrics to the process group's directory."""
    return bool(os.environ.get(DIRECTORY_VARIABLE))


def exposition(registry: CollectorRegistry) -> bytes:
    """The text a scrape gets: this application's registry, or every worker's files."""
    if not multiprocess():
        return generate_latest(registry)
    group = CollectorRegistry()
    MultiProcessCollector(group)  # type: ignore[no-untyped-call]
    return generate_latest(group)


@contextmanager
def process_group_directory(workers: int) -> Iterator[None]:
    """With several workers, a fresh PROMETHEUS_MULTIPROC_DIR for them, removed at exit.

    Must run before the workers are spawned: they read the variable when they import
    prometheus-client. A directory set by the user is kept, but emptied of old figures first.
    """
    given = os.environ.get(DIRECTORY_VARIABLE)
    if given:
        for old in Path(given).glob("*.db"):
            old.unlink()
        yield
        return
    if workers == 1:
        yield
        return
    directory = tempfile.mkdtemp(prefix="prometheus-")
    os.environ[DIRECTORY_VARIABLE] = directory
    try:
        yield
    finally:
        del os.environ[DIRECTORY_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


def forget_worker(pid: int) -> None:
    """Drop a stopped worker's gauges from the sum (its counters stay)."""
    if multiprocess():
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


def forget_dead_workers() -> None:
    """Drop the gauges of workers that died without stopping (killed, crashed).

    uvicorn replaces such a worker but tells no one; the new worker clears up after it.
    """
    directory = os.environ.get(DIRECTORY_VARIABLE)
    if not directory:
        return
    names = (LIVE_GAUGE_FILE.fullmatch(path.name) for path in Path(directory).iterdir())
    pids = {int(name[1]) for name in names if name is not None}
    for pid in pids - {os.getpid()}:
        if not _alive(pid):
            mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
