"""The mem store beyond the Store contract: its dump file, its flushing and its index."""

import asyncio
import errno
import gc
import os
import threading
import time
from pathlib import Path

import msgpack
import pytest
from tornado.ioloop import IOLoop, PeriodicCallback

from forsun import config
from forsun.config import Settings
from forsun.error import ConfigError
from forsun.plan import FIELDS, Plan
from forsun.store.drivers import mem, mem_dump
from forsun.store.drivers.mem import MemStore

T0 = 1_700_000_000


def new_store(path: Path, flush_seconds: float = 0) -> MemStore:
    return MemStore(Settings({"STORE_MEM_STORE_FILE": str(path),
                              "STORE_MEM_FLUSH_SECONDS": flush_seconds}))


async def open_store(path: Path, flush_seconds: float = 0) -> MemStore:
    store = new_store(path, flush_seconds)
    await store.init()
    return store


def peek(path: Path) -> MemStore:
    """What a start would recover from the files now (dump + journal), without opening a
    journal segment of its own as a running store would."""
    store = new_store(path)
    store._recover()
    return store


def make_plan(key: str, next_time: int, **fields) -> Plan:
    values = {"is_time_out": True, "second": 30, "action": "http", "created_time": T0 - 0.5,
              "params": {"url": "http://127.0.0.1:8080/hook/%s" % key}}
    values.update(fields)
    return Plan(key, next_time=next_time, **values)


async def due_keys(store: MemStore, ts: int):
    plans = await store.get_plans(await store.get_time_plans(ts))
    return sorted({plan.key for plan in plans if plan is not None and plan.next_time == ts})


def varied_plans():
    """Plans that differ in every field, so a round trip that drops one shows."""
    return [
        Plan("daily", False, second=0, minute=32, hour=16, day=-1, month=-1, week=3,
             status=1, count=0, current_count=7, next_time=T0 + 3600, last_timeout=T0 - 86400,
             created_time=T0 - 864000.25, action="shell", params={"cmd": "ls -l", "cwd": "/"}),
        Plan("delay", True, second=5, minute=1, hour=0, day=0, month=0, week=0, status=-1,
             count=3, current_count=2, next_time=T0 + 65, last_timeout=T0, created_time=T0 - 130.5,
             action="http", params={"url": "http://127.0.0.1:8080/x", "method": "post"}),
        Plan("ключ 🙂", True, second=10, next_time=T0 + 65, created_time=T0 + 0.125,
             action="redis", params={"command": "SET ü 1"}),
        Plan("no-params", True, second=1, next_time=T0 + 1, action="beanstalk"),
    ]


# -- the dump file -------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_dump_round_trip(tmp_path):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    plans = varied_plans()
    for plan in plans:
        await store.put_plan(plan)
    await store.set_current(T0 - 1)
    await store.uninit()

    loaded = await open_store(path)
    assert await loaded.get_plans([plan.key for plan in plans]) == plans
    assert await loaded.count_plans() == len(plans)
    assert await loaded.get_current() == T0 - 1
    assert await due_keys(loaded, T0 + 65) == ["delay", "ключ 🙂"]
    assert await due_keys(loaded, T0 + 3600) == ["daily"]
    assert list(await loaded.due_seconds(T0, T0 + 10**6)) == [T0 + 1, T0 + 65, T0 + 3600]
    await loaded.uninit()


