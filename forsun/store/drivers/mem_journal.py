"""The mem store's journal: every change, appended to a file as it happens.

The dump file (a snapshot, :mod:`.mem_dump`) is rewritten only now and then; between two
snapshots every change lives in the journal, so a crash (even SIGKILL or a power cut) loses
nothing that was acknowledged. Recovery is: load the snapshot, then replay the journal.

Files, beside the dump file ``D``: ``D.journal.00000001``, ``D.journal.00000002``, ... ("segments",
numbered in the order they were started). forsund appends to one segment, the newest; it
starts a new one at start-up and whenever a snapshot starts. A snapshot holds everything in
the segments before the one started with it, so those are deleted once the snapshot file
is durably renamed into place. Replaying a segment the snapshot already contains is
harmless: every record sets an absolute value (a whole plan, a removal, the current
second), so replaying a prefix of history twice ends in the same state.

A record is framed as ``<u32 length><u32 crc32>`` (little endian) and a msgpack payload:

- ``[1, key, packed, next_time]``: plan stored (``packed`` is :meth:`forsun.plan.Plan.pack`)
- ``[2, key]``: plan removed
- ``[3, ts]``: every second up to ``ts`` has been handled
- ``[4, [key, packed, next_time, ...], [removed key, ...]]``: many at once (a fired batch,
  a bulk create), applied as a unit: a torn batch is dropped whole

Durability (setting ``STORE_MEM_FSYNC``): a change is written to the file (the OS page
cache) before the request that made it is answered, so killing the process loses nothing.
``everysec`` (default) fsyncs once a second, so a power cut loses at most the last second;
``always`` makes every request wait for an fsync (group commit: one fsync covers every
request waiting at that moment); ``no`` leaves flushing to the OS. fsync runs in a thread
of its own, never on the IOLoop.

Appends never wait behind a slow flush of their own file, when we can help it: while ext4
writes a file back for an fsync it holds that file's locks, and an append to the same file
waits for them, on the IOLoop, for as long as the disk is busy (60-80 ms per second while a
10M-plan snapshot was being written). So when the disk is known to be busy (a snapshot is
being written, or the last fsync took :data:`SLOW_FSYNC_SECONDS` or more), the everysec
sync first moves appends to a new segment, created in the journal's thread, and fsyncs the
one it leaves. That costs a segment per second only while the disk is busy; the next
snapshot drops them. With ``always`` the fsync stays in place: every request waits for one
anyway.

Statuses of fires and the current second are not waited for: they are buffered and
written within :data:`LAZY_FLUSH_SECONDS` (or with the next change), as losing them only
means a status of 0 or a second handled again (which fires nothing twice: the plans
already carry their new next_time).
"""

import asyncio
import logging
import os
import re
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, List, Optional, Tuple

import msgpack
from tornado.ioloop import IOLoop, PeriodicCallback

from .mem_dump import fsync_dir

log = logging.getLogger("forsun.store")

PUT, REMOVE, CURRENT, BATCH = 1, 2, 3, 4
HEADER = struct.Struct("<II")
# A length beyond this is not a record but damage (a batch of 1000 plans is ~100 KB).
MAX_RECORD_BYTES = 256 * 1024 * 1024
LAZY_FLUSH_SECONDS = 0.05
READ_CHUNK_BYTES = 8 * 1024 * 1024
FSYNC_POLICIES = ("always", "everysec", "no")
# An fsync at least this slow means the disk is busy: see "Appends never wait" above.
SLOW_FSYNC_SECONDS = 0.01
SEGMENT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)

_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


def segment_name(dump_path: str, seq: int) -> str:
    return "%s.journal.%08d" % (dump_path, seq)


