"""The mem store's dump file (SPEC section 9): reading it, and writing it atomically.

The file is one msgpack map: ``plans`` (a list of plans, each a msgpack map of its fields
packed on its own, as :meth:`forsun.plan.Plan.dumps` makes it), ``time_plans`` (second ->
list of keys) and ``current_time`` (the last second handled). forsun 0.1.x wrote it with
msgpack raw strings, so everything is read with ``raw=True`` and decoded by
:meth:`Plan.loads`. ``time_plans`` is written for old readers but ignored when reading: the
time index is rebuilt from each plan's next_time, which is what the core fires by anyway.

Both functions here are blocking and meant for a worker thread; they stream the file, so
neither holds the whole file in memory nor holds the GIL for long in one C call.
"""

import logging
import os
from typing import BinaryIO, Dict, List, Sequence, Tuple

import msgpack

from ...error import ConfigError
from ...plan import FIELDS, Plan
from .mem_index import TimeIndex

# Position of next_time in the packed form (Plan.pack packs every field but the key, in order).
_NEXT_TIME = FIELDS.index("next_time") - 1


def packed_next_time(packed: bytes) -> int:
    """The next_time of a :meth:`Plan.pack` blob, without building a Plan."""
    return msgpack.unpackb(packed)[_NEXT_TIME]


def read_dump(path: str) -> Tuple[Dict[str, bytes], TimeIndex, int]:
    """Loads a dump file into (key -> packed plan, time index, current_time).

    A missing file is an empty store. A file that cannot be read or decoded raises
    :class:`ConfigError` naming it: starting empty would overwrite the plans at the next
    flush, so the daemon stops instead and the file stays as it is.
    """
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        return {}, TimeIndex(), 0
    except OSError as e:
        raise ConfigError("cannot read the mem store file %s: %s" % (path, e.strerror or e))
    with fp:
        try:
            return _read(fp)
        except msgpack.OutOfData:
            reason = "it ends in the middle of the data (truncated or empty)"
        except Exception as e:  # any decoding failure means the same: the file is unusable
            reason = "%s: %s" % (type(e).__name__, e)
    raise ConfigError("the mem store file %s is not a readable forsun dump (%s); forsund "
                      "will not start over it: repair it or move it away" % (path, reason))


def _read(fp: BinaryIO) -> Tuple[Dict[str, bytes], TimeIndex, int]:
    unpacker = msgpack.Unpacker(fp, raw=True, strict_map_key=False, max_buffer_size=0)
    plans: Dict[str, bytes] = {}
    index = TimeIndex()
    current_time = 0
    for _ in range(unpacker.read_map_header()):
        name = unpacker.unpack()
        if name == b"plans":
            for _ in range(unpacker.read_array_header()):
                plan = Plan.loads(unpacker.unpack())
                plans[plan.key] = plan.pack()
                index.append(plan.next_time, plan.key)
        elif name == b"current_time":
            current_time = int(unpacker.unpack())
        else:
            unpacker.skip()
    try:
        unpacker.skip()
    except msgpack.OutOfData:
        return plans, index, current_time
    raise ValueError("unexpected data after the dump")


def write_dump(path: str, keys: Sequence[str], packed_plans: Sequence[bytes],
               current_time: int) -> None:
    """Writes the plans ``keys[i] -> packed_plans[i]`` to ``path``, atomically.

    Written to ``<path>.tmp``, fsynced, renamed over ``path``, then the directory is
    fsynced: a crash at any point leaves either the previous file or the new one, whole.
    On failure the temporary file is removed and the error raised.
    """
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as fp:
            _write(fp, keys, packed_plans, current_time)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            logging.warning("cannot remove the partial mem store file %s", tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def _write(fp: BinaryIO, keys: Sequence[str], packed_plans: Sequence[bytes],
           current_time: int) -> None:
    packer = msgpack.Packer(use_bin_type=True)
    time_plans: Dict[int, List[str]] = {}
    fp.write(packer.pack_map_header(3))
    fp.write(packer.pack("plans"))
    fp.write(packer.pack_array_header(len(keys)))
    for key, packed in zip(keys, packed_plans):
        values = msgpack.unpackb(packed)
        fp.write(packer.pack(packer.pack_map_pairs(list(zip(FIELDS, [key, *values])))))
        time_plans.setdefault(values[_NEXT_TIME], []).append(key)
    fp.write(packer.pack("time_plans"))
    fp.write(packer.pack_map_header(len(time_plans)))
    for ts, ts_keys in time_plans.items():
        fp.write(packer.pack(ts))
        fp.write(packer.pack(ts_keys))
    fp.write(packer.pack("current_time"))
    fp.write(packer.pack(current_time))


def _fsync_dir(directory: str) -> None:
    """Makes the rename durable: without it a power cut can bring back the old file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
