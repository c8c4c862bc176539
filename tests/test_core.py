"""The core and the timer in-process: firing rules of SPEC section 1 on a basic store.

The store here implements only the 0.1.x basic methods, so these tests also cover the
Store contract's default batch methods that extension stores rely on.
"""

import asyncio
from typing import Dict, List

import pytest

from forsun import config
from forsun.error import NotFoundPlanError, StorePlanError, UnknownActionError
from forsun.forsun import FIRE_BATCH, Forsun
from forsun.plan import Plan
from forsun.status import ForsunStatus
from forsun.store.store import Store
from forsun.timer import Timer


class DictStore(Store):
    """A store with only the basic methods, like an extension would write."""

    def __init__(self, settings=None):
        super().__init__(settings)
        self.plans: Dict[str, bytes] = {}
        self.times: Dict[int, Dict[str, int]] = {}
        self.current = 0
        self.failing = False

    def _check(self):
        if self.failing:
            raise ConnectionError("store is down")

    async def get_current(self):
        self._check()
        return self.current

    async def set_current(self, current_time):
        self._check()
        self.current = current_time

    async def get_plan(self, key):
        self._check()
        data = self.plans.get(key)
        return Plan.loads(data) if data else None

    async def set_plan(self, plan):
        self._check()
        self.plans[plan.key] = plan.dumps()

    async def remove_plan(self, key):
        self._check()
        self.plans.pop(key, None)

    async def add_time_plan(self, next_time, key):
        self._check()
        self.times.setdefault(next_time, {})[key] = 0

    async def remove_time_plan(self, next_time, key):
        self._check()
        self.times.get(next_time, {}).pop(key, None)

    async def get_time_plans(self, ts):
        self._check()
        return list(self.times.get(ts, {}))

    async def delete_time_plans(self, ts):
        self._check()
        self.times.pop(ts, None)

    async def get_plan_keys(self, prefix=""):
        self._check()
        return [key for key in self.plans if key.startswith(prefix)]


class RecordingRunner:
    def __init__(self):
        self.fires: List[tuple] = []

    def run(self, ts, plan):
        self.fires.append((ts, plan.key))

    def run_all(self, ts, plans):
        for plan in plans:
            self.run(ts, plan)

    async def stop(self):
        pass


class FakeClock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def core():
    """A core whose clock stands at 1000 unless a test moves it."""
    return Forsun(config.Settings(), DictStore(), ForsunStatus(), RecordingRunner(),
                  FakeClock(1000.0))


def delay(key, seconds, now, count=1):
    return Plan.build(key, True, seconds, count=count, params={"cmd": "true"}, now=now)


async def test_fire_second_reschedules_counts_and_finishes(core):
    await core.create_plan(delay("twice", 5, now=1000, count=2))
    await core.create_plan(delay("other", 7, now=1000))
    assert await core.fire_second(1004) == 0
    assert await core.fire_second(1005) == 1
    plan = await core.get_plan("twice")
    assert (plan.last_timeout, plan.current_count, plan.next_time) == (1005, 1, 1010)
    assert await core.fire_second(1010) == 1
    with pytest.raises(NotFoundPlanError):
        await core.get_plan("twice")
    assert core.runner.fires == [(1005, "twice"), (1010, "twice")]
    assert core.status.plan_count == 1


async def test_a_late_second_does_not_burst_repeats(core):
    """Handled 100 s late, a 5-second plan fires once and continues from the present."""
    await core.create_plan(delay("every5", 5, now=1000, count=0))
    core.clock.now = 1105.2
    assert await core.fire_second(1005) == 1
    assert (await core.get_plan("every5")).next_time == 1110


async def test_replaced_and_removed_plans_do_not_fire(core):
    await core.create_plan(delay("swap", 5, now=1000))
    await core.create_plan(delay("swap", 9, now=1000))
    await core.create_plan(delay("gone", 5, now=1000))
    await core.remove_plan("gone")
    core.store.times.setdefault(1005, {})["swap"] = 0   # a stale index entry
    assert await core.fire_second(1005) == 0
    assert await core.fire_second(1009) == 1
    assert core.runner.fires == [(1009, "swap")]