@pytest.mark.gen_test
async def test_written_file_has_the_0_1_x_layout(tmp_path):
    """Plans as packed field maps, time_plans as second -> keys, current_time (SPEC 9), read
    as 0.1.x read it: each entry looked up by name, each plan map exactly the 16 fields."""
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    plans = varied_plans()
    for plan in plans:
        await store.put_plan(plan)
    await store.set_current(T0)
    await store.uninit()

    data = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    assert set(data) == {"plans", "time_plans", "current_time", mem_dump.FAST_SECTION}
    assert data["current_time"] == T0
    fields = [msgpack.unpackb(blob, raw=False) for blob in data["plans"]]
    assert sorted(fields, key=lambda f: f["key"]) == sorted(
        (plan.to_dict() for plan in plans), key=lambda f: f["key"])
    assert all(sorted(f) == sorted(FIELDS) for f in fields)
    assert {ts: sorted(keys) for ts, keys in data["time_plans"].items()} == {
        T0 + 3600: ["daily"], T0 + 65: ["delay", "ключ 🙂"], T0 + 1: ["no-params"]}


@pytest.mark.gen_test
async def test_plan_maps_have_a_fixed_shape_and_odd_values_the_general_one(tmp_path):
    """The fixed shape (fixed-width numbers) is what makes the fast section's length check
    meaningful; values it cannot hold are written in msgpack's general encoding."""
    path = tmp_path / "forsun.dump"
    odd = Plan("odd", 1, second=99999, next_time=T0 + 9, created_time=3, params={"a": "b"})
    plans = varied_plans() + [odd]
    mem_dump.write_dump(str(path), [(plan.key, plan.pack()) for plan in plans], T0)
    data = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    for blob, plan in zip(data["plans"], plans):
        assert msgpack.unpackb(blob) == plan.to_dict()
        assert blob.startswith(b"\xde\x00\x10\xabis_time_out") == (plan is not odd)
    store = await open_store(path)
    assert await store.get_plans([plan.key for plan in plans]) == plans
    await store.uninit()


@pytest.mark.gen_test
async def test_a_fast_section_that_does_not_match_the_plans_is_ignored(tmp_path, caplog):
    """A tool that rewrote ``plans`` but kept the extra entry: the plans themselves win."""
    path = tmp_path / "forsun.dump"
    plans = varied_plans()
    mem_dump.write_dump(str(path), [(plan.key, plan.pack()) for plan in plans], T0)
    data = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    edited = plans[0].to_dict()
    edited["next_time"] = T0 + 7200
    data["plans"][0] = msgpack.packb(edited)  # re-encoded by msgpack: another length
    del data["plans"][1]
    path.write_bytes(msgpack.packb(data))

    store = await open_store(path)
    assert await store.count_plans() == len(plans) - 1
    assert (await store.get_plan(plans[0].key)).next_time == T0 + 7200
    assert await store.get_plan(plans[1].key) is None
    assert "does not match" in caplog.text
    await store.uninit()


@pytest.mark.gen_test
async def test_reads_a_file_written_by_forsun_0_1_x(tmp_path):
    """Old files hold msgpack raw strings everywhere, each plan a packed map of its own."""
    expected = varied_plans()
    old_plans = []
    for plan in expected:
        fields = plan.to_dict()
        fields["key"] = plan.key.encode("utf-8")  # Python 2 servers kept byte strings
        old_plans.append(msgpack.packb(fields, use_bin_type=False))
    # time_plans as the old server left it; the index is rebuilt from next_time instead.
    old_time_plans = {T0 + 65: [b"delay"], T0 - 50: [b"daily"]}
    path = tmp_path / "forsun.dump"
    path.write_bytes(msgpack.packb({"time_plans": old_time_plans, "plans": old_plans,
                                    "current_time": T0 - 2}, use_bin_type=False))

    store = await open_store(path)
    assert await store.get_plans([plan.key for plan in expected]) == expected
    assert await store.get_current() == T0 - 2
    assert await due_keys(store, T0 + 65) == ["delay", "ключ 🙂"]
    assert await due_keys(store, T0 + 3600) == ["daily"]
    assert await store.get_time_plans(T0 - 50) == []
    await store.uninit()


@pytest.mark.gen_test
async def test_missing_file_is_an_empty_store(tmp_path):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    assert await store.count_plans() == 0
    assert await store.get_current() == 0
    await store.put_plan(make_plan("job", T0))
    await store.uninit()
    assert path.exists()


