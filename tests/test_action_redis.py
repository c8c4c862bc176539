"""The redis action against private redis-server processes."""

import asyncio
import time

import pytest

from conftest import free_port
from forsun.action.action import ExecuteActionError
from forsun.action.drivers import redis as redis_driver
from forsun.action.drivers.redis import RedisAction, split_commands
from forsun.error import ActionExecuteRetry
from services import RedisServer
from test_action_helpers import (action_pools, action_settings, black_hole,  # noqa: F401
                                 make_runner, plan, until)


def redis_action(server_port: int, **params: str) -> RedisAction:
    params = dict(params, port=str(server_port))
    return RedisAction(1700000000, plan(action="redis", **params), "redis", params)


def connected_clients(server) -> int:
    return int(server.client().info("clients")["connected_clients"]) - 1  # minus ourselves


def test_split_commands_keeps_quoted_separators():
    assert split_commands("SET b 1 EX 300;LPUSH q 'a b;c' \"d\\\"e;f\" g\\;h ;; ") == [
        ["SET", "b", "1", "EX", "300"], ["LPUSH", "q", "a b;c", 'd"e;f', "g;h"]]
    with pytest.raises(ExecuteActionError, match="cannot be parsed"):
        split_commands("SET a 'open")


async def test_commands_with_quotes_run_in_order_on_the_selected_db(redis_server,
                                                                    action_settings,
                                                                    action_pools):
    await redis_action(redis_server.port, selected_db="3",
                       command="SET b 1 EX 300;LPUSH q 'a b;c' \"d e\";RPUSH q last;"
                               "HSET h f 'x y'").execute()
    db3, db0 = redis_server.client(3), redis_server.client(0)
    assert db3.get("b") == b"1" and 0 < db3.ttl("b") <= 300
    assert db3.lrange("q", 0, -1) == [b"d e", b"a b;c", b"last"]
    assert db3.hget("h", "f") == b"x y"
    assert db0.dbsize() == 0


async def test_password_protected_redis(tmp_path, make_runner):
    server = RedisServer(str(tmp_path / "redis-pw"), password="pa ss;word").start()
    try:
        runner = make_runner(ACTION_RETRY_DELAY_SECONDS=0.05)
        runner.fire("pw:ok", "redis", {"port": str(server.port), "password": "pa ss;word",
                                       "command": "SET k v"})
        runner.fire("pw:none", "redis", {"port": str(server.port), "command": "SET k2 v"})
        runner.fire("pw:bad", "redis", {"port": str(server.port), "password": "nope",
                                        "command": "SET k3 v"})
        assert await runner.outcome("pw:ok") == 1
        assert await runner.outcome("pw:none") == -1
        assert await runner.outcome("pw:bad") == -1
        assert runner.status.action_retried_count == 0  # a wrong password is not retried
        assert server.client().get("k") == b"v" and server.client().get("k2") is None
    finally:
        server.kill()


async def test_error_replies_are_final_and_stop_the_list(redis_server, action_settings,
                                                         action_pools):
    with pytest.raises(ExecuteActionError, match="unknown command"):
        await redis_action(redis_server.port, command="SET a 1;NOSUCHCMD x;SET c 1").execute()
    with pytest.raises(ExecuteActionError, match="WRONGTYPE"):
        await redis_action(redis_server.port, command="LPUSH a x").execute()
    with pytest.raises(ExecuteActionError, match="missing required param 'command'"):
        await redis_action(redis_server.port, command="").execute()
    client = redis_server.client()
    assert client.get("a") == b"1" and client.get("c") is None


async def test_refused_and_unanswered_connections_are_retried(action_settings, action_pools,
                                                              black_hole):
    with pytest.raises(ActionExecuteRetry, match="refused|Connect call failed"):
        await redis_action(free_port(), command="PING").execute()
    started = time.monotonic()
    with pytest.raises(ActionExecuteRetry, match="[Tt]imeout"):
        await redis_action(black_hole.port, command="PING", timeout="0.3",
                           connect_timeout="0.3").execute()
    assert time.monotonic() - started < 2


async def test_pool_is_reused_survives_a_restart_and_closes_when_idle(tmp_path,
                                                                      action_settings,
                                                                      action_pools):
    action_settings.set("ACTION_IDLE_SECONDS", 0.3)
    server = RedisServer(str(tmp_path / "redis-restart")).start()
    try:
        for i in range(3):
            await redis_action(server.port, command="INCR n").execute()
        assert connected_clients(server) == 1  # one pooled connection, reused
        loop = asyncio.get_running_loop()  # the IOLoop keeps running, as in forsund
        await loop.run_in_executor(None, server.kill)
        await loop.run_in_executor(None, server.start)  # same port: the pooled connection is dead
        await redis_action(server.port, command="INCR n").execute()
        assert server.client().get("n") == b"1"
        await until(lambda: connected_clients(server) == 0)
        assert len(redis_driver._targets) == 0
    finally:
        server.kill()


async def test_state_changing_commands_do_not_leak_into_the_next_fire(redis_server,
                                                                      action_settings,
                                                                      action_pools):
    await redis_action(redis_server.port, max_connections="1",
                       command="SELECT 5;SET moved 1").execute()
    await redis_action(redis_server.port, max_connections="1", command="SET here 1").execute()
    assert redis_server.client(5).get("moved") == b"1"
    assert redis_server.client(0).get("here") == b"1"
    assert redis_server.client(5).get("here") is None