def list_segments(dump_path: str) -> List[Tuple[int, str]]:
    """(sequence number, path) of every segment of ``dump_path``, oldest first."""
    directory = os.path.dirname(dump_path) or "."
    pattern = re.compile(re.escape(os.path.basename(dump_path)) + r"\.journal\.([0-9]{8,})$")
    found = []
    for name in os.listdir(directory):
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_segment(path: str) -> Iterator[list]:
    """Yields the records of a segment in order.

    A torn or corrupt tail (short header, impossible length, short payload, CRC mismatch,
    undecodable payload) ends the segment: the file is cut at the last good record, with a
    warning naming the file, the offset and what was wrong. Raises OSError if unreadable.
    """
    good = 0  # file offset after the last good record
    problem = ""
    buffer = b""
    base = 0  # file offset of buffer[0]
    eof = False
    with open(path, "rb") as fp:
        while True:
            pos = good - base
            available = len(buffer) - pos
            length = 0
            if available >= HEADER.size:
                length, crc = HEADER.unpack_from(buffer, pos)
                if length > MAX_RECORD_BYTES:
                    problem = "an impossible record length %d" % length
                    break
                if available >= HEADER.size + length:
                    record, problem = _decode(buffer, pos + HEADER.size, length, crc)
                    if problem:
                        break
                    good += HEADER.size + length
                    yield record
                    continue
            if eof:
                if available:
                    problem = "a torn record: %d bytes where a whole one should be" % available
                break
            chunk = fp.read(max(READ_CHUNK_BYTES, HEADER.size + length - available))
            buffer = buffer[pos:] + chunk
            base = good
            eof = not chunk
    size = os.path.getsize(path)
    if problem or size != good:
        log.warning("mem store journal %s: cut %d bytes at offset %d, after the last good "
                    "record (%s); the changes in them are lost", path, size - good, good,
                    problem or "trailing bytes")
        os.truncate(path, good)


def _decode(buffer: bytes, start: int, length: int, crc: int) -> Tuple[Any, str]:
    """(record, "") or (None, what is wrong with it)."""
    with memoryview(buffer)[start:start + length] as payload:
        if zlib.crc32(payload) != crc:
            return None, "a record whose checksum does not match"
        try:
            record = msgpack.unpackb(payload, raw=False, unicode_errors="surrogateescape",
                                     strict_map_key=False)
        except Exception as e:
            return None, "an undecodable record (%s)" % e
    if not isinstance(record, list) or not record or record[0] not in (PUT, REMOVE, CURRENT,
                                                                       BATCH):
        return None, "a record of unknown type"
    return record, ""


