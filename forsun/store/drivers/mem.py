"""The mem store: every plan in this process's memory, crash-safe on disk.

Memory layout, chosen so tens of millions of plans fit in a few GB (about 250 bytes a plan
with a 16-character key and a short http action):

- ``_shards``: :data:`SHARDS` dicts key -> :meth:`Plan.pack` bytes, the dict chosen by
  ``hash(key)``. No Plan objects, datetimes or per-plan dicts live here; a Plan is built
  only for the request or fire that needs it. Many small dicts instead of one: a dict of
  millions of entries stalls the IOLoop for most of a second whenever it grows, and a
  snapshot can take one small dict at a time.
- ``_index``: a :class:`TimeIndex` (second -> keys due then) sharing the key strings of the
  shards. It is derived from the plans' next_time: rebuilt at load, never persisted on its
  own. Apart from what a dump loaded, it holds nothing the cyclic GC tracks (see
  :mod:`.mem_index`).
- ``_current``: the last second the timer handled.

Persistence (docs/persistence.md has the whole story):

- Every change goes through :meth:`_put`, :meth:`_remove`, :meth:`commit_fired`,
  :meth:`set_status` or :meth:`set_current`, which append a record to the journal
  (:mod:`.mem_journal`) before changing memory, and so before the request is answered. A
  failed journal write fails the request (error 1004/1005) and changes nothing.
- Now and then the whole store is written as a snapshot, the dump file of SPEC section 9
  (:mod:`.mem_dump`), by a separate writer process the store streams its shards to; the
  IOLoop only packs one shard at a time. A snapshot starts a new journal segment first, and
  deletes the older segments once the new dump file is durably in place. A snapshot starts
  when the journal has grown past ``STORE_MEM_COMPACT_BYTES`` and half the dump's size, or
  ``STORE_MEM_FLUSH_SECONDS`` after a change, and at a clean stop when plans changed.
- At start (:meth:`init`, in a worker thread): load the dump, replay the journal segments
  in order, then open a new segment.
"""

import asyncio
import ctypes
import logging
import os
import sys
import time
from typing import Dict, Iterable, List, Optional, Tuple

import msgpack
from tornado.ioloop import IOLoop, PeriodicCallback

from ... import config
from ...error import ConfigError
from ...plan import FIELDS, Plan
from ..store import Store
from .mem_dump import END, packed_next_time, read_dump
from .mem_index import TimeIndex
from .mem_journal import BATCH, CURRENT, FSYNC_POLICIES, PUT, REMOVE, Journal, list_segments, \
    read_segment

log = logging.getLogger("forsun.store")

_FLUSH_SECONDS = config.define(
    "STORE_MEM_FLUSH_SECONDS", 3600.0,
    "at most this many seconds between snapshots of the mem store file while plans change "
    "(every change is in the journal meanwhile); 0 = only by journal size and at stop")
_FSYNC = config.define(
    "STORE_MEM_FSYNC", "everysec",
    "when the mem store journal is fsynced: everysec (a power cut loses at most the last "
    "second), always (every request waits for its fsync), no (left to the OS). A killed "
    "process loses nothing in any mode")
_COMPACT_BYTES = config.define(
    "STORE_MEM_COMPACT_BYTES", 64 * 1024 * 1024,
    "a snapshot starts once the journal holds this many bytes and half the size of the dump")

SHARDS = 1024
_MASK = SHARDS - 1
COMPACT_RATIO = 0.5
# After a failed snapshot, wait this long before the journal size starts another one.
RETRY_SECONDS = 30.0
# Keys filtered between yields to the IOLoop in scans over every plan or second.
_SCAN_CHUNK = 50_000
# Plans unpacked between yields in get_plans (a few microseconds each; more than the
# core's fire batch, so its read-then-commit of a batch never yields), statuses set between
# yields in set_statuses.
_PLAN_CHUNK = 5_000
# Seconds of IOLoop work a snapshot does in one go (packing shards) before yielding.
_SNAPSHOT_SLICE = 0.005
# Catch-up spans up to this many seconds are walked second by second; longer ones list
# the seconds that have plans (a scan of the index, cheap next to the core's per-second work).
_WALK_SECONDS = 60

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
_unpackb = msgpack.unpackb
# Positions in the packed form (Plan.pack: every field but the key, in FIELDS order).
_STATUS = FIELDS.index("status") - 1
_NEXT_TIME = FIELDS.index("next_time") - 1
_LAST_TIMEOUT = FIELDS.index("last_timeout") - 1


