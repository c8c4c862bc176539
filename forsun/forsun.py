"""The core: creating, replacing, removing, listing and firing plans (SPEC section 1).

Servers translate wire formats into calls here; the timer calls :meth:`Forsun.fire_second`
for each second to handle. The core talks to the store only through the Store contract and
hands due plans to the ActionRunner without waiting for their actions.
"""

import asyncio
import logging
import time
from datetime import tzinfo
from typing import Any, Callable, Dict, List, Optional

from . import action as actions
from . import crontime
from .action.policy import ActionPolicy
from .action.runner import ActionRunner
from .error import (ForsunError, NotFoundPlanError, RemovePlanError, StorePlanError,
                    UnknownActionError)
from .plan import I16_MAX, I32_MAX, Plan
from .status import ForsunStatus, forsun_status
from .store.store import Store

log = logging.getLogger("forsun")

# Due plans are read, rescheduled and dispatched in batches of this size, yielding to the
# IOLoop between batches: 100,000 plans due in one second never freeze request handling.
FIRE_BATCH = 500
FIRST_FIRE_BATCH = 100


class Forsun:
    def __init__(self, settings: Any, store: Store, status: ForsunStatus = forsun_status,
                 runner: Optional[ActionRunner] = None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self.store = store
        self.status = status
        self.tz: tzinfo = crontime.resolve_timezone(settings.get("TIMEZONE"))
        self.runner = runner or ActionRunner(settings, status, store)
        self.action_policy = ActionPolicy.from_settings(settings)  # ALLOWED_ACTIONS
        self.max_plans = int(settings.get("MAX_PLANS") or 0)

    # -- requests ---------------------------------------------------------------------------

    async def create(self, key: str, second: int, minute: int = -1, hour: int = -1,
                     day: int = -1, month: int = -1, week: int = -1, action: str = "shell",
                     params: Optional[Dict[str, str]] = None, count: int = 0) -> Plan:
        """Creates (or replaces) a fixed-time plan; the Thrift ``create`` call."""
        plan = Plan.build(key, False, second, minute, hour, day, month, week, count, action,
                          params, now=int(self.clock()), tz=self.tz, created_time=self.clock())
        return await self.create_plan(plan)

    async def create_timeout(self, key: str, second: int, minute: int = -1, hour: int = -1,
                             day: int = -1, month: int = -1, week: int = -1, count: int = 1,
                             action: str = "shell",
                             params: Optional[Dict[str, str]] = None) -> Plan:
        """Creates (or replaces) a delay plan; the Thrift ``createTimeout`` call."""
        plan = Plan.build(key, True, second, minute, hour, day, month, week, count, action,
                          params, now=int(self.clock()), tz=self.tz, created_time=self.clock())
        return await self.create_plan(plan)

    def check_plan(self, plan: Plan) -> None:
        """What a built plan must pass before it is stored (its action exists, 1006).

        Separate from :meth:`create_plan` so a request creating several plans can check
        them all before storing the first.
        """
        if not actions.has_action(plan.action):
            raise UnknownActionError("unknown action %r; known actions: %s"
                                     % (plan.action, ", ".join(actions.get_action_names())))
        self.action_policy.check(plan.action)

    async def create_plan(self, plan: Plan) -> Plan:
        """Stores a validated plan, replacing (and cancelling) any plan with the same key."""
        self.check_plan(plan)
        if self.max_plans and self.status.plan_count >= self.max_plans:
            await self._check_room(plan.key)
        old = await self._store_call(self.store.put_plan(plan), "create", StorePlanError,
                                     "storing plan %s" % plan.key)
        if plan.is_time_out:
            self.status.create_timeouted_count += 1
        else:
            self.status.created_count += 1
        if old is None:
            self.status.plan_count += 1
        return plan

    async def _check_room(self, key: str) -> None:
        """MAX_PLANS: a new key is refused (1004) while the store holds max_plans plans;
        replacing a plan is allowed. The count is re-read before refusing."""
        if await self._read(self.store.has_plan(key)):
            return
        self.status.plan_count = await self.count_plans()
        if self.status.plan_count >= self.max_plans:
            raise StorePlanError("the server holds %d plans, its limit (MAX_PLANS = %d): "
                                 "remove plans or raise max_plans; replacing an existing "
                                 "key still works" % (self.status.plan_count, self.max_plans))

    async def remove_plan(self, key: str) -> Plan:
        plan = await self._store_call(self.store.take_plan(key), "remove", RemovePlanError,
                                      "removing plan %s" % key)
        if plan is None:
            raise NotFoundPlanError("plan %r not found" % key)
        self.status.removed_count += 1
        self.status.plan_count -= 1
        return plan

    async def get_plan(self, key: str) -> Plan:
        plan = await self._read(self.store.get_plan(key))
        if plan is None:
            raise NotFoundPlanError("plan %r not found" % key)
        return plan

    async def get_keys(self, prefix: str = "") -> List[str]:
        return list(await self._read(self.store.get_plan_keys(prefix or "")))

    async def get_time_plans(self, ts: int) -> List[Plan]:
        """The plans due at second ``ts``; ``getTime``/``getCurrent``."""
        keys = list(dict.fromkeys(await self._read(self.store.get_time_plans(ts))))
        plans = await self._read(self.store.get_plans(keys))
        return [plan for plan in plans if plan is not None and plan.next_time == ts]

    async def count_plans(self) -> int:
        count = await self._read(self.store.count_plans())
        return self.status.plan_count if count is None else count

    async def _read(self, awaitable: Any) -> Any:
        return await self._store_call(awaitable, "read", StorePlanError, "reading the store")

    async def _store_call(self, awaitable: Any, operation: str, error: type,
                          what: str) -> Any:
        """Awaits a store call; any failure is counted and answered with ``error``'s code
        (1004, or 1005 when removing) and a message saying what failed."""
        try:
            return await awaitable
        except (StorePlanError, RemovePlanError):  # the store's own failure (Redis away)
            self.status.store_error(operation)
            raise
        except ForsunError:
            raise
        except Exception as e:
            self.status.store_error(operation)
            log.error("%s failed: %s", what, e)
            raise error("%s failed: %s" % (what, e)) from e

    # -- firing -----------------------------------------------------------------------------

    async def fire_second(self, ts: int, redo_fired: bool = False) -> int:
        """Fires every plan due at ``ts``; returns how many fired.

        Each due plan gets last_timeout, current_count and its next fire (counted from the
        later of ``ts`` and now, so a late or caught-up second does not cause a burst of
        repeats), is rescheduled or removed, then its action starts. A store failure
        raises, and the timer handles ``ts`` again later: nothing is skipped.
        ``redo_fired``: also dispatch plans already rescheduled for ``ts`` (by a node that
        died while firing it), without rescheduling them again.
        """
        status = self.status
        status.timeout_handling_count += 1
        try:
            keys = list(dict.fromkeys(await self.store.get_time_plans(ts)))
            after = max(ts, int(self.clock()))
            fired = 0
            start = 0
            while start < len(keys):
                if start:
                    await asyncio.sleep(0)
                # a small first batch, so the first actions start a few ms after the boundary
                size = FIRST_FIRE_BATCH if not start else FIRE_BATCH
                fired += await self._fire_batch(ts, keys[start:start + size], after, redo_fired)
                start += size
            await self.store.delete_time_plans(ts)
            status.timeout_handled_count += 1
            return fired
        finally:
            status.timeout_handling_count -= 1

    async def _fire_batch(self, ts: int, keys: List[str], after: int,
                          redo_fired: bool = False) -> int:
        rescheduled: List[Plan] = []
        finished: List[str] = []
        due: List[Plan] = []
        redone: List[Plan] = []
        for plan in await self.store.get_plans(keys):
            if plan is None:
                continue
            if plan.next_time != ts:
                if redo_fired and plan.last_timeout == ts:
                    redone.append(plan)
                continue  # removed, replaced or rescheduled since it was indexed
            plan.last_timeout = ts
            if plan.current_count < I16_MAX:
                plan.current_count += 1
            if plan.is_time_out and (plan.count <= 0 or plan.current_count < plan.count):
                next_time = after + plan.interval()  # compute_next_time's delay case, inline
            else:
                next_time = plan.compute_next_time(after, self.tz)
            if next_time is None or next_time > I32_MAX:
                finished.append(plan.key)
            else:
                plan.next_time = next_time
                rescheduled.append(plan)
            due.append(plan)
        for plan in redone:
            self.runner.run(ts, plan)
        if not due:
            return len(redone)
        await self.store.commit_fired(ts, rescheduled, finished)
        self.status.plan_count -= len(finished)
        for plan in due:
            self.runner.run(ts, plan)
        return len(due) + len(redone)
