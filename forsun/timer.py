"""The timer: tells the core which seconds to fire, each exactly once, in order.

It sleeps until the next wall-clock second boundary (recomputed every tick, so it never
drifts), then handles every second from the last handled one up to now. After a restart
it starts from the store's ``current`` second, so seconds that passed while the daemon was
down are caught up; the store can skip empty seconds of a long outage (``due_seconds``).
A second whose handling fails (the store is down) is retried until it succeeds.

When the store elects one firing node among several (``store.leadership``, the redis
store's lease), the timer fires only while this node leads, and reloads the current second
from the store whenever it takes over. The first second handled after a (re)load is the one
a previous process may have died in the middle of, and a second whose handling failed may
be partly committed: plans already rescheduled for such a second are dispatched again (at
least once, never lost; duplicates only for that second).
"""

import asyncio
import gc
import logging
import time
from typing import Awaitable, Callable, Optional

from .status import ForsunStatus
from .store.store import Store

log = logging.getLogger("forsun.timer")

# Gaps longer than this are caught up through store.due_seconds instead of second by second.
CATCH_UP_SCAN_SECONDS = 60
RETRY_SECONDS = 1.0
SPIN_SECONDS = 0.002


class Timer:
    def __init__(self, fire_second: Callable[..., Awaitable[int]], store: Store,
                 status: ForsunStatus, clock: Callable[[], float] = time.time):
        self.fire_second = fire_second
        self.store = store
        self.status = status
        self.clock = clock
        self.current = 0  # the last second handled
        self._task: Optional[asyncio.Task] = None
        self._stopping = False
        self._wakeup: Optional[asyncio.Future] = None
        self._redo_next = False  # the next second handled may be partly fired already

    def start(self) -> None:
        # Everything alive now (modules, the loaded store) lives as long as the process:
        # move it out of the cyclic GC's sight, or each full collection scans it all and
        # stalls firing for tens of milliseconds.
        gc.freeze()
        self._stopping = False
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stops after the second being handled, if any, is done."""
        self._stopping = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._task is not None:
            await self._task
            self._task = None

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0 or self._stopping:
            return
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._wakeup), seconds)
        except asyncio.TimeoutError:
            pass

    async def _run(self) -> None:
        leadership = getattr(self.store, "leadership", None)
        loaded = False
        while not self._stopping:
            if leadership is not None and not leadership.is_leader():
                await self._wait_leader(leadership)
                loaded = False
                continue
            if not loaded:
                loaded = await self._load_current()
                if not loaded:
                    await self._sleep(RETRY_SECONDS)
                    continue
                self._redo_next = True
            self.status.timer_loop_count += 1
            now = int(self.clock())
            if self.current < now:
                try:
                    await self._handle_until(now)
                except Exception as e:
                    # Part of the second may have been committed before the failure.
                    self._redo_next = True
                    self.status.timer_loop_ready_error_count += 1
                    log.error("handling second %d failed, will retry: %s", self.current + 1, e)
                    await self._sleep(RETRY_SECONDS)
                continue
            await self._sleep_until(self.current + 1)

    async def _sleep_until(self, boundary: float) -> None:
        """Sleeps until the wall clock reaches ``boundary``; the last :data:`SPIN_SECONDS`
        are spent awake, so the second starts on a running CPU rather than one waking
        from idle (on virtual machines that wake-up alone costs milliseconds)."""
        remaining = boundary - self.clock()
        if remaining > SPIN_SECONDS:
            await self._sleep(remaining - SPIN_SECONDS)
        # The spin is bounded by the monotonic clock: when the wall clock steps back while
        # we sleep, spinning "until the boundary" would hold the IOLoop for the whole step
        # (no request answered, no plan fired). Past the bound, the loop asks again.
        spin_end = time.monotonic() + SPIN_SECONDS
        while not self._stopping and self.clock() < boundary and time.monotonic() < spin_end:
            pass

    async def _wait_leader(self, leadership) -> None:
        """Waits until this node leads, or the timer stops."""
        self._wakeup = asyncio.get_running_loop().create_future()
        leading = asyncio.ensure_future(leadership.wait_leader())
        await asyncio.wait([leading, self._wakeup], return_when=asyncio.FIRST_COMPLETED)
        leading.cancel()

    async def _load_current(self) -> bool:
        try:
            current = int(await self.store.get_current() or 0)
        except Exception as e:
            log.error("reading the current second from the store failed, will retry: %s", e)
            return False
        now = int(self.clock())
        self.current = current if 0 < current <= now else now - 1
        if self.current < now - 1:
            log.info("catching up %d seconds missed since %d", now - 1 - self.current,
                     self.current)
        return True

    async def _handle_until(self, now: int) -> None:
        if now - self.current > CATCH_UP_SCAN_SECONDS:
            for ts in list(await self.store.due_seconds(self.current + 1, now - 1)):
                if self._stopping:
                    return
                if ts > self.current:
                    await self._handle(ts)
            self.current = max(self.current, now - 1)
        while self.current < now and not self._stopping:
            await self._handle(self.current + 1)

    async def _handle(self, ts: int) -> None:
        if self._redo_next:
            await self.fire_second(ts, redo_fired=True)
            self._redo_next = False
        else:
            await self.fire_second(ts)
        await self.store.set_current(ts)
        self.current = ts
