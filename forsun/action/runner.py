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
from typing import Any, Dict, List, Optional, Set, Tuple

from tornado.ioloop import IOLoop

from ..error import ActionExecuteRetry
from ..plan import Plan
from ..status import ForsunStatus
from . import get_action_class
from .policy import ActionPolicy

log = logging.getLogger("forsun.action")

# Granularity of action timeouts: a fire is cancelled at most this much after its time.
TIMEOUT_TICK = 0.1
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
        # fires that succeeded whose status and history entry are still to be written
        self._finished: List[Tuple[int, Plan, int, int, float, Optional[str]]] = []
        self._report_handle: Any = None

    def run(self, ts: int, plan: Plan) -> None:
        """Starts the action of ``plan`` for the fire at ``ts`` without waiting for it."""
        self._spawn(ts, plan, 0)

    def _spawn(self, ts: int, plan: Plan, attempt: int) -> None:
        # _execute takes its task out of _tasks itself: a done callback would cost every
        # fire one more trip through the IOLoop's queue
        self._tasks.add(asyncio.get_running_loop().create_task(self._execute(ts, plan, attempt)))

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the ``attempt``-th retry (1-based), as SPEC section 1 gives it."""
        return self.retry_delay_seconds * (1 + self.retry_delay_rate * attempt)

    async def _execute(self, ts: int, plan: Plan, attempt: int) -> None:
        status = self.status
        status.action_executing_count += 1
        started = time.monotonic()
        outcome, error = 1, None
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
                tick = self._watch(asyncio.current_task(), timeout)
                await result
        except ActionExecuteRetry as e:
            if attempt < self.retry_max_count:
                status.action_executed_error_count += 1
                self._schedule_retry(ts, plan, attempt + 1, e)
                outcome, error = 0, _describe(e)  # 0: this attempt failed, a retry follows
                return
            outcome, error = -1, "gave up after %d retries: %s" % (attempt, _describe(e))
        except asyncio.TimeoutError as e:
            outcome, error = -1, str(e) or "timed out"
        except asyncio.CancelledError:
            timeout = self._timed_out.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            if timeout is None:
                outcome, error = -1, "cancelled at stop"
                raise
            outcome, error = -1, "timed out after %.0f s" % timeout
        except Exception as e:
            outcome, error = -1, _describe(e)
            log.debug("plan %s action %s traceback", plan.key, plan.action, exc_info=True)
        finally:
            task = asyncio.current_task()
            if outcome == 0 or error == "cancelled at stop":  # leaving here, not below
                self._tasks.discard(task)  # type: ignore[arg-type]
            if tick:
                bucket = self._expiry.get(tick)
                if bucket is not None:
                    bucket.pop(task, None)
            status.action_executing_count -= 1
            status.action_executed_count += 1
            if outcome < 0:
                status.action_executed_error_count += 1
            duration = time.monotonic() - started
            if outcome > 0:
                # a success's status, history entry (and debug line) are written a moment
                # later, for every fire that ended meanwhile at once: a busy second's fires
                # start sooner
                self._tasks.discard(task)  # type: ignore[arg-type]
                if self._report_handle is None:
                    self._report_handle = asyncio.get_running_loop().call_later(
                        REPORT_DELAY, self._report_finished)
                self._finished.append((ts, plan, attempt, outcome, duration, error))
            else:
                status.action_finished(ts, plan, attempt, outcome, duration, error)
                if outcome < 0:
                    log.error("plan %s action %s at %s failed: %s", plan.key, plan.action, ts,
                              error)
        if outcome > 0:
            return
        try:
            await self.store.set_status(plan.key, ts, outcome)
        except Exception as e:
            status.store_error("set_status")
            log.error("plan %s saving status %s failed: %s", plan.key, outcome, e)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]

    def _report_finished(self) -> None:
        self._report_handle = None
        finished, self._finished = self._finished, []
        if not finished:
            return
        action_finished = self.status.action_finished
        debug = log.isEnabledFor(logging.DEBUG)
        for ts, plan, attempt, outcome, duration, error in finished:
            action_finished(ts, plan, attempt, outcome, duration, error)
            if debug:
                log.debug("plan %s action %s at %s done in %.1f ms", plan.key, plan.action, ts,
                          duration * 1000)
        task = asyncio.ensure_future(self._save_statuses(finished))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save_statuses(self, finished: List[Tuple[int, Plan, int, int, float,
                                                        Optional[str]]]) -> None:
        """The statuses of fires that succeeded, one after the other (a mem store does them
        all without suspending; a network store one round trip each)."""
        set_status = self.store.set_status
        for ts, plan, _, outcome, _, _ in finished:
            try:
                await set_status(plan.key, ts, outcome)
            except Exception as e:
                self.status.store_error("set_status")
                log.error("plan %s saving status %s failed: %s", plan.key, outcome, e)

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
            self._spawn(ts, plan, attempt)

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
        if self._tasks:
            done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        if self._report_handle is not None:  # statuses of the last moments are saved too
            self._report_handle.cancel()
            self._report_finished()
            saving = [task for task in self._tasks if not task.done()]
            if saving:
                await asyncio.wait(saving, timeout=grace)


def _describe(error: BaseException) -> str:
    text = str(error)
    return "%s: %s" % (type(error).__name__, text) if text else type(error).__name__