class Journal:
    """Appends records to the newest segment; see the module docs.

    Used from the IOLoop thread only; fsyncs, closes and the creation of segments after the
    first run on a private one-thread executor, in submission order.
    """

    def __init__(self, dump_path: str, fsync: str = "everysec"):
        if fsync not in FSYNC_POLICIES:
            raise ValueError("fsync policy must be one of %s, got %r"
                             % (", ".join(FSYNC_POLICIES), fsync))
        self.dump_path = dump_path
        self.fsync = fsync
        self.seq = 0
        self.path = ""
        self._fd = -1
        self._offset = 0  # bytes in the current segment
        self.written = 0  # bytes written to every segment since open (monotonic)
        self.synced = 0  # of those, bytes known durable
        self.since_rotation = 0  # bytes written to the current segment
        self._lazy: List[bytes] = []
        self._lazy_handle: Any = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="forsun-journal")
        self._syncing = 0  # fsyncs in flight whose end moves ``synced``
        self._switch: Optional[asyncio.Future] = None  # the next segment, being created
        self.disk_busy = False  # set by the store while a snapshot is written
        self._fsync_slow = False  # the last fsync took SLOW_FSYNC_SECONDS or more
        self._waiters: List[Tuple[int, asyncio.Future]] = []
        self._periodic: Optional[PeriodicCallback] = None
        self.error: Optional[BaseException] = None  # the last failed fsync, for the log

    # -- life cycle ------------------------------------------------------------------------

    def open(self, seq: int) -> None:
        """Starts writing segment ``seq`` (which must not exist yet), at start-up."""
        self._use(seq, _create_segment(segment_name(self.dump_path, seq)))
        if self.fsync == "everysec" and self._periodic is None:
            self._periodic = PeriodicCallback(self._sync_if_dirty, 1000)
            self._periodic.start()

    def _use(self, seq: int, fd: int) -> None:
        self.seq = seq
        self.path = segment_name(self.dump_path, seq)
        self._fd = fd
        self._offset = 0
        self.since_rotation = 0

    def rotate(self) -> "asyncio.Future[Tuple[int, int]]":
        """Moves appends to the next segment, created in the journal's thread (appends go on
        to the current one meanwhile), and fsyncs and closes the one it leaves there too.

        Returns a future of (the new segment's number, :attr:`written` at the switch): every
        record in an earlier segment was written before the switch. A switch already under
        way is shared: it too happens after this call.
        """
        if self._switch is None:
            loop = asyncio.get_running_loop()
            self._switch = loop.create_future()
            self._switch.add_done_callback(_retrieve)  # the periodic sync does not await it
            seq = self.seq + 1
            created = loop.run_in_executor(self._executor, _create_segment,
                                           segment_name(self.dump_path, seq))
            created.add_done_callback(lambda f: self._switched(seq, f))
        return self._switch

    def _switched(self, seq: int, created: asyncio.Future) -> None:
        switch, self._switch = self._switch, None
        assert switch is not None
        error = created.exception() if not created.cancelled() else OSError("cancelled")
        if error is not None:
            log.error("mem store journal: cannot start segment %s: %s",
                      segment_name(self.dump_path, seq), error)
            switch.set_exception(OSError("cannot start a new mem store journal segment: %s"
                                         % error))
            self._kick_sync()  # the records written so far still get their fsync
            return
        fd = created.result()
        if self._fd < 0:  # closed meanwhile (close waits for a switch, so only by a test)
            os.close(fd)
            switch.set_exception(OSError("the mem store journal is closed"))
            return
        old_fd = self._fd
        self._use(seq, fd)
        self._start_sync(old_fd, close=True)
        switch.set_result((seq, self.written))

    async def close(self) -> None:
        """Writes what is buffered, fsyncs and closes the segment."""
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None
        if self._switch is not None:
            await asyncio.wait([self._switch])
        if self._fd < 0:
            return
        try:
            self.flush_lazy()
        except OSError as e:
            log.error("mem store journal %s: writing the last records failed: %s", self.path, e)
        fd, self._fd = self._fd, -1
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, _timed_fsync, fd, True)
        except OSError as e:
            log.error("mem store journal %s: fsync before closing failed: %s", self.path, e)
        self.synced = self.written
        self._wake_waiters()
        self._executor.shutdown(wait=True)

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, packed: bytes, next_time: int) -> None:
        self._write(frame(_packer.pack((PUT, key, packed, next_time))))

    def remove(self, key: str) -> None:
        self._write(frame(_packer.pack((REMOVE, key))))

    def batch(self, puts: List[Any], removes: List[str]) -> None:
        """``puts`` is flat: key, packed, next_time, key, packed, next_time, ..."""
        self._write(frame(_packer.pack((BATCH, puts, removes))))

    def put_lazy(self, key: str, packed: bytes, next_time: int) -> None:
        self._add_lazy(frame(_packer.pack((PUT, key, packed, next_time))))

    def current_lazy(self, ts: int) -> None:
        self._add_lazy(frame(_packer.pack((CURRENT, ts))))

    def _add_lazy(self, data: bytes) -> None:
        self._lazy.append(data)
        if self._lazy_handle is None:
            self._lazy_handle = IOLoop.current().call_later(LAZY_FLUSH_SECONDS,
                                                            self._flush_lazy_soon)

    def _flush_lazy_soon(self) -> None:
        self._lazy_handle = None
        try:
            self.flush_lazy()
        except OSError as e:
            log.error("mem store journal %s: writing statuses and the current second "
                      "failed, dropped: %s", self.path, e)
            self._lazy = []

    def flush_lazy(self) -> None:
        if self._lazy:
            self._write(b"")

    def _write(self, data: bytes) -> None:
        """Writes ``data`` after the buffered lazy records, all of it or nothing."""
        if self._fd < 0:
            raise OSError("the mem store journal is closed")
        if self._lazy:
            data = b"".join(self._lazy) + data
            self._lazy = []
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError:
            try:  # never leave half a record in the middle of the segment
                os.ftruncate(self._fd, self._offset)
            except OSError as e:
                log.error("mem store journal %s: cannot cut a half-written record: %s",
                          self.path, e)
            raise
        finally:
            view.release()
        self._offset += done
        self.since_rotation += done
        self.written += done
        if self.fsync == "always":
            self._kick_sync()

    # -- durability --------------------------------------------------------------------------

    def durable(self) -> Optional[asyncio.Future]:
        """With fsync ``always``, a future done once everything written so far is fsynced
        (None when it already is); None with the other policies."""
        if self.fsync != "always" or self.synced >= self.written:
            return None
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((self.written, future))
        self._kick_sync()
        return future

    def _kick_sync(self) -> None:
        if self._syncing or self._fd < 0 or self.synced >= self.written:
            return
        self._start_sync(self._fd, close=False)

    def _start_sync(self, fd: int, close: bool) -> None:
        """fsyncs ``fd`` (then closes it) in the journal's thread; once done, everything
        written so far counts as durable: the executor runs jobs in order, so an earlier
        segment's fsync has ended before."""
        self._syncing += 1
        target = self.written
        future = asyncio.get_running_loop().run_in_executor(self._executor, _timed_fsync, fd,
                                                            close)
        future.add_done_callback(lambda f: self._synced_to(target, f))

    def _synced_to(self, target: int, future: asyncio.Future) -> None:
        self._syncing -= 1
        error = future.exception()
        if error is not None:
            if self.error is None or str(error) != str(self.error):
                log.error("mem store journal %s: fsync failed: %s", self.path, error)
            self.error = error
            for _, waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(OSError("fsync of the mem store journal failed: %s"
                                                 % error))
            self._waiters = []
            return
        self.error = None
        self._fsync_slow = future.result() >= SLOW_FSYNC_SECONDS
        self.synced = max(self.synced, target)
        self._wake_waiters()
        if self.fsync == "always" and self.synced < self.written:
            self._kick_sync()

    def _wake_waiters(self) -> None:
        waiting = []
        for target, waiter in self._waiters:
            if target <= self.synced:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._waiters = waiting

    def _sync_if_dirty(self) -> None:
        """The everysec fsync; on a busy disk, of a segment no longer appended to."""
        try:
            self.flush_lazy()
        except OSError as e:
            log.error("mem store journal %s: write failed: %s", self.path, e)
        if self._syncing or self._switch is not None or self.synced >= self.written:
            return
        if self.disk_busy or self._fsync_slow:
            self.rotate()
        else:
            self._kick_sync()


def _timed_fsync(fd: int, close: bool) -> float:
    """fsyncs ``fd`` (and closes it if ``close``, whatever happens); returns how long the
    fsync took."""
    started = time.monotonic()
    try:
        os.fsync(fd)
    finally:
        if close:
            os.close(fd)
    return time.monotonic() - started


def _create_segment(path: str) -> int:
    """Creates a segment and makes its directory entry durable; returns its descriptor."""
    fd = os.open(path, SEGMENT_FLAGS, 0o644)
    try:
        fsync_dir(os.path.dirname(path) or ".")
    except BaseException:
        os.close(fd)
        os.unlink(path)  # so the next attempt can create it
        raise
    return fd


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
