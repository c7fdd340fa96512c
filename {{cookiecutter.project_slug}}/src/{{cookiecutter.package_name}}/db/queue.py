"""The pool's queue: first come, first served, with a bounded wait.

SQLAlchemy's async queue pool lets a request that has just arrived take a returned connection
ahead of requests that are already waiting, so under sustained load a few requests wait for as
long as the load lasts. This queue admits at most the pool's capacity at a time and hands freed
places to waiters strictly in arrival order, so the wait is bounded by the queue ahead.

A *place* is the right to one of the pool's connections: a request takes one place, however many
statements it runs, so holding a place never means waiting for the pool.
"""

from __future__ import annotations

import asyncio

from .errors import PoolExhaustedError


class CheckoutQueue:
    def __init__(self, capacity: int | None) -> None:
        """`capacity` None admits everyone (pools without a size limit, such as NullPool)."""
        self.capacity = capacity
        self._places = asyncio.Semaphore(capacity) if capacity else None
        self.waiting = 0
        self.admitted = 0  # places taken and not yet given back

    async def enter(self, max_wait: float) -> None:
        """Take a place, waiting at most `max_wait` seconds behind those who came first.

        Every `enter` that returns must be matched by one `leave`.
        """
        if self._places is None:
            self.admitted += 1
            return
        if not self._places.locked():  # a free place and nobody queued: no wait, no timer
            await self._places.acquire()
            self.admitted += 1
            return
        self.waiting += 1
        try:
            async with asyncio.timeout(max_wait):
                await self._places.acquire()
        except TimeoutError:
            raise PoolExhaustedError(max_wait) from None
        finally:
            self.waiting -= 1
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1
        if self._places is not None:
            self._places.release()
