"""The mem store's time index: second -> keys of the plans due then.

Kept lean because it holds one reference per plan: a second with one plan maps to the
key string itself (the very object that keys the plans dict, so no copy), a busier second
to a dict whose keys are the plans' keys (values all None): an ordered set with O(1) adds
and removals, so the index is always exact, even for a second whose plans all get
replaced.

Why a dict and not a list (a third of the memory per key): a dict holding only strings
and None is not tracked by the cyclic garbage collector, a list always is, and every full
collection walks each tracked list's items. With a million plans created at run time in
lists, each full collection stalled the IOLoop for 70-85 ms; with dicts the store holds no
tracked object at all, so collections cost the same at ten million plans as at none.

The index is derived data: the mem store rebuilds it from the plans' next_time at load and
never persists it on its own.

The seconds are spread over :data:`SHARDS` dicts (by ``ts % SHARDS``): one dict with millions
of seconds would stall the IOLoop for a large fraction of a second each time it grows.
"""

from typing import Dict, List, Union

SHARDS = 256
_MASK = SHARDS - 1

Bucket = Union[str, Dict[str, None]]


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
        else:
            bucket[key] = None

    def discard(self, ts: int, key: str) -> None:
        """Removes ``key`` from ``ts`` if it is there."""
        buckets = self._shards[ts & _MASK]
        bucket = buckets.get(ts)
        if bucket is None:
            return
        if bucket.__class__ is str:
            if bucket == key:
                del buckets[ts]
        else:
            bucket.pop(key, None)
            if len(bucket) == 1:
                buckets[ts] = next(iter(bucket))

    def keys_at(self, ts: int) -> List[str]:
        """The keys indexed at ``ts``, in the order they were added."""
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
