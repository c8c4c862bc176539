"""Runs one fire of one plan: the action's timeout, the retry policy, status and counters.

The timer hands each due plan to :meth:`ActionRunner.run` and never waits for it; actions
only talk to their target, everything around them lives here so every action (built-in or
from an extension) gets the same retries, logging and counting.

Cost matters here: a busy second hands over tens of thousands of fires. Each fire is one
task whose first step already runs the action's code (no wrapper task per fire), and
timeouts are not a timer per fire but entries in per-tick buckets
(:data:`TIMEOUT_TICK` seconds) that one sweeper checks; a fire past its time is cancelled
and counts as timed out.
"""

import asyncio
import logging
import math
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

from tornado.ioloop import IOLoop

from ..error import ActionExecuteRetry
from ..plan import Plan
from ..status import ForsunStatus
from . import get_action_class
from .policy import ActionPolicy

log = logging.getLogger("forsun.action")

# Granularity of action timeouts: a fire is cancelled at most this much after its time.
TIMEOUT_TICK = 0.1
# Fires of one action running at once; more wait their turn, in order. Without a limit a
# burst of 100,000 due plans would start 100,000 tasks at once, each building its request
# before any got a connection from its pool.
MAX_RUNNING_PER_ACTION = 1000
# Fires of an action with ``execute_batch`` handed to it at once, in one task.
BATCH_SIZE = 500
# The history entries and log lines of finished fires are written this long after, in one
# go, so they do not delay the start of the other fires of a busy second.
REPORT_DELAY = 0.05


