"""The redis store's key layout, exactly as forsun 0.1.x wrote it (SPEC section 9).

With ``P = "{redis_prefix}:{redis_server_id}"``:

- ``P:plan:KEY``   the plan as a msgpack map (:meth:`forsun.plan.Plan.dumps`);
- ``P:time:TS``    hash of plan key -> status string of the plans due at second TS;
- ``P:current:time`` the last second the timer handled;
- ``P:leader``     (beyond 0.1.x) the token of the TIMER node that may fire.

Kept apart from the store so the names, the glob patterns used with SCAN and the parsing
of the names Redis hands back are pure functions a test can check without a server.
"""

from typing import Optional

# Characters that are special in a Redis MATCH pattern.
_GLOB_SPECIAL = frozenset("*?[]\\")


def escape_glob(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern (each special char backslashed)."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


def decode(value: bytes) -> str:
    """Redis bytes to str; invalid UTF-8 round-trips (the client encodes back the same way)."""
    return value.decode("utf-8", "surrogateescape")


class KeyLayout:
    """Names of the keys of one forsun service (``prefix`` and ``server_id``) in Redis."""

    def __init__(self, prefix: str, server_id: int):
        self.base = "%s:%s" % (prefix, server_id)
        self.plan_prefix = self.base + ":plan:"
        self.time_prefix = self.base + ":time:"
        self.current = self.base + ":current:time"
        self.leader = self.base + ":leader"  # beyond 0.1.x: the TIMER nodes' leader lease

    def plan(self, key: str) -> str:
        return self.plan_prefix + key

    def time(self, ts: int) -> str:
        return "%s%d" % (self.time_prefix, ts)

    def plan_pattern(self, key_prefix: str) -> str:
        """MATCH pattern for the plans whose key starts with ``key_prefix`` (taken literally)."""
        return escape_glob(self.plan_prefix + key_prefix) + "*"

    def time_pattern(self) -> str:
        return escape_glob(self.time_prefix) + "*"

    def plan_key_of(self, name: bytes) -> str:
        """The plan key inside a ``P:plan:KEY`` name SCAN returned."""
        return decode(name)[len(self.plan_prefix):]

    def second_of(self, name: bytes) -> Optional[int]:
        """The second of a ``P:time:TS`` name, or None for a name that is not one."""
        suffix = decode(name)[len(self.time_prefix):]
        return int(suffix) if suffix.isascii() and suffix.isdigit() else None
