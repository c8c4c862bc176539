"""A custom store brought by an extension: plans in dicts, only the 0.1.x basic methods.

Written the way 0.1.x stores were (Tornado ``gen.coroutine`` methods) and keeping plans
serialised, so nothing it returns aliases what the core holds. Everything else (batch
methods, statuses, catch-up) comes from the defaults of :class:`forsun.store.store.Store`.
"""

import logging
from typing import Dict, List, Optional, Set

from tornado import gen

from forsun.extension import Extension
from forsun.plan import Plan
from forsun.store.store import Store

log = logging.getLogger("forsun.dict_store")


class DictStore(Store):
    name = "dict"

    def __init__(self, settings=None, *args, **kwargs):
        super().__init__(settings, *args, **kwargs)
        self.current_time = 0
        self.plans: Dict[str, bytes] = {}
        self.time_plans: Dict[int, Set[str]] = {}

    @gen.coroutine
    def init(self):
        log.info("dict store init")

    @gen.coroutine
    def uninit(self):
        log.info("dict store uninit with %d plans", len(self.plans))

    @gen.coroutine
    def get_current(self) -> int:
        return self.current_time

    @gen.coroutine
    def set_current(self, current_time: int) -> None:
        self.current_time = current_time

    @gen.coroutine
    def get_plan(self, key: str) -> Optional[Plan]:
        data = self.plans.get(key)
        return Plan.loads(data) if data is not None else None

    @gen.coroutine
    def set_plan(self, plan: Plan) -> None:
        self.plans[plan.key] = plan.dumps()

    @gen.coroutine
    def remove_plan(self, key: str) -> None:
        self.plans.pop(key, None)

    @gen.coroutine
    def add_time_plan(self, next_time: int, key: str) -> None:
        self.time_plans.setdefault(next_time, set()).add(key)

    @gen.coroutine
    def remove_time_plan(self, next_time: int, key: str) -> None:
        self.time_plans.get(next_time, set()).discard(key)

    @gen.coroutine
    def get_time_plans(self, ts: int) -> List[str]:
        return sorted(self.time_plans.get(ts, ()))

    @gen.coroutine
    def delete_time_plans(self, ts: int) -> None:
        self.time_plans.pop(ts, None)

    @gen.coroutine
    def get_plan_keys(self, prefix: str = "") -> List[str]:
        return [key for key in self.plans if key.startswith(prefix)]


class DictStoreExtension(Extension):
    name = "dict-store"

    def register(self):
        self.register_store("dict", DictStore)
