"""A forsun extension whose ``celery`` action sends a Celery task when a plan fires.

Load it (this file's folder on the extension path)::

    forsund --extension-path examples --extension celery_extension.CeleryExtension

or in the conf file::

    [extension]
    path = /path/to/examples
    extensions = celery_extension.CeleryExtension

then create plans with action ``celery``, for instance every day at 03:00::

    forsun "set report 0 0 3 * * * celery \\
        'method=reports.daily;args=[\\"eu\\"];kwargs={\\"full\\":true}'"

Params of the action:

- ``method``: the task name as the worker registered it (required), e.g. ``tasks.add``;
- ``args``: the positional arguments, a JSON list (default ``[]``);
- ``kwargs``: the keyword arguments, a JSON object (default ``{}``);
- ``queue``: the queue to send to (default: Celery's routing, normally ``celery``);
- ``broker``: the broker URL (default: the ``CELERY_BROKER_URL`` setting).

Settings (environment variables of forsund): ``CELERY_BROKER_URL`` (default
``amqp://guest:guest@127.0.0.1:5672//``, a local RabbitMQ; ``redis://HOST:PORT/DB`` for
Redis) and ``CELERY_SEND_THREADS`` (4).

Why it is built this way:

- Celery's ``send_task`` is blocking (it connects, and retries a lost broker for about a
  second), so it runs in a small thread pool of its own: a slow broker delays only the
  celery action, never the timer or the servers on the IOLoop.
- Only the broker is configured, no result backend: the worker stores results in its own
  backend. A sender with a Redis backend would subscribe to the result channel of every
  task it sends and never read them, which grows without end in a long-running daemon.
- A broker that cannot be reached raises ``ActionExecuteRetry``, so forsun retries the
  send with its usual policy; a bad param (no method, args that are not a JSON list) is a
  final failure, since sending again cannot fix it.
- Each send is logged with the task id, which finds the result in the worker's backend.
"""

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from forsun import config
from forsun.action.action import Action
from forsun.error import ActionExecuteRetry
from forsun.extension import Extension

config.define("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//",
              "broker the celery action sends to unless a plan's broker param says another")
config.define("CELERY_SEND_THREADS", 4,
              "threads sending celery tasks, so a slow broker never blocks the IOLoop")

log = logging.getLogger("forsun.celery")


class CelerySender:
    """One Celery app per broker URL, and the threads that publish through them."""

    def __init__(self, threads: int):
        self.executor = ThreadPoolExecutor(max(1, threads), thread_name_prefix="forsun-celery")
        self.apps: Dict[str, Celery] = {}
        self.lock = threading.Lock()

    async def send(self, broker: str, name: str, args: List[Any], kwargs: Dict[str, Any],
                   options: Dict[str, Any]) -> str:
        """Sends the task from a pool thread; returns its id."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._send, broker, name, args,
                                          kwargs, options)

    def _send(self, broker: str, name: str, args: List[Any], kwargs: Dict[str, Any],
              options: Dict[str, Any]) -> str:
        return self._app(broker).send_task(name, args=args, kwargs=kwargs, **options).id

    def _app(self, broker: str) -> Celery:
        # Made in a pool thread, under the lock: setting up an app's producer pool imports
        # its transport, which takes a noticeable time the first time.
        with self.lock:
            app = self.apps.get(broker)
            if app is None:
                app = Celery("forsun", broker=broker, set_as_current=False)
                app.producer_pool  # noqa: B018 - set up once here, not racing in threads
                self.apps[broker] = app
            return app

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            for app in self.apps.values():
                app.close()
            self.apps.clear()


class CeleryAction(Action):
    """Sends the task named in ``method``; see the module doc for the params."""

    sender: Optional[CelerySender] = None  # set by CeleryExtension.init

    async def execute(self, *args: Any, **kwargs: Any) -> None:
        name = self.params.get("method", "").strip()
        if not name:
            raise ValueError("celery action needs the task name in param method")
        task_args = _json_param(self.params, "args", list)
        task_kwargs = _json_param(self.params, "kwargs", dict)
        broker = self.params.get("broker") or config.get("CELERY_BROKER_URL")
        options = {"queue": self.params["queue"]} if self.params.get("queue") else {}
        if self.sender is None:
            raise RuntimeError("the celery extension is not initialised")
        try:
            task_id = await self.sender.send(broker, name, task_args, task_kwargs, options)
        except (OperationalError, OSError) as e:
            raise ActionExecuteRetry("celery broker %s: %s"
                                     % (maybe_sanitize_url(broker), e)) from e
        log.info("celery task %s sent as %s for plan %s at %s", name, task_id, self.plan.key,
                 self.ts)


def _json_param(params: Dict[str, str], name: str, kind: type) -> Any:
    text = params.get(name, "").strip()
    if not text:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError("celery param %s is not JSON: %s" % (name, e)) from None
    if not isinstance(value, kind):
        raise ValueError("celery param %s must be a JSON %s, got %s"
                         % (name, "list" if kind is list else "object", type(value).__name__))
    return value


class CeleryExtension(Extension):
    name = "celery"

    def register(self) -> None:
        self.register_action("celery", CeleryAction)

    def init(self) -> None:
        CeleryAction.sender = CelerySender(int(config.get("CELERY_SEND_THREADS")))

    def uninit(self) -> None:
        sender, CeleryAction.sender = CeleryAction.sender, None
        if sender is not None:
            sender.close()