def test_default_file_comes_from_the_global_settings():
    assert MemStore(None).store_file == os.path.expanduser(config.get("STORE_MEM_STORE_FILE"))


def _valid_dump() -> bytes:
    plan = msgpack.packb(make_plan("job", T0).to_dict())
    return msgpack.packb({"plans": [plan], "time_plans": {}, "current_time": T0})


@pytest.mark.parametrize("content", [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xc1\xc1 this is not msgpack", id="garbage"),
    pytest.param(_valid_dump()[:-40], id="truncated"),
    pytest.param(_valid_dump() + b"\x00", id="trailing-data"),
    pytest.param(msgpack.packb([1, 2, 3]), id="not-a-map"),
    pytest.param(msgpack.packb({"plans": [b"\x93\x01"]}), id="bad-plan"),
    pytest.param(msgpack.packb({"plans": [{"key": "x"}]}), id="plan-not-packed"),
])
@pytest.mark.gen_test
async def test_unreadable_file_stops_the_store_and_is_left_untouched(tmp_path, content):
    path = tmp_path / "forsun.dump"
    path.write_bytes(content)
    store = new_store(path)
    with pytest.raises(ConfigError, match=str(path)):
        await store.init()
    with pytest.raises(RuntimeError):
        await store.flush()
    await store.uninit()
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["forsun.dump"]


@pytest.mark.gen_test
async def test_missing_directory_is_a_config_error(tmp_path):
    path = tmp_path / "no-such-dir" / "forsun.dump"
    with pytest.raises(ConfigError, match=str(path)):
        await new_store(path).init()


# -- crashes and failed writes -------------------------------------------------------------

@pytest.mark.gen_test
async def test_leftover_temp_file_from_a_crash_is_ignored(tmp_path):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    await store.put_plan(make_plan("job", T0))
    await store.uninit()
    Path(str(path) + ".tmp").write_bytes(b"half a dump, the process died here")

    store = await open_store(path)
    assert await store.get_plan_keys() == ["job"]
    await store.put_plan(make_plan("next", T0))
    await store.flush()
    assert sorted(os.listdir(tmp_path)) == ["forsun.dump", store._journal.path.split("/")[-1]]
    assert sorted(await peek(path).get_plan_keys()) == ["job", "next"]
    await store.uninit()
    assert os.listdir(tmp_path) == ["forsun.dump"]


WRITER_FAILING_MID_STREAM = "import sys; sys.stdin.buffer.read(20); sys.exit(1)"


@pytest.mark.parametrize("failure", ["tmp-is-a-directory", "writer-dies-mid-stream"])
@pytest.mark.gen_test
async def test_failed_write_keeps_the_previous_file_and_the_journal(tmp_path, monkeypatch,
                                                                     failure):
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    await store.put_plan(make_plan("job", T0))
    await store.flush()
    before = path.read_bytes()

    await store.put_plan(make_plan("later", T0))
    with monkeypatch.context() as patch:
        if failure == "tmp-is-a-directory":
            os.mkdir(str(path) + ".tmp")
        else:
            real_exec = asyncio.create_subprocess_exec

            async def failing_writer(program, *args, **kwargs):
                return await real_exec(program, "-c", WRITER_FAILING_MID_STREAM, **kwargs)

            patch.setattr(mem.asyncio, "create_subprocess_exec", failing_writer)
        with pytest.raises(OSError, match="snapshot writer"):
            await store.flush()
        if failure == "tmp-is-a-directory":
            os.rmdir(str(path) + ".tmp")
    assert path.read_bytes() == before
    # nothing is lost meanwhile: the journal has the change (as a crash now would show)
    assert sorted(await peek(path).get_plan_keys()) == ["job", "later"]

    await store.uninit()  # the change is still pending, so the final snapshot writes it
    assert os.listdir(tmp_path) == ["forsun.dump"]
    assert sorted(await peek(path).get_plan_keys()) == ["job", "later"]


