"""The redis action against private redis-server processes."""

import asyncio
import signal
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


def test_texts_sharing_a_quoted_head_pack_like_the_whole_text(monkeypatch):
    monkeypatch.setattr(redis_driver, "_parsed", type(redis_driver._parsed)())
    monkeypatch.setattr(redis_driver, "_heads", type(redis_driver._heads)())
    texts = ['EVAL "return redis.call(\'INCR\', KEYS[1])" 1 k%d' % n for n in range(3)] + [
        "SET a 'x y' b", "SET a 'x y' b;GET a", "SET a \\' b", "x \\\" b", "SET 'a'b c",
        "a 'b'", "RPUSH q 'a' \\ b", "SET a 'x' ", "SET a 'x'  b\tc ", "BLPOP 'q' 1",
        "'CONFIG GET' 'maxmemory' x", "SET a 'é' ü"]
    for text in texts * 2:  # the second time from the caches
        whole = redis_driver._pack_commands(redis_driver.split_commands(text))
        assert redis_driver._parse(text) == whole, text
    assert redis_driver._heads  # the head path was taken
    for text in ["SET a 'x\" b", "SET a \"x' b"]:
        with pytest.raises(ExecuteActionError, match="cannot be parsed"):
            redis_driver._parse(text)


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


# -- pipelining: fires of one target that arrive together share one write ----------------

async def gather_fires(actions):
    """Starts every fire's execute() as its own task at once, as the runner does."""
    return await asyncio.gather(*[asyncio.ensure_future(action.execute())
                                  for action in actions], return_exceptions=True)


async def test_thousands_of_fires_at_once_all_land_on_few_connections(redis_server,
                                                                      action_settings,
                                                                      action_pools):
    results = await gather_fires([redis_action(redis_server.port, max_connections="2",
                                               command="LPUSH q v%d" % n)
                                  for n in range(2000)])
    assert results == [None] * 2000
    assert connected_clients(redis_server) <= 2
    values = redis_server.client().lrange("q", 0, -1)
    assert sorted(values) == sorted(b"v%d" % n for n in range(2000))


async def test_an_error_reply_fails_only_its_own_fire(redis_server, action_settings,
                                                      action_pools):
    redis_server.client().set("text", "not a list")
    commands = ["RPUSH q %d" % n for n in range(200)]
    commands[50] = "RPUSH text x"  # WRONGTYPE
    commands[120] = "NOSUCHCMD x"
    results = await gather_fires([redis_action(redis_server.port, command=command)
                                  for command in commands])
    failed = {n: result for n, result in enumerate(results) if result is not None}
    assert sorted(failed) == [50, 120]
    assert isinstance(failed[50], ExecuteActionError) and "WRONGTYPE" in str(failed[50])
    assert isinstance(failed[120], ExecuteActionError) and "unknown command" in str(failed[120])
    values = redis_server.client().lrange("q", 0, -1)
    assert sorted(map(int, values)) == [n for n in range(200) if n not in (50, 120)]


async def test_a_fire_with_several_commands_keeps_its_order_among_others(redis_server,
                                                                         action_settings,
                                                                         action_pools):
    actions = [redis_action(redis_server.port, command="INCR hits") for _ in range(300)]
    actions.insert(100, redis_action(redis_server.port,
                                     command="RPUSH m 1;RPUSH m 2;NOSUCHCMD;RPUSH m 3"))
    actions.insert(200, redis_action(redis_server.port,
                                     command="RPUSH n a;RPUSH n b;EXPIRE n 300;RPUSH n c"))
    results = await gather_fires(actions)
    assert isinstance(results[100], ExecuteActionError)
    assert "unknown command" in str(results[100])
    assert [n for n, result in enumerate(results) if result is not None] == [100]
    client = redis_server.client()
    assert client.lrange("m", 0, -1) == [b"1", b"2"]  # stopped at its first error
    assert client.lrange("n", 0, -1) == [b"a", b"b", b"c"]
    assert 0 < client.ttl("n") <= 300
    assert client.get("hits") == b"300"


