"""The redis store: plans in Redis, in the key layout forsun 0.1.x used (SPEC section 9).

Several forsund nodes (TIMER and AGENT) can share one Redis; ``redis_server_id`` separates
independent services on it. The layout lives in :mod:`.redis_layout`; ``docs/redis-store.md``
describes it with the settings and the failure behaviour.

How the work maps onto Redis:

- one second's due plans cost one HKEYS of ``P:time:TS`` and MGETs of exactly those plans,
  never a walk over all plans; ``getKeys`` walks with SCAN (never KEYS);
- writes that belong together (a plan and its time-index entry) are atomic: a MULTI/EXEC
  for requests, a Lua script for fires; batches go in round trips of
  ``max(redis_bulk_size, 1000)`` commands (keys, for fire scripts);
- action outcomes (``set_status``) are group-committed (:mod:`.redis_batch`) and written
  with a compare-and-set script, so a status never overwrites a plan replaced meanwhile;
- TIMER nodes hold a leader lease (:mod:`.redis_lease`): only the holder may commit fires
  and advance ``P:current:time``, checked in the same atomic script as the write.

When Redis is down, restarting or hung, every call fails within the connect/socket timeouts
with :class:`RedisUnavailableError` (error 1004, naming the server); nothing waits for Redis
to come back. The timer retries the same second, so nothing is skipped. The log says once
when Redis went away and once when it is back.
"""

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (AuthenticationError, ConnectionError as RedisConnectionError,
                              ResponseError, TimeoutError as RedisTimeoutError)

from ... import config
from ...error import ConfigError, StorePlanError
from ...plan import Plan
from ..store import Store
from .redis_batch import GroupCommit
from .redis_layout import KeyLayout, decode
from .redis_lease import LeaderLease, NotLeaderError

log = logging.getLogger("forsun.store")

config.define("STORE_REDIS_CONNECT_TIMEOUT", 2.0,
              "seconds to wait for a connection to Redis before a store call fails")
config.define("STORE_REDIS_SOCKET_TIMEOUT", 3.0,
              "seconds to wait for a Redis reply before a store call fails")
config.define("STORE_REDIS_LEASE_SECONDS", 3.0,
              "TTL of the leader lease of TIMER nodes: a dead leader is replaced after this")

# Commands per pipeline round trip: redis_bulk_size if larger. 0.1.x's default of 5 was the
# queue depth of a client that pipelined single calls; batches here are far larger.
MIN_PIPELINE_COMMANDS = 1000
# SCAN COUNT: keys Redis looks at per round trip of getKeys and of a long catch-up.
SCAN_COUNT = 1000
# Catch-up spans up to this many seconds are walked second by second (see due_seconds).
WALK_SECONDS = 60
# count_plans: exact (SCAN) up to this many keys in the database, sampled beyond.
EXACT_COUNT_KEYS = 10_000
COUNT_SAMPLES = 200

# Errors meaning "Redis is not answering" (refused, reset, timed out, still loading its data).
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, asyncio.TimeoutError, OSError)

# KEYS[1] = P:plan:KEY; ARGV = the value read, the value to write instead. Keeps the TTL.
_REPLACE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
"""

# Writes that fire plans, fenced by the leader lease. KEYS[1] = P:leader, then each write's
# keys; ARGV[1] = this node's lease token ('' = no lease), then per write either
# 'put', plan key, plan value, plan TTL, time TTL (KEYS: P:plan:KEY, P:time:TS) or 'del' (KEYS:
# P:plan:KEY) or 'current', second, TTL (KEYS: P:current:time).
_FENCED_WRITE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTLEADER this node does not hold the leader lease')
end
local k, a = 2, 2
while a <= #ARGV do
  local op = ARGV[a]
  if op == 'put' then
    redis.call('SET', KEYS[k], ARGV[a + 2], 'EX', ARGV[a + 3])
    redis.call('HSET', KEYS[k + 1], ARGV[a + 1], '0')
    redis.call('EXPIRE', KEYS[k + 1], ARGV[a + 4])
    k, a = k + 2, a + 5
  elseif op == 'del' then
    redis.call('DEL', KEYS[k])
    k, a = k + 1, a + 1
  else
    redis.call('SET', KEYS[k], ARGV[a + 1], 'EX', ARGV[a + 2])
    k, a = k + 1, a + 3
  end
end
return 1
"""

