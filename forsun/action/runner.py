"""Runs one fire of one plan: the action's timeout, the retry policy, status and counters.

The timer hands each due plan to :meth:`ActionRunner.run` and never waits for it; actions
only talk to their target, everything around them lives here so every action (built-in or
from an extension) gets the same retries, logging and counting.
"""

import asyncio
import logging
import time
from typing import Any, Optional, Set

from tornado.ioloop import IOLoop

from ..error import ActionExecuteRetry
from ..plan import Plan
from ..status import ForsunStatus
from . import get_action_class
from .policy import ActionPolicy

log = logging.getLogger("forsun.action")


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

    def run(self, ts: int, plan: Plan) -> None:
        """Starts the action of ``plan`` for the fire at ``ts`` without waiting for it."""
        self._spawn(ts, plan, 0)

    def _spawn(self, ts: int, plan: Plan, attempt: int) -> None:
        task = asyncio.ensure_future(self._execute(ts, plan, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the ``attempt``-th retry (1-based), as SPEC section 1 gives it."""
        return self.retry_delay_seconds * (1 + self.retry_delay_rate * attempt)

    async def _execute(self, ts: int, plan: Plan, attempt: int) -> None:
        status = self.status
        status.action_executing_count += 1
        started = time.monotonic()
        outcome, error = 1, None
        try:
            await self._call(ts, plan)
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
            outcome, error = -1, "cancelled at stop"
            raise
        except Exception as e:
            outcome, error = -1, _describe(e)
            log.debug("plan %s action %s traceback", plan.key, plan.action, exc_info=True)
        finally:
            status.action_executing_count -= 1
            status.action_executed_count += 1
            status.action_finished(ts, plan, attempt, outcome, time.monotonic() - started, error)
            if outcome < 0:
                status.action_executed_error_count += 1
                log.error("plan %s action %s at %s failed: %s", plan.key, plan.action, ts, error)
            elif outcome > 0:
                log.debug("plan %s action %s at %s done in %.1f ms", plan.key, plan.action, ts,
                          (time.monotonic() - started) * 1000)
        try:
            await self.store.set_status(plan.key, ts, outcome)
        except Exception as e:
            status.store_error("set_status")
            log.error("plan %s saving status %s failed: %s", plan.key, outcome, e)

    async def _call(self, ts: int, plan: Plan) -> None:
        self.policy.check_fire(plan.action)
        try:
            cls = get_action_class(plan.action)
        except KeyError:
            raise LookupError("unknown action %r" % plan.action) from None
        result = cls(ts, plan, plan.action, plan.params).execute()
        if asyncio.isfuture(result) or asyncio.iscoroutine(result) or hasattr(result, "__await__"):
            # A shell command may run for an hour; a network call gets ACTION_TIMEOUT.
            timeout = float(self.settings.get(getattr(cls, "timeout_setting", "ACTION_TIMEOUT"))
                            or self.timeout)
            try:
                await asyncio.wait_for(_awaitable(result), timeout)
            except asyncio.TimeoutError:
                raise asyncio.TimeoutError("timed out after %.0f s" % timeout) from None

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
        if self._tasks:
            done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()


async def _awaitable(result: Any) -> Any:
    return await result


def _describe(error: BaseException) -> str:
    text = str(error)
    return "%s: %s" % (type(error).__name__, text) if text else type(error).__name__
