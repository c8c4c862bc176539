"""The core: creating, replacing, removing, listing and firing plans (SPEC section 1).

Servers translate wire formats into calls here; the timer calls :meth:`Forsun.fire_second`
for each second to handle. The core talks to the store only through the Store contract and
hands due plans to the ActionRunner without waiting for their actions.
"""

import asyncio
import gc
import logging
import time
from datetime import tzinfo
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import action as actions
from . import crontime
from .action.policy import ActionPolicy
from .action.runner import REPORT_DELAY, ActionRunner
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
# created (waiting for a gate), from up to PREPARE_LEAD_SECONDS ahead (once the previous
# second's statuses are written) until PREPARE_STOP_SECONDS before it; at the second only
# what changed meanwhile is redone. Up to PREPARE_MAX_PLANS plans, of which at most
# PREPARE_MAX_SINGLE of actions that run a task per fire (no execute_batch). Needs a store
# with ``plan_tokens`` (the mem store).
PREPARE_LEAD_SECONDS = 0.9
PREPARE_STOP_SECONDS = 0.02
PREPARE_MAX_PLANS = 200_000
PREPARE_MAX_SINGLE = 2_000
# Prepared fires committed before their gates open together: a second of a thousand plans
# is committed in a few ms, then its actions start at once.
PREPARED_OPEN_GROUP = 1000
# A second with more plans than this is prepared and fired with the cyclic GC held: its full
# collections scan every live object, and a busy second keeps hundreds of thousands alive
# for a moment (measured: 20-50 ms pauses, each a stall of the IOLoop). The fire path makes
# no cyclic garbage to speak of; what there is gets collected after the second.
GC_HOLD_PLANS = 10_000
GC_RELEASE_DELAY = 1.0
GC_HOLD_MAX_SECONDS = 30.0  # busy seconds back to back: collections run again after this


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
        self._collector_held = False  # the cyclic GC was disabled by _hold_collector
        self._collector_release: Any = None  # the timer that lets it go
        self._collector_held_since = 0.0

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
        timeouts = [plan.is_time_out for plan in plans].count(True)  # counted in C
        status.create_timeouted_count += timeouts
        status.created_count += len(plans) - timeouts
        status.plan_count += list(olds).count(None)

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
        """The keys starting with ``prefix``, for ``getKeys``, ``/v1/keys`` and ``ls``.

        Trailing ``*``, space, tab and newline are stripped first, as 0.1.x's stores did
        (``prefix.rstrip("\\n\\t *")``): scripts call ``ls *`` and ``getKeys("order_*")``.
        Stripped here, once, so every interface and every store agree.
        """
        prefix = (prefix or "").rstrip("\n\t *")
        return list(await self._read(self.store.get_plan_keys(prefix)))

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
            if len(keys) > GC_HOLD_PLANS:
                self._hold_collector(True)
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
            self._hold_collector(False)
            status.timeout_handling_count -= 1

    def _hold_collector(self, hold: bool) -> None:
        """Holds (or lets go) the cyclic GC's automatic collections: see GC_HOLD_PLANS.

        Let go :data:`GC_RELEASE_DELAY` later: the first collection scans every object
        made during the hold that is still alive, and right after a busy second that is
        still its last fires and their reports (measured: 45 ms twice)."""
        if self._collector_release is not None:
            self._collector_release.cancel()
            self._collector_release = None
        if hold and self._collector_held and \
                time.monotonic() - self._collector_held_since > GC_HOLD_MAX_SECONDS:
            self._release_collector()  # busy for long: garbage cycles must go at some point
        elif hold and not self._collector_held:
            self._collector_held = gc.isenabled()
            self._collector_held_since = time.monotonic()
            gc.disable()
        elif not hold and self._collector_held:
            self._collector_release = asyncio.get_running_loop().call_later(
                GC_RELEASE_DELAY, self._release_collector)

    def _release_collector(self) -> None:
        self._collector_release = None
        self._collector_held = False
        gc.enable()

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
        self._hold_collector(False)
        if self._collector_release is not None:  # at once
            self._collector_release.cancel()
            self._release_collector()

    def _schedule_prepare(self, ts: int) -> None:
        """Prepares second ``ts`` ahead of it (see :data:`PREPARE_LEAD_SECONDS`), if the
        store can tell later whether a plan changed meanwhile (``plan_tokens``)."""
        if getattr(self.store, "plan_tokens", None) is None or \
                self._prepare_handle is not None or not self._preparing:
            return
        now = self.clock()
        # after the statuses of the fires that just ended are written (they change plans)
        start_at = max(ts - PREPARE_LEAD_SECONDS, now + 2 * REPORT_DELAY)
        if start_at < ts - PREPARE_STOP_SECONDS:
            self._prepare_handle = asyncio.get_running_loop().call_later(
                start_at - now, self._start_prepare, ts)

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
        keys = list(await store.get_time_plans(ts))[:PREPARE_MAX_PLANS]
        # a store may list a key twice: deduplicated chunk by chunk, as one pass over
        # 100,000 keys holds the IOLoop for 25-35 ms
        seen: Set[str] = set()
        if len(keys) > GC_HOLD_PLANS:
            self._hold_collector(True)  # let go when the second is fired or dropped
        chunks: List[Tuple[List[Plan], List[Any], Set[str], Any]] = []
        prepared = _Prepared(ts, chunks)
        singles = 0  # fires prepared with a task each
        stop_at = ts - PREPARE_STOP_SECONDS
        start = 0
        try:
            while start < len(keys):
                if start:
                    await asyncio.sleep(0)  # the chunks are checked again at ts anyway
                if self.clock() >= stop_at or self._prepared is not None or \
                        not self._preparing:
                    break  # what is prepared so far is kept; the rest fires the usual way
                size = FIRST_FIRE_BATCH if not start else FIRE_BATCH
                chunk_keys = [key for key in dict.fromkeys(keys[start:start + size])
                              if key not in seen]
                seen.update(chunk_keys)
                start += size
                plans = await store.get_plans(chunk_keys)  # the mem store: without yielding
                tokens = store.plan_tokens(chunk_keys)
                due: List[Plan] = []
                due_tokens: List[Any] = []
                finished: Set[str] = set()  # fired for the last time: removed at commit
                for plan, token in zip(plans, tokens):
                    if plan is None or plan.next_time != ts:
                        continue
                    if not self.runner.takes_batches(plan.action):
                        if singles >= PREPARE_MAX_SINGLE:
                            continue
                        singles += 1
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
            self._hold_collector(False)
            raise
        if not chunks:
            self._hold_collector(False)
            return
        if self.clock() >= ts or self._prepared is not None or not self._preparing:
            self._drop_prepared(prepared)
            self._hold_collector(False)
            return
        self._prepared = prepared
        # not fired by then (the timer stopped, lost the lead, or is behind): dropped
        prepared.expiry = asyncio.get_running_loop().call_later(
            ts + 2 - self.clock(), self._expire_prepared, prepared)

    def _expire_prepared(self, prepared: _Prepared) -> None:
        if self._prepared is prepared:
            self._prepared = None
            self._hold_collector(False)
        self._drop_prepared(prepared)

    def _drop_prepared(self, prepared: _Prepared) -> None:
        if prepared.expiry is not None:
            prepared.expiry.cancel()
        for _, _, _, gate in prepared.chunks:
            self.runner.open_gate(gate, None)

    async def _fire_prepared(self, prepared: _Prepared) -> Tuple[int, Set[str]]:
        """Commits the prepared plans that did not change since they were read and opens
        their gates, the first (small) chunk alone, then :data:`PREPARED_OPEN_GROUP` fires
        at a time (a yield to the IOLoop after each group, so their actions start and their
        I/O goes on, without a turn of the loop for each chunk); returns (how many
        fired, the keys handled). The changed ones are left to the usual path."""
        if prepared.expiry is not None:
            prepared.expiry.cancel()
        fired = 0
        handled: Set[str] = set()
        # taken from the preparation as they are committed: a chunk's plans are freed once
        # its actions ran, not all at once when the second ends (a 100,000-plan second
        # would stall the IOLoop for tens of ms freeing them)
        chunks = prepared.chunks
        committed: List[Tuple[Any, Set[str]]] = []  # gates to open, with the keys dropped
        group = 0
        opened_none = True  # the first (small) chunk opens alone: its actions start first
        try:
            while chunks:
                due, tokens, last, gate = chunks[0]
                current = self.store.plan_tokens([plan.key for plan in due])
                changed = {plan.key for plan, token, now in zip(due, tokens, current)
                           if now is not token}
                rescheduled = [plan for plan in due
                               if plan.key not in changed and plan.key not in last]
                finished = [plan.key for plan in due
                            if plan.key not in changed and plan.key in last]
                await self.store.commit_fired(prepared.ts, rescheduled, finished)
                chunks.pop(0)
                committed.append((gate, changed))
                self.status.plan_count -= len(finished)
                fired += len(due) - len(changed)
                group += len(due)
                handled.update(plan.key for plan in due if plan.key not in changed)
                if group >= PREPARED_OPEN_GROUP or not chunks or opened_none:
                    for gate, changed in committed:
                        self.runner.open_gate(gate, changed)
                    if chunks:
                        # the opened fires' actions start; after the first group, two turns:
                        # one to start them, one for what they start (a redis batch's
                        # writer) to send, before the loop is busy with the next group
                        for _ in range(2 if opened_none else 1):
                            await asyncio.sleep(0)
                    committed, group, opened_none = [], 0, False
        except BaseException:
            for gate, changed in committed:  # committed: they fire
                self.runner.open_gate(gate, changed)
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
