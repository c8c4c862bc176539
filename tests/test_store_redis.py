"""The redis store against real redis-server processes: layout, 0.1.x data, SCAN, batching,
statuses, catch-up, and Redis going away (stopped, hung, not yet started)."""

import asyncio
import logging
import os
import signal
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, List, Tuple

import msgpack
import pytest

from forsun.config import Settings
from forsun.daemon import load_settings, parse_args
from forsun.error import ConfigError
from forsun.forsun import Forsun
from forsun.plan import Plan
from forsun.status import ForsunStatus
from forsun.store.drivers.redis import RedisStore, RedisUnavailableError
from forsun.store.drivers.redis_layout import KeyLayout, escape_glob
from services import RedisServer

# A store call while Redis is away must raise well before this (it takes milliseconds when
# the port refuses, about STORE_REDIS_SOCKET_TIMEOUT when Redis hangs).
FAIL_FAST_BOUND = 10.0


def store_settings(server: RedisServer, mode: str = "TIMER", **values) -> Settings:
    settings = {"STORE_REDIS_PORT": server.port, "STORE_REDIS_PASSWORD": server.password,
                "SERVER_MODE": mode}
    settings.update(("STORE_" + name.upper(), value) for name, value in values.items())
    return Settings(settings)


@asynccontextmanager
async def open_store(server: RedisServer, mode: str = "TIMER",
                     **values) -> AsyncIterator[RedisStore]:
    """An initialised RedisStore on ``server`` for a node in ``mode``; ``values`` are STORE_*
    settings in lower case."""
    store = RedisStore(store_settings(server, mode, **values))
    await store.init()
    try:
        yield store
    finally:
        await store.uninit()


def contract_store(request: pytest.FixtureRequest) -> RedisStore:
    """The redis entry of tests/test_store_contract.py's STORE_FACTORIES.

    The suite's plans are due in 2023: with the default expiries Redis would drop them a
    second after they are written, so they are kept for ~100 years here.
    """
    server = request.getfixturevalue("redis_server")
    keep = 100 * 365 * 86400
    return RedisStore(store_settings(server, redis_plan_expried=keep,
                                     redis_plantime_expried=keep))


def old_plan_blob(key: str, next_time: int, **fields) -> bytes:
    """A plan as forsun 0.1.x wrote it: msgpack 0.6 defaults, every string raw."""
    plan = {"key": key, "second": 10, "minute": -1, "hour": -1, "day": -1, "month": -1,
            "week": -1, "status": 0, "count": 1, "is_time_out": True, "next_time": next_time,
            "current_count": 0, "last_timeout": 0, "created_time": 1500000000.0,
            "action": "shell", "params": {"cmd": "ls"}}
    plan.update(fields)
    return msgpack.packb(plan, use_bin_type=False)


def write_old_plan(client, key: str, next_time: int, prefix: str = "forsun:0", **fields) -> None:
    """Writes a plan and its time-index entry in the 0.1.x layout and encoding."""
    client.set("%s:plan:%s" % (prefix, key), old_plan_blob(key, next_time, **fields))
    client.hset("%s:time:%d" % (prefix, next_time), key, "0")


class RecordingRunner:
    """Stands in for the ActionRunner: records (key, ts) of every fire."""

    def __init__(self) -> None:
        self.fired: List[Tuple[str, int]] = []

    def run(self, ts: int, plan: Plan) -> None:
        self.fired.append((plan.key, ts))

    def run_all(self, ts: int, plans: List[Plan]) -> None:
        for plan in plans:
            self.run(ts, plan)


def delay_plan(key: str, next_time: int, interval: int = 10, count: int = 1, **fields) -> Plan:
    return Plan(key, True, interval, count=count, next_time=next_time,
                created_time=float(next_time - interval), params={"cmd": "true"}, **fields)


def command_calls(client, command: str) -> int:
    return client.info("commandstats").get("cmdstat_" + command, {}).get("calls", 0)


