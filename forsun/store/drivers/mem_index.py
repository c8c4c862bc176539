"""The mem store's time index: second -> keys of the plans due then.

Kept lean because it holds one reference per plan: a second with one plan maps to the
key string itself (the very object that keys the plans dict, so no copy), a busier second
to a dict whose keys are the plans' keys (values all None): an ordered set with O(1) adds
and removals, exact even for a second whose plans all get replaced.

Why a dict: a dict holding only strings and None is not tracked by the cyclic garbage
collector, a list always is, and every full collection walks each tracked list's items.
With a million plans created at run time in lists, each full collection stalled the IOLoop
for 70-85 ms; dicts keep collections as cheap at ten million plans as at none.

Loading a dump is the exception: :meth:`TimeIndex.append` builds lists there, four times
faster than dicts (a list never touches the key objects; a dict reads each key's hash, a
cache miss per key): ten million plans load some 15 s sooner. The timer moves everything
loaded out of the collector's sight (``gc.freeze()``) before it starts, so those lists cost
collections nothing. A loaded list is changed the old way: a key is added unless a cheap
look finds it, and removed only from lists shorter than :data:`SMALL_BUCKET` (removing from
a long list costs O(n)); otherwise it stays as a stale entry. The Store contract allows
that: the core fires a plan only when its ``next_time`` is the second, once.

The index is derived data: the mem store rebuilds it from the plans' next_time at load and
never persists it on its own.

The seconds are spread over :data:`SHARDS` dicts (by ``ts % SHARDS``): one dict with millions
of seconds would stall the IOLoop for a large fraction of a second each time it grows.
"""

from typing import Dict, List, Union

# Loaded lists shorter than this are searched on add and remove; longer ones only grow.
SMALL_BUCKET = 64
SHARDS = 256
_MASK = SHARDS - 1

Bucket = Union[str, Dict[str, None], List[str]]


class TimeIndex:
    """Maps a second to the keys due then; see the module docs for the layout."""

    __slots__ = ("_shards",)

    def __init__(self) -> None:
        self._shards: List[Dict[int, Bucket]] = [{} for _ in range(SHARDS)]

    def __len__(self) -> int:
        """How many seconds have keys."""
        return sum(map(len, self._shards))

    def clear(self) -> None:
        for shard in self._shards:
            shard.clear()

    def append(self, ts: int, key: str) -> None:
        """Adds ``key``, known not to be indexed yet, while a dump loads (see the module
        docs: a busy second's keys go in a list)."""
        buckets = self._shards[ts & _MASK]
        bucket = buckets.get(ts)
        if bucket is None:
            buckets[ts] = key
        elif bucket.__class__ is str:
            buckets[ts] = [bucket, key]
        elif bucket.__class__ is list:
            bucket.append(key)
        else:
            bucket[key] = None

    def add(self, ts: int, key: str) -> None:
        """Adds ``key`` at ``ts``. A key already there keeps its place and its key object
        (a plan replaced with an unchanged next_time keeps its turn)."""
        buckets = self._shards[ts & _MASK]
        bucket = buckets.get(ts)
        if bucket is None:
            buckets[ts] = key
        elif bucket.__class__ is str:
            if bucket != key:
                buckets[ts] = {bucket: None, key: None}
        elif bucket.__class__ is dict:
            bucket[key] = None
        elif len(bucket) >= SMALL_BUCKET or key not in bucket:  # a loaded list
            bucket.append(key)

    def keep(self, ts: int, key: str) -> None:
        """Re-adds ``key`` at the second it was indexed at before, in O(1): a long loaded
        list never loses keys, so it still holds it and is not searched (O(n) per
        replacement, for every plan of a busy second)."""
        bucket = self._shards[ts & _MASK].get(ts)
        if bucket.__class__ is list and len(bucket) >= SMALL_BUCKET:
            return
        self.add(ts, key)

    def discard(self, ts: int, key: str) -> None:
        """Removes ``key`` from ``ts`` (from a long loaded list: see the module docs)."""
        buckets = self._shards[ts & _MASK]
        bucket = buckets.get(ts)
        if bucket is None:
            return
        if bucket.__class__ is str:
            if bucket == key:
                del buckets[ts]
            return
        if bucket.__class__ is dict:
            bucket.pop(key, None)
        elif len(bucket) < SMALL_BUCKET and key in bucket:
            bucket.remove(key)
        if len(bucket) == 1:
            buckets[ts] = next(iter(bucket))

    def keys_at(self, ts: int) -> List[str]:
        """The keys indexed at ``ts``, in the order they were added (a loaded second's may
        include stale and repeated keys)."""
        bucket = self._shards[ts & _MASK].get(ts)
        if bucket is None:
            return []
        if bucket.__class__ is str:
            return [bucket]
        return list(bucket)

    def drop(self, ts: int) -> None:
        """Forgets second ``ts`` and all its keys."""
        self._shards[ts & _MASK].pop(ts, None)

    def shards(self) -> List[Dict[int, Bucket]]:
        """The second -> bucket dicts, for scans that yield to the IOLoop between them."""
        return self._shards

    def seconds(self) -> List[int]:
        """Every second with keys, unordered."""
        return [ts for shard in self._shards for ts in shard]
