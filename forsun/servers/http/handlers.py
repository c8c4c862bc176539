"""The routes of SPEC section 3; each translates a request into core calls and back.

No scheduling happens here: plans are built by ``Plan.build`` (shared with Thrift) and
created, read and removed by the core. A plan travels as ``Plan.to_dict()``.
"""

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...error import ForsunError, InvalidArgumentError, StorePlanError
from ...metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, render as render_metrics
from ...plan import Plan
from .base import BaseHandler
from .bodies import (PlanArgs, crontab_plan_args, json_plan_args, line_context, query_text,
                     query_timestamp)
from .openapi import document

CRONTAB_TYPE = "application/crontab"


class PingHandler(BaseHandler):
    async def get(self) -> None:
        self.answer({})


class PlanHandler(BaseHandler):
    async def get(self) -> None:
        plan = await self.forsun.get_plan(self._key())
        self.answer(plan.to_dict())

    async def delete(self) -> None:
        plan = await self.forsun.remove_plan(self._key())
        self.answer(plan.to_dict())

    async def put(self) -> None:
        await self._create(is_time_out=True)

    async def post(self) -> None:
        await self._create(is_time_out=False)

    def _key(self) -> str:
        key = query_text(self.request.query_arguments, "key")
        if not key:
            raise InvalidArgumentError("key is required: %s /v1/plan?key=KEY"
                                       % self.request.method)
        return key

    async def _create(self, is_time_out: bool) -> None:
        """Creates the plan(s) of the body: all are validated before the first is stored.

        A JSON body is one plan, delay or fixed-time by the method. A crontab body is one
        plan a line, each a delay or fixed-time plan by its own syntax (``*/N`` fields), as
        in forsun 0.1.x; the answer is the plan, or the list of plans for several lines.
        """
        content_type = self.request.headers.get("Content-Type", "")
        entries: Sequence[Tuple[Optional[int], PlanArgs]]  # (line number, Plan.build args)
        if content_type.split(";")[0].strip().lower() == CRONTAB_TYPE:
            entries = crontab_plan_args(bytes(self.body))
        else:
            entries = [(None, dict(json_plan_args(bytes(self.body)), is_time_out=is_time_out))]
        now = time.time()
        plans = [(number, self._build(number, args, now)) for number, args in entries]
        created: List[Dict[str, Any]] = []
        for number, plan in plans:
            try:
                with line_context(number):
                    created.append((await self.forsun.create_plan(plan)).to_dict())
            except StorePlanError as e:
                if created:
                    e.message += " (the %d plan(s) of the lines before it were created)" \
                                 % len(created)
                raise
        self.answer(created[0] if len(created) == 1 else created)

    def _build(self, number: Optional[int], args: PlanArgs, now: float) -> Plan:
        with line_context(number):
            plan = Plan.build(**args, now=int(now), tz=self.forsun.tz, created_time=now)
            self.forsun.check_plan(plan)  # every line passes before the first is stored
        return plan


class TimeHandler(BaseHandler):
    async def get(self) -> None:
        now = int(time.time())
        timestamp = query_timestamp(self.request.query_arguments) or now
        plans = await self.forsun.get_time_plans(timestamp)
        self.answer({"current_timestamp": now, "plans": [plan.to_dict() for plan in plans]})


class KeysHandler(BaseHandler):
    async def get(self) -> None:
        prefix = query_text(self.request.query_arguments, "prefix") or ""
        self.answer(await self.forsun.get_keys(prefix))


class InfoHandler(BaseHandler):
    async def get(self) -> None:
        self.answer(await self.service.info())


class ExecutionsHandler(BaseHandler):
    """The execution history (forsun/history.py), newest first; ``key`` filters by plan,
    ``limit`` caps the answer."""

    async def get(self) -> None:
        arguments = self.request.query_arguments
        key = query_text(arguments, "key") or None
        limit_text = query_text(arguments, "limit")
        limit = None
        if limit_text:
            if not limit_text.isdigit() or not limit_text.isascii() or int(limit_text) < 1:
                raise InvalidArgumentError("limit must be a positive integer, got %r"
                                           % limit_text)
            limit = int(limit_text)
        history = self.service.status.history
        self.answer([execution.to_dict() for execution in history.list(key, limit)])


class MetricsHandler(BaseHandler):
    """Prometheus text format (forsun/metrics.py), bare like Prometheus expects."""

    async def get(self) -> None:
        try:
            self.service.status.plan_count = await self.forsun.count_plans()
        except ForsunError:
            pass  # the store is away (logged, counted): scrape the last known count
        self.set_header("Content-Type", METRICS_CONTENT_TYPE)
        self.finish(render_metrics(self.service.metrics))


class OpenAPIHandler(BaseHandler):
    """The API's OpenAPI document, bare (not in the envelope) as OpenAPI tools expect."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(document())


ROUTES = (
    ("/v1/ping", PingHandler),
    ("/v1/plan", PlanHandler),
    ("/v1/time", TimeHandler),
    ("/v1/keys", KeysHandler),
    ("/v1/info", InfoHandler),
    ("/v1/executions", ExecutionsHandler),
    ("/metrics", MetricsHandler),
    ("/v1/openapi.json", OpenAPIHandler),
)
