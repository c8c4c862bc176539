"""The Thrift ``Forsun`` service: IDL calls mapped onto the core, plans onto ForsunPlan.

The server decodes each call and awaits the method of the same name here with the IDL
argument names; a :class:`forsun.error.ForsunError` becomes ``ForsunPlanError``.
"""

import time
from typing import Any, Callable, Dict, List

from ...forsun import Forsun
from ...plan import Plan
from ...thriftapi.ttypes import ForsunPlan


def to_thrift(plan: Plan) -> ForsunPlan:
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

    async def ping(self) -> int:
        return 0

    async def create(self, key: str, second: int, minute: int = -1, hour: int = -1,
                     day: int = -1, month: int = -1, week: int = -1, action: str = "shell",
                     params: Dict[str, str] = None) -> ForsunPlan:
        plan = await self.forsun.create(key, second, minute, hour, day, month, week, action,
                                        params)
        return to_thrift(plan)

    async def createTimeout(self, key: str, second: int, minute: int = -1, hour: int = -1,
                            day: int = -1, month: int = -1, week: int = -1, count: int = 1,
                            action: str = "shell", params: Dict[str, str] = None) -> ForsunPlan:
        plan = await self.forsun.create_timeout(key, second, minute, hour, day, month, week,
                                                count, action, params)
        return to_thrift(plan)

    async def remove(self, key: str) -> ForsunPlan:
        return to_thrift(await self.forsun.remove_plan(key))

    async def get(self, key: str) -> ForsunPlan:
        return to_thrift(await self.forsun.get_plan(key))

    async def getCurrent(self) -> List[ForsunPlan]:
        return await self.getTime(int(time.time()))

    async def getTime(self, timestamp: int) -> List[ForsunPlan]:
        return [to_thrift(plan) for plan in await self.forsun.get_time_plans(timestamp)]

    async def getKeys(self, prefix: str) -> List[str]:
        return await self.forsun.get_keys(prefix or "")

    async def forsun_call(self, key: str, ts: int, params: Dict[str, str]) -> None:
        """Another forsun's thrift action calls this; a plain server has nothing to do."""
        return None

    async def info(self) -> Dict[str, str]:
        return await self._info()
