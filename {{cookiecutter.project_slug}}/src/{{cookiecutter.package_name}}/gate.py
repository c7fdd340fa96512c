"""A first-come, first-served gate in front of pool checkout.

SQLAlchemy's async queue pool lets a request that has just arrived take a returned connection
ahead of requests that are already waiting, so under sustained load a few requests wait for as
long as the load lasts. The gate admits at most the pool's capacity at a time and hands freed
places to waiters strictly in arrival order, so the wait is bounded by the queue ahead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PoolExhaustedError(Exception):
    """No connection became free within the allowed wait."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"no database connection became free within {waited:g} s")
        self.waited = waited


class CheckoutGate:
    def __init__(self, capacity: int | None) -> None:
        """`capacity` None admits everyone (pools without a size limit, such as NullPool)."""
        self.capacity = capacity
        self._places = asyncio.Semaphore(capacity) if capacity else None
        self.waiting = 0

    @asynccontextmanager
    async def admit(self, max_wait: float) -> AsyncIterator[None]:
        if self._places is None:
            yield
            return
        self.waiting += 1
        try:
            async with asyncio.timeout(max_wait):
                await self._places.acquire()
        except TimeoutError:
            raise PoolExhaustedError(max_wait) from None
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._places.release()
