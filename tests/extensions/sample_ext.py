"""Test extensions written as SPEC section 8 shows, one per way of writing ``execute``.

Each action appends one line ``STYLE TS KEY WORD`` to the file (or fifo) in its ``path``
param, so a test awaits the fire instead of sleeping, and sees ``self.ts``, ``self.plan``
and ``self.params`` as the action saw them. Without a ``word`` param they write the setting
``SAMPLE_WORD``, which this module defines as extensions do.
"""

import asyncio
import logging
import os
from typing import Dict, Tuple

from tornado import gen

from forsun import config
from forsun.action.action import Action
from forsun.error import ActionExecuteRetry
from forsun.extension import Extension
from forsun.status import forsun_status

log = logging.getLogger("forsun.sample_ext")

config.define("SAMPLE_WORD", "-", "what the sample actions write when a plan has no word param")


def record(action: Action, style: str) -> None:
    line = "%s %s %s %s\n" % (style, action.ts, action.plan.key,
                              action.params.get("word") or config.get("SAMPLE_WORD"))
    fd = os.open(action.params["path"], os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    forsun_status.inc("sample_fired_count")


class AsyncAction(Action):
    async def execute(self, *args, **kwargs):
        await asyncio.sleep(0.01)  # really suspends: the runner must await it
        record(self, "async")


class CoroutineAction(Action):
    @gen.coroutine
    def execute(self, *args, **kwargs):
        yield gen.sleep(0.01)
        record(self, "coroutine")


class PlainAction(Action):
    def execute(self, *args, **kwargs):
        record(self, "plain")


class FlakyAction(Action):
    """Asks for a retry until it has been tried ``fail`` + 1 times for the same fire."""

    attempts: Dict[Tuple[str, int], int] = {}

    async def execute(self, *args, **kwargs):
        key = (self.plan.key, self.ts)
        attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        if attempt <= int(self.params.get("fail", "2")):
            raise ActionExecuteRetry("not yet (attempt %d)" % attempt)
        record(self, "flaky%d" % attempt)


class AsyncExtension(Extension):
    name = "sample-async"

    def register(self):
        self.register_action("sample_async", AsyncAction)
        self.register_action("sample_flaky", FlakyAction)

    async def init(self):
        asyncio.get_running_loop()  # raises unless the loop runs
        log.info("sample-async init with the loop running")

    async def uninit(self):
        await asyncio.sleep(0)
        log.info("sample-async uninit")


class CoroutineExtension(Extension):
    name = "sample-coroutine"

    def register(self):
        self.register_action("sample_coroutine", CoroutineAction)

    @gen.coroutine
    def init(self):
        yield gen.moment
        log.info("sample-coroutine init")

    @gen.coroutine
    def uninit(self):
        yield gen.moment
        log.info("sample-coroutine uninit")


class PlainExtension(Extension):
    name = "sample-plain"

    def register(self):
        self.register_action("sample_plain", PlainAction)

    def init(self):
        asyncio.get_running_loop()
        log.info("sample-plain init")

    def uninit(self):
        log.info("sample-plain uninit")