# -- settings and layout (no server) ------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("STORE_REDIS_PORT", 0), ("STORE_REDIS_PORT", 70000), ("STORE_REDIS_PORT", "http"),
    ("STORE_REDIS_HOST", ""), ("STORE_REDIS_DB", -1), ("STORE_REDIS_PREFIX", ""),
    ("STORE_REDIS_PREFIX", "a b"), ("STORE_REDIS_SERVER_ID", -3),
    ("STORE_REDIS_MAX_CONNECTIONS", 0), ("STORE_REDIS_BULK_SIZE", 0),
    ("STORE_REDIS_CLIENT_TIMEOUT", -1), ("STORE_REDIS_PLAN_EXPRIED", 0),
    ("STORE_REDIS_PLANTIME_EXPRIED", -5), ("STORE_REDIS_CURRENTTIME_EXPRIED", 0),
    ("STORE_STATUS_EXPRIED", -1), ("STORE_REDIS_SOCKET_TIMEOUT", 0),
    ("STORE_REDIS_CONNECT_TIMEOUT", "soon"), ("STORE_REDIS_LEASE_SECONDS", 0.1),
])
def test_nonsense_settings_are_refused_naming_the_setting(name, value):
    with pytest.raises(ConfigError) as error:
        RedisStore(Settings({name: value}))
    assert name in str(error.value)


def test_settings_from_strings_as_conf_files_give_them():
    store = RedisStore(Settings({"STORE_REDIS_PORT": "6390", "STORE_REDIS_SOCKET_TIMEOUT": "1.5",
                                 "STORE_REDIS_BULK_SIZE": "5000", "STORE_REDIS_SERVER_ID": "3"}))
    assert (store.conf.port, store.conf.socket_timeout) == (6390, 1.5)
    assert store.pipeline_size == 5000 and store.keys.base == "forsun:3"
    assert RedisStore(Settings()).pipeline_size == 1000  # the 0.1.x default of 5 is raised


