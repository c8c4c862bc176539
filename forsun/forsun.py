"""The core: creating, replacing, removing, listing and firing plans (SPEC section 1).

Servers translate wire formats into calls here; the timer calls :meth:`Forsun.fire_second`
for each second to handle. The core talks to the store only through the Store contract and
hands due plans to the ActionRunner without waiting for their actions.
"""

import asyncio
import logging
import time
from datetime import tzinfo
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

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
# Before a second is due, its plans are read, their next fire computed and their tasks
# created (waiting for a gate), this long ahead and for up to this many plans; at the second
# only what changed meanwhile is redone. Needs a store with ``plan_tokens`` (the mem store).
PREPARE_LEAD_SECONDS = 0.1
PREPARE_MAX_PLANS = 2000


class _Prepared:
    """Plans of second ``ts`` read and computed ahead, with their gated tasks."""

    __slots__ = ("ts", "chunks", "expiry")

    def __init__(self, ts: int, chunks: List[Tuple[List[Plan], List[Any], Set[str], Any]]):
        self.ts = ts
        # (due plans, their tokens, the keys fired for the last time, their gate), the first
        # chunk small
        self.chunks = chunks
        self.expiry: Any = None


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
        self._prepared: Optional[_Prepared] = None
        self._prepare_handle: Any = None
        self._preparing = True  # False once stopping

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
        self.check_action(plan.action)

    def check_action(self, action: str) -> None:
        """The whole of :meth:`check_plan`: it depends on the action alone, so a request
        creating thousands of plans checks each of its actions once."""
        if not actions.has_action(action):
            raise UnknownActionError("unknown action %r; known actions: %s"
                                     % (action, ", ".join(actions.get_action_names())))
        self.action_policy.check(action)

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

    async def create_plans(self, plans: List[Plan]) -> None:
        """Stores plans that passed :meth:`check_plan`, as :meth:`create_plan` would one by
        one, but with one store call (``put_plans``) for all: bulk bodies create thousands.

        With MAX_PLANS set, each plan is stored on its own so the limit is checked for every
        new key. A failure raises the error with ``stored`` set to how many of ``plans``
        were stored before it (a batch store call stores all or none).
        """
        if self.max_plans:
            for stored, plan in enumerate(plans):
                try:
                    await self.create_plan(plan)
                except ForsunError as e:
                    e.stored = stored  # type: ignore[attr-defined]
                    raise
            return
        try:
            olds = await self._store_call(self.store.put_plans(plans), "create",
                                          StorePlanError, "storing %d plans" % len(plans))
        except ForsunError as e:
            e.stored = 0  # type: ignore[attr-defined]
            raise
        status = self.status
        timeouts = sum(1 for plan in plans if plan.is_time_out)
        status.create_timeouted_count += timeouts
        status.created_count += len(plans) - timeouts
        status.plan_count += sum(1 for old in olds if old is None)

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
        prepared, self._prepared = self._prepared, None
        try:
            # repeated and stale keys are sorted out batch by batch (_fire_batch): a busy
            # second's first fires must not wait for a pass over all its keys
            keys = await self.store.get_time_plans(ts)
            keys = keys if isinstance(keys, list) else list(keys)
            after = max(ts, int(self.clock()))
            fired = 0
            done: Set[str] = set()
            if prepared is not None:
                if prepared.ts == ts and after == ts and not redo_fired:
                    fired, done = await self._fire_prepared(prepared)
                else:
                    self._drop_prepared(prepared)
            start = 0
            while start < len(keys):
                if start or fired:
                    await asyncio.sleep(0)
                # a small first batch, so the first actions start a few ms after the boundary
                size = FIRST_FIRE_BATCH if not start and not fired else FIRE_BATCH
                batch = keys[start:start + size]
                if done:
                    batch = [key for key in batch if key not in done]
                fired += await self._fire_batch(ts, batch, after, redo_fired)
                start += size
            await self.store.delete_time_plans(ts)
            status.timeout_handled_count += 1
            self._schedule_prepare(ts + 1)
            return fired
        finally:
            status.timeout_handling_count -= 1

    # -- preparing a second ahead of it ------------------------------------------------------

    def stop_preparing(self) -> None:
        """At a stop, once the timer stopped: no second is prepared any more, and the one
        prepared is dropped (its plans stay due; the next start fires them)."""
        if self._prepare_handle is not None:
            self._prepare_handle.cancel()
            self._prepare_handle = None
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            self._drop_prepared(prepared)

    def _schedule_prepare(self, ts: int) -> None:
        """Prepares second ``ts`` :data:`PREPARE_LEAD_SECONDS` before it is due, if the
        store can tell later whether a plan changed meanwhile (``plan_tokens``)."""
        if getattr(self.store, "plan_tokens", None) is None or \
                self._prepare_handle is not None or not self._preparing:
            return
        delay = ts - PREPARE_LEAD_SECONDS - self.clock()
        if delay > 0:
            self._prepare_handle = asyncio.get_running_loop().call_later(
                delay, self._start_prepare, ts)

    def _start_prepare(self, ts: int) -> None:
        self._prepare_handle = None
        task = asyncio.ensure_future(self._prepare(ts))
        task.add_done_callback(_log_failure)

    async def _prepare(self, ts: int) -> None:
        """Reads the plans due at ``ts``, computes their next fire and creates their tasks,
        which wait for :meth:`_fire_prepared` to open their gate at ``ts``."""
        if self._prepared is not None or self.clock() >= ts or not self._preparing:
            return
        store = self.store
        keys = list(dict.fromkeys(list(await store.get_time_plans(ts))[:PREPARE_MAX_PLANS]))
        chunks: List[Tuple[List[Plan], List[Any], Set[str], Any]] = []
        prepared = _Prepared(ts, chunks)
        start = 0
        try:
            while start < len(keys):
                if start:
                    await asyncio.sleep(0)  # the chunks are checked again at ts anyway
                if self.clock() >= ts or self._prepared is not None:
                    break
                size = FIRST_FIRE_BATCH if not start else FIRE_BATCH
                chunk_keys = keys[start:start + size]
                start += size
                plans = await store.get_plans(chunk_keys)  # the mem store: without yielding
                tokens = store.plan_tokens(chunk_keys)
                due: List[Plan] = []
                due_tokens: List[Any] = []
                finished: Set[str] = set()  # fired for the last time: removed at commit
                for plan, token in zip(plans, tokens):
                    if plan is None or plan.next_time != ts:
                        continue
                    if not self._advance(plan, ts, ts):
                        finished.add(plan.key)
                    due.append(plan)
                    due_tokens.append(token)
                if due:
                    gate = self.runner.new_gate()
                    chunks.append((due, due_tokens, finished, gate))
                    self.runner.run_all(ts, due, gate)
        except BaseException:
            self._drop_prepared(prepared)
            raise
        if not chunks:
            return
        if self.clock() >= ts or self._prepared is not None or not self._preparing:
            self._drop_prepared(prepared)
            return
        self._prepared = prepared
        # not fired by then (the timer stopped, lost the lead, or is behind): dropped
        prepared.expiry = asyncio.get_running_loop().call_later(
            ts + 2 - self.clock(), self._expire_prepared, prepared)

    def _expire_prepared(self, prepared: _Prepared) -> None:
        if self._prepared is prepared:
            self._prepared = None
        self._drop_prepared(prepared)

    def _drop_prepared(self, prepared: _Prepared) -> None:
        if prepared.expiry is not None:
            prepared.expiry.cancel()
        for _, _, _, gate in prepared.chunks:
            self.runner.open_gate(gate, None)

    async def _fire_prepared(self, prepared: _Prepared) -> Tuple[int, Set[str]]:
        """Commits the prepared plans that did not change since they were read and opens
        their gates, chunk by chunk; returns (how many fired, the keys handled). The
        changed ones are left to the usual path."""
        if prepared.expiry is not None:
            prepared.expiry.cancel()
        fired = 0
        handled: Set[str] = set()
        chunks = list(prepared.chunks)
        try:
            while chunks:
                due, tokens, last, gate = chunks.pop(0)
                if fired:
                    await asyncio.sleep(0)  # the opened chunk's actions start
                current = self.store.plan_tokens([plan.key for plan in due])
                changed = {plan.key for plan, token, now in zip(due, tokens, current)
                           if now is not token}
                rescheduled = [plan for plan in due
                               if plan.key not in changed and plan.key not in last]
                finished = [plan.key for plan in due
                            if plan.key not in changed and plan.key in last]
                await self.store.commit_fired(prepared.ts, rescheduled, finished)
                self.status.plan_count -= len(finished)
                self.runner.open_gate(gate, changed)
                fired += len(due) - len(changed)
                handled.update(plan.key for plan in due if plan.key not in changed)
        except BaseException:
            for _, _, _, gate in chunks:  # these fire the usual way when the second is retried
                self.runner.open_gate(gate, None)
            raise
        return fired, handled

    def _advance(self, plan: Plan, ts: int, after: int) -> bool:
        """Records the fire at ``ts`` in ``plan`` and computes its next one; False when
        it is finished (fired for the last time)."""
        plan.last_timeout = ts
        if plan.current_count < I16_MAX:
            plan.current_count += 1
        if plan.is_time_out and (plan.count <= 0 or plan.current_count < plan.count):
            next_time = after + plan.interval()  # compute_next_time's delay case, inline
        else:
            next_time = plan.compute_next_time(after, self.tz)
        if next_time is None or next_time > I32_MAX:
            return False
        plan.next_time = next_time
        return True

    async def _fire_batch(self, ts: int, keys: List[str], after: int,
                          redo_fired: bool = False) -> int:
        keys = list(dict.fromkeys(keys))  # a key twice in one batch would fire twice
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
            if self._advance(plan, ts, after):
                rescheduled.append(plan)
            else:
                finished.append(plan.key)
            due.append(plan)
        if redone:
            self.runner.run_all(ts, redone)
        if not due:
            return len(redone)
        await self.store.commit_fired(ts, rescheduled, finished)
        self.status.plan_count -= len(finished)
        self.runner.run_all(ts, due)
        return len(due) + len(redone)


def _log_failure(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("preparing a second ahead failed (it fires the usual way): %s",
                    task.exception())
