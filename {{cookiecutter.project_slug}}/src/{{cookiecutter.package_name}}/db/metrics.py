"""Prometheus metrics of one pool, named after OpenTelemetry's database-client conventions.

Counters and histograms follow SQLAlchemy's pool events and the checkout path. The gauges
(connections used and idle, the pool's limits, requests pending) are *sampled* from the pool:
when a scrape collects them, or, with several workers (see ../metrics.py), every
`SAMPLE_INTERVAL` seconds into the workers' shared files. The request path never sets a gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from ..metrics import multiprocess
from .engine import PoolStatus

WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CREATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
USE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60)
SAMPLE_INTERVAL = 1.0
# The families in each registry: every pool of an application (the primary's, each read
# replica's) adds its `pool_name` series to the same ones.
_families: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
# Keys in a pooled connection's `info` dict, which lives as long as the connection.
CONNECT_STARTED = "metrics.connect_started"
CHECKED_OUT = "metrics.checked_out"


class PoolMetrics:
    """The metrics of one pool, labelled `pool_name` ("primary", or a replica's name).

    They are registered in `registry`, the application's, so that applications in one process
    (tests) never share figures; without one they get a registry of their own.
    """

    def __init__(
        self,
        status: Callable[[], PoolStatus],
        capacity: int | None,
        *,
        pool_name: str = "primary",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._status = status
        self._capacity = capacity
        self._sampler: asyncio.Task[None] | None = None
        name = pool_name
        families = _families.setdefault(self.registry, {})

        def family(metric: str, make: Callable[[], Any]) -> Any:
            if metric not in families:
                families[metric] = make()
            return families[metric]

        def counter(metric: str, meaning: str) -> Counter:
            family_ = family(
                metric, lambda: Counter(metric, meaning, ["pool_name"], registry=self.registry)
            )
            return family_.labels(name)  # type: ignore[no-any-return]

        def histogram(metric: str, meaning: str, buckets: Iterable[float]) -> Histogram:
            family_ = family(
                metric,
                lambda: Histogram(
                    metric, meaning, ["pool_name"], buckets=tuple(buckets), registry=self.registry
                ),
            )
            return family_.labels(name)  # type: ignore[no-any-return]

        self.timeouts = counter(
            "db_client_connection_timeouts",
            "Requests that got no connection within DB_POOL_TIMEOUT (answered 503).",
        )
        self.invalidated = counter(
            "db_client_connection_invalidated", "Pooled connections discarded as broken or stale."
        )
        self.leaks = counter(
            "db_client_connection_leaks",
            "Connections held longer than DB_LEAK_THRESHOLD, each logged as a possible leak.",
        )
        self.create_time = histogram(
            "db_client_connection_create_time_seconds",
            "Time to open a server connection.",
            CREATE_BUCKETS,
        )
        self.wait_time = histogram(
            "db_client_connection_wait_time_seconds",
            "Time a request queued for its place at the pool (its right to a connection).",
            WAIT_BUCKETS,
        )
        self.use_time = histogram(
            "db_client_connection_use_time_seconds",
            "Time from checking a connection out of the pool to checking it back in.",
            USE_BUCKETS,
        )

        # liveall: with several workers, one series per live worker (label `pid`), since a sum
        # would hide the one worker whose pool is full; dashboards and alerts sum them.
        def gauge(metric: str, meaning: str, labels: list[str]) -> Gauge:
            return family(  # type: ignore[no-any-return]
                metric,
                lambda: Gauge(metric, meaning, labels, registry=None, multiprocess_mode="liveall"),
            )

        count = gauge(
            "db_client_connection_count",
            "Open connections by state: used (checked out) or idle (in the pool).",
            ["pool_name", "state"],
        )
        limits = {
            metric: gauge(metric, meaning, ["pool_name"])
            for metric, meaning in (
                ("db_client_connection_max", "Connections the pool may have open at once."),
                ("db_client_connection_idle_max", "Idle connections the pool keeps open."),
                ("db_client_connection_pending_requests", "Requests queued for a connection."),
            )
        }
        self._used, self._idle = count.labels(name, "used"), count.labels(name, "idle")
        self._max = limits["db_client_connection_max"].labels(name)
        self._idle_max = limits["db_client_connection_idle_max"].labels(name)
        self._pending = limits["db_client_connection_pending_requests"].labels(name)
        sampled: _SampledGauges = family(
            "sampled gauges", lambda: _SampledGauges(self.registry, [count, *limits.values()])
        )
        sampled.pools.append(self)

    def watch(self, engine: AsyncEngine) -> None:
        """Follow the pool's events; with several workers, also sample the gauges in the
        background (a scrape reads the other workers' figures from their files)."""
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "do_connect", _connect_started)
        event.listen(sync_engine.pool, "connect", self._connected)
        event.listen(sync_engine.pool, "checkout", _checked_out)
        event.listen(sync_engine.pool, "checkin", self._checked_in)
        event.listen(sync_engine.pool, "invalidate", self._invalidated)
        event.listen(sync_engine.pool, "soft_invalidate", self._invalidated)
        if multiprocess():
            self._sampler = asyncio.get_running_loop().create_task(self._sample_periodically())

    def sample(self) -> None:
        status = self._status()
        self._used.set(status.checked_out)
        self._idle.set(status.checked_in)
        self._idle_max.set(status.size)
        self._pending.set(status.waiting)
        # A pool without a limit (NullPool) has no maximum to report.
        if self._capacity is not None:
            self._max.set(self._capacity)

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    async def _sample_periodically(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL)

    def _connected(self, _dbapi_connection: object, record: Any) -> None:
        started = record.info.pop(CONNECT_STARTED, None)
        if started is not None:
            self.create_time.observe(time.perf_counter() - started)

    def _checked_in(self, _dbapi_connection: object, record: Any) -> None:
        since = record.info.pop(CHECKED_OUT, None)
        if since is not None:
            self.use_time.observe(time.perf_counter() - since)

    def _invalidated(self, *_: object) -> None:
        self.invalidated.inc()


def _connect_started(_dialect: object, record: Any, _args: object, _params: object) -> None:
    """The pool's `connect` event comes after the connection is open: start the clock here."""
    if record is not None:
        record.info[CONNECT_STARTED] = time.perf_counter()


def _checked_out(_dbapi_connection: object, record: Any, _proxy: object) -> None:
    record.info[CHECKED_OUT] = time.perf_counter()


class _SampledGauges(Collector):
    """Samples the pool, then reports the gauges: exact figures at every scrape."""

    def __init__(self, registry: CollectorRegistry, gauges: list[Gauge]) -> None:
        self.pools: list[PoolMetrics] = []
        self._gauges = gauges
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        for gauge in self._gauges:
            yield from gauge.describe()

    def collect(self) -> Iterator[Metric]:
        for pool in self.pools:
            pool.sample()
        for gauge in self._gauges:
            yield from gauge.collect()
