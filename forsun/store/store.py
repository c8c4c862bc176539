"""The Store contract: what the core needs from wherever plans live.

Store authors (extensions registering a store with ``register_store``) implement the basic
methods, which are those of forsun 0.1.x so existing custom stores keep working. The core
calls the batch methods further down; their default implementations are built on the
basic ones, and built-in stores override them where one round trip can do the work of many.

Write the methods as ``async def``, Tornado ``gen.coroutine`` (as 0.1.x stores did) or plain
functions: a subclass's plain contract methods are wrapped into coroutines when the class
is defined, so the core can await every method the same way. A store keeps two things:

- the plans, by key: :class:`forsun.plan.Plan` objects. Keep them serialised
  (``plan.dumps()`` / ``Plan.loads(data)`` give the 0.1.x msgpack map) or copy them: the
  core changes the plans it gets back before it stores them again.
- the time index: for each second, the keys of the plans due then. It may hold stale or
  repeated keys (the core checks each plan's ``next_time`` before firing it), so a store
  never needs a transaction to keep a plan and its index entry in step.

A store is built as ``cls(settings)`` when forsund starts, gets :meth:`Store.init` once the
IOLoop runs and :meth:`Store.uninit` at a clean stop. An exception from any method is a store
failure: a request gets error 1004 (1005 when removing), and a second being fired is tried
again a second later, so nothing is skipped. A minimal complete store is
``tests/extensions/dict_store.py``; docs/extensions.md has more.
"""

import functools
import inspect
from typing import Any, Callable, Iterable, List, Optional, Tuple

from ..plan import Plan
from ..utils import maybe_await

# The methods the core awaits; a subclass may write any of them as a plain function.
CONTRACT_METHODS = (
    "init", "uninit", "get_current", "set_current", "get_plan", "set_plan", "remove_plan",
    "has_plan", "add_time_plan", "remove_time_plan", "get_time_plans", "delete_time_plans",
    "get_time_plan", "set_time_plan", "get_plan_keys", "count_plans", "get_plans",
    "put_plan", "put_plans", "take_plan", "commit_fired", "set_status", "set_statuses",
    "due_seconds",
)


