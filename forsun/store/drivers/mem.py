"""The mem store: every plan in this process's memory, persisted to a dump file.

Layout, chosen so tens of millions of plans fit in a few GB (about 230 bytes a plan with a
16-character key and a short http action):

- ``_plans``: key -> :meth:`Plan.pack` bytes. No Plan objects, datetimes or per-plan dicts
  live here; a Plan is built only for the request or fire that needs it.
- ``_index``: a :class:`TimeIndex` (second -> keys due then) sharing the key strings of
  ``_plans``. It is derived from the plans' next_time: rebuilt at load, never persisted
  on its own. It may hold stale keys (see :mod:`.mem_index`).
- ``_current``: the last second the timer handled.

Every change goes through :meth:`_write_plan`, :meth:`_delete_plan` or
:meth:`_write_current`, so persisting changes as they happen (a journal) can hook there.

Persistence: :meth:`flush` writes a snapshot of the whole store with
:func:`.mem_dump.write_dump` (temp file, fsync, rename). Taking the snapshot on the loop is
two C-level list copies; turning it into the file (seconds for millions of plans) runs in a
worker thread, so the IOLoop keeps serving. A PeriodicCallback flushes every
``STORE_MEM_FLUSH_SECONDS`` when something changed, and :meth:`uninit` flushes at stop.
"""

import asyncio
import logging
import os
import time
from typing import Dict, Iterable, List, Optional

from tornado.ioloop import IOLoop, PeriodicCallback

from ... import config
from ...error import ConfigError
from ...plan import Plan
from ..store import Store
from .mem_dump import packed_next_time, read_dump, write_dump
from .mem_index import TimeIndex

_FLUSH_SECONDS = config.define(
    "STORE_MEM_FLUSH_SECONDS", 1.0,
    "seconds between writes of the mem store file while plans change; 0 = only at stop")

# Keys filtered between yields to the IOLoop in scans over every plan or second.
_SCAN_CHUNK = 50_000
# Plans unpacked between yields in get_plans (a few microseconds each); more than the
# core's fire batch, so its read-then-commit of a batch never yields.
_PLAN_CHUNK = 5_000
# Catch-up spans up to this many seconds are walked second by second; longer ones list
# the seconds that have plans (a scan of the index, cheap next to the core's per-second work).
_WALK_SECONDS = 60


