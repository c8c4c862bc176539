"""The mem store's dump file (SPEC section 9): reading it fast, and writing it atomically.

The file is one msgpack map: ``plans`` (a list of plans, each a msgpack map of its 16
fields packed on its own), ``time_plans`` (second -> list of keys) and ``current_time`` (the
last second handled), as forsun 0.1.x wrote and reads it (0.1.x looks these three up by
name). ``time_plans`` is written for 0.1.x but ignored when reading: the time index is
rebuilt from each plan's next_time, which is what the core fires by anyway.

**The fast-load section.** Decoding ten million 16-field maps and re-encoding each into the
store's packed form takes about a minute on a small machine. So this module writes a
fourth entry, ``forsun_packed_plans``: ``[count, plans_bytes, [chunk, ...]]`` where each
chunk is a msgpack ``[keys, packed plans, next_times]`` of up to :data:`FAST_CHUNK` plans,
the store's own form, which loads at C speed. It is used only when ``count`` and
``plans_bytes`` (the length of the encoded ``plans`` list) match the ``plans`` entry of the
same file; otherwise (0.1.x files, or a file whose plans a tool rewrote) the plans are read
from ``plans`` one by one.

That length check is reliable because plan maps are written in one fixed shape: the
numeric fields first, each with a fixed-width encoding (``is_time_out``, nine int16,
``next_time`` and ``last_timeout`` as int64, ``created_time`` as float64), then ``key``,
``action``, ``params``. msgpack lets a writer choose field order and integer widths, and
0.1.x reads any; but a tool that decodes and re-encodes a plan writes minimal widths, so
its plans change length. Plans whose values do not fit the shape are written in msgpack's
general encoding.

**Writing** happens in a separate process (``python -m forsun.store.drivers.mem_dump``):
the mem store streams its plans to it over a pipe, a chunk at a time, and the process
writes ``<file>.tmp``, fsyncs it, renames it over the file and fsyncs the directory. A
crash at any point leaves either the previous file or the new one, whole. Encoding
millions of plans runs on another CPU core, outside forsund's GIL, so the IOLoop keeps its
latency while a snapshot is written. :func:`write_dump` is the same writer as a function,
for tests and tools.
"""

import logging
import os
import struct
import sys
import tempfile
from typing import BinaryIO, Dict, Iterable, List, Optional, Sequence, Tuple

import msgpack

from ...error import ConfigError
from ...plan import FIELDS, Plan
from .mem_index import TimeIndex

# Position of next_time in the packed form (Plan.pack packs every field but the key, in order).
_NEXT_TIME = FIELDS.index("next_time") - 1

_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
_unpackb = msgpack.unpackb

# -- the fixed-shape plan map -------------------------------------------------------------

_I16_FIELDS = ("second", "minute", "hour", "day", "month", "week", "status", "count",
               "current_count")
_I64_FIELDS = ("next_time", "last_timeout")


def _name(field: str) -> bytes:
    return _packer.pack(field)


def _fixed_format() -> Tuple[str, tuple]:
    """The struct format of the fixed part and the constants it holds, in order."""
    fmt = [">3s%dsB" % len(_name("is_time_out"))]
    constants = [b"\xde\x00\x10", _name("is_time_out")]
    for field in _I16_FIELDS:
        fmt.append("%dsBh" % len(_name(field)))
        constants += [_name(field), 0xd1]
    for field in _I64_FIELDS:
        fmt.append("%dsBq" % len(_name(field)))
        constants += [_name(field), 0xd3]
    fmt.append("%dsBd" % len(_name("created_time")))
    constants += [_name("created_time"), 0xcb]
    fmt.append("%ds" % len(_name("key")))
    constants.append(_name("key"))
    return "".join(fmt), tuple(constants)


_FORMAT, _CONSTANTS = _fixed_format()
_FIXED = struct.Struct(_FORMAT)
_ACTION_NAME = _name("action")
_PARAMS_NAME = _name("params")
(_C_HEADER, _C_ITO, _C_SECOND, _, _C_MINUTE, _, _C_HOUR, _, _C_DAY, _, _C_MONTH, _, _C_WEEK, _,
 _C_STATUS, _, _C_COUNT, _, _C_CURRENT, _, _C_NEXT, _, _C_LAST, _, _C_CREATED, _,
 _C_KEY) = _CONSTANTS