def _as_coroutine(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await maybe_await(method(*args, **kwargs))
    return call


class Store:
    """Base class for stores. ``settings`` is the daemon's :class:`forsun.config.Settings`."""

    name = ""
    #: The service's :class:`forsun.status.ForsunStatus`, set before :meth:`init` (None in
    #: a store used on its own). See :meth:`report_error`.
    status: Any = None

    def __init__(self, settings=None, *args, **kwargs):
        self.settings = settings

    def report_error(self, operation: str) -> None:
        """Counts a persistence failure the store handles itself (a failed background
        write, say) into ``forsun_store_errors_total{operation}``. Failures that reach the
        core as exceptions are counted there."""
        if self.status is not None:
            self.status.store_error(operation)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in CONTRACT_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not inspect.iscoroutinefunction(method):
                setattr(cls, name, _as_coroutine(method))

    # -- life cycle ------------------------------------------------------------------------

    async def init(self) -> None:
        """Called once the IOLoop runs, before the servers accept requests."""

    async def uninit(self) -> None:
        """Called at a clean stop; flush everything here."""

    # -- basic methods (the 0.1.x contract) --------------------------------------------------

    async def get_current(self) -> int:
        """The last second the timer handled, 0 if none: the timer catches up from here."""
        raise NotImplementedError()

    async def set_current(self, current_time: int) -> None:
        """Records that every second up to ``current_time`` has been handled."""
        raise NotImplementedError()

    async def get_plan(self, key: str) -> Optional[Plan]:
        """The plan stored under ``key``, or None (not an exception) when there is none."""
        raise NotImplementedError()

    async def set_plan(self, plan: Plan) -> None:
        """Stores the plan under ``plan.key``, replacing what was there."""
        raise NotImplementedError()

    async def remove_plan(self, key: str) -> None:
        """Forgets the plan under ``key``; a missing key is not an error."""
        raise NotImplementedError()

    async def has_plan(self, key: str) -> bool:
        return (await self.get_plan(key)) is not None

    async def add_time_plan(self, next_time: int, key: str) -> None:
        """Adds ``key`` to the plans due at second ``next_time``."""
        raise NotImplementedError()

    async def remove_time_plan(self, next_time: int, key: str) -> None:
        """Takes ``key`` out of second ``next_time``; a missing entry is not an error."""
        raise NotImplementedError()

    async def get_time_plans(self, ts: int) -> List[str]:
        """Keys due at second ``ts`` (may contain stale or repeated keys)."""
        raise NotImplementedError()

    async def delete_time_plans(self, ts: int) -> None:
        """Forgets second ``ts`` once it has been handled."""
        raise NotImplementedError()

    async def get_time_plan(self, next_time: int, key: str) -> int:
        """0.1.x status lookup; stores that keep the status inside the plan may leave it."""
        return 0

    async def set_time_plan(self, next_time: int, key: str, status: int) -> None:
        return None

    async def get_plan_keys(self, prefix: str = "") -> List[str]:
        """Keys of all stored plans starting with ``prefix`` ("" = all), in any order."""
        raise NotImplementedError()

    # -- batch methods the core calls (defaults built on the basic ones) ---------------------

    async def count_plans(self) -> Optional[int]:
        """How many plans are held, or None when the store cannot tell cheaply."""
        return None

    async def get_plans(self, keys: List[str]) -> List[Optional[Plan]]:
        return [await self.get_plan(key) for key in keys]

    async def put_plan(self, plan: Plan) -> Optional[Plan]:
        """Creates or replaces the plan with its time-index entry; returns the replaced one.

        Replacing cancels the old plan's pending fire: its time-index entry goes, and
        even a stale entry left behind no longer matches the new plan's next_time.
        """
        old = await self.get_plan(plan.key)
        if old is not None and old.next_time != plan.next_time:
            await self.remove_time_plan(old.next_time, plan.key)
        await self.set_plan(plan)
        await self.add_time_plan(plan.next_time, plan.key)
        return old

    async def put_plans(self, plans: List[Plan]) -> List[Optional[Plan]]:
        """:meth:`put_plan` for each plan, in order; returns the replaced ones (None for a
        new key). Bulk HTTP bodies create thousands of plans through it: a store that can
        write many in one round trip overrides it."""
        return [await self.put_plan(plan) for plan in plans]

    async def take_plan(self, key: str) -> Optional[Plan]:
        """Removes the plan and its time-index entry; returns it, or None if absent."""
        old = await self.get_plan(key)
        if old is None:
            return None
        await self.remove_time_plan(old.next_time, key)
        await self.remove_plan(key)
        return old

    async def commit_fired(self, ts: int, rescheduled: List[Plan], finished: List[str]) -> None:
        """Records one batch of fires of second ``ts``.

        ``rescheduled`` plans carry their new next_time, last_timeout and current_count;
        ``finished`` plans fired for the last time and are removed.
        """
        for plan in rescheduled:
            await self.set_plan(plan)
            await self.add_time_plan(plan.next_time, plan.key)
        for key in finished:
            await self.remove_plan(key)

    async def set_status(self, key: str, ts: int, status: int) -> None:
        """Records the outcome of the fire of ``key`` at ``ts`` (1 ok, -1 failed).

        Ignored when the plan is gone or has been replaced or fired again since.
        """
        await self.set_time_plan(ts, key, status)
        plan = await self.get_plan(key)
        if plan is not None and plan.last_timeout == ts and plan.status != status:
            plan.status = status
            await self.set_plan(plan)

    async def set_statuses(self, statuses: List[Tuple[str, int, int]]) -> None:
        """:meth:`set_status` for each ``(key, ts, status)``, in order. The runner saves
        the outcomes of a busy second's fires through it: a store that can write many in
        one go overrides it."""
        for key, ts, status in statuses:
            await self.set_status(key, ts, status)

    async def due_seconds(self, first: int, last: int) -> Iterable[int]:
        """The seconds in [first, last] that may have plans due, in order.

        The timer asks this when catching up after a restart; a store that can list its
        non-empty seconds saves walking each second of a long outage.
        """
        return range(first, last + 1)