class ActionRunner:
    def __init__(self, settings: Any, status: ForsunStatus, store: Any):
        self.settings = settings
        self.status = status
        self.store = store
        self.retry_delay_seconds = float(settings.get("ACTION_RETRY_DELAY_SECONDS"))
        self.retry_delay_rate = float(settings.get("ACTION_RETRY_DELAY_RATE"))
        self.retry_max_count = int(settings.get("ACTION_RETRY_MAX_COUNT"))
        self.timeout = float(settings.get("ACTION_TIMEOUT"))
        self.policy = ActionPolicy.from_settings(settings)  # ALLOWED_ACTIONS, at every fire
        self._tasks: Set[asyncio.Task] = set()
        self._retries: Set[object] = set()
        self._actions: Dict[str, Tuple[type, float]] = {}  # action name -> class, timeout
        # tick -> the running fires due to time out in it (and their timeout)
        self._expiry: Dict[int, Dict[asyncio.Task, float]] = {}
        self._next_tick = 0
        self._sweeper: Any = None
        self._timed_out: Dict[asyncio.Task, float] = {}
        # attempts that ended whose history entry and status are still to be written
        self._finished: List[Tuple[int, Plan, int, int, float, Optional[str]]] = []
        self._report_handle: Any = None
        self._gates: Set[asyncio.Future] = set()  # gates of prepared fires not yet opened
        self._running: Dict[str, int] = {}  # action -> fires running
        # action -> what waits beyond MAX_RUNNING_PER_ACTION: (fires, coroutine function, args)
        self._waiting: Dict[str, Deque[Tuple[int, Any, tuple]]] = {}

    def run(self, ts: int, plan: Plan, gate: Optional[asyncio.Future] = None) -> None:
        """Starts the action of ``plan`` for the fire at ``ts`` without waiting for it.

        With a ``gate`` (from :meth:`new_gate`) the fire's task is made now but its action
        starts only when :meth:`open_gate` is called, if that does not drop it: the core
        prepares a busy second's fires ahead of it and opens the gate at the second.
        """
        self._start(plan.action, 1, self._execute, (ts, plan, 0, gate), gate is not None)

    def takes_batches(self, action: str) -> bool:
        """Whether ``action``'s fires run in batches (its class has ``execute_batch``)."""
        info = self._actions.get(action)
        if info is None:
            try:
                info = self._action_info(action)
            except LookupError:
                return False
        return getattr(info[0], "execute_batch", None) is not None

    def run_all(self, ts: int, plans: List[Plan], gate: Optional[asyncio.Future] = None) -> None:
        """Starts the fires of ``plans`` at ``ts``, like :meth:`run` for each.

        The fires of an action class that has ``execute_batch`` (see
        :class:`forsun.action.action.Action`) run together, one task for up to
        :data:`BATCH_SIZE` of them: no task, timeout entry and coroutine per fire, and the
        action can send them to its target at once (the redis action pipelines them).
        """
        batches: Dict[str, List[Plan]] = {}
        for plan in plans:
            action = plan.action
            batch = batches.get(action)
            if batch is None:
                batch = batches[action] = []
            batch.append(plan)
        gated = gate is not None
        for action, batch in batches.items():
            if not self.takes_batches(action):
                for plan in batch:  # one task each; an unknown action fails in it
                    self._start(action, 1, self._execute, (ts, plan, 0, gate), gated)
                continue
            for first in range(0, len(batch), BATCH_SIZE):
                fires = batch[first:first + BATCH_SIZE]
                self._start(action, len(fires), self._execute_batch, (ts, action, fires, gate),
                            gated)

    def new_gate(self) -> asyncio.Future:
        gate = asyncio.get_running_loop().create_future()
        self._gates.add(gate)
        return gate

    def open_gate(self, gate: asyncio.Future, dropped: Optional[Set[str]]) -> None:
        """Lets the fires waiting at ``gate`` start, except those of the keys in
        ``dropped``; ``dropped`` None drops them all."""
        self._gates.discard(gate)
        if not gate.done():
            gate.set_result(dropped)

    def _start(self, action: str, fires: int, execute: Any, args: tuple, gated: bool) -> None:
        """Starts ``execute(*args)`` (``fires`` fires of ``action``) as a task, or queues it
        while the action already has :data:`MAX_RUNNING_PER_ACTION` fires running. A gated
        task waits at its gate first and is admitted then (:meth:`_admit`)."""
        if not gated and not self._admit(action, fires, execute, args):
            return
        # the task takes itself out of _tasks: a done callback would cost every fire one
        # more trip through the IOLoop's queue
        self._tasks.add(asyncio.get_running_loop().create_task(execute(*args)))

    def _admit(self, action: str, fires: int, execute: Any, args: tuple) -> bool:
        """Counts ``fires`` fires of ``action`` as running, or queues ``execute(*args)``
        behind the fires waiting for room (False): fires run in the order they were due, so
        a second's never start before the previous second's."""
        running = self._running.get(action, 0)
        waiting = self._waiting.get(action)
        if running < MAX_RUNNING_PER_ACTION and not waiting:
            self._running[action] = running + fires
            return True
        if waiting is None:
            waiting = self._waiting[action] = deque()
        waiting.append((fires, execute, args))
        return False

    def _ended(self, action: str, fires: int) -> None:
        """``fires`` fires of ``action`` no longer run: what waited for room starts."""
        running = self._running[action] - fires
        waiting = self._waiting.get(action)
        while waiting and running < MAX_RUNNING_PER_ACTION:
            count, execute, args = waiting.popleft()
            running += count
            self._tasks.add(asyncio.get_running_loop().create_task(execute(*args)))
        self._running[action] = running

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the ``attempt``-th retry (1-based), as SPEC section 1 gives it."""
        return self.retry_delay_seconds * (1 + self.retry_delay_rate * attempt)

    async def _execute(self, ts: int, plan: Plan, attempt: int,
                       gate: Optional[asyncio.Future] = None) -> None:
        """One attempt of one fire: the action with its timeout, then :meth:`_settle`."""
        task = asyncio.current_task()
        if gate is not None:
            dropped = await gate
            if dropped is None or plan.key in dropped or \
                    not self._admit(plan.action, 1, self._execute, (ts, plan, attempt)):
                self._tasks.discard(task)  # type: ignore[arg-type]
                return
        status = self.status
        status.action_executing_count += 1
        started = time.monotonic()
        error: Optional[BaseException] = None
        tick = 0
        try:
            # the action, with its timeout (inline: a coroutine less per fire)
            if self.policy.allowed is not None:
                self.policy.check_fire(plan.action)
            action = self._actions.get(plan.action)
            if action is None:
                action = self._action_info(plan.action)
            cls, timeout = action
            result = cls(ts, plan, plan.action, plan.params).execute()
            if asyncio.iscoroutine(result) or asyncio.isfuture(result) or \
                    hasattr(result, "__await__"):
                tick = self._watch(task, timeout)
                await result
        except asyncio.CancelledError:
            timeout = self._timed_out.pop(task, None)  # type: ignore[arg-type]
            if timeout is None:  # cancelled at stop
                self._settle(ts, plan, attempt, StopCancelled(), time.monotonic() - started)
                raise
            error = asyncio.TimeoutError("timed out after %.0f s" % timeout)
        except Exception as e:
            error = e
            log.debug("plan %s action %s traceback", plan.key, plan.action, exc_info=True)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            if tick:
                self._unwatch(tick, task)
            status.action_executing_count -= 1
            self._ended(plan.action, 1)
        self._settle(ts, plan, attempt, error, time.monotonic() - started)

    async def _execute_batch(self, ts: int, action: str, plans: List[Plan],
                             gate: Optional[asyncio.Future] = None,
                             fires: Optional[List[Any]] = None) -> None:
        """The first attempt of several fires of one action with ``execute_batch``: one
        timeout for them all; each fire then settles on its own (a failed one is retried
        alone, through :meth:`_execute`)."""
        task = asyncio.current_task()
        status = self.status
        started = time.monotonic()
        errors: List[Optional[BaseException]]
        tick = 0
        try:
            cls, timeout = self._actions.get(action) or self._action_info(action)
            if fires is None:
                fires = [cls(ts, plan, action, plan.params) for plan in plans]
            if gate is not None:
                self._prepare_batch(cls, fires)
                dropped = await gate
                if dropped:
                    fires = [fire for fire in fires if fire.plan.key not in dropped]
                if dropped is None or not fires or \
                        not self._admit(action, len(fires), self._execute_batch,
                                        (ts, action, [fire.plan for fire in fires], None,
                                         fires)):
                    self._tasks.discard(task)  # type: ignore[arg-type]
                    return
                plans = [fire.plan for fire in fires]
                started = time.monotonic()
        except BaseException:
            self._tasks.discard(task)  # type: ignore[arg-type]
            raise
        count = len(plans)
        status.action_executing_count += count
        try:
            if self.policy.allowed is not None:
                self.policy.check_fire(action)
            tick = self._watch(task, timeout)
            errors = list(await cls.execute_batch(fires))
            if len(errors) != count:
                raise RuntimeError("%s.execute_batch returned %d outcomes for %d fires"
                                   % (cls.__name__, len(errors), count))
        except asyncio.CancelledError:
            timeout = self._timed_out.pop(task, None)  # type: ignore[arg-type]
            if timeout is None:  # cancelled at stop
                duration = time.monotonic() - started
                for plan in plans:
                    self._settle(ts, plan, 0, StopCancelled(), duration)
                raise
            errors = [asyncio.TimeoutError("timed out after %.0f s" % timeout)] * count
        except Exception as e:
            errors = [e] * count
            log.debug("action %s batch traceback", action, exc_info=True)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            if tick:
                self._unwatch(tick, task)
            status.action_executing_count -= count
            self._ended(action, count)
        duration = time.monotonic() - started
        settle = self._settle
        for plan, error in zip(plans, errors):
            settle(ts, plan, 0, error, duration)

    def _prepare_batch(self, cls: type, fires: List[Any]) -> None:
        """Gives an action's ``prepare_batch`` the fires prepared ahead of their second, so
        it can get ready (parse, open connections) before they are due. Only a hint: a
        failure here is logged and the fires go on."""
        prepare = getattr(cls, "prepare_batch", None)
        if prepare is None:
            return
        try:
            prepare(fires)
        except Exception as e:
            log.warning("action %s prepare_batch failed: %s", cls.__name__, _describe(e))

    def _settle(self, ts: int, plan: Plan, attempt: int, error: Optional[BaseException],
                duration: float) -> None:
        """What follows an attempt: a retry for ActionExecuteRetry while retries are left,
        counters, and (a moment later, see :meth:`_report_finished`) the history entry and
        the plan's status: 1 succeeded, 0 failed and retried, -1 failed for good."""
        status = self.status
        status.action_executed_count += 1
        if error is None:
            outcome, text = 1, None
        else:
            status.action_executed_error_count += 1
            if error.__class__ is ActionExecuteRetry or isinstance(error, ActionExecuteRetry):
                if attempt < self.retry_max_count:
                    self._schedule_retry(ts, plan, attempt + 1, error)
                    outcome, text = 0, _describe(error)
                else:
                    outcome, text = -1, "gave up after %d retries: %s" % (attempt,
                                                                          _describe(error))
            elif isinstance(error, (asyncio.TimeoutError, StopCancelled)):
                outcome, text = -1, str(error) or "timed out"
            else:
                outcome, text = -1, _describe(error)
        self._finished.append((ts, plan, attempt, outcome, duration, text))
        if outcome < 0:  # reported at once (successes are the busy case, failures rare)
            if self._report_handle is not None:
                self._report_handle.cancel()
            self._report_finished()
        elif self._report_handle is None:
            self._report_handle = asyncio.get_running_loop().call_later(
                REPORT_DELAY, self._report_finished)

    def _report_finished(self) -> None:
        """Writes the history entries, debug lines and statuses of the attempts that ended
        since the last call, in one go: a busy second's fires start sooner."""
        self._report_handle = None
        finished, self._finished = self._finished, []
        if not finished:
            return
        self.status.actions_finished(finished)
        if log.isEnabledFor(logging.DEBUG):
            for ts, plan, attempt, outcome, duration, error in finished:
                log.debug("plan %s action %s at %s: outcome %d in %.1f ms", plan.key,
                          plan.action, ts, outcome, duration * 1000)
        task = asyncio.ensure_future(self._save_statuses(finished))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save_statuses(self, finished: List[Tuple[int, Plan, int, int, float,
                                                        Optional[str]]]) -> None:
        """The plans' statuses after their final attempts, in one store call (a mem store
        writes them without suspending); then the failures' log lines, once their status
        reads -1."""
        statuses = [(plan.key, ts, outcome) for ts, plan, _, outcome, _, _ in finished
                    if outcome]  # 0: a retry follows, the status is that of its final attempt
        try:
            await self.store.set_statuses(statuses)
        except Exception as e:
            self.status.store_error("set_status")
            log.error("saving the status of %d fire(s) failed: %s", len(statuses), e)
        for ts, plan, _, outcome, _, error in finished:
            if outcome < 0:
                log.error("plan %s action %s at %s failed: %s", plan.key, plan.action, ts,
                          error)

    def _action_info(self, name: str) -> Tuple[type, float]:
        """(class, timeout) of an action; a shell command may run for an hour
        (ACTION_SHELL_TIMEOUT), a network call gets ACTION_TIMEOUT."""
        try:
            cls = get_action_class(name)
        except KeyError:
            raise LookupError("unknown action %r" % name) from None
        timeout = float(self.settings.get(getattr(cls, "timeout_setting", "ACTION_TIMEOUT"))
                        or self.timeout)
        self._actions[name] = (cls, timeout)
        return cls, timeout

    def _watch(self, task: Any, timeout: float) -> int:
        """Puts ``task`` in the bucket of the tick it times out in; returns that tick."""
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + timeout) / TIMEOUT_TICK)
        bucket = self._expiry.get(tick)
        if bucket is None:
            bucket = self._expiry[tick] = {}
            if self._sweeper is None:
                self._next_tick = min(tick, math.floor(loop.time() / TIMEOUT_TICK))
                self._sweeper = loop.call_later(TIMEOUT_TICK, self._sweep)
        bucket[task] = timeout
        return tick

    def _unwatch(self, tick: int, task: Any) -> None:
        bucket = self._expiry.get(tick)
        if bucket is not None:
            bucket.pop(task, None)

    def _sweep(self) -> None:
        """Cancels the fires whose time is up; runs every tick while fires are watched."""
        loop = asyncio.get_running_loop()
        now = math.floor(loop.time() / TIMEOUT_TICK)
        while self._next_tick <= now:
            bucket = self._expiry.pop(self._next_tick, None)
            self._next_tick += 1
            if bucket:
                for task, timeout in bucket.items():
                    if not task.done():
                        self._timed_out[task] = timeout
                        task.cancel()
        self._sweeper = loop.call_later(TIMEOUT_TICK, self._sweep) if self._expiry else None

    def _schedule_retry(self, ts: int, plan: Plan, attempt: int, reason: Exception) -> None:
        delay = self.retry_delay(attempt)
        self.status.action_retried_count += 1
        log.warning("plan %s action %s at %s will retry (%d/%d) in %.1f s: %s", plan.key,
                    plan.action, ts, attempt, self.retry_max_count, delay, _describe(reason))
        handle: Optional[object] = None

        def fire() -> None:
            self._retries.discard(handle)
            self._start(plan.action, 1, self._execute, (ts, plan, attempt, None), False)

        handle = IOLoop.current().call_later(delay, fire)
        self._retries.add(handle)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def stop(self, grace: float = 5.0) -> None:
        """At a clean stop: drops pending retries, gives running actions ``grace`` seconds."""
        loop = IOLoop.current()
        for handle in list(self._retries):
            loop.remove_timeout(handle)
        self._retries.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for gate in list(self._gates):
            self.open_gate(gate, None)
        dropped = sum(fires for waiting in self._waiting.values() for fires, _, _ in waiting)
        if dropped:
            log.warning("stopping: %d fires waiting for a free slot (MAX_RUNNING_PER_ACTION) "
                        "are not run", dropped)
        self._waiting.clear()
        if self._tasks:
            done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:  # they settle as "cancelled at stop"
                await asyncio.wait(pending, timeout=1.0)
        if self._report_handle is not None or self._finished:  # the last moments' statuses
            if self._report_handle is not None:
                self._report_handle.cancel()
            self._report_finished()
            saving = [task for task in self._tasks if not task.done()]
            if saving:
                await asyncio.wait(saving, timeout=grace)


class StopCancelled(Exception):
    """A fire cancelled because forsund stops (after the stop's grace period)."""

    def __str__(self) -> str:
        return "cancelled at stop"


def _describe(error: BaseException) -> str:
    text = str(error)
    return "%s: %s" % (type(error).__name__, text) if text else type(error).__name__
