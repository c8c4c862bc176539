"""The leader lease: one firing node among several TIMER nodes sharing one Redis.

``P:leader`` holds the leader's token (``host:pid:random``, so ``GET P:leader`` tells an
operator who leads) with a TTL of ``ttl`` seconds. Every ``ttl / 3`` seconds each node runs
one script: take the key if it is free, extend it if it is ours. A node that stops renewing
(killed, cut off from Redis) loses the key within ``ttl`` and another takes it over.

Fencing, so a node that lost its lease stops firing before anyone else may start:

- locally, a node counts itself leader only until ``ttl - margin`` after it *sent* its last
  successful renewal; Redis can expire the key no earlier than ``ttl`` after that moment;
- in Redis, the writes that fire plans check the token in the same atomic script
  (:meth:`forsun.store.drivers.redis.RedisStore.commit_fired`), so a stale leader's write is
  refused even if its clock or its loop stalled.
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any, Callable, Optional

log = logging.getLogger("forsun.store")

# KEYS[1] = P:leader; ARGV = token, TTL in ms. Returns the token holding the lease afterwards.
_TAKE_OR_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class NotLeaderError(Exception):
    """This node does not hold the leader lease, so it must not fire; the timer retries."""


def new_token() -> str:
    return "%s:%d:%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])


class LeaderLease:
    def __init__(self, client: Any, key: str, ttl: float, token: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.key = key
        self.token = token or new_token()
        self.ttl = ttl
        self.margin = ttl / 6
        self.clock = clock
        self._take_or_renew = client.register_script(_TAKE_OR_RENEW)
        self._release = client.register_script(_RELEASE)
        self._valid_until = 0.0
        self._holder: Optional[str] = None  # who held the lease at the last refresh
        self._became_leader = asyncio.Event()
        self._task: Optional[asyncio.Task] = None

    # -- what the rest of the node asks -------------------------------------------------------

    def is_leader(self) -> bool:
        """True only while Redis cannot yet have handed the lease to another node."""
        return self.clock() < self._valid_until

    @property
    def role(self) -> str:
        return "leader" if self.is_leader() else "follower"

    async def wait_leader(self) -> None:
        """Returns once this node holds the lease (at once if it does)."""
        while not self.is_leader():
            self._became_leader.clear()
            await self._became_leader.wait()

    def check(self) -> None:
        """Raises NotLeaderError unless this node may fire now."""
        if not self.is_leader():
            raise NotLeaderError("this node does not hold the leader lease %s" % self.key)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Tries to take the lease once right away, then keeps taking or renewing it."""
        await self.refresh()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stops renewing and hands the lease back, so another node takes over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        was_leader = self.is_leader()
        self._valid_until = 0.0
        if was_leader:
            try:
                await self._release(keys=[self.key], args=[self.token])
            except Exception as e:  # the lease expires by itself
                log.warning("releasing the leader lease failed: %s", e)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.refresh()

    async def refresh(self) -> bool:
        """One attempt to take or renew the lease; returns whether this node holds it."""
        sent = self.clock()
        try:
            holder = await self._take_or_renew(keys=[self.key],
                                               args=[self.token, int(self.ttl * 1000)])
            holder = holder.decode("utf-8", "replace")
        except Exception as e:
            log.debug("leader lease refresh failed: %s", e)
            holder = None
        held = holder == self.token
        if held:
            self._valid_until = sent + self.ttl - self.margin
            self._became_leader.set()
        self._log_change(holder)
        return held

    def _log_change(self, holder: Optional[str]) -> None:
        """One line per change of leader as this node sees it, not one per refresh."""
        if holder == self._holder:
            return
        if holder == self.token:
            log.info("this node is now the firing leader (%s)", self.token)
        elif self._holder == self.token:
            log.warning("this node lost the leader lease; it stops firing")
        if holder not in (None, self.token):
            log.info("this node follows the firing leader %s", holder)
        self._holder = holder
