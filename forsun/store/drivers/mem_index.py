"""The mem store's time index: second -> keys of the plans due then.

Kept lean because it holds one reference per plan: a second with one plan maps to the
key string itself (the very object that keys the plans dict, so no copy), a busier second
to a plain list of keys. Removing a key from a long list would cost O(n) per removal and
O(n^2) for a second whose plans all get replaced, so only cheap removals are eager (a
lone key, or a list shorter than :data:`SMALL_BUCKET`); otherwise the key stays behind as
a stale entry. That is allowed by the Store contract: the core fires a plan only when its
``next_time`` equals the second, and :meth:`TimeIndex.keys_at` drops repeats.

The index is derived data: the mem store rebuilds it from the plans' next_time at load and
never persists it on its own.

The seconds are spread over :data:`SHARDS` dicts (by ``ts % SHARDS``): one dict with millions
of seconds would stall the IOLoop for a large fraction of a second each time it grows.
"""

from typing import Dict, List, Union

# Lists shorter than this are searched on add and remove (cheap); longer ones only grow.
SMALL_BUCKET = 64
SHARDS = 256
_MASK = SHARDS - 1

Bucket = Union[str, List[str]]


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
        """Adds ``key`` without looking for it first: for callers that know it is absent."""
        buckets = self._shards[ts & _MASK]
        bucket = buckets.get(ts)
        if bucket is None:
            buckets[ts] = key
        elif bucket.__class__ is str:
            buckets[ts] = [bucket, key]
        else:
            bucket.append(key)

    def add(self, ts: int, key: str) -> None:
        """Adds ``key`` unless a cheap look shows it there (long lists may get a repeat)."""
        buckets = self._shards[ts & _MASK]
        bucket = buckets.get(ts)
        if bucket is None:
            buckets[ts] = key
        elif bucket.__class__ is str:
            if bucket != key:
                buckets[ts] = [bucket, key]
        elif len(bucket) >= SMALL_BUCKET or key not in bucket:
            bucket.append(key)

    def keep(self, ts: int, key: str) -> None:
        """Re-adds ``key`` at the second it was indexed at before, in O(1).

        For a plan replaced with an unchanged next_time: a long list never loses keys
        eagerly, so it still holds the key and searching it (O(n) per replacement, for
        every plan of a busy second) is skipped. Shorter buckets are checked, which also
        covers a second dropped in between.
        """
        bucket = self._shards[ts & _MASK].get(ts)
        if bucket.__class__ is list and len(bucket) >= SMALL_BUCKET:
            return
        self.add(ts, key)

    def discard(self, ts: int, key: str) -> None:
        """Removes ``key`` when that is cheap; otherwise it stays as a stale entry."""
        buckets = self._shards[ts & _MASK]
        bucket = buckets.get(ts)
        if bucket is None:
            return
        if bucket.__class__ is str:
            if bucket == key:
                del buckets[ts]
        elif len(bucket) < SMALL_BUCKET and key in bucket:
            bucket.remove(key)
            if len(bucket) == 1:
                buckets[ts] = bucket[0]

    def keys_at(self, ts: int, unique: bool = True) -> List[str]:
        """The keys indexed at ``ts`` in the order they were added, each once (``unique``)
        or as they are (a C-speed copy)."""
        bucket = self._shards[ts & _MASK].get(ts)
        if bucket is None:
            return []
        if bucket.__class__ is str:
            return [bucket]
        return list(dict.fromkeys(bucket)) if unique else list(bucket)

    def drop(self, ts: int) -> None:
        """Forgets second ``ts`` and all its keys."""
        self._shards[ts & _MASK].pop(ts, None)

    def shards(self) -> List[Dict[int, Bucket]]:
        """The second -> bucket dicts, for scans that yield to the IOLoop between them."""
        return self._shards

    def seconds(self) -> List[int]:
        """Every second with keys, unordered."""
        return [ts for shard in self._shards for ts in shard]
