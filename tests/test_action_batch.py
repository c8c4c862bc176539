"""Actions with ``execute_batch``: a busy second's fires reach them in lists, and each fire
still gets its own outcome, status, retry and history entry."""

import asyncio
import time
from typing import List

import pytest

from forsun import action as actions
from forsun.action.action import Action, ExecuteActionError
from forsun.action.runner import BATCH_SIZE
from forsun.error import ActionExecuteRetry
from forsun.plan import Plan
from test_action_helpers import action_pools, action_settings, make_runner  # noqa: F401


class RecordingBatchAction(Action):
    """Succeeds unless params say ``fail`` (final) or ``flaky`` (retried once, then fine);
    remembers the lists it was handed and the single executes (retries)."""

    batches: List[List[str]] = []
    singles: List[str] = []
    prepared: List[List[str]] = []

    @classmethod
    def prepare_batch(cls, fires: List[Action]) -> None:
        cls.prepared.append([fire.plan.key for fire in fires])

    @classmethod
    async def execute_batch(cls, fires: List[Action]) -> List[object]:
        cls.batches.append([fire.plan.key for fire in fires])
        await asyncio.sleep(0)
        outcomes: List[object] = []
        for fire in fires:
            kind = fire.params.get("kind")
            if kind == "fail":
                outcomes.append(ExecuteActionError("refused by the target"))
            elif kind == "flaky":
                outcomes.append(ActionExecuteRetry("target busy"))
            else:
                outcomes.append(None)
        return outcomes

    async def execute(self, *args, **kwargs) -> None:
        type(self).singles.append(self.plan.key)


@pytest.fixture
def batch_action(action_pools):  # noqa: F811
    RecordingBatchAction.batches = []
    RecordingBatchAction.singles = []
    RecordingBatchAction.prepared = []
    actions.register_action("batchrec", RecordingBatchAction)
    yield RecordingBatchAction


def plans(prefix: str, count: int, **params: str) -> List[Plan]:
    return [Plan("%s%05d" % (prefix, n), action="batchrec", params=dict(params))
            for n in range(count)]


@pytest.mark.gen_test(timeout=30)
async def test_a_busy_second_is_handed_over_in_lists_with_an_outcome_each(make_runner,  # noqa: F811
                                                                          batch_action):
    runner = make_runner(ACTION_RETRY_DELAY_SECONDS=0.01, ACTION_RETRY_DELAY_RATE=0)
    ts = int(time.time())
    ok = plans("ok", BATCH_SIZE + 10)
    failing = plans("bad", 3, kind="fail")
    flaky = plans("flaky", 2, kind="flaky")
    runner.runner.run_all(ts, ok + failing + flaky)

    for plan in ok[:3] + ok[-3:]:
        assert await runner.outcome(plan.key) == 1
    for plan in failing:
        assert await runner.outcome(plan.key) == -1
    for plan in flaky:  # retried alone through execute(), which succeeds
        assert await runner.outcome(plan.key) == 1

    handed = [key for batch in batch_action.batches for key in batch]
    assert sorted(handed) == sorted(plan.key for plan in ok + failing + flaky)
    assert len(batch_action.batches) == 2 and max(map(len, batch_action.batches)) == BATCH_SIZE
    assert sorted(batch_action.singles) == [plan.key for plan in flaky]
    status = runner.status
    assert status.action_retried_count == 2
    assert status.action_executed_count == len(ok) + len(failing) + 2 * len(flaky)
    assert status.action_executed_error_count == len(failing) + len(flaky)
    executions = {e.key: e for e in status.history.list()}
    assert executions["bad00000"].status == -1
    assert "refused by the target" in executions["bad00000"].error
    assert executions["flaky00001"].attempts == 2


@pytest.mark.gen_test(timeout=30)
async def test_a_batch_that_raises_fails_each_of_its_fires(make_runner, batch_action,  # noqa: F811
                                                            monkeypatch):
    async def broken(fires):
        raise RuntimeError("target exploded")

    monkeypatch.setattr(batch_action, "execute_batch", staticmethod(broken))
    runner = make_runner()
    group = plans("boom", 4)
    runner.runner.run_all(int(time.time()), group)
    for plan in group:
        assert await runner.outcome(plan.key) == -1
    assert runner.status.action_executed_error_count == 4
    assert all("target exploded" in e.error for e in runner.status.history.list())


@pytest.mark.gen_test(timeout=30)
async def test_a_batch_past_its_timeout_fails_its_fires_as_timed_out(make_runner,  # noqa: F811
                                                                     batch_action, monkeypatch):
    async def hangs(fires):
        await asyncio.Event().wait()

    monkeypatch.setattr(batch_action, "execute_batch", staticmethod(hangs))
    runner = make_runner(ACTION_TIMEOUT=0.3)
    group = plans("slow", 3)
    started = time.monotonic()
    runner.runner.run_all(int(time.time()), group)
    for plan in group:
        assert await runner.outcome(plan.key) == -1
    assert time.monotonic() - started < 5
    assert all("timed out" in e.error for e in runner.status.history.list())


@pytest.mark.gen_test(timeout=30)
async def test_fires_prepared_ahead_wait_for_their_gate(make_runner, batch_action):  # noqa: F811
    """Fires handed over before their second (the core prepares a second ahead) are shown
    to prepare_batch at once, run only when their gate opens, and not at all if dropped."""
    runner = make_runner()
    group = plans("early", 6)
    gate = runner.runner.new_gate()
    runner.runner.run_all(int(time.time()), group, gate)
    for _ in range(5):
        await asyncio.sleep(0)
    assert batch_action.prepared == [[plan.key for plan in group]]
    assert batch_action.batches == []
    runner.runner.open_gate(gate, {"early00001", "early00004"})  # changed meanwhile
    for plan in group:
        if plan.key not in ("early00001", "early00004"):
            assert await runner.outcome(plan.key) == 1
    assert batch_action.batches == [["early00000", "early00002", "early00003", "early00005"]]
    assert runner.status.action_executed_count == 4