class MemStore(Store):
    """Plans in memory, snapshotted to ``STORE_MEM_STORE_FILE``; see the module docs."""

    name = "mem"

    def __init__(self, settings: Optional[config.Settings] = None, *args, **kwargs):
        super().__init__(settings, *args, **kwargs)
        get = settings.get if settings is not None else config.get
        self.store_file: str = os.path.expanduser(get("STORE_MEM_STORE_FILE"))
        self.flush_seconds = float(get("STORE_MEM_FLUSH_SECONDS", _FLUSH_SECONDS.default))
        self._plans: Dict[str, bytes] = {}
        self._index = TimeIndex()
        self._current = 0
        self._version = 0  # bumped by every change; a flush records the one it wrote
        self._flushed_version = 0
        self._loaded = False
        self._last_flush: Optional[asyncio.Future] = None
        self._queued_flush: Optional[asyncio.Future] = None
        self._periodic: Optional[PeriodicCallback] = None

    # -- life cycle ------------------------------------------------------------------------

    async def init(self) -> None:
        """Loads the dump file in a worker thread, then starts the periodic flush.

        The thread also builds the dicts: nothing sees them before they are swapped in
        here, and the loop stays free while millions of plans are decoded.

        Raises ConfigError (naming the file) when the file cannot be read or its directory
        cannot be written, so the daemon stops before any plan could be lost.
        """
        directory = os.path.dirname(self.store_file) or "."
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError("cannot write the mem store file %s: its directory %s is "
                              "missing or not writable" % (self.store_file, directory))
        started = time.monotonic()
        loaded = await IOLoop.current().run_in_executor(None, read_dump, self.store_file)
        self._plans, self._index, self._current = loaded
        self._loaded = True
        logging.info("mem store loaded %d plans from %s in %.1fs", len(self._plans),
                     self.store_file, time.monotonic() - started)
        if self.flush_seconds > 0:
            self._periodic = PeriodicCallback(self._flush_if_changed, self.flush_seconds * 1000)
            self._periodic.start()

    async def uninit(self) -> None:
        """Stops the periodic flush and writes what changed since the last one."""
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None
        if self._last_flush is not None:
            await asyncio.wait([self._last_flush])
        if self._loaded and self._version != self._flushed_version:
            await self.flush()

    async def flush(self) -> None:
        """Writes a snapshot of the store to the dump file, atomically.

        Only one write runs at a time. Calls made while one runs share a single follow-up
        write, which snapshots when the running one ends and so includes their changes.
        """
        if not self._loaded:
            raise RuntimeError("the mem store file %s was not loaded; not overwriting it"
                               % self.store_file)
        if self._queued_flush is None:
            self._queued_flush = self._last_flush = asyncio.ensure_future(
                self._flush_after(self._last_flush))
        await asyncio.shield(self._queued_flush)

    async def _flush_after(self, previous: Optional[asyncio.Future]) -> None:
        """Waits for ``previous``, then snapshots on the loop and writes in a thread."""
        if previous is not None:
            await asyncio.wait([previous])  # its failure is reported to its own callers
        self._queued_flush = None
        version = self._version
        keys, packed_plans = list(self._plans), list(self._plans.values())
        started = time.monotonic()
        await IOLoop.current().run_in_executor(None, write_dump, self.store_file, keys,
                                               packed_plans, self._current)
        self._flushed_version = max(self._flushed_version, version)
        logging.debug("mem store wrote %d plans to %s in %.2fs", len(keys), self.store_file,
                      time.monotonic() - started)

    async def _flush_if_changed(self) -> None:
        if self._version == self._flushed_version:
            return
        try:
            await self.flush()
        except OSError as e:  # disk full, permissions: keep serving, retry next period
            logging.error("mem store: writing %s failed (%s); the previous file is intact, "
                          "retrying in %ss", self.store_file, e, self.flush_seconds)

    # -- the only places that change the store -----------------------------------------------

    def _write_plan(self, key: str, packed: bytes, next_time: int,
                    old_next_time: Optional[int]) -> None:
        """Stores a plan and moves its index entry from ``old_next_time`` (None: new plan)."""
        if old_next_time == next_time:
            self._plans[key] = packed  # the dict keeps its key object, which the index holds
            self._index.keep(next_time, key)
        else:
            if old_next_time is not None:
                del self._plans[key]  # re-inserted below so dict and index share ``key``
                self._index.discard(old_next_time, key)
            self._plans[key] = packed
            self._index.append(next_time, key)
        self._version += 1

    def _delete_plan(self, key: str, next_time: int) -> None:
        del self._plans[key]
        self._index.discard(next_time, key)
        self._version += 1

    def _write_current(self, current_time: int) -> None:
        self._current = current_time
        self._version += 1

    def _set_plan(self, plan: Plan) -> Optional[Plan]:
        """Stores ``plan`` with its index entry; returns the plan it replaced."""
        packed = self._plans.get(plan.key)
        old = None if packed is None else Plan.unpack(plan.key, packed)
        self._write_plan(plan.key, plan.pack(), plan.next_time,
                         None if old is None else old.next_time)
        return old

    # -- basic methods -------------------------------------------------------------------

    async def get_current(self) -> int:
        return self._current

    async def set_current(self, current_time: int) -> None:
        self._write_current(int(current_time))

    async def get_plan(self, key: str) -> Optional[Plan]:
        packed = self._plans.get(key)
        return None if packed is None else Plan.unpack(key, packed)

    async def set_plan(self, plan: Plan) -> None:
        """Stores the plan and indexes it at its next_time (the two never part here)."""
        self._set_plan(plan)

    async def remove_plan(self, key: str) -> None:
        packed = self._plans.get(key)
        if packed is not None:
            self._delete_plan(key, packed_next_time(packed))

    async def has_plan(self, key: str) -> bool:
        return key in self._plans

    async def add_time_plan(self, next_time: int, key: str) -> None:
        self._index.add(next_time, key)

    async def remove_time_plan(self, next_time: int, key: str) -> None:
        self._index.discard(next_time, key)

    async def get_time_plans(self, ts: int) -> List[str]:
        """Keys indexed at ``ts`` that still have a plan, each once (stale ones may remain)."""
        plans = self._plans
        return [key for key in self._index.keys_at(ts) if key in plans]

    async def delete_time_plans(self, ts: int) -> None:
        self._index.drop(ts)

    async def get_time_plan(self, next_time: int, key: str) -> int:
        """The status of the plan's fire at ``next_time``, 0 if unknown (0.1.x lookup)."""
        plan = await self.get_plan(key)
        return plan.status if plan is not None and plan.last_timeout == next_time else 0

    async def set_time_plan(self, next_time: int, key: str, status: int) -> None:
        await self.set_status(key, next_time, status)

    async def get_plan_keys(self, prefix: str = "") -> List[str]:
        """Every key starting with ``prefix``, in insertion order, yielding to the loop.

        The key list is copied at C speed (tens of ms for 10M keys), then filtered in
        chunks with a yield between them, so other requests and the timer keep running.
        """
        keys = list(self._plans)
        if not prefix:
            return keys
        found: List[str] = []
        for start in range(0, len(keys), _SCAN_CHUNK):
            found.extend(key for key in keys[start:start + _SCAN_CHUNK] if key.startswith(prefix))
            await asyncio.sleep(0)
        return found

    # -- batch methods -----------------------------------------------------------------------

    async def count_plans(self) -> Optional[int]:
        return len(self._plans)

    async def get_plans(self, keys: List[str]) -> List[Optional[Plan]]:
        plans = []
        for start in range(0, len(keys), _PLAN_CHUNK):
            if start:
                await asyncio.sleep(0)
            for key in keys[start:start + _PLAN_CHUNK]:
                packed = self._plans.get(key)
                plans.append(None if packed is None else Plan.unpack(key, packed))
        return plans

    async def put_plan(self, plan: Plan) -> Optional[Plan]:
        return self._set_plan(plan)

    async def take_plan(self, key: str) -> Optional[Plan]:
        packed = self._plans.get(key)
        if packed is None:
            return None
        plan = Plan.unpack(key, packed)
        self._delete_plan(key, plan.next_time)
        return plan

    async def commit_fired(self, ts: int, rescheduled: List[Plan], finished: List[str]) -> None:
        """Applies the whole batch without yielding, so no request interleaves with it.

        get_plans does not yield either for batches of up to ``_PLAN_CHUNK`` keys, so a
        batch the core reads and commits back to back cannot overwrite a plan that a
        request replaced or removed in between with a stale copy.
        """
        for plan in rescheduled:
            packed = self._plans.get(plan.key)
            self._write_plan(plan.key, plan.pack(), plan.next_time,
                             None if packed is None else packed_next_time(packed))
        for key in finished:
            packed = self._plans.get(key)
            if packed is not None:
                self._delete_plan(key, packed_next_time(packed))

    async def set_status(self, key: str, ts: int, status: int) -> None:
        """Rewrites the plan with its new status; next_time is unchanged, so updating the
        index is O(1) even in a busy second."""
        packed = self._plans.get(key)
        if packed is None:
            return
        plan = Plan.unpack(key, packed)
        if plan.last_timeout == ts and plan.status != status:
            plan.status = status
            self._write_plan(key, plan.pack(), plan.next_time, plan.next_time)

    async def due_seconds(self, first: int, last: int) -> Iterable[int]:
        """The seconds in [first, last] that have plans, in order.

        A short span is walked as is; after a long outage only the seconds in the index
        are listed, so catching up a month does not mean visiting 2.6M empty seconds.
        """
        if last - first <= max(_WALK_SECONDS, len(self._index) // 64):
            return range(first, last + 1)
        seconds = self._index.seconds()
        due: List[int] = []
        for start in range(0, len(seconds), _SCAN_CHUNK):
            due.extend(ts for ts in seconds[start:start + _SCAN_CHUNK] if first <= ts <= last)
            await asyncio.sleep(0)
        due.sort()
        return due
