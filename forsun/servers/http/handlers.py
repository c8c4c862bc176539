"""The routes of SPEC section 3; each translates a request into core calls and back.

No scheduling happens here: plans are built by ``Plan.build`` (shared with Thrift) and
created, read and removed by the core. A plan travels as ``Plan.to_dict()``.
"""

import time

from ...error import ForsunError, InvalidArgumentError
from ...metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, render as render_metrics
from .base import BaseHandler
from .bodies import query_text, query_timestamp
from .creates import create_from_body
from .openapi import document


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
        """Creates the plan(s) of the body (see :func:`creates.create_from_body`): all are
        validated before the first is stored."""
        data = await create_from_body(self.forsun, self.request.headers.get("Content-Type", ""),
                                      bytes(self.body), is_time_out)
        self.answer_encoded(data)


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
