"""The Thrift ``Forsun`` service: IDL calls mapped onto the core, plans onto ForsunPlan.

The server decodes each call and awaits the method of the same name here with the IDL
arguments in the IDL's order (``create`` and ``createTimeout`` are the core's own methods),
or :meth:`ForsunHandler.call_many` for a pipelined run of creates; a
:class:`forsun.error.ForsunError` becomes ``ForsunPlanError``.

Plans go back as they are: a :class:`~forsun.plan.Plan` has every attribute of the Thrift
``ForsunPlan`` struct (and ``created_time``, which the struct has not and the encoder skips),
and the server's encoder reads a returned struct by attribute. Only a plan whose params are
not a plain dict (a custom store's mapping) is copied into a ``ForsunPlan``.
"""

import inspect
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ...error import ForsunError
from ...forsun import Forsun
from ...plan import Plan
from ...thriftapi.ttypes import ForsunPlan


def to_thrift(plan: Plan) -> Any:
    """The plan as the encoder can write it as a ``ForsunPlan``: the plan itself when its
    params are a dict (the C encoder writes only dicts as maps), else a ForsunPlan copy."""
    if plan.params.__class__ is dict:
        return plan
    return ForsunPlan(is_time_out=plan.is_time_out, key=plan.key, second=plan.second,
                      minute=plan.minute, hour=plan.hour, day=plan.day, month=plan.month,
                      week=plan.week, next_time=plan.next_time, status=plan.status,
                      count=plan.count, current_count=plan.current_count,
                      last_timeout=plan.last_timeout, action=plan.action,
                      params=dict(plan.params))


class ForsunHandler:
    def __init__(self, forsun: Forsun, info: Callable[[], Any]):
        self.forsun = forsun
        self._info = info
        # The busiest calls go straight to the core, one coroutine less per call, when its
        # method takes the IDL's arguments in the IDL's order; the plans it builds hold
        # their params in a dict (Plan.build), so they go on the wire as they are.
        for name, core_method in (("create", forsun.create),
                                  ("createTimeout", forsun.create_timeout)):
            direct = _direct(core_method, getattr(ForsunHandler, name))
            if direct is not None:
                setattr(self, name, direct)
        #: The methods :meth:`call_many` takes: the server hands it runs of these calls.
        self.batched = frozenset(("create", "createTimeout"))

    async def call_many(self, calls: List[Tuple[str, tuple]]) -> List[Any]:
        """Answers consecutive ``create``/``createTimeout`` calls (name, IDL arguments) of one
        connection together, as :meth:`Forsun.create`/:meth:`Forsun.create_timeout` would one
        by one: each plan is built and checked on its own (its error is its own), then the
        valid ones are stored in order with one store call (``Forsun.create_plans``, as for
        HTTP crontab bodies). Returns, for each call, the plan or the exception it failed
        with. The server hands it the pipelined runs of these calls (a client sending many
        creates without waiting for each reply): a plan costs about half as much CPU so.
        """
        forsun = self.forsun
        now = forsun.clock()
        today = int(now)
        tz = forsun.tz
        build = Plan.build
        checked = set()  # actions that passed Forsun.check_action
        outcomes: List[Any] = [None] * len(calls)
        plans: List[Plan] = []
        slots: List[int] = []  # outcomes index of each of plans
        for i, (name, args) in enumerate(calls):
            try:
                if name == "createTimeout":
                    key, second, minute, hour, day, month, week, count, action, params = args
                    plan = build(key, True, second, minute, hour, day, month, week, count,
                                 action, params, now=today, tz=tz, created_time=now)
                else:
                    key, second, minute, hour, day, month, week, action, params = args
                    plan = build(key, False, second, minute, hour, day, month, week, 0,
                                 action, params, now=today, tz=tz, created_time=now)
                if plan.action not in checked:
                    forsun.check_action(plan.action)
                    checked.add(plan.action)
            except Exception as e:
                outcomes[i] = e
                continue
            plans.append(plan)
            slots.append(i)
        start = 0
        while start < len(plans):  # as create_plan one by one, in order
            try:
                await forsun.create_plans(plans[start:])
            except Exception as e:
                # The plans before the failed one were stored; the ones after it are tried
                # again, as they would have been one by one.
                stored = getattr(e, "stored", 0) if isinstance(e, ForsunError) else 0
                stored = min(max(stored, 0), len(plans) - start - 1)
                for j in range(start, start + stored):
                    outcomes[slots[j]] = plans[j]
                outcomes[slots[start + stored]] = e
                start += stored + 1
                continue
            for j in range(start, len(plans)):
                outcomes[slots[j]] = plans[j]
            break
        return outcomes

    async def ping(self) -> int:
        return 0

    async def create(self, key: str, second: int, minute: int = -1, hour: int = -1,
                     day: int = -1, month: int = -1, week: int = -1, action: str = "shell",
                     params: Dict[str, str] = None) -> Any:
        return await self.forsun.create(key, second, minute, hour, day, month, week, action,
                                        params)

    async def createTimeout(self, key: str, second: int, minute: int = -1, hour: int = -1,
                            day: int = -1, month: int = -1, week: int = -1, count: int = 1,
                            action: str = "shell", params: Dict[str, str] = None) -> Any:
        return await self.forsun.create_timeout(key, second, minute, hour, day, month, week,
                                                count, action, params)

    async def remove(self, key: str) -> Any:
        return to_thrift(await self.forsun.remove_plan(key))

    async def get(self, key: str) -> Any:
        return to_thrift(await self.forsun.get_plan(key))

    async def getCurrent(self) -> List[Any]:
        return await self.getTime(int(time.time()))

    async def getTime(self, timestamp: int) -> List[Any]:
        return [to_thrift(plan) for plan in await self.forsun.get_time_plans(timestamp)]

    async def getKeys(self, prefix: str) -> List[str]:
        return await self.forsun.get_keys(prefix or "")

    async def forsun_call(self, key: str, ts: int, params: Dict[str, str]) -> None:
        """Another forsun's thrift action calls this; a plain server has nothing to do."""
        return None

    async def info(self) -> Dict[str, str]:
        return await self._info()


def _direct(core_method: Callable, handler_method: Callable) -> Optional[Callable]:
    """``core_method`` when it takes the handler method's parameters first, in the same
    order and with the same defaults (so the server may call it instead), else None."""
    try:
        core = list(inspect.signature(core_method).parameters.values())
        wanted: Sequence[inspect.Parameter] = list(
            inspect.signature(handler_method).parameters.values())[1:]  # without self
    except (TypeError, ValueError):
        return None
    if not inspect.iscoroutinefunction(core_method) or len(core) < len(wanted):
        return None
    for have, want in zip(core, wanted):
        if have.name != want.name or have.default != want.default or \
                have.kind not in (have.POSITIONAL_ONLY, have.POSITIONAL_OR_KEYWORD):
            return None
    if any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
           for p in core[len(wanted):]):
        return None
    return core_method
