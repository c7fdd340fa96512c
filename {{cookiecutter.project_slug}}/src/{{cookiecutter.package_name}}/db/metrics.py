"""Prometheus metrics for the pool, driven by SQLAlchemy pool events and the checkout path."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import PoolStatus

WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PoolMetrics:
    """One registry per application, so every engine (and every test app) has its own figures."""

    def __init__(self, status: Callable[[], PoolStatus]) -> None:
        self.registry = CollectorRegistry()
        self.connections_created = Counter(
            "db_pool_connections_created",
            "Server connections the pool opened.",
            registry=self.registry,
        )
        self.connections_invalidated = Counter(
            "db_pool_connections_invalidated",
            "Pooled connections discarded as broken or stale.",
            registry=self.registry,
        )
        self.checkout_timeouts = Counter(
            "db_pool_checkout_timeouts",
            "Requests that got no connection within DB_POOL_TIMEOUT (answered 503).",
            registry=self.registry,
        )
        self.checkout_wait = Histogram(
            "db_pool_checkout_wait_seconds",
            "Time from asking for a connection to holding one.",
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_PoolStateCollector(status))

    def watch(self, engine: AsyncEngine) -> None:
        pool = engine.sync_engine.pool
        event.listen(pool, "connect", lambda *_: self.connections_created.inc())
        event.listen(pool, "invalidate", lambda *_: self.connections_invalidated.inc())
        event.listen(pool, "soft_invalidate", lambda *_: self.connections_invalidated.inc())


class _PoolStateCollector(Collector):
    def __init__(self, status: Callable[[], PoolStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._status()
        for name, value, meaning in (
            ("db_pool_size", status.size, "Connections the pool keeps open."),
            ("db_pool_checked_in", status.checked_in, "Idle connections in the pool."),
            ("db_pool_checked_out", status.checked_out, "Connections lent to requests."),
            ("db_pool_overflow", status.overflow, "Connections open beyond the pool size."),
            ("db_pool_waiting", status.waiting, "Requests waiting for a connection."),
        ):
            yield GaugeMetricFamily(name, meaning, value=value)