# KEYS[1] = P:time:TS; ARGV = plan key, status. Never recreates a second already handled.
_HSET_IF_PRESENT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
"""


class RedisUnavailableError(StorePlanError):
    """Redis did not answer in time: error 1004 for requests, a retry for the timer."""


# -- settings ---------------------------------------------------------------------------------

def _positive(value: Any) -> bool:
    return value > 0


def _not_negative(value: Any) -> bool:
    return value >= 0


def _word(value: str) -> bool:
    return bool(value) and not any(ch.isspace() for ch in value)


# setting -> (check, what a valid value is)
_CHECKS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "STORE_REDIS_HOST": (_word, "a host name or address"),
    "STORE_REDIS_PORT": (lambda v: 0 < v <= 65535, "a TCP port from 1 to 65535"),
    "STORE_REDIS_DB": (_not_negative, "a database number, 0 or more"),
    "STORE_REDIS_PASSWORD": (lambda v: True, ""),
    "STORE_REDIS_PREFIX": (_word, "a non-empty prefix without spaces"),
    "STORE_REDIS_SERVER_ID": (_not_negative, "a number, 0 or more"),
    "STORE_REDIS_MAX_CONNECTIONS": (_positive, "at least 1 connection"),
    "STORE_REDIS_CLIENT_TIMEOUT": (_not_negative, "seconds, 0 or more"),
    "STORE_REDIS_BULK_SIZE": (_positive, "at least 1 command"),
    "STORE_REDIS_CURRENTTIME_EXPRIED": (_positive, "seconds, more than 0"),
    "STORE_REDIS_PLAN_EXPRIED": (_positive, "seconds, more than 0"),
    "STORE_REDIS_PLANTIME_EXPRIED": (_positive, "seconds, more than 0"),
    "STORE_STATUS_EXPRIED": (_not_negative, "seconds, 0 or more"),
    "STORE_REDIS_CONNECT_TIMEOUT": (_positive, "seconds, more than 0"),
    "STORE_REDIS_SOCKET_TIMEOUT": (_positive, "seconds, more than 0"),
    "STORE_REDIS_LEASE_SECONDS": (lambda v: v >= 0.5, "seconds, at least 0.5"),
}


def _read_setting(settings: Any, name: str) -> Any:
    """The setting's value converted to its type; the default if ``settings`` lacks it.

    Settings built before this module defined its own names hold them unconverted or not
    at all, hence the conversion here.
    """
    setting = config.SETTINGS[name]
    value = settings.get(name, None)
    value = setting.convert(setting.default if value is None else value, "setting %s" % name)
    check, expected = _CHECKS[name]
    if not check(value):
        section, key = setting.conf_location
        raise ConfigError("invalid %s ([%s] %s) = %r: expected %s"
                          % (name, section, key, value, expected))
    return value


@dataclass(frozen=True)
class RedisSettings:
    """The redis store's settings, checked once at construction."""

    host: str
    port: int
    db: int
    password: str
    prefix: str
    server_id: int
    max_connections: int
    client_timeout: int
    bulk_size: int
    currenttime_expried: int
    plan_expried: int
    plantime_expried: int
    status_expried: int
    connect_timeout: float
    socket_timeout: float
    lease_seconds: float

    @classmethod
    def read(cls, settings: Any) -> "RedisSettings":
        """Raises ConfigError naming the setting (and its conf-file key) on nonsense values."""
        values = {name: _read_setting(settings, name) for name in _CHECKS}
        return cls(**{name.replace("STORE_REDIS_", "").replace("STORE_", "").lower(): value
                      for name, value in values.items()})

    @property
    def address(self) -> str:
        return "%s:%d db %d" % (self.host, self.port, self.db)