# -- flushing ------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_flush_does_not_block_the_loop(tmp_path):
    store = await open_store(tmp_path / "forsun.dump")
    plans = [make_plan("plan-%011d" % n, T0 + n % 3600) for n in range(200_000)]
    await store.commit_fired(T0, plans, [])
    del plans

    period = 0.01
    loop = IOLoop.current()
    ticks = [loop.time()]
    probe = PeriodicCallback(lambda: ticks.append(loop.time()), period * 1000)
    probe.start()
    started = time.monotonic()
    await store.flush()
    took = time.monotonic() - started
    probe.stop()

    lag = max(b - a for a, b in zip(ticks, ticks[1:] + [loop.time()])) - period
    assert len(ticks) >= 5, "the loop did not run while the file was written"
    assert lag < took / 3, "the loop stalled %.3fs during a %.3fs flush" % (lag, took)
    await store.uninit()


@pytest.mark.gen_test
async def test_flushes_requested_during_a_write_share_one_follow_up(tmp_path, monkeypatch):
    loop = IOLoop.current()
    first_write_started = loop.asyncio_loop.create_future()
    release = asyncio.Event()
    written = []
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    snapshot = store._snapshot

    async def slow_snapshot():
        written.append(sorted(await store.get_plan_keys()))
        if len(written) == 1:
            first_write_started.set_result(None)
            await release.wait()
        await snapshot()

    monkeypatch.setattr(store, "_snapshot", slow_snapshot)
    await store.put_plan(make_plan("a", T0))
    flushes = [asyncio.ensure_future(store.flush())]
    await first_write_started
    for key in ("b", "c"):
        await store.put_plan(make_plan(key, T0))
        flushes.append(asyncio.ensure_future(store.flush()))
    release.set()
    await asyncio.gather(*flushes)

    assert written == [["a"], ["a", "b", "c"]]
    await store.uninit()
    assert len(written) == 2  # nothing changed since: no write at stop


@pytest.mark.gen_test
async def test_periodic_flush_writes_changes(tmp_path):
    path = tmp_path / "forsun.dump"
    store = await open_store(path, flush_seconds=0.02)
    flushed = IOLoop.current().asyncio_loop.create_future()
    flush = store.flush

    async def watched_flush():
        await flush()
        if not flushed.done():
            flushed.set_result(None)

    store.flush = watched_flush
    await store.put_plan(make_plan("job", T0))
    await asyncio.wait_for(flushed, 10)
    assert (await peek(path).get_plan("job")) == make_plan("job", T0)
    await store.uninit()


# -- the time index ------------------------------------------------------------------------

async def churn(store: MemStore, keys, ts: int) -> None:
    """Moves keys[:30] to ts + 1, removes keys[30:50], replaces keys[50:60] in place and
    brings keys[:5] back to ts (their turn then comes last)."""
    for key in keys[:30]:
        await store.put_plan(make_plan(key, ts + 1))
    for key in keys[30:50]:
        await store.take_plan(key)
    for key in keys[50:60]:
        await store.put_plan(make_plan(key, ts, params={"replaced": "yes"}))
    for key in keys[:5]:
        await store.put_plan(make_plan(key, ts))


@pytest.mark.gen_test
async def test_the_index_of_a_busy_second_follows_moves_and_removals_exactly(tmp_path):
    store = await open_store(tmp_path / "forsun.dump")
    ts = T0 + 100
    keys = ["k%03d" % n for n in range(100)]
    for key in keys:
        await store.put_plan(make_plan(key, ts))
    await churn(store, keys, ts)

    assert await store.get_time_plans(ts) == keys[50:] + keys[:5]
    assert await due_keys(store, ts) == sorted(keys[:5] + keys[50:])
    assert await store.get_time_plans(ts + 1) == keys[5:30]
    for key in keys[50:]:
        await store.take_plan(key)
    assert await store.get_time_plans(ts) == keys[:5]
    await store.uninit()


