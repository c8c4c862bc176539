"""A second's fires prepared ahead of it (PREPARE_LEAD_SECONDS) fire exactly as if they were
not: plans changed, removed or created after the preparation fire as they stand at the
second, each once."""

import asyncio
from typing import List, Tuple

import pytest

from forsun import action as actions
from forsun import config
from forsun.action.action import Action
from forsun.forsun import Forsun
from forsun.plan import Plan
from forsun.status import ForsunStatus
from forsun.store.drivers.mem import MemStore
from test_action_helpers import action_pools, until  # noqa: F401

T = 1_900_000_000


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordAction(Action):
    fired: List[Tuple[int, str, str]] = []

    async def execute(self, *args, **kwargs) -> None:
        type(self).fired.append((self.ts, self.plan.key, self.params.get("v", "")))


class RecordBatchAction(RecordAction):
    @classmethod
    async def execute_batch(cls, fires):
        cls.fired.extend((fire.ts, fire.plan.key, fire.params.get("v", "")) for fire in fires)
        return [None] * len(fires)


@pytest.fixture
def recording(action_pools):  # noqa: F811
    RecordAction.fired = []
    actions.register_action("record", RecordAction)
    actions.register_action("recordbatch", RecordBatchAction)


async def open_core(path) -> Forsun:
    settings = config.Settings({"STORE_MEM_STORE_FILE": str(path / "forsun.dump")})
    store = MemStore(settings)
    await store.init()
    return Forsun(settings, store, ForsunStatus(), clock=Clock(T - 10))


async def close_core(core: Forsun) -> None:
    core.stop_preparing()
    await core.runner.stop()
    await core.store.uninit()


def plan(key: str, action: str, v: str = "1", seconds: int = 10) -> Plan:
    return Plan.build(key, True, seconds, count=2, action=action, params={"v": v}, now=T - 10)


async def settled(core: Forsun, count: int) -> List[Tuple[int, str, str]]:
    """The fires recorded once ``count`` of them ran (or the runner went idle)."""
    for _ in range(1000):
        if len(RecordAction.fired) >= count and not core.runner.running:
            break
        await asyncio.sleep(0.005)
    return sorted(RecordAction.fired)


@pytest.mark.gen_test
@pytest.mark.parametrize("action", ["record", "recordbatch"])
async def test_changes_after_the_preparation_are_what_fires(tmp_path, recording, action):
    core = await open_core(tmp_path)
    for n in range(20):
        await core.create_plan(plan("p%02d" % n, action))
    core.clock.now = T - 0.1
    await core._prepare(T)
    assert core._prepared is not None and core._prepared.ts == T  # the path under test

    await core.remove_plan("p00")
    await core.create_plan(plan("p01", action, v="replaced"))
    await core.create_plan(plan("p02", action, seconds=30))  # no longer due at T
    await core.create_plan(plan("late", action))
    core.clock.now = T

    assert await core.fire_second(T) == 19
    fired = await settled(core, 19)
    expected = sorted([(T, "p%02d" % n, "1") for n in range(3, 20)] +
                      [(T, "p01", "replaced"), (T, "late", "1")])
    assert fired == expected
    assert not core.runner.running
    for key in ("p05", "p01", "late"):  # rescheduled once, not twice
        stored = await core.get_plan(key)
        assert (stored.current_count, stored.last_timeout, stored.next_time) == (1, T, T + 10)
    assert (await core.get_plan("p02")).next_time == T + 20
    await close_core(core)


@pytest.mark.gen_test
@pytest.mark.parametrize("action", ["record", "recordbatch"])
async def test_a_key_the_store_lists_twice_is_prepared_and_fired_once(tmp_path, recording,
                                                                     action):
    core = await open_core(tmp_path)
    keys = ["p%03d" % n for n in range(150)]
    for key in keys:
        await core.create_plan(plan(key, action))
    listed = await core.store.get_time_plans(T)
    # the repeats land in the first chunk and in later ones
    core.store.get_time_plans = lambda ts: _done(listed[:10] + listed + listed[::-1])
    core.clock.now = T - 0.1
    await core._prepare(T)
    assert core._prepared is not None
    core.clock.now = T
    assert await core.fire_second(T) == 150
    assert await settled(core, 150) == [(T, key, "1") for key in keys]
    await close_core(core)


async def _done(value):
    return value


@pytest.mark.gen_test
async def test_a_preparation_not_fired_in_time_is_dropped(tmp_path, recording):
    core = await open_core(tmp_path)
    for n in range(5):
        await core.create_plan(plan("q%d" % n, "record"))
    core.clock.now = T - 0.1
    await core._prepare(T)
    core.clock.now = T + 3  # the daemon was stalled: the second is handled late
    assert await core.fire_second(T) == 5
    fired = await settled(core, 5)
    assert fired == [(T, "q%d" % n, "1") for n in range(5)]
    assert (await core.get_plan("q0")).next_time == T + 13  # counted from now, not from T
    await close_core(core)


@pytest.mark.gen_test
async def test_the_collector_held_for_a_busy_second_is_let_go(tmp_path, recording, monkeypatch):
    import gc

    from forsun import forsun as core_module
    monkeypatch.setattr(core_module, "GC_HOLD_PLANS", 5)
    monkeypatch.setattr(core_module, "GC_RELEASE_DELAY", 0.05)
    core = await open_core(tmp_path)
    for n in range(20):
        await core.create_plan(plan("g%02d" % n, "recordbatch"))
    assert gc.isenabled()
    core.clock.now = T - 0.5
    await core._prepare(T)
    assert not gc.isenabled()  # held while the busy second is prepared
    core.clock.now = T
    assert await core.fire_second(T) == 20
    assert not gc.isenabled()  # a moment longer, for the objects of the second to go
    await until(gc.isenabled)
    core.clock.now = T + 9.5  # a busy second fired the usual way, without preparation
    monkeypatch.setattr(core_module, "GC_RELEASE_DELAY", 60)
    assert await core.fire_second(T + 10) == 20
    assert not gc.isenabled()
    await close_core(core)  # a stop lets it go at once
    assert gc.isenabled()