def test_key_layout_is_the_0_1_layout_and_patterns_are_literal():
    keys = KeyLayout("forsun", 0)
    assert keys.plan("a:b") == "forsun:0:plan:a:b"
    assert keys.time(1700000000) == "forsun:0:time:1700000000"
    assert keys.current == "forsun:0:current:time"
    assert escape_glob("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert KeyLayout("p[1]", 2).plan_pattern("x*") == "p\\[1\\]:2:plan:x\\**"
    assert keys.second_of(b"forsun:0:time:123") == 123
    assert keys.second_of(b"forsun:0:time:12x") is None


def test_every_redis_setting_comes_from_conf_file_and_environment_as_forsund_loads_them(
        tmp_path):
    conf = tmp_path / "forsun.conf"
    conf.write_text("[store]\ndriver = redis\nredis_socket_timeout = 0.5\nredis_bulk_size = 2000\n"
                    "redis_prefix = app\nstatus_expried = 60\n")
    settings = load_settings(parse_args(["--conf", str(conf), "--driver-redis-server-id", "7"]),
                             {"STORE_REDIS_CONNECT_TIMEOUT": "0.25", "STORE_REDIS_PORT": "7000"})
    store = RedisStore(settings)
    assert (store.conf.socket_timeout, store.conf.connect_timeout) == (0.5, 0.25)
    assert (store.conf.port, store.pipeline_size, store.conf.status_expried) == (7000, 2000, 60)
    assert store.keys.base == "app:7"


# -- plans written by forsun 0.1.x ----------------------------------------------------------------

async def test_old_layout_plans_are_listed_read_and_fired(redis_server):
    client = redis_server.client()
    due = int(time.time()) + 100
    write_old_plan(client, "old:once", due)
    write_old_plan(client, "old:twice", due, count=2, params={"cmd": "echo hi", "cwd": "/"})
    write_old_plan(client, "other-service", due, prefix="forsun:1")
    async with open_store(redis_server) as store:
        assert await store.get_plan_keys("old:") == ["old:once", "old:twice"]
        plan = await store.get_plan("old:twice")
        assert (plan.key, plan.next_time, plan.count, plan.is_time_out) == ("old:twice", due, 2,
                                                                            True)
        assert plan.params == {"cmd": "echo hi", "cwd": "/"} and plan.action == "shell"
        assert sorted(await store.get_time_plans(due)) == ["old:once", "old:twice"]

        runner = RecordingRunner()
        forsun = Forsun(Settings(), store, ForsunStatus(), runner=runner)
        assert [p.key for p in await forsun.get_time_plans(due)] == ["old:once", "old:twice"]
        assert await forsun.fire_second(due) == 2
        assert sorted(runner.fired) == [("old:once", due), ("old:twice", due)]
        assert await store.get_plan("old:once") is None  # count 1: finished and removed
        again = await store.get_plan("old:twice")
        assert (again.current_count, again.last_timeout, again.next_time) == (1, due, due + 10)
        assert await store.get_time_plans(due) == []
        assert await store.get_time_plans(due + 10) == ["old:twice"]
        assert await forsun.fire_second(due) == 0  # handling a second twice fires nothing
    assert client.exists("forsun:1:plan:other-service")  # another server_id is left alone


# -- requests ------------------------------------------------------------------------------------

async def test_create_get_replace_remove_with_the_documented_keys_and_expiries(redis_server):
    client = redis_server.client()
    async with open_store(redis_server, redis_plan_expried=1000, redis_plantime_expried=2000,
                          redis_currenttime_expried=3000) as store:
        now = int(time.time())
        plan = delay_plan("job:1", now + 50)
        assert await store.put_plan(plan) is None
        assert await store.get_plan("job:1") == plan
        assert msgpack.unpackb(client.get("forsun:0:plan:job:1")) == plan.to_dict()
        assert client.hgetall("forsun:0:time:%d" % (now + 50)) == {b"job:1": b"0"}
        assert abs(client.ttl("forsun:0:plan:job:1") - (50 + 1000)) <= 2
        assert abs(client.ttl("forsun:0:time:%d" % (now + 50)) - (50 + 2000)) <= 2

        replacement = delay_plan("job:1", now + 80)
        assert await store.put_plan(replacement) == plan
        assert not client.exists("forsun:0:time:%d" % (now + 50))  # old fire cancelled
        assert await store.get_time_plans(now + 80) == ["job:1"]
        assert await store.has_plan("job:1") and not await store.has_plan("job:2")

        assert await store.take_plan("job:1") == replacement
        assert await store.take_plan("job:1") is None
        assert await store.get_plan("job:1") is None
        assert await store.get_time_plans(now + 80) == []

        await store.set_current(now)
        assert await store.get_current() == now
        assert abs(client.ttl("forsun:0:current:time") - 3000) <= 2


async def test_get_time_and_get_current_through_the_core(redis_server):
    async with open_store(redis_server) as store:
        forsun = Forsun(Settings(), store, ForsunStatus(), runner=RecordingRunner())
        plan = await forsun.create_timeout("soon", 30, params={"cmd": "true"})
        await forsun.create_timeout("later", 90, params={"cmd": "true"})
        assert [p.key for p in await forsun.get_time_plans(plan.next_time)] == ["soon"]
        assert await forsun.get_time_plans(plan.next_time + 1) == []
        now = int(time.time())
        await store.put_plan(delay_plan("now", now))
        assert [p.key for p in await forsun.get_time_plans(now)] == ["now"]  # getCurrent
        assert (await forsun.get_plan("soon")).next_time == plan.next_time


@pytest.mark.gen_test(timeout=30)
async def test_get_keys_scans_exactly_among_100k_keys_and_never_uses_keys(redis_server):
    client = redis_server.client()
    pipe = client.pipeline(transaction=False)
    for i in range(100_000):
        pipe.set("forsun:0:plan:bulk:%d" % i, b"x")
        if i % 10_000 == 9_999:
            pipe.execute()
    client.set("forsun:1:plan:bulk:x", b"x")  # another server_id
    client.set("forsunx:0:plan:bulk:y", b"x")  # another prefix
    async with open_store(redis_server) as store:
        started = time.monotonic()
        bulk = await store.get_plan_keys("bulk:")
        elapsed = time.monotonic() - started
        assert len(bulk) == 100_000 and bulk[:2] == ["bulk:0", "bulk:1"]
        assert await store.get_plan_keys("bulk:9999") == ["bulk:9999"] + [
            "bulk:9999%d" % i for i in range(10)]
        assert await store.get_plan_keys("nothing") == []
        assert 90_000 <= await store.count_plans() <= 100_010  # sampled, not scanned
        # 100,002 keys in the database: a 100-second catch-up is cheaper walked than scanned
        assert list(await store.due_seconds(1000, 1099)) == list(range(1000, 1100))
    assert command_calls(client, "keys") == 0 and command_calls(client, "scan") >= 300
    print("getKeys over 100k keys took %.2f s" % elapsed)


async def test_get_keys_takes_glob_characters_in_the_prefix_literally(redis_server):
    client = redis_server.client()
    keys = ["a*b", "a?c", "a[1]", "a\\d", "ab", "a", "b*", "[x]"]
    for key in keys:
        client.set("forsun:0:plan:" + key, b"x")
    async with open_store(redis_server) as store:
        assert await store.get_plan_keys("a*") == ["a*b"]
        assert await store.get_plan_keys("a?") == ["a?c"]
        assert await store.get_plan_keys("a[") == ["a[1]"]
        assert await store.get_plan_keys("a\\") == ["a\\d"]
        assert await store.get_plan_keys("[") == ["[x]"]
        assert await store.get_plan_keys("a") == sorted(k for k in keys if k.startswith("a"))
        assert await store.get_plan_keys("") == sorted(keys)
    async with open_store(redis_server, redis_prefix="a*", redis_server_id=1) as store:
        client.set("a*:1:plan:mine", b"x")
        client.set("ab:1:plan:not-mine", b"x")
        assert await store.get_plan_keys("") == ["mine"]


# -- firing in batches, statuses, catch-up -------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_commit_fired_spans_several_pipelines_without_losing_a_plan(redis_server):
    due = int(time.time()) + 1000
    plans = [delay_plan("p%04d" % i, due, count=2 if i % 2 else 1) for i in range(2500)]
    async with open_store(redis_server) as store:
        await store.commit_fired(due - 10, plans, [])  # stores them with their index entries
        runner = RecordingRunner()
        forsun = Forsun(Settings(), store, ForsunStatus(), runner=runner)
        assert await forsun.fire_second(due) == 2500
        assert len(runner.fired) == 2500
        left = await store.get_plan_keys("p")
        assert left == [p.key for p in plans if p.count == 2]
        assert sorted(await store.get_time_plans(due + 10)) == left
        assert all(p.current_count == 1 for p in await store.get_plans(left))


async def test_statuses_are_group_committed_and_never_touch_a_replaced_plan(redis_server):
    client = redis_server.client()
    due = int(time.time()) + 500
    async with open_store(redis_server) as store:
        fired = [delay_plan("s%03d" % i, due + 10, count=3, last_timeout=due, current_count=1)
                 for i in range(500)]
        await store.commit_fired(due, fired, [])
        mget_before = command_calls(client, "mget")
        await asyncio.gather(*(store.set_status(p.key, due, 1 if i % 2 else -1)
                               for i, p in enumerate(fired)))
        assert command_calls(client, "mget") - mget_before <= 3  # not 500 round trips
        statuses = [p.status for p in await store.get_plans([p.key for p in fired])]
        assert statuses == [1 if i % 2 else -1 for i in range(500)]
        assert 505 + 604800 <= client.ttl("forsun:0:plan:s000") <= 510 + 604800  # TTL kept

        await store.set_status("s000", due - 99, 1)  # an older fire: ignored
        assert (await store.get_plan("s000")).status == -1
        await store.put_plan(delay_plan("s001", due + 60))  # replaced: a late status is moot
        await store.set_status("s001", due, -1)
        assert (await store.get_plan("s001")).status == 0
        await store.set_status("gone", due, 1)
        assert not client.exists("forsun:0:plan:gone")

        # the compare-and-set itself: a value changed since it was read is left alone
        name = "forsun:0:plan:s002"
        stale = client.get(name)
        client.set(name, delay_plan("s002", due + 70).dumps(), keepttl=True)
        assert await store._replace_if_unchanged(keys=[name], args=[stale, b"new"]) == 0
        assert Plan.loads(client.get(name)).next_time == due + 70


@pytest.mark.parametrize("status_expried", [0, 100])
async def test_a_handled_second_keeps_its_statuses_only_with_status_expried(redis_server,
                                                                           status_expried):
    client = redis_server.client()
    due = int(time.time()) + 300
    async with open_store(redis_server, status_expried=status_expried) as store:
        await store.put_plan(delay_plan("once", due))
        forsun = Forsun(Settings(), store, ForsunStatus(), runner=RecordingRunner())
        await forsun.fire_second(due)
        await store.set_status("once", due, 1)
        hash_key = "forsun:0:time:%d" % due
        if status_expried:
            assert client.hgetall(hash_key) == {b"once": b"1"}
            assert 0 < client.ttl(hash_key) <= 100
            assert await store.get_time_plan(due, "once") == 1
        else:
            assert not client.exists(hash_key)  # deleted, and not recreated by the status


async def test_catch_up_lists_only_the_seconds_that_have_plans(redis_server):
    client = redis_server.client()
    base = int(time.time()) - 100_000
    for offset in (5, 700, 50_000, 99_000):
        client.hset("forsun:0:time:%d" % (base + offset), "k", "0")
    client.hset("forsun:0:time:junk", "k", "0")
    client.hset("forsun:1:time:%d" % (base + 800), "k", "0")
    async with open_store(redis_server) as store:
        assert list(await store.due_seconds(base, base + 30)) == list(range(base, base + 31))
        assert list(await store.due_seconds(base + 1, base + 60_000)) == [
            base + 5, base + 700, base + 50_000]


# -- Redis going away ------------------------------------------------------------------------------

@pytest.fixture
def persistent_redis(tmp_path):
    """A redis-server with an append-only file, not started yet; killed after the test."""
    server = RedisServer(str(tmp_path / "redis"), persist=True)
    yield server
    server.kill()


async def assert_fails_fast(call) -> float:
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError) as error:
        await call
    elapsed = time.monotonic() - started
    assert error.value.code == 1004 and "unavailable" in error.value.message
    assert elapsed < FAIL_FAST_BOUND
    return elapsed