async def test_one_shot_fixed_plan_fires_once(core):
    plan = Plan.build("once", False, 0, 0, 12, 24, 12, now=1700000000)
    core.clock.now = 1700000000
    await core.create_plan(plan)
    assert await core.fire_second(plan.next_time) == 1
    with pytest.raises(NotFoundPlanError):
        await core.get_plan("once")


async def test_large_second_fires_in_batches(core):
    for i in range(FIRE_BATCH * 2 + 5):
        await core.create_plan(delay("k%d" % i, 10, now=1000))
    assert await core.fire_second(1010) == FIRE_BATCH * 2 + 5
    assert len(set(key for _, key in core.runner.fires)) == FIRE_BATCH * 2 + 5


async def test_unknown_action_and_store_failures_have_their_codes(core):
    with pytest.raises(UnknownActionError) as error:
        await core.create_plan(Plan.build("x", True, 5, action="nope", now=1000))
    assert error.value.code == 1006 and "shell" in error.value.message
    core.store.failing = True
    with pytest.raises(StorePlanError) as error:
        await core.create_plan(delay("y", 5, now=1000))
    assert error.value.code == 1004 and "store is down" in error.value.message
    with pytest.raises(StorePlanError):
        await core.get_keys("")


async def test_timer_catches_up_missed_seconds_once_each_in_order():
    store = DictStore()
    store.current = 995
    handled = []
    clock = FakeClock(1000.5)
    both_done = asyncio.Event()
    redone = []

    async def fire(ts, redo_fired=False):
        handled.append(ts)
        if redo_fired:
            redone.append(ts)
        if ts == 1000:
            both_done.set()
        return 0

    timer = Timer(fire, store, ForsunStatus(), clock)
    timer.start()
    await asyncio.wait_for(both_done.wait(), 5)
    await timer.stop()
    assert handled == [996, 997, 998, 999, 1000] and store.current == 1000
    assert redone == [996]  # the second a previous process may have died in


async def test_timer_keeps_its_place_while_the_store_fails(monkeypatch):
    import forsun.timer as timer_module
    monkeypatch.setattr(timer_module, "RETRY_SECONDS", 0.01)
    store = DictStore()
    store.current = 999
    handled = []
    done = asyncio.Event()
    failures = []

    async def fire(ts, redo_fired=False):
        if len(failures) < 3:
            failures.append(ts)
            raise ConnectionError("down")
        handled.append(ts)
        done.set()
        return 0

    status = ForsunStatus()
    timer = Timer(fire, store, status, FakeClock(1000.2))
    timer.start()
    await asyncio.wait_for(done.wait(), 5)
    await timer.stop()
    assert failures == [1000, 1000, 1000] and handled == [1000]
    assert status.timer_loop_ready_error_count == 3


class IndexedDictStore(DictStore):
    async def due_seconds(self, first, last):
        return sorted(ts for ts in self.times if first <= ts <= last)


async def test_timer_skips_empty_seconds_of_a_long_outage():
    store = IndexedDictStore()
    store.current = 1000
    store.times = {1500: {"a": 0}, 90000: {"b": 0}}
    handled = []
    done = asyncio.Event()

    async def fire(ts, redo_fired=False):
        handled.append(ts)
        if ts == 100000:
            done.set()
        return 0

    timer = Timer(fire, store, ForsunStatus(), FakeClock(100000.1))
    timer.start()
    await asyncio.wait_for(done.wait(), 20)
    await timer.stop()
    assert handled == [1500, 90000, 100000] and store.current == 100000


async def test_redo_dispatches_plans_a_dead_node_already_rescheduled(core):
    """After a takeover, plans rescheduled for ts by the dead node fire again, once."""
    plan = delay("half-done", 5, now=1000, count=0)
    await core.create_plan(plan)
    plan.last_timeout, plan.current_count, plan.next_time = 1005, 1, 1010  # what it committed
    await core.store.set_plan(plan)
    core.store.times[1005] = {"half-done": 0}  # it died before deleting the second
    assert await core.fire_second(1005, redo_fired=True) == 1
    assert core.runner.fires == [(1005, "half-done")]
    assert (await core.get_plan("half-done")).next_time == 1010  # not rescheduled twice
    assert await core.fire_second(1005) == 0