def plan_blob(key: str, values: Sequence) -> bytes:
    """The map of one plan (key + the values of its packed form) in the fixed shape, or in
    msgpack's general encoding when a value does not fit the shape."""
    (is_time_out, second, minute, hour, day, month, week, status, count, current_count,
     next_time, last_timeout, created_time, action, params) = values
    if is_time_out.__class__ is bool and created_time.__class__ is float and \
            action.__class__ is str and params.__class__ is dict:
        try:
            fixed = _FIXED.pack(
                _C_HEADER, _C_ITO, 0xc3 if is_time_out else 0xc2,
                _C_SECOND, 0xd1, second, _C_MINUTE, 0xd1, minute, _C_HOUR, 0xd1, hour,
                _C_DAY, 0xd1, day, _C_MONTH, 0xd1, month, _C_WEEK, 0xd1, week,
                _C_STATUS, 0xd1, status, _C_COUNT, 0xd1, count, _C_CURRENT, 0xd1, current_count,
                _C_NEXT, 0xd3, next_time, _C_LAST, 0xd3, last_timeout,
                _C_CREATED, 0xcb, created_time, _C_KEY)
        except struct.error:  # a number out of range, or not an int
            pass
        else:
            pack = _packer.pack
            return b"".join((fixed, pack(key), _ACTION_NAME, pack(action), _PARAMS_NAME,
                             pack(params)))
    return _packer.pack(dict(zip(FIELDS, (key, *values))))


def read_plan_blob(blob: bytes) -> Tuple[str, bytes, int]:
    """(key, packed form, next_time) of one plan map of a dump file, in any encoding."""
    plan = Plan.loads(blob)
    return plan.key, plan.pack(), plan.next_time


def packed_next_time(packed: bytes) -> int:
    """The next_time of a :meth:`Plan.pack` blob, without building a Plan."""
    return _unpackb(packed)[_NEXT_TIME]


# -- reading ----------------------------------------------------------------------------------

def read_dump(path: str, shards: List[Dict[str, bytes]], index: TimeIndex) -> Optional[int]:
    """Loads a dump file into ``shards`` (key -> packed plan, the shard chosen by
    ``hash(key) & (len(shards) - 1)``) and ``index``; returns current_time, or None when
    there is no file.

    A file that cannot be read or decoded raises :class:`ConfigError` naming it: starting
    empty would overwrite the plans at the next snapshot, so the daemon stops instead and
    the file stays as it is.
    """
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError("cannot read the mem store file %s: %s" % (path, e.strerror or e))
    try:
        with fp:
            current_time, fast = _read(fp, shards, index, fast=True)
        if not fast:
            for shard in shards:
                shard.clear()
            index.clear()
            with open(path, "rb") as fp:
                current_time, _ = _read(fp, shards, index, fast=False)
        return current_time
    except OSError as e:
        reason = e.strerror or str(e)
    except msgpack.OutOfData:
        reason = "it ends in the middle of the data (truncated or empty)"
    except Exception as e:  # any decoding failure means the same: the file is unusable
        reason = "%s: %s" % (type(e).__name__, e)
    raise ConfigError("the mem store file %s is not a readable forsun dump (%s); forsund "
                      "will not start over it: repair it or move it away" % (path, reason))


def _read(fp: BinaryIO, shards: List[Dict[str, bytes]], index: TimeIndex,
          fast: bool) -> Tuple[int, bool]:
    """One pass over the file; returns (current_time, whether the plans were loaded).

    ``fast``: plans come from the fast-load section if it matches ``plans`` (otherwise
    none are loaded and the caller reads again with ``fast=False``, which decodes ``plans``).
    """
    unpacker = msgpack.Unpacker(fp, raw=True, strict_map_key=False, max_buffer_size=0,
                                read_size=4 * 1024 * 1024)
    current_time = 0
    plans_seen: Optional[Tuple[int, int]] = None  # (count, bytes) of the plans entry
    loaded = False
    for _ in range(unpacker.read_map_header()):
        name = unpacker.unpack()
        if name == b"plans":
            count = unpacker.read_array_header()
            start = unpacker.tell()
            if fast:
                skip = unpacker.skip
                for _ in range(count):
                    skip()
            else:
                _load_plan_maps(unpacker, count, shards, index)
                loaded = True
            plans_seen = (count, unpacker.tell() - start)
        elif name == b"current_time":
            current_time = int(unpacker.unpack())
        elif name == FAST_SECTION.encode() and fast:
            if unpacker.read_array_header() != 3:
                raise ValueError("%s is not [count, bytes, chunks]" % FAST_SECTION)
            described = (unpacker.unpack(), unpacker.unpack())
            if plans_seen is not None and described == plans_seen:
                for _ in range(unpacker.read_array_header()):
                    _load_fast_chunk(unpacker.unpack(), shards, index)
                loaded = True
            else:
                logging.warning("the fast-load section of the mem store file does not match "
                                "its plans (plans rewritten by another program?); reading "
                                "the plans themselves")
                unpacker.skip()
        else:
            unpacker.skip()
    try:
        unpacker.skip()
    except msgpack.OutOfData:
        return current_time, loaded or plans_seen is None
    raise ValueError("unexpected data after the dump")