# -- availability -----------------------------------------------------------------------------

class _Availability:
    """Logs once when Redis stops answering and once when it answers again."""

    def __init__(self, address: str):
        self.address = address
        self.down_since: Optional[float] = None

    def failed(self, error: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("redis store %s went away (%s); store calls fail with error 1004 until "
                      "it is back", self.address, _describe(error))

    def answered(self) -> None:
        if self.down_since is not None:
            log.warning("redis store %s is back after %.1f s", self.address,
                        time.monotonic() - self.down_since)
            self.down_since = None


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _guarded(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Turns "Redis is not answering" into RedisUnavailableError and tracks availability."""

    @functools.wraps(method)
    async def wrapper(self: "RedisStore", *args: Any, **kwargs: Any) -> Any:
        try:
            result = await method(self, *args, **kwargs)
        except _UNAVAILABLE as e:
            self._availability.failed(e)
            raise RedisUnavailableError("redis store %s is unavailable: %s"
                                        % (self.conf.address, _describe(e))) from e
        self._availability.answered()
        return result

    return wrapper


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- the store --------------------------------------------------------------------------------

class RedisStore(Store):
    name = "redis"

    def __init__(self, settings: Optional[config.Settings] = None, *args: Any, **kwargs: Any):
        super().__init__(settings, *args, **kwargs)
        self.conf = RedisSettings.read(settings if settings is not None else config.current())
        self.keys = KeyLayout(self.conf.prefix, self.conf.server_id)
        self.pipeline_size = max(self.conf.bulk_size, MIN_PIPELINE_COMMANDS)
        self.client: Optional[aioredis.Redis] = None
        self._pool: Optional[aioredis.BlockingConnectionPool] = None
        self._availability = _Availability(self.conf.address)
        self._statuses: GroupCommit[Tuple[str, int, int]] = GroupCommit(self._write_statuses)
        self._replace_if_unchanged: Any = None
        self._hset_if_present: Any = None
        self._fenced_write: Any = None
        get = settings.get if settings is not None else config.get
        self.timer_node = str(get("SERVER_MODE", "TIMER")).upper() == "TIMER"
        # The leader lease of a TIMER node, from init() on; None on AGENT nodes.
        self.leadership: Optional[LeaderLease] = None

    # -- life cycle ------------------------------------------------------------------------

    async def init(self) -> None:
        """Creates the pool (on the running loop) and checks the server once.

        Wrong credentials or database stop forsund (ConfigError); an unreachable Redis only
        logs: calls fail with 1004 and the timer retries until Redis answers.
        """
        self._pool = self._make_pool()
        self.client = aioredis.Redis(connection_pool=self._pool)
        self._replace_if_unchanged = self.client.register_script(_REPLACE_IF_UNCHANGED)
        self._hset_if_present = self.client.register_script(_HSET_IF_PRESENT)
        self._fenced_write = self.client.register_script(_FENCED_WRITE)
        try:
            await self.client.ping()
            log.info("redis store %s, keys %s:*", self.conf.address, self.keys.base)
        except (AuthenticationError, ResponseError) as e:
            await self.uninit()
            raise ConfigError("redis store %s refused us: %s (check STORE_REDIS_PASSWORD and "
                              "STORE_REDIS_DB)" % (self.conf.address, _describe(e))) from e
        except _UNAVAILABLE as e:
            self._availability.failed(e)
        if self.timer_node:
            self.leadership = LeaderLease(self.client, self.keys.leader, self.conf.lease_seconds)
            await self.leadership.start()

    def _make_pool(self) -> aioredis.BlockingConnectionPool:
        conf = self.conf
        return aioredis.BlockingConnectionPool(
            max_connections=conf.max_connections,
            timeout=conf.connect_timeout + conf.socket_timeout,  # waiting for a free connection
            host=conf.host, port=conf.port, db=conf.db, password=conf.password or None,
            socket_connect_timeout=conf.connect_timeout, socket_timeout=conf.socket_timeout,
            # a pooled connection idle this long is PINGed before reuse (0.1.x client_timeout)
            health_check_interval=conf.client_timeout,
            # one immediate retry replaces a pooled connection that a Redis restart closed
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            encoding_errors="surrogateescape", driver_info=None)

    async def uninit(self) -> None:
        """Waits for queued statuses, hands back the lease, then closes the connections."""
        await self._statuses.drain()
        if self.leadership is not None:
            await self.leadership.stop()
        if self.client is not None:
            await self.client.aclose()
            await self._pool.disconnect()
            self.client = None

    @property
    def redis(self) -> aioredis.Redis:
        if self.client is None:
            raise RuntimeError("the redis store is used before init() or after uninit()")
        return self.client

    # -- encoding ----------------------------------------------------------------------------

    def _load(self, key: str, blob: Optional[bytes]) -> Optional[Plan]:
        """Decodes a stored plan (either encoding); a corrupt one is logged and skipped."""
        if blob is None:
            return None
        try:
            plan = Plan.loads(blob)
        except Exception as e:
            log.error("redis store: cannot decode plan %r (%d bytes): %s", key, len(blob), e)
            return None
        plan.key = key  # the Redis key is authoritative
        return plan

    def _ttl(self, ts: int, keep: int) -> int:
        """Seconds until ``keep`` seconds after ``ts`` (at least 1: EXPIRE rejects 0)."""
        return max(1, ts - int(time.time()) + keep)

    def _fencing_token(self) -> str:
        """The lease token fenced writes check; raises at once if this node must not fire."""
        if self.leadership is None:
            return ""
        self.leadership.check()
        return self.leadership.token

    async def _write_fenced(self, writes: List[Tuple[Any, ...]]) -> None:
        """Runs fire writes (see _FENCED_WRITE) in atomic scripts of ~pipeline_size keys.

        A write's commands never straddle two scripts: a plan and its index entry are stored
        together or not at all. Each script first checks that this node still holds the lease.
        """
        token = self._fencing_token()
        keys: List[str] = [self.keys.leader]
        args: List[Any] = [token]
        for write in writes:
            keys.extend(write[0])
            args.extend(write[1:])
            if len(keys) > self.pipeline_size:
                await self._run_fenced(keys, args)
                keys, args = [self.keys.leader], [token]
        if len(args) > 1:
            await self._run_fenced(keys, args)

    async def _run_fenced(self, keys: List[str], args: List[Any]) -> None:
        try:
            await self._fenced_write(keys=keys, args=args)
        except ResponseError as e:
            if str(e).startswith("NOTLEADER"):
                raise NotLeaderError("this node lost the leader lease %s" % self.keys.leader) from e
            raise

    def _put_write(self, plan: Plan) -> Tuple[Any, ...]:
        return ((self.keys.plan(plan.key), self.keys.time(plan.next_time)), "put", plan.key,
                plan.dumps(), self._ttl(plan.next_time, self.conf.plan_expried),
                self._ttl(plan.next_time, self.conf.plantime_expried))

    def _queue_put(self, pipe: Any, plan: Plan) -> None:
        """Queues the plan and its time-index entry on a MULTI pipeline (requests)."""
        time_key = self.keys.time(plan.next_time)
        pipe.set(self.keys.plan(plan.key), plan.dumps(),
                 ex=self._ttl(plan.next_time, self.conf.plan_expried))
        pipe.hset(time_key, plan.key, "0")
        pipe.expire(time_key, self._ttl(plan.next_time, self.conf.plantime_expried))

    # -- basic methods (0.1.x) ---------------------------------------------------------------

    @_guarded
    async def get_current(self) -> int:
        value = await self.redis.get(self.keys.current)
        return int(float(value)) if value else 0

    @_guarded
    async def set_current(self, current_time: int) -> None:
        """Fenced: only the leader advances the second the next leader catches up from."""
        await self._write_fenced([((self.keys.current,), "current", str(int(current_time)),
                                   self.conf.currenttime_expried)])

    @_guarded
    async def get_plan(self, key: str) -> Optional[Plan]:
        return self._load(key, await self.redis.get(self.keys.plan(key)))

    @_guarded
    async def set_plan(self, plan: Plan) -> None:
        await self.redis.set(self.keys.plan(plan.key), plan.dumps(),
                             ex=self._ttl(plan.next_time, self.conf.plan_expried))

    @_guarded
    async def remove_plan(self, key: str) -> None:
        await self.redis.delete(self.keys.plan(key))

    @_guarded
    async def has_plan(self, key: str) -> bool:
        return bool(await self.redis.exists(self.keys.plan(key)))

    @_guarded
    async def add_time_plan(self, next_time: int, key: str) -> None:
        await self._set_time_entry(next_time, key, 0)

    @_guarded
    async def remove_time_plan(self, next_time: int, key: str) -> None:
        await self.redis.hdel(self.keys.time(next_time), key)

    @_guarded
    async def get_time_plans(self, ts: int) -> List[str]:
        return [decode(name) for name in await self.redis.hkeys(self.keys.time(ts))]

    @_guarded
    async def delete_time_plans(self, ts: int) -> None:
        """Forgets a handled second; with ``status_expried`` its statuses stay that long.

        0.1.x deleted the hash when status_expried was 0 and otherwise kept it to record
        the fires' statuses; an EXPIRE does the keeping without a sweep of old seconds.
        """
        self._fencing_token()
        if self.conf.status_expried:
            await self.redis.expire(self.keys.time(ts), self.conf.status_expried)
        else:
            await self.redis.delete(self.keys.time(ts))

    @_guarded
    async def get_time_plan(self, next_time: int, key: str) -> int:
        value = await self.redis.hget(self.keys.time(next_time), key)
        try:
            return int(value)
        except (TypeError, ValueError):
            return 0

    @_guarded
    async def set_time_plan(self, next_time: int, key: str, status: int) -> None:
        await self._set_time_entry(next_time, key, status)

    async def _set_time_entry(self, ts: int, key: str, status: int) -> None:
        time_key = self.keys.time(ts)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(time_key, key, str(status))
        pipe.expire(time_key, self._ttl(ts, self.conf.plantime_expried))
        await pipe.execute()

    @_guarded
    async def get_plan_keys(self, prefix: str = "") -> List[str]:
        """Keys starting with ``prefix`` (taken literally), sorted; SCAN, never KEYS."""
        found = set()
        async for name in self.redis.scan_iter(match=self.keys.plan_pattern(prefix),
                                               count=SCAN_COUNT):
            found.add(self.keys.plan_key_of(name))
        return sorted(found)

    # -- batch methods -------------------------------------------------------------------------

    async def count_plans(self) -> Optional[int]:
        """Exact while the database is small; beyond, an estimate from random keys.

        Never a SCAN of a large database: ``info`` calls this. None while Redis is away,
        so forsund can start (and answer ``info``) before Redis does.
        """
        try:
            return await self._count_plans()
        except RedisUnavailableError:
            return None

    @_guarded
    async def _count_plans(self) -> int:
        size = await self.redis.dbsize()
        if size <= EXACT_COUNT_KEYS:
            return len(await self.get_plan_keys(""))
        pipe = self.redis.pipeline(transaction=False)
        for _ in range(COUNT_SAMPLES):
            pipe.randomkey()
        prefix = self.keys.plan_prefix.encode("utf-8", "surrogateescape")
        hits = sum(1 for name in await pipe.execute() if name and name.startswith(prefix))
        return round(size * hits / COUNT_SAMPLES)

    @_guarded
    async def get_plans(self, keys: List[str]) -> List[Optional[Plan]]:
        plans: List[Optional[Plan]] = []
        for chunk in _chunks(keys, self.pipeline_size):
            blobs = await self.redis.mget([self.keys.plan(key) for key in chunk])
            plans.extend(self._load(key, blob) for key, blob in zip(chunk, blobs))
        return plans

    @_guarded
    async def put_plan(self, plan: Plan) -> Optional[Plan]:
        """Reads the old plan, then in one MULTI/EXEC: unindexes it and stores the new one."""
        old = self._load(plan.key, await self.redis.get(self.keys.plan(plan.key)))
        pipe = self.redis.pipeline(transaction=True)
        if old is not None and old.next_time != plan.next_time:
            pipe.hdel(self.keys.time(old.next_time), plan.key)
        self._queue_put(pipe, plan)
        await pipe.execute()
        return old

    @_guarded
    async def take_plan(self, key: str) -> Optional[Plan]:
        """Reads the plan, then deletes it with its index entry in one MULTI/EXEC.

        Of two concurrent removals (from two nodes) only the one whose DEL removed the
        plan returns it; the other sees None ("not found").
        """
        old = self._load(key, await self.redis.get(self.keys.plan(key)))
        if old is None:
            return None
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.plan(key))
        pipe.hdel(self.keys.time(old.next_time), key)
        deleted, _ = await pipe.execute()
        return old if deleted else None

    @_guarded
    async def commit_fired(self, ts: int, rescheduled: List[Plan], finished: List[str]) -> None:
        """Fenced atomic scripts: a node that lost the lease raises NotLeaderError instead."""
        writes = [self._put_write(plan) for plan in rescheduled]
        writes += [((self.keys.plan(key),), "del") for key in finished]
        await self._write_fenced(writes)

    @_guarded
    async def set_status(self, key: str, ts: int, status: int) -> None:
        """Group-committed: concurrent calls share round trips (see :mod:`.redis_batch`)."""
        await self._statuses.submit((key, ts, status))

    async def _write_statuses(self, items: List[Tuple[str, int, int]]) -> None:
        """Per chunk: one MGET of the plans, then one pipeline of conditional writes.

        The time-index status is set only while that second's hash still holds the key
        (0.1.x kept it with ``status_expried``); the plan's status only if the plan is still
        the one that fired at ``ts``, and only if Redis still holds exactly the bytes read
        (a plan replaced in between is left alone).
        """
        for chunk in _chunks(items, max(1, self.pipeline_size // 2)):
            names = [self.keys.plan(key) for key, _, _ in chunk]
            current = dict(zip(names, await self.redis.mget(names)))
            pipe = self.redis.pipeline(transaction=False)
            for (key, ts, status), name in zip(chunk, names):
                await self._hset_if_present(keys=[self.keys.time(ts)], args=[key, str(status)],
                                            client=pipe)
                updated = self._with_status(key, current[name], ts, status)
                if updated is not None:
                    await self._replace_if_unchanged(keys=[name], args=[current[name], updated],
                                                     client=pipe)
                    current[name] = updated
            await pipe.execute()

    def _with_status(self, key: str, blob: Optional[bytes], ts: int, status: int
                     ) -> Optional[bytes]:
        """The plan re-encoded with ``status``, or None when there is nothing to change."""
        plan = self._load(key, blob)
        if plan is None or plan.last_timeout != ts or plan.status == status:
            return None
        plan.status = status
        return plan.dumps()

    @_guarded
    async def due_seconds(self, first: int, last: int) -> Iterable[int]:
        """The seconds in [first, last] that may have plans, for catching up an outage.

        Walking a span costs a few round trips per second; listing the seconds that have a
        ``P:time:TS`` hash costs one SCAN round trip per SCAN_COUNT keys in the database.
        Whichever is fewer round trips is taken.
        """
        span = last - first + 1
        if span <= WALK_SECONDS or span <= await self.redis.dbsize() // SCAN_COUNT:
            return range(first, last + 1)
        seconds = set()
        async for name in self.redis.scan_iter(match=self.keys.time_pattern(), count=SCAN_COUNT):
            ts = self.keys.second_of(name)
            if ts is not None and first <= ts <= last:
                seconds.add(ts)
        return sorted(seconds)
