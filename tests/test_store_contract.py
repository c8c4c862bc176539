"""The Store contract, run against every built-in store.

Each entry of ``STORE_FACTORIES`` builds a fresh, empty, not yet initialised store from the
pytest ``request`` (so a factory can pull in fixtures such as a Redis server); adding a
store to the suite is one more entry there.
"""

from typing import Callable, List

import pytest

from forsun.config import Settings
from forsun.plan import Plan
from forsun.store.drivers.mem import MemStore
from forsun.store.store import Store

T0 = 1_700_000_000


def mem_store(request: pytest.FixtureRequest) -> Store:
    path = request.getfixturevalue("tmp_path") / "forsun.dump"
    return MemStore(Settings({"STORE_MEM_STORE_FILE": str(path), "STORE_MEM_FLUSH_SECONDS": 0}))


from test_store_redis import contract_store as redis_store  # noqa: E402

STORE_FACTORIES: List = [
    pytest.param(mem_store, id="mem"),
    pytest.param(redis_store, id="redis"),
]


@pytest.fixture(params=STORE_FACTORIES)
def store(request: pytest.FixtureRequest, io_loop) -> Store:
    factory: Callable[[pytest.FixtureRequest], Store] = request.param
    store = factory(request)
    io_loop.run_sync(store.init)
    yield store
    io_loop.run_sync(store.uninit)


def make_plan(key: str, next_time: int, **fields) -> Plan:
    values = {"is_time_out": True, "second": 30, "action": "http", "created_time": T0 - 0.5,
              "params": {"url": "http://127.0.0.1:8080/hook/%s" % key}}
    values.update(fields)
    return Plan(key, next_time=next_time, **values)


async def due_keys(store: Store, ts: int) -> List[str]:
    """The keys the core would fire at ``ts``: indexed there and with that next_time."""
    plans = await store.get_plans(await store.get_time_plans(ts))
    return sorted({plan.key for plan in plans if plan is not None and plan.next_time == ts})


@pytest.mark.gen_test
async def test_put_get_and_replace_cancels_the_old_fire(store):
    first = make_plan("job", T0 + 10)
    assert await store.put_plan(first) is None
    assert await store.get_plan("job") == first
    assert await store.has_plan("job")
    assert await due_keys(store, T0 + 10) == ["job"]

    second = make_plan("job", T0 + 20, params={"url": "http://other/"}, count=3)
    assert await store.put_plan(second) == first
    assert await store.get_plan("job") == second
    assert await due_keys(store, T0 + 10) == []
    assert await due_keys(store, T0 + 20) == ["job"]
    assert await store.count_plans() == 1


@pytest.mark.gen_test
async def test_replace_keeping_next_time_stays_due_once(store):
    await store.put_plan(make_plan("job", T0 + 10))
    replacement = make_plan("job", T0 + 10, action="shell", params={"cmd": "true"})
    await store.put_plan(replacement)
    assert await store.get_plan("job") == replacement
    assert await due_keys(store, T0 + 10) == ["job"]


@pytest.mark.gen_test
async def test_take_plan(store):
    plan = make_plan("job", T0 + 10)
    await store.put_plan(plan)
    await store.put_plan(make_plan("other", T0 + 10))
    assert await store.take_plan("job") == plan
    assert await store.get_plan("job") is None
    assert not await store.has_plan("job")
    assert await due_keys(store, T0 + 10) == ["other"]
    assert await store.take_plan("job") is None
    assert await store.count_plans() == 1


@pytest.mark.gen_test
async def test_get_plans_keeps_order_and_reports_missing(store):
    a, b = make_plan("a", T0 + 1), make_plan("b", T0 + 2)
    await store.put_plan(a)
    await store.put_plan(b)
    assert await store.get_plans(["b", "missing", "a"]) == [b, None, a]
    assert await store.get_plans([]) == []


@pytest.mark.gen_test
async def test_commit_fired(store):
    ts = T0 + 10
    for key in ("again", "done"):
        await store.put_plan(make_plan(key, ts, count=2, current_count=1 if key == "done" else 0))
    again = make_plan("again", ts + 60, count=2, current_count=1, last_timeout=ts)
    await store.commit_fired(ts, [again], ["done"])
    await store.delete_time_plans(ts)

    assert await store.get_plan("again") == again
    assert await store.get_plan("done") is None
    assert await due_keys(store, ts) == []
    assert await due_keys(store, ts + 60) == ["again"]
    assert await store.count_plans() == 1


@pytest.mark.gen_test
async def test_set_status_only_for_that_fire(store):
    ts = T0 + 10
    await store.put_plan(make_plan("job", ts + 60, last_timeout=ts, current_count=1))
    await store.set_status("job", ts - 60, -1)  # an older fire: ignored
    assert (await store.get_plan("job")).status == 0
    await store.set_status("job", ts, 1)
    plan = await store.get_plan("job")
    assert (plan.status, plan.next_time) == (1, ts + 60)
    assert await due_keys(store, ts + 60) == ["job"]
    await store.set_status("missing", ts, 1)
    assert not await store.has_plan("missing")


@pytest.mark.gen_test
async def test_get_plan_keys_by_prefix_and_count(store):
    keys = ["user:1", "user:2", "userx", "order:1"]
    for n, key in enumerate(keys):
        await store.put_plan(make_plan(key, T0 + n))
    assert sorted(await store.get_plan_keys("user:")) == ["user:1", "user:2"]
    assert sorted(await store.get_plan_keys("")) == sorted(keys)
    assert await store.get_plan_keys("nothing") == []
    assert await store.count_plans() in (None, 4)


@pytest.mark.gen_test
async def test_due_seconds(store):
    busy = [T0 + 3, T0 + 86_400, T0 + 20 * 86_400]
    for n, ts in enumerate(busy):
        await store.put_plan(make_plan("p%d" % n, ts))
    for first, last in ((T0, T0 + 5), (T0, T0 + 30 * 86_400)):
        seconds = list(await store.due_seconds(first, last))
        assert seconds == sorted(set(seconds))
        assert all(first <= ts <= last for ts in seconds)
        assert set(seconds) >= {ts for ts in busy if first <= ts <= last}
    assert list(await store.due_seconds(T0 + 5, T0 + 4)) == []


@pytest.mark.gen_test
async def test_current_time(store):
    assert await store.get_current() == 0
    await store.set_current(T0)
    assert await store.get_current() == T0


@pytest.mark.gen_test
async def test_unicode_keys_and_params(store):
    key = "计划/ключ/🙂"
    plan = make_plan(key, T0 + 5, params={"cmd": "echo 'ünïcødé ✓'"})
    await store.put_plan(plan)
    assert await store.get_plan(key) == plan
    assert await store.get_plan_keys("计划/") == [key]
    assert await due_keys(store, T0 + 5) == [key]
    assert await store.take_plan(key) == plan


@pytest.mark.gen_test
async def test_basic_0_1_x_methods(store):
    """Extensions and old code call these directly; they must agree with the batch ones."""
    plan = make_plan("job", T0 + 10)
    await store.set_plan(plan)
    await store.add_time_plan(plan.next_time, plan.key)
    assert await store.get_plan("job") == plan
    assert await due_keys(store, T0 + 10) == ["job"]

    await store.remove_time_plan(T0 + 10, "job")
    assert "job" not in await store.get_time_plans(T0 + 10)
    await store.add_time_plan(T0 + 10, "job")
    await store.delete_time_plans(T0 + 10)
    assert await store.get_time_plans(T0 + 10) == []

    await store.remove_plan("job")
    assert not await store.has_plan("job")
    await store.remove_plan("job")
