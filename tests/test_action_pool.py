"""The shared pools and param helpers of the built-in actions, with fake connections."""

import asyncio
import itertools
import threading
from typing import List

import pytest

from forsun.action.action import ExecuteActionError
from forsun.action.params import integer, required, seconds, timeouts
from forsun.action.pool import AsyncPool, SharedTarget, Targets, ThreadPool
from forsun.error import ActionExecuteRetry
from test_action_helpers import action_settings, until  # noqa: F401


class Conn:
    numbers = itertools.count(1)

    def __init__(self) -> None:
        self.number = next(self.numbers)
        self.thread = threading.current_thread().name
        self.closed = False
        self.closed_in = ""
        self.broken = False

    def close(self) -> None:
        self.closed = True
        self.closed_in = threading.current_thread().name


class Opened(List[Conn]):
    """Every connection a pool opened, in order."""

    async def open_async(self) -> Conn:
        self.append(Conn())
        return self[-1]

    def open(self) -> Conn:
        self.append(Conn())
        return self[-1]


def async_pool(opened: Opened, size: int = 2, idle: float = 60) -> AsyncPool:
    return AsyncPool("fake 127.0.0.1:1", size, idle, opened.open_async, Conn.close,
                     lambda conn: not conn.broken)


def thread_pool(opened: Opened, size: int = 2, idle: float = 60) -> ThreadPool:
    return ThreadPool("fake 127.0.0.1:1", size, idle, opened.open, Conn.close,
                      lambda conn: not conn.broken)


async def test_async_pool_reuses_bounds_and_drops_after_errors():
    opened = Opened()
    pool = async_pool(opened)
    async with pool.connection() as first:
        pass
    async with pool.connection() as again:
        assert again is first
    with pytest.raises(RuntimeError):
        async with pool.connection() as failing:
            raise RuntimeError("call failed")
    assert failing.closed and len(opened) == 1

    in_use = 0
    most = 0

    async def call() -> None:
        nonlocal in_use, most
        async with pool.connection():
            in_use += 1
            most = max(most, in_use)
            await asyncio.sleep(0.01)
            in_use -= 1

    await asyncio.gather(*[call() for _ in range(10)])
    assert most == 2 and len(opened) == 3  # the failed one, then two for the burst
    for conn in opened[1:]:
        conn.broken = True  # e.g. the target closed them while idle
    async with pool.connection() as fresh:
        assert fresh is opened[3]
    assert sum(conn.closed for conn in opened[1:3]) == 1  # the one checked before reuse
    assert not opened[3].closed
    await pool.close()
    assert all(conn.closed for conn in opened)


async def test_async_pool_wait_for_a_slot_is_bounded():
    pool = async_pool(Opened(), size=1)
    async with pool.connection():
        with pytest.raises(ActionExecuteRetry, match="all 1 connections busy"):
            async with pool.connection(wait=0.05):
                pass
    async with pool.connection(wait=0.05):
        pass  # the slot came back


async def test_idle_connections_close_and_the_target_is_forgotten():
    targets: Targets[AsyncPool] = Targets()
    opened = Opened()
    pool = targets.get("t", lambda: async_pool(opened, idle=0.1))
    assert targets.get("t", lambda: async_pool(opened)) is pool
    async with pool.connection():
        pass
    await until(lambda: len(targets) == 0)
    assert opened[0].closed and pool.closed
    assert targets.get("t", lambda: async_pool(opened)) is not pool


async def test_thread_pool_runs_blocking_calls_off_the_loop_and_reuses_connections():
    opened = Opened()
    pool = thread_pool(opened)
    loop_thread = threading.current_thread().name
    first = await pool.run(lambda conn: (conn, threading.current_thread().name))
    second = await pool.run(lambda conn: conn)
    assert first[0] is second and first[1] != loop_thread and opened[0].thread != loop_thread

    def fail(conn: Conn) -> None:
        raise OSError("connection reset")

    with pytest.raises(OSError):
        await pool.run(fail)
    assert opened[0].closed and opened[0].closed_in != loop_thread
    third = await pool.run(lambda conn: conn)
    assert third is opened[1]
    await pool.close()
    assert opened[1].closed and opened[1].closed_in != loop_thread


async def test_thread_pool_cancelled_waiter_still_returns_the_connection():
    opened = Opened()
    pool = thread_pool(opened, size=1)
    release = threading.Event()
    loop = asyncio.get_running_loop()
    started = loop.create_future()

    def block(conn: Conn) -> bool:
        loop.call_soon_threadsafe(started.set_result, None)
        return release.wait(5)

    task = asyncio.ensure_future(pool.run(block))
    await started
    task.cancel()  # what the runner's timeout does; the thread keeps running
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await pool.run(lambda conn: conn) is opened[0]  # same slot and connection
    await pool.close()


async def test_thread_pool_idle_close_ends_its_threads():
    targets: Targets[ThreadPool] = Targets()
    opened = Opened()
    pool = targets.get("t", lambda: thread_pool(opened, idle=0.1))
    await asyncio.gather(*[pool.run(lambda conn: threading.Event().wait(0.02))
                           for _ in range(2)])
    workers = [t for t in threading.enumerate() if t.name.startswith("forsun-fake")]
    assert workers and len(opened) == 2
    await until(lambda: len(targets) == 0)
    await until(lambda: all(conn.closed for conn in opened))  # closed in a worker thread
    for worker in workers:
        worker.join(2)
        assert not worker.is_alive()


async def test_shared_target_closes_its_client_when_unused():
    closed = []

    async def close(client: str) -> None:
        closed.append(client)

    targets: Targets[SharedTarget] = Targets()
    target = targets.get("r", lambda: SharedTarget("fake", 0.1, "client", close))
    async with target.use() as client:
        assert client == "client"
        await asyncio.sleep(0.2)  # busy: never closed under a running fire
        assert closed == []
    await until(lambda: closed == ["client"])
    assert len(targets) == 0


def test_param_helpers(action_settings):
    params = {"url": " x ", "empty": " ", "port": "80", "bad": "8o", "t": "0.5", "zero": "0"}
    assert required(params, "url") == " x "
    assert required(params, "empty", allow_empty=True) == " "
    for name in ("missing", "empty"):
        with pytest.raises(ExecuteActionError, match="missing required param"):
            required(params, name)
    assert integer(params, "port", 1) == 80 and integer(params, "none", 7) == 7
    with pytest.raises(ExecuteActionError, match="'bad' must be an integer"):
        integer(params, "bad", 1)
    with pytest.raises(ExecuteActionError, match="between 1 and 10"):
        integer(params, "port", 1, 1, 10)
    assert seconds(params, "t", 3) == 0.5 and seconds(params, "none", 3) == 3.0
    with pytest.raises(ExecuteActionError, match="more than 0"):
        seconds(params, "zero", 1)
    action_settings.update({"ACTION_CONNECT_TIMEOUT": 2, "ACTION_TIMEOUT": 9})
    assert timeouts({}) == (2.0, 9.0)
    assert timeouts({"connect_timeout": "1", "timeout": "3"}) == (1.0, 3.0)