def _load_plan_maps(unpacker: msgpack.Unpacker, count: int,
                    shards: List[Dict[str, bytes]], index: TimeIndex) -> None:
    mask = len(shards) - 1
    unpack = unpacker.unpack
    for _ in range(count):
        key, packed, next_time = read_plan_blob(unpack())
        _put(shards[hash(key) & mask], index, key, packed, next_time)


def _put(shard: Dict[str, bytes], index: TimeIndex, key: str, packed: bytes,
         next_time: int) -> None:
    if key in shard:  # a repeated key: the later plan wins, as in 0.1.x
        index.discard(packed_next_time(shard.pop(key)), key)
        shard[key] = packed
        index.add(next_time, key)
    else:
        shard[key] = packed
        index.append(next_time, key)


def _load_fast_chunk(chunk: bytes, shards: List[Dict[str, bytes]], index: TimeIndex) -> None:
    keys, packs, next_times = _unpackb(chunk, raw=False, unicode_errors="surrogateescape")
    mask = len(shards) - 1
    append = index.append
    for key, packed, next_time in zip(keys, packs, next_times):
        shard = shards[hash(key) & mask]
        if key in shard:
            _put(shard, index, key, packed, next_time)
        else:
            shard[key] = packed
            append(next_time, key)


# -- writing ----------------------------------------------------------------------------------

FAST_SECTION = "forsun_packed_plans"
FAST_CHUNK = 16384


class DumpWriter:
    """Streams a dump to ``fp`` (a seekable file): plans first, their count patched at the
    end; the fast-load chunks go to a temporary file and are appended by :meth:`finish`.

    ``sync_every``: flush and fdatasync after this many bytes. Gigabytes of dirty pages
    written at full speed make the kernel throttle every writer on the machine, forsund's
    journal appends included (stalling its IOLoop); syncing as it goes keeps the backlog
    small. 0: never (the caller fsyncs at the end).
    """

    def __init__(self, fp: BinaryIO, sync_every: int = 0):
        self.fp = fp
        self.sync_every = sync_every
        self._unsynced = 0
        self.count = 0
        self.time_plans: Dict[int, List[str]] = {}
        self._chunks = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(fp.name))
                                              if isinstance(getattr(fp, "name", None), str)
                                              else None)
        self._chunk_count = 0
        self._keys: List[str] = []
        self._packs: List[bytes] = []
        self._next_times: List[int] = []
        fp.write(b"\x84" + _packer.pack("plans"))
        self._count_at = fp.tell()
        fp.write(b"\xdd\x00\x00\x00\x00")  # array32 header, count patched in finish()

    def add(self, key: str, packed: bytes) -> None:
        values = _unpackb(packed, raw=False, unicode_errors="surrogateescape")
        blob = _packer.pack(plan_blob(key, values))
        self.fp.write(blob)
        self._wrote(len(blob) + len(packed))
        self.count += 1
        next_time = values[_NEXT_TIME]
        keys = self.time_plans.get(next_time)
        if keys is None:
            self.time_plans[next_time] = [key]
        else:
            keys.append(key)
        self._keys.append(key)
        self._packs.append(packed)
        self._next_times.append(next_time)
        if len(self._keys) >= FAST_CHUNK:
            self._end_chunk()

    def _wrote(self, size: int) -> None:
        """Counts bytes written (to the dump or the chunk file) and syncs every
        ``sync_every`` of them."""
        if self.sync_every:
            self._unsynced += size
            if self._unsynced >= self.sync_every:
                self.sync()

    def sync(self) -> None:
        """Pushes what was written so far to the disk (see ``sync_every``)."""
        self._unsynced = 0
        for fp in (self.fp, self._chunks):
            fp.flush()
            os.fdatasync(fp.fileno())

    def _end_chunk(self) -> None:
        if self._keys:
            self._chunks.write(_packer.pack(_packer.pack((self._keys, self._packs,
                                                          self._next_times))))
            self._chunk_count += 1
            self._keys, self._packs, self._next_times = [], [], []

    def finish(self, current_time: int) -> None:
        fp = self.fp
        plans_end = fp.tell()
        plans_bytes = plans_end - (self._count_at + 5)
        fp.write(_packer.pack("time_plans"))
        fp.write(_packer.pack_map_header(len(self.time_plans)))
        for ts, keys in self.time_plans.items():  # ~100 MB at ten million plans: synced too
            fp.write(_packer.pack(ts))
            packed_keys = _packer.pack(keys)
            fp.write(packed_keys)
            self._wrote(len(packed_keys))
        fp.write(_packer.pack("current_time"))
        fp.write(_packer.pack(current_time))
        self._end_chunk()
        fp.write(_packer.pack(FAST_SECTION))
        fp.write(b"\x93" + _packer.pack(self.count) + _packer.pack(plans_bytes))
        fp.write(_packer.pack_array_header(self._chunk_count))
        self._chunks.flush()
        self._chunks.seek(0)
        while True:
            data = self._chunks.read(1 << 20)
            if not data:
                break
            fp.write(data)
            self._wrote(len(data))
        self._chunks.close()
        end = fp.tell()
        fp.seek(self._count_at + 1)
        fp.write(struct.pack(">I", self.count))
        fp.seek(end)

    def close(self) -> None:
        self._chunks.close()


