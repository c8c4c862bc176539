"""Group commit: many small independent writes coalesced into few round trips.

Each fire's action reports its outcome on its own (``Store.set_status``). Written one by
one, 100,000 plans due in one second would be 100,000 round trips queueing for a handful
of pooled connections. Here the first call is flushed at once; calls arriving while that
flush is in flight wait and go together in the next one. Batches grow with the load, and a
lone call still costs a single round trip.
"""

import asyncio
from typing import Awaitable, Callable, Generic, List, Optional, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, flush: Callable[[List[T]], Awaitable[None]]):
        self._flush = flush
        self._pending: List[T] = []
        self._waiter: Optional[asyncio.Future] = None
        self._task: Optional[asyncio.Task] = None

    async def submit(self, item: T) -> None:
        """Queues ``item``; returns once the flush that carried it is done, or raises its error."""
        self._pending.append(item)
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        waiter = self._waiter
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        # shielded: one caller giving up must not cancel the flush the others wait for
        await asyncio.shield(waiter)

    async def drain(self) -> None:
        """Waits until everything queued so far has been flushed (at stop)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._pending:
                items, waiter = self._pending, self._waiter
                self._pending, self._waiter = [], None
                await self._flush_one(items, waiter)
        finally:
            self._task = None

    async def _flush_one(self, items: List[T], waiter: asyncio.Future) -> None:
        try:
            await self._flush(items)
        except asyncio.CancelledError:
            waiter.cancel()
            if self._waiter is not None:
                self._waiter.cancel()
            self._pending, self._waiter = [], None
            raise
        except Exception as e:
            waiter.set_exception(e)
            waiter.exception()  # retrieved: callers that gave up leave no "never retrieved" noise
        else:
            waiter.set_result(None)
