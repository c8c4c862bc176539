"""Shared fixtures and fakes of the action tests (imported by the test_action_* modules).

- ``action_settings``: a fresh Settings installed as ``forsun.config`` for the test, with
  ``action_settings.set(NAME, value)`` for overrides; the previous one is restored after.
- ``make_runner`` / ``runner``: an ActionRunner with its own counters and a FakeStore.
- ``action_pools``: after the test, every action's ``uninit()`` runs on the test's IOLoop, so
  no pool, client or thread outlives the loop it belongs to.
- :class:`FakeStore`: the one store method the ActionRunner calls; tests await a status.
- :class:`BlackHole`: a TCP server that accepts connections and never answers.
- :func:`until`: waits for a state nothing signals.
"""

import asyncio
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from forsun import action as actions
from forsun import config
from forsun.action.runner import ActionRunner
from forsun.plan import Plan
from forsun.status import ForsunStatus


@pytest.fixture
def action_settings():
    old = config.current()
    settings = config.use(config.Settings())
    yield settings
    config.use(old)


@pytest.fixture
def action_pools(io_loop):
    yield
    actions.load_builtin_actions()

    async def uninit_all() -> None:
        for cls in actions.registered_classes():
            result = cls.uninit()
            if result is not None:
                await result

    io_loop.run_sync(uninit_all, timeout=10)


class FakeStore:
    """Records ``set_status`` calls; ``wait(key)`` returns the status once it is set."""

    def __init__(self) -> None:
        self.statuses: Dict[str, List[Tuple[int, int, float]]] = {}
        self._waiters: Dict[str, List[asyncio.Future]] = {}

    async def set_status(self, key: str, ts: int, status: int) -> None:
        self.statuses.setdefault(key, []).append((ts, status, time.monotonic()))
        for waiter in self._waiters.pop(key, []):
            if not waiter.done():
                waiter.set_result(status)

    async def set_statuses(self, statuses: List[Tuple[str, int, int]]) -> None:
        for key, ts, status in statuses:
            await self.set_status(key, ts, status)

    async def wait(self, key: str, timeout: float = 10) -> int:
        if key in self.statuses:
            return self.statuses[key][-1][1]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        return await asyncio.wait_for(waiter, timeout)


class Runner:
    """An ActionRunner with its own counters and a FakeStore, for driving actions like the
    core does."""

    def __init__(self, settings: config.Settings):
        self.status = ForsunStatus()
        self.store = FakeStore()
        self.runner = ActionRunner(settings, self.status, self.store)

    def fire(self, key: str, action: str, params: Dict[str, str],
             ts: Optional[int] = None) -> Plan:
        plan = Plan(key, action=action, params=params)
        self.runner.run(int(time.time()) if ts is None else ts, plan)
        return plan

    async def outcome(self, key: str, timeout: float = 10) -> int:
        return await self.store.wait(key, timeout)

    async def stop(self) -> None:
        await self.runner.stop(grace=1)


@pytest.fixture
def make_runner(action_settings, action_pools, io_loop):
    """``make_runner(NAME=value, ...)``: sets those settings, then makes a Runner (the
    ActionRunner reads its retry policy and timeout when it is made)."""
    runners: List[Runner] = []

    def make(**settings: object) -> Runner:
        action_settings.update(settings)
        runners.append(Runner(action_settings))
        return runners[-1]

    yield make
    for made in runners:
        io_loop.run_sync(made.stop, timeout=10)


@pytest.fixture
def runner(make_runner):
    return make_runner()


class BlackHole:
    """Accepts TCP connections (from its own thread) and never sends a byte."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted: List[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def black_hole():
    hole = BlackHole()
    yield hole
    hole.close()


def plan(key: str = "plan:test", action: str = "shell", **params: str) -> Plan:
    return Plan(key, action=action, params=params)


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Waits for a state nothing signals (a server closing a connection, an idle timer having
    closed a pool), checking it every 20 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in %ss" % timeout
        await asyncio.sleep(0.02)