def write_dump(path: str, items: Iterable[Tuple[str, bytes]], current_time: int) -> int:
    """Writes the (key, packed plan) items to ``path`` atomically; returns the plan count.

    Written to ``<path>.tmp``, fsynced, renamed over ``path``, then the directory is
    fsynced. On failure the temporary file is removed and the error raised.
    """
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb", buffering=1 << 20) as fp:
            writer = DumpWriter(fp)
            try:
                for key, packed in items:
                    writer.add(key, packed)
                writer.finish(current_time)
            finally:
                writer.close()
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")
    return writer.count


def fsync_dir(directory: str) -> None:
    """Makes a rename durable: without it a power cut can bring back the old file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        logging.warning("cannot remove the partial mem store file %s", path)


# -- the snapshot writer process ------------------------------------------------------------
#
# Protocol on its stdin, a stream of msgpack objects: {"current_time": N}, then any number
# of maps key -> packed plan, then the string "end". Exit status 0 once the file is renamed
# into place; anything else means the previous file is untouched. The process gives up if
# its stdin ends before "end" or if its parent (forsund) is gone before the rename, so a
# snapshot started by a daemon that was killed can never replace a newer file.

END = "end"
SYNC_EVERY_BYTES = 8 * 1024 * 1024
EXIT_OK, EXIT_FAILED, EXIT_ABANDONED = 0, 1, 3


def writer_main(path: str, parent_pid: int, stream: BinaryIO) -> int:
    tmp = path + ".tmp"
    unpacker = msgpack.Unpacker(stream, raw=False, unicode_errors="surrogateescape",
                                max_buffer_size=0, read_size=1 << 20, strict_map_key=False)
    try:
        header = unpacker.unpack()
        with open(tmp, "wb", buffering=1 << 20) as fp:
            writer = DumpWriter(fp, sync_every=SYNC_EVERY_BYTES)
            try:
                while True:
                    message = unpacker.unpack()
                    if message == END:
                        break
                    add = writer.add
                    for key, packed in message.items():
                        add(key, packed)
                writer.finish(int(header["current_time"]))
            finally:
                writer.close()
            fp.flush()
            os.fsync(fp.fileno())
        if os.getppid() != parent_pid:
            print("forsun snapshot writer: forsund (pid %d) is gone; not replacing %s"
                  % (parent_pid, path), file=sys.stderr)
            _remove_quietly(tmp)
            return EXIT_ABANDONED
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
        return EXIT_OK
    except msgpack.OutOfData:
        _remove_quietly(tmp)
        return EXIT_ABANDONED
    except Exception as e:
        print("forsun snapshot writer: writing %s failed: %s: %s" % (tmp, type(e).__name__, e),
              file=sys.stderr)
        _remove_quietly(tmp)
        return EXIT_FAILED


if __name__ == "__main__":
    try:  # background work: forsund's IOLoop comes first on a busy CPU
        os.nice(19)
    except OSError:
        pass
    sys.exit(writer_main(sys.argv[1], int(sys.argv[2]), sys.stdin.buffer))