async def test_a_redis_that_dies_mid_batch_retries_that_batch(tmp_path, action_settings,
                                                              action_pools):
    server = RedisServer(str(tmp_path / "redis-dies")).start()
    try:
        await redis_action(server.port, command="PING").execute()  # a pooled connection
        target = next(iter(redis_driver._targets._targets.values()))
        server.process.send_signal(signal.SIGSTOP)  # it reads nothing and answers nothing
        fires = [asyncio.ensure_future(redis_action(server.port, command="LPUSH q %d" % n)
                                       .execute()) for n in range(50)]
        # the fires queued their commands and a writer wrote them all as one batch
        await until(lambda: target._writers and not target._starting and not target._pending)
        assert not any(fire.done() for fire in fires)
        server.kill()  # SIGKILL works on a stopped process
        results = await asyncio.gather(*fires, return_exceptions=True)
        assert all(isinstance(result, ActionExecuteRetry) for result in results), results
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, server.start)  # same port: reconnected
        await redis_action(server.port, command="LPUSH q again").execute()
        assert server.client().lrange("q", 0, -1) == [b"again"]
    finally:
        server.kill()


async def test_parsed_commands_are_cached_by_text_and_bounded(redis_server, action_settings,
                                                              action_pools, monkeypatch):
    monkeypatch.setattr(redis_driver, "PARSE_CACHE_SIZE", 10)
    monkeypatch.setattr(redis_driver, "_parsed", type(redis_driver._parsed)())
    for n in range(25):
        await redis_action(redis_server.port, command="SADD s %d" % (n % 15)).execute()
    assert len(redis_driver._parsed) == 10
    assert redis_server.client().scard("s") == 15


async def test_blocking_commands_do_not_hold_up_other_fires(redis_server, action_settings,
                                                            action_pools):
    blocked = asyncio.ensure_future(
        redis_action(redis_server.port, command="BLPOP wakeup 10").execute())
    results = await gather_fires([redis_action(redis_server.port, command="INCR n")
                                  for _ in range(20)])
    assert results == [None] * 20 and not blocked.done()
    redis_server.client().rpush("wakeup", "x")
    await blocked
    assert redis_server.client().get("n") == b"20"


async def test_a_busy_seconds_fires_are_handed_over_in_lists(redis_server, make_runner):
    """The runner gives the redis action a second's fires in lists (execute_batch); each
    fire still gets its own outcome."""
    runner = make_runner(ACTION_RETRY_DELAY_SECONDS=0.05)
    commands = {"b%04d" % n: "RPUSH q %d" % n for n in range(1200)}
    commands["b0010"] = "NOSUCHCMD x"
    commands["b0020"] = "RPUSH q 'unclosed"
    commands["b0030"] = "RPUSH m 1;RPUSH m 2"
    commands["b0040"] = "SELECT 2;RPUSH q2 x"  # not pipelined
    runner.runner.run_all(int(time.time()), [
        plan(key, "redis", port=str(redis_server.port), command=command)
        for key, command in commands.items()])
    outcomes = {key: await runner.outcome(key) for key in commands}
    assert {key for key, outcome in outcomes.items() if outcome != 1} == {"b0010", "b0020"}
    assert outcomes["b0010"] == outcomes["b0020"] == -1
    assert runner.status.action_retried_count == 0
    client = redis_server.client()
    assert client.llen("q") == 1200 - 4 and client.lrange("m", 0, -1) == [b"1", b"2"]
    assert redis_server.client(2).lrange("q2", 0, -1) == [b"x"]


async def test_fires_prepared_ahead_find_a_connection_open(redis_server, action_settings,
                                                           action_pools):
    """prepare_batch (the runner calls it when a second is prepared ahead) opens a
    connection to each target before the fires are due, and runs none of them."""
    fires = [redis_action(redis_server.port, command="RPUSH early %d" % n) for n in range(50)]
    assert connected_clients(redis_server) == 0
    RedisAction.prepare_batch(fires)
    await until(lambda: connected_clients(redis_server) == 1)
    assert redis_server.client().llen("early") == 0
    assert await RedisAction.execute_batch(fires) == [None] * 50
    assert redis_server.client().llen("early") == 50
    assert connected_clients(redis_server) == 1  # the batch used the connection opened ahead