class MemStore(Store):
    """Plans in memory, journaled and snapshotted to ``STORE_MEM_STORE_FILE``; see the
    module docs."""

    name = "mem"
    #: Request methods never need to run inside an asyncio task (they only ever await
    #: futures or yield), so a server may run them inline, without a task per request.
    inline_requests = True

    def __init__(self, settings: Optional[config.Settings] = None, *args, **kwargs):
        super().__init__(settings, *args, **kwargs)
        get = settings.get if settings is not None else config.get
        self.store_file: str = os.path.expanduser(get("STORE_MEM_STORE_FILE"))
        self.flush_seconds = float(get(_FLUSH_SECONDS.name, _FLUSH_SECONDS.default))
        self.fsync = str(get(_FSYNC.name, _FSYNC.default)).strip().lower()
        if self.fsync not in FSYNC_POLICIES:
            raise ConfigError("invalid STORE_MEM_FSYNC %r: use %s"
                              % (self.fsync, ", ".join(FSYNC_POLICIES)))
        self.compact_bytes = int(get(_COMPACT_BYTES.name, _COMPACT_BYTES.default))
        self._shards: List[Dict[str, bytes]] = [{} for _ in range(SHARDS)]
        self._count = 0
        self._index = TimeIndex()
        self._current = 0
        self._journal: Optional[Journal] = None
        self._loaded = False
        self._plans_changed = False  # since the last snapshot started
        self._old_segment_bytes = 0  # segments found at start, until a snapshot covers them
        self._covered_written = 0  # journal.written when the last good snapshot started
        self._dump_size = 0
        self._last_snapshot_start = time.monotonic()
        self._retry_after = 0.0
        self._compact_at = self.compact_bytes  # journal bytes that call for a snapshot
        self._last_flush: Optional[asyncio.Future] = None
        self._queued_flush: Optional[asyncio.Future] = None
        self._periodic: Optional[PeriodicCallback] = None
        self.snapshot_count = 0

    # -- life cycle ------------------------------------------------------------------------

    async def init(self) -> None:
        """Loads the dump file and replays the journal in a worker thread, then opens a
        new journal segment and starts the snapshot schedule.

        Raises ConfigError (naming the file) when the dump or a journal segment cannot be
        read or the directory cannot be written, so the daemon stops before any plan
        could be lost; the files are left as they are.
        """
        directory = os.path.dirname(self.store_file) or "."
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError("cannot write the mem store file %s: its directory %s is "
                              "missing or not writable" % (self.store_file, directory))
        started = time.monotonic()
        _keep_heap()
        last_seq, replayed = await IOLoop.current().run_in_executor(None, self._recover)
        self._loaded = True
        self._plans_changed = False  # what was replayed is counted in _old_segment_bytes
        journal = Journal(self.store_file, self.fsync)
        journal.open(last_seq + 1)
        self._journal = journal
        try:
            self._dump_size = os.path.getsize(self.store_file)
        except OSError:
            self._dump_size = 0
        log.info("mem store loaded %d plans from %s%s in %.1fs", self._count, self.store_file,
                 " and %d journal records" % replayed if replayed else "",
                 time.monotonic() - started)
        period = min(1.0, self.flush_seconds) if self.flush_seconds > 0 else 1.0
        self._periodic = PeriodicCallback(self._check_snapshot, period * 1000)
        self._periodic.start()

    def _recover(self) -> Tuple[int, int]:
        """Dump + journal into memory (runs in a worker thread before anything else uses the
        store); returns (the last segment number, records replayed)."""
        current = read_dump(self.store_file, self._shards, self._index)
        self._count = sum(map(len, self._shards))
        self._current = current or 0
        segments = list_segments(self.store_file)
        replayed = 0
        for _, path in segments:
            try:
                for record in read_segment(path):
                    self._apply(record)
                    replayed += 1
                self._old_segment_bytes += os.path.getsize(path)
            except OSError as e:
                raise ConfigError("cannot read the mem store journal %s: %s"
                                  % (path, e.strerror or e)) from e
        return (segments[-1][0] if segments else 0), replayed

    def _apply(self, record: list) -> None:
        kind = record[0]
        if kind == PUT:
            _, key, packed, next_time = record
            self._store(key, packed, next_time)
        elif kind == REMOVE:
            self._drop(record[1])
        elif kind == CURRENT:
            self._current = record[1]
        elif kind == BATCH:
            _, puts, removes = record
            store = self._store
            for i in range(0, len(puts), 3):
                store(puts[i], puts[i + 1], puts[i + 2])
            for key in removes:
                self._drop(key)

    async def uninit(self) -> None:
        """Stops the snapshot schedule; writes a last snapshot if plans changed since the
        previous one, then closes the journal (what it holds is replayed at the next start
        if that snapshot could not be written)."""
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None
        if self._last_flush is not None:
            await asyncio.wait([self._last_flush])
        journal = self._journal
        if journal is None:
            return
        if self._plans_changed or self._old_segment_bytes:
            try:
                await self.flush()
            except Exception as e:
                log.error("mem store: the snapshot at stop failed (%s); the journal keeps "
                          "every change and is replayed at the next start", e)
        await journal.close()
        self._journal = None
        if journal.since_rotation == 0 and len(list_segments(self.store_file)) == 1:
            _unlink(journal.path)  # the empty segment the last snapshot started

    # -- snapshots ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Writes a snapshot of the store to the dump file and drops the journal it covers.

        Only one snapshot runs at a time. Calls made while one runs share a single
        follow-up snapshot, which starts when the running one ends and so includes their
        changes. Raises if the snapshot failed (the journal still holds everything).
        """
        if not self._loaded or self._journal is None:
            raise RuntimeError("the mem store file %s was not loaded; not overwriting it"
                               % self.store_file)
        if self._queued_flush is None:
            self._queued_flush = self._last_flush = asyncio.ensure_future(
                self._snapshot_after(self._last_flush))
        await asyncio.shield(self._queued_flush)

    async def _snapshot_after(self, previous: Optional[asyncio.Future]) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its failure is reported to its own callers
        self._queued_flush = None
        await self._snapshot()

    async def _snapshot(self) -> None:
        """Rotates the journal, streams every shard to a writer process, and once it has
        renamed the new dump into place deletes the journal segments it covers."""
        journal = self._journal
        assert journal is not None
        try:
            seq, written = await journal.rotate()
        except OSError:
            self._retry_after = time.monotonic() + RETRY_SECONDS
            raise
        self._plans_changed = False
        self._last_snapshot_start = time.monotonic()
        started = time.monotonic()
        journal.disk_busy = True  # the writer's gigabytes slow every fsync meanwhile
        try:
            code, message, count = await self._write_snapshot()
        finally:
            journal.disk_busy = False
        if code != 0:
            self._retry_after = time.monotonic() + RETRY_SECONDS
            self._plans_changed = True
            raise OSError("the snapshot writer for %s failed (exit status %d)%s"
                          % (self.store_file, code, ": " + message if message else ""))
        self.snapshot_count += 1
        self._covered_written = written
        self._old_segment_bytes = 0
        try:
            self._dump_size = os.path.getsize(self.store_file)
        except OSError:
            pass
        covered = [path for number, path in list_segments(self.store_file) if number < seq]
        if covered:
            await IOLoop.current().run_in_executor(None, _unlink_all, covered)
        log.info("mem store wrote %d plans to %s in %.1fs", count, self.store_file,
                 time.monotonic() - started)

    async def _write_snapshot(self) -> Tuple[int, str, int]:
        """Streams every shard to a writer process; returns its exit status, what it said
        on stderr and the number of plans sent."""
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "forsun.store.drivers.mem_dump", self.store_file,
            str(os.getpid()), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
        errors = asyncio.ensure_future(process.stderr.read())
        count = 0
        try:
            stdin = process.stdin
            stdin.write(_packer.pack({"current_time": self._current}))
            loop = asyncio.get_running_loop()
            slice_end = loop.time() + _SNAPSHOT_SLICE
            for shard in self._shards:
                if shard:
                    count += len(shard)
                    stdin.write(_packer.pack(shard))
                if loop.time() >= slice_end:
                    await stdin.drain()
                    await asyncio.sleep(0)
                    slice_end = loop.time() + _SNAPSHOT_SLICE
            stdin.write(_packer.pack(END))
            await stdin.drain()
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the writer died; its exit status and stderr say why
        except BaseException:
            process.kill()
            raise
        finally:
            code = await process.wait()
            message = (await errors).decode("utf-8", "replace").strip()
        return code, message, count

    def journal_bytes(self) -> int:
        """Bytes of journal not covered by a snapshot yet."""
        if self._journal is None:
            return 0
        return self._old_segment_bytes + self._journal.written - self._covered_written

    def _journal_grew(self) -> None:
        """After a journal write: starts a snapshot as soon as the journal is big enough."""
        if self._journal is not None and self.journal_bytes() >= self._compact_at:
            self._compact_at = 1 << 62  # until _check_snapshot has looked
            IOLoop.current().add_callback(self._check_snapshot)

    def _check_snapshot(self) -> None:
        self._compact_at = max(self.compact_bytes, int(self._dump_size * COMPACT_RATIO))
        if self._journal is None or (self._last_flush is not None and
                                     not self._last_flush.done()):
            return
        now = time.monotonic()
        if now < self._retry_after:
            return
        by_size = self.journal_bytes() >= max(self.compact_bytes,
                                              self._dump_size * COMPACT_RATIO)
        by_time = (self.flush_seconds > 0 and self._plans_changed
                   and now - self._last_snapshot_start >= self.flush_seconds)
        if by_size or by_time:
            asyncio.ensure_future(self._flush_logged())

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception as e:  # disk full, permissions: keep serving, the journal has it all
            self.report_error("snapshot")
            log.error("mem store: %s; the previous file is intact and the journal keeps "
                      "every change, retrying later", e)

    # -- the only places that change the store -----------------------------------------------

    def _store(self, key: str, packed: bytes, next_time: int) -> Optional[bytes]:
        """Stores a plan and moves its index entry; returns the packed plan it replaced.
        Not journaled: callers journal first."""
        shard = self._shards[hash(key) & _MASK]
        old = shard.get(key)
        if old is None:
            shard[key] = packed
            self._count += 1
            self._index.add(next_time, key)
        else:
            old_next_time = packed_next_time(old)
            if old_next_time == next_time:
                shard[key] = packed  # the dict keeps its key object, which the index holds
                self._index.keep(next_time, key)
            else:
                del shard[key]  # re-inserted so dict and index share ``key``
                shard[key] = packed
                self._index.discard(old_next_time, key)
                self._index.add(next_time, key)
        self._plans_changed = True
        return old

    def _drop(self, key: str) -> Optional[bytes]:
        """Removes a plan and its index entry; returns it packed. Not journaled."""
        old = self._shards[hash(key) & _MASK].pop(key, None)
        if old is not None:
            self._count -= 1
            self._index.discard(packed_next_time(old), key)
            self._plans_changed = True
        return old

    def _put(self, key: str, packed: bytes, next_time: int) -> Optional[bytes]:
        if self._journal is not None:
            self._journal.put(key, packed, next_time)
            self._journal_grew()
        return self._store(key, packed, next_time)

    def _remove(self, key: str) -> Optional[bytes]:
        if key not in self._shards[hash(key) & _MASK]:
            return None
        if self._journal is not None:
            self._journal.remove(key)
            self._journal_grew()
        return self._drop(key)

    def _durable(self) -> Optional[asyncio.Future]:
        """With STORE_MEM_FSYNC=always, a future to await until what was just journaled is
        fsynced; None when there is nothing to wait for."""
        journal = self._journal
        if journal is not None and journal.fsync == "always":
            return journal.durable()
        return None

    # -- basic methods -------------------------------------------------------------------

    async def get_current(self) -> int:
        return self._current

    async def set_current(self, current_time: int) -> None:
        self._current = current_time = int(current_time)
        if self._journal is not None:
            self._journal.current_lazy(current_time)

    async def get_plan(self, key: str) -> Optional[Plan]:
        packed = self._shards[hash(key) & _MASK].get(key)
        return None if packed is None else Plan.unpack(key, packed)

    async def set_plan(self, plan: Plan) -> None:
        """Stores the plan and indexes it at its next_time (the two never part here)."""
        self._put(plan.key, plan.pack(), plan.next_time)
        waiter = self._durable()
        if waiter is not None:
            await waiter

    async def remove_plan(self, key: str) -> None:
        if self._remove(key) is not None:
            waiter = self._durable()
            if waiter is not None:
                await waiter

    async def has_plan(self, key: str) -> bool:
        return key in self._shards[hash(key) & _MASK]

    async def add_time_plan(self, next_time: int, key: str) -> None:
        self._index.add(next_time, key)

    async def remove_time_plan(self, next_time: int, key: str) -> None:
        self._index.discard(next_time, key)

    async def get_time_plans(self, ts: int) -> List[str]:
        """Keys indexed at ``ts``, in the order they were indexed; a second loaded from the
        dump may list stale or repeated keys, which the core sorts out batch by batch."""
        return self._index.keys_at(ts)

    async def delete_time_plans(self, ts: int) -> None:
        self._index.drop(ts)

    async def get_time_plan(self, next_time: int, key: str) -> int:
        """The status of the plan's fire at ``next_time``, 0 if unknown (0.1.x lookup)."""
        plan = await self.get_plan(key)
        return plan.status if plan is not None and plan.last_timeout == next_time else 0

    async def set_time_plan(self, next_time: int, key: str, status: int) -> None:
        await self.set_status(key, next_time, status)

    async def get_plan_keys(self, prefix: str = "") -> List[str]:
        """Every key starting with ``prefix``, in no particular order, yielding to the loop
        every :data:`_SCAN_CHUNK` keys so other requests and the timer keep running."""
        found: List[str] = []
        scanned = 0
        for shard in self._shards:
            if prefix:
                found += [key for key in shard if key.startswith(prefix)]
            else:
                found += shard
            scanned += len(shard)
            if scanned >= _SCAN_CHUNK:
                scanned = 0
                await asyncio.sleep(0)
        return found

    # -- batch methods -----------------------------------------------------------------------

    async def count_plans(self) -> Optional[int]:
        return self._count

    async def get_plans(self, keys: List[str]) -> List[Optional[Plan]]:
        plans: List[Optional[Plan]] = []
        shards = self._shards
        unpack = Plan.unpack
        for start in range(0, len(keys), _PLAN_CHUNK):
            if start:
                await asyncio.sleep(0)
            for key in keys[start:start + _PLAN_CHUNK]:
                packed = shards[hash(key) & _MASK].get(key)
                plans.append(None if packed is None else unpack(key, packed))
        return plans

    def plan_tokens(self, keys: List[str]) -> List[Optional[bytes]]:
        """For each key, a token that is the same object as long as the plan is unchanged
        (its packed bytes: every change stores new ones), None for a missing plan. Lets the
        core prepare a second's fires ahead and redo only the plans changed meanwhile."""
        shards = self._shards
        return [shards[hash(key) & _MASK].get(key) for key in keys]

    async def put_plan(self, plan: Plan) -> Optional[Plan]:
        old = self._put(plan.key, plan.pack(), plan.next_time)
        waiter = self._durable()
        if waiter is not None:
            await waiter
        return None if old is None else Plan.unpack(plan.key, old)

    async def put_plans(self, plans: List[Plan]) -> List[Optional[Plan]]:
        """Creates or replaces many plans with one journal record (bulk loads).

        Loops run in C where they can (slices, ``map``): a bulk body stores thousands."""
        keys = [plan.key for plan in plans]
        packed = [plan.pack() for plan in plans]
        next_times = [plan.next_time for plan in plans]
        if self._journal is not None:
            puts: List = [None] * (3 * len(plans))  # key, packed, next_time, key, ...
            puts[0::3], puts[1::3], puts[2::3] = keys, packed, next_times
            self._journal.batch(puts, [])
            self._journal_grew()
        olds: List = list(map(self._store, keys, packed, next_times))
        waiter = self._durable()
        if waiter is not None:
            await waiter
        if olds.count(None) == len(olds):  # all new keys, the usual bulk load
            return olds
        return [None if old is None else Plan.unpack(key, old)
                for key, old in zip(keys, olds)]

    async def take_plan(self, key: str) -> Optional[Plan]:
        old = self._remove(key)
        if old is None:
            return None
        waiter = self._durable()
        if waiter is not None:
            await waiter
        return Plan.unpack(key, old)

    async def commit_fired(self, ts: int, rescheduled: List[Plan], finished: List[str]) -> None:
        """Applies the whole batch, journaled as one record, without yielding, so no request
        interleaves with it.

        get_plans does not yield either for batches of up to ``_PLAN_CHUNK`` keys, so a
        batch the core reads and commits back to back cannot overwrite a plan that a
        request replaced or removed in between with a stale copy.
        """
        puts: List = []
        for plan in rescheduled:
            puts += (plan.key, plan.pack(), plan.next_time)
        shards = self._shards
        removes = [key for key in finished if key in shards[hash(key) & _MASK]]
        if self._journal is not None:
            self._journal.batch(puts, removes)
            self._journal_grew()
        index = self._index
        for i in range(0, len(puts), 3):
            key, packed, next_time = puts[i], puts[i + 1], puts[i + 2]
            shard = shards[hash(key) & _MASK]
            old = shard.get(key)
            if old is None:  # removed meanwhile: the core never does that, but be exact
                self._store(key, packed, next_time)
            else:  # the plan was due at ts: its index entry there goes with the second
                del shard[key]
                shard[key] = packed
                index.add(next_time, key)
        for key in removes:
            self._drop(key)
        self._plans_changed = True
        waiter = self._durable()
        if waiter is not None:
            await waiter

    async def set_status(self, key: str, ts: int, status: int) -> None:
        self._set_status(key, ts, status)

    async def set_statuses(self, statuses: List[Tuple[str, int, int]]) -> None:
        """Yields to the IOLoop between chunks of :data:`_PLAN_CHUNK`: the fires of a
        100,000-plan second end in lists of tens of thousands (~2 µs a status)."""
        set_status = self._set_status
        for start in range(0, len(statuses), _PLAN_CHUNK):
            if start:
                await asyncio.sleep(0)
            for key, ts, status in statuses[start:start + _PLAN_CHUNK]:
                set_status(key, ts, status)

    def _set_status(self, key: str, ts: int, status: int) -> None:
        """Rewrites the plan with its new status; next_time is unchanged, so updating the
        index is O(1) even in a busy second. Journaled lazily: not waited for."""
        shard = self._shards[hash(key) & _MASK]
        packed = shard.get(key)
        if packed is None:
            return
        values = _unpackb(packed, raw=False, unicode_errors="surrogateescape")
        if values[_LAST_TIMEOUT] == ts and values[_STATUS] != status:
            values[_STATUS] = status
            packed = _packer.pack(values)
            if self._journal is not None:
                self._journal.put_lazy(key, packed, values[_NEXT_TIME])
            shard[key] = packed
            self._plans_changed = True

    async def due_seconds(self, first: int, last: int) -> Iterable[int]:
        """The seconds in [first, last] that have plans, in order.

        A short span is walked as is; after a long outage only the seconds in the index
        are listed, so catching up a month does not mean visiting 2.6M empty seconds.
        """
        if last - first <= max(_WALK_SECONDS, len(self._index) // 64):
            return range(first, last + 1)
        due: List[int] = []
        scanned = 0
        for shard in self._index.shards():
            due += [ts for ts in shard if first <= ts <= last]
            scanned += len(shard)
            if scanned >= _SCAN_CHUNK:
                scanned = 0
                await asyncio.sleep(0)
        due.sort()
        return due


def _keep_heap() -> None:
    """Asks glibc to keep freed memory instead of handing it back to the kernel at once.

    A process holding gigabytes (ten million plans) that maps and unmaps megabyte buffers
    (a snapshot packs a shard at a time) takes the kernel's mmap lock each time, and a
    thread blocked in a page fault while the disk is busy can hold that lock for a tenth of a
    second: measured as IOLoop stalls of 100-200 ms during snapshots, gone with this. Only
    on glibc; elsewhere nothing happens.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024)
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("mem store: cannot remove %s: %s", path, e)


def _unlink_all(paths: List[str]) -> None:
    for path in paths:
        _unlink(path)