@pytest.mark.gen_test(timeout=40)
async def test_stopped_redis_fails_every_call_fast_and_loses_nothing_acknowledged(
        persistent_redis, caplog):
    caplog.set_level(logging.INFO, "forsun.store")
    server = persistent_redis
    due = int(time.time()) + 600
    # a long lease: the fenced calls below must meet Redis's absence, not the lease's end
    async with open_store(server, redis_lease_seconds=60) as store:  # Redis not running yet
        await assert_fails_fast(store.get_current())
        server.start()
        assert await store.leadership.refresh()  # takes the lease now rather than in 20 s
        kept = delay_plan("kept", due, count=5)
        await store.put_plan(kept)
        await store.set_current(due - 600)
        server.stop()
        calls = [store.get_plan("kept"), store.put_plan(delay_plan("new", due)),
                 store.take_plan("kept"), store.get_plan_keys(""), store.get_time_plans(due),
                 store.get_plans(["kept"]), store.set_current(due), store.get_current(),
                 store.commit_fired(due, [kept], []), store.set_status("kept", due, 1),
                 store.delete_time_plans(due), store.due_seconds(due - 5000, due)]
        elapsed = [await assert_fails_fast(call) for call in calls]
        assert await store.count_plans() is None  # unknown, so info still answers
        server.start()
        assert await store.get_plan("kept") == kept
        assert await store.get_time_plans(due) == ["kept"]
        assert await store.get_current() == due - 600
        assert await store.put_plan(delay_plan("new", due)) is None
        assert await store.count_plans() == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("went away" in m for m in messages) == 2  # before the first start, after stop
    assert sum("is back after" in m for m in messages) == 2
    print("calls while Redis was stopped took at most %.3f s" % max(elapsed))


@pytest.mark.gen_test(timeout=30)
async def test_hung_redis_fails_calls_within_the_socket_timeout(redis_server):
    async with open_store(redis_server, redis_socket_timeout=0.5) as store:
        await store.put_plan(delay_plan("x", int(time.time()) + 100))
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            elapsed = await assert_fails_fast(store.get_plan("x"))
            assert elapsed < 3
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        assert (await store.get_plan("x")).key == "x"  # no reply left over from the hang
        assert await store.get_plan_keys("") == ["x"]


async def test_wrong_password_stops_the_start_with_a_clear_error(tmp_path):
    server = RedisServer(str(tmp_path / "redis"), password="s3cret").start()
    try:
        store = RedisStore(Settings({"STORE_REDIS_PORT": server.port,
                                     "STORE_REDIS_PASSWORD": "wrong"}))
        with pytest.raises(ConfigError) as error:
            await store.init()
        assert "STORE_REDIS_PASSWORD" in str(error.value)
        async with open_store(server) as store:
            assert await store.get_current() == 0
    finally:
        server.kill()