@pytest.mark.gen_test
async def test_changes_to_a_busy_second_loaded_from_the_dump_fire_exactly(tmp_path):
    """A loaded second keeps moved and removed keys of a long list (lazy removal); none
    of them fires, and none fires twice."""
    path = tmp_path / "forsun.dump"
    store = await open_store(path)
    ts = T0 + 100
    keys = ["k%03d" % n for n in range(100)]
    await store.put_plans([make_plan(key, ts) for key in keys])
    await store.uninit()
    store = await open_store(path)
    await churn(store, keys, ts)

    listed = await store.get_time_plans(ts)  # may repeat keys and list stale ones
    assert set(keys[:5] + keys[50:]) <= set(listed) and len(listed) < 2 * len(keys)
    assert await due_keys(store, ts) == sorted(keys[:5] + keys[50:])
    assert await store.get_time_plans(ts + 1) == keys[5:30]
    await store.uninit()


@pytest.mark.gen_test
async def test_the_store_holds_nothing_the_cyclic_gc_must_walk(tmp_path):
    """Every full collection walks each tracked container's items: plans kept in lists
    made each one stall the IOLoop 70-85 ms at a million plans created at run time."""
    store = await open_store(tmp_path / "forsun.dump")
    plans = [make_plan("p%05d" % n, T0 + n % 7) for n in range(2000)]
    await store.put_plans(plans[:1000])
    for plan in plans[1000:]:
        await store.put_plan(plan)
    await store.take_plan("p00003")
    buckets = [bucket for shard in store._index.shards() for bucket in shard.values()]
    assert len(buckets) == 7 and all(len(bucket) > 200 for bucket in buckets)
    assert not any(map(gc.is_tracked, buckets))
    assert not any(map(gc.is_tracked, store._shards))
    await store.uninit()


@pytest.mark.gen_test
async def test_small_buckets_drop_keys_at_once_and_share_the_key_object(tmp_path):
    store = await open_store(tmp_path / "forsun.dump")
    for key in ("a", "b", "c"):
        await store.put_plan(make_plan(key, T0))
    await store.put_plan(make_plan("b", T0 + 1))
    assert await store.get_time_plans(T0) == ["a", "c"]

    key = "".join(["sha", "red"])  # built at run time: not interned
    await store.put_plan(make_plan(key, T0 + 5))
    (stored_key,) = [k for shard in store._shards for k in shard if k == key]
    assert store._index.keys_at(T0 + 5)[0] is stored_key
    await store.uninit()


@pytest.mark.gen_test
async def test_due_seconds_after_a_long_outage_lists_only_busy_seconds(tmp_path):
    store = await open_store(tmp_path / "forsun.dump")
    for n, ts in enumerate((T0 + 5, T0 + 10**6, T0 + 3 * 10**6)):
        await store.put_plan(make_plan("p%d" % n, ts))
    assert list(await store.due_seconds(T0, T0 + 2 * 10**6)) == [T0 + 5, T0 + 10**6]
    assert list(await store.due_seconds(T0, T0 + 10)) == list(range(T0, T0 + 11))
    await store.uninit()


@pytest.mark.gen_test
async def test_get_plan_keys_yields_to_the_loop(tmp_path):
    store = await open_store(tmp_path / "forsun.dump")
    plan = make_plan("", T0)
    for n in range(120_000):
        plan.key = "p%06d" % n
        await store.put_plan(plan)
    returned = False
    seen = []
    IOLoop.current().add_callback(lambda: seen.append(returned))
    keys = await store.get_plan_keys("p00")
    returned = True
    assert len(keys) == 10_000
    assert seen == [False]
    await store.uninit()


def test_packed_next_time_reads_the_plan_layout():
    assert mem_dump.packed_next_time(make_plan("x", T0 + 7).pack()) == T0 + 7
