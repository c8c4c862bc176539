"""End to end: real forsund processes over a real redis-server (issue 7 acceptance).

The outage test stops Redis for OUTAGE_SECONDS (4 s instead of the issue's 10 s, to keep the
suite fast: what matters is that several due seconds fall inside the outage).
"""

import collections
import time
from typing import Dict, List, Tuple

import pytest

from forsun.thriftapi.ttypes import ForsunPlanError
from services import RedisServer
from test_store_redis import FAIL_FAST_BOUND, write_old_plan

OUTAGE_SECONDS = 4.0


def redis_args(server: RedisServer) -> List[str]:
    return ["--driver", "redis", "--driver-redis-port", str(server.port)]


def fires_by_tag(lines: List[str]) -> Dict[str, List[int]]:
    """tag -> the due seconds it fired for, in the order the fires happened."""
    return {tag: [ts for ts, _ in fires] for tag, fires in timed_fires(lines).items()}


def timed_fires(lines: List[str]) -> Dict[str, List[Tuple[int, float]]]:
    """tag -> (due second, wall time of the fire) of each fire."""
    fires: Dict[str, List[Tuple[int, float]]] = collections.defaultdict(list)
    for line in lines:
        tag, ts, wall = line.split()
        fires[tag].append((int(ts), float(wall)))
    return fires


def test_forsund_fires_the_plans_an_old_server_left_in_redis(redis_server, forsund_factory,
                                                            fifo_sink):
    client = redis_server.client()
    now = int(time.time())
    client.set("forsun:0:current:time", str(now - 120))  # the old server stopped 2 min ago
    write_old_plan(client, "old:missed", now - 100, params={"cmd": fifo_sink.command("missed")})
    write_old_plan(client, "old:soon", now + 3, params={"cmd": fifo_sink.command("soon")})
    write_old_plan(client, "old:later", now + 3600, count=0)
    daemon = forsund_factory(*redis_args(redis_server))
    api = daemon.client()
    assert {"old:later", "old:soon"} <= set(api.get_keys("old:"))  # missed may be fired already
    later = api.get("old:later")
    assert (later.next_time, later.is_time_out, later.params) == (now + 3600, True, {"cmd": "ls"})
    assert [p.key for p in api.get_time(now + 3600)] == ["old:later"]
    fifo_sink.wait(2, timeout=10)
    fifo_sink.quiet_for(1.2)
    assert fires_by_tag(fifo_sink.lines) == {"missed": [now - 100], "soon": [now + 3]}
    assert api.get_keys("old:") == ["old:later"]


def test_redis_outage_answers_1004_and_fires_the_gap_once_after(tmp_path, forsund_factory,
                                                                 fifo_sink):
    server = RedisServer(str(tmp_path / "redis"), persist=True).start()
    try:
        daemon = forsund_factory(*redis_args(server))
        api = daemon.client()
        gap = {"gap%d" % i: api.create_timeout("gap%d" % i, i, params={
            "cmd": fifo_sink.command("gap%d" % i)}).next_time for i in (1, 2, 3)}
        every = api.create_timeout("every", 1, count=0,
                                   params={"cmd": fifo_sink.command("every")})
        server.stop()
        log_start = len(daemon.lines)
        slowest = check_requests_fail_fast(api, time.monotonic() + OUTAGE_SECONDS)
        restarted = time.time()
        server.start()

        fifo_sink.wait(5, timeout=10)  # the three gap plans and at least two "every"
        fifo_sink.quiet_for(1.5)
        api.remove("every")
        fires = timed_fires(fifo_sink.lines)
        assert {key: [ts for ts, _ in fires[key]] for key in gap} == {
            key: [ts] for key, ts in gap.items()}  # each exactly once
        assert any(wall >= restarted for key in gap for _, wall in fires[key])  # late ones
        every_ts = [ts for ts, _ in fires["every"]]
        assert every_ts[0] == every.next_time and every_ts == sorted(set(every_ts))
        late = [ts for ts, wall in fires["every"] if wall >= restarted and ts < int(restarted)]
        assert len(late) == 1  # its due second in the gap fired once, no burst of repeats
        assert every_ts[-1] > restarted  # then it continues from the present
        assert api.get_keys("") == []
        log = "\n".join(daemon.lines[log_start:])
        assert log.count("went away") == 1 and log.count("is back after") == 1, log
        print("requests while Redis was down took at most %.3f s" % slowest)
    finally:
        server.kill()


def check_requests_fail_fast(api, until: float) -> float:
    """Requests until ``until``: each answers 1004 promptly; ping and info keep working."""
    slowest = 0.0
    calls = [lambda: api.create_timeout("during", 5, params={"cmd": "true"}),
             lambda: api.get("gap1"), lambda: api.remove("gap1")]
    while time.monotonic() < until:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(ForsunPlanError) as error:
                call()
            slowest = max(slowest, time.monotonic() - started)
            assert error.value.code == 1004 and "unavailable" in error.value.message
        assert api.ping() == 0 and api.info()["current_store"] == "redis"
        time.sleep(0.3)
    assert slowest < FAIL_FAST_BOUND
    return slowest


def test_an_agent_node_creates_plans_that_the_timer_node_fires(redis_server, forsund_factory,
                                                               fifo_sink):
    timer = forsund_factory(*redis_args(redis_server))
    agent = forsund_factory(*redis_args(redis_server), "--server-mode", "AGENT")
    agent.wait_log("mode AGENT")
    plan = agent.client().create_timeout("via-agent", 2,
                                         params={"cmd": fifo_sink.command("agent")})
    assert timer.client().get("via-agent").next_time == plan.next_time
    assert agent.client().get_keys("via") == ["via-agent"]
    (tag, ts, _), = fifo_sink.wait(1, timeout=8)
    assert (tag, int(ts)) == ("agent", plan.next_time)
    assert fifo_sink.quiet_for(1.2) == []
    assert agent.client().info()["timeout_handled_count"] == "0"
    assert int(timer.client().info()["timeout_handled_count"]) > 0
    with pytest.raises(ForsunPlanError) as error:
        agent.client().get("via-agent")
    assert error.value.code == 1003


def test_forsund_starts_before_redis_and_fires_once_it_is_up(tmp_path, forsund_factory,
                                                              fifo_sink):
    server = RedisServer(str(tmp_path / "redis"))
    daemon = forsund_factory(*redis_args(server))
    api = daemon.client()
    with pytest.raises(ForsunPlanError) as error:
        api.create_timeout("early", 1, params={"cmd": "true"})
    assert error.value.code == 1004
    server.start()
    try:
        plan = api.create_timeout("first", 1, params={"cmd": fifo_sink.command("first")})
        (tag, ts, _), = fifo_sink.wait(1, timeout=6)
        assert (tag, int(ts)) == ("first", plan.next_time)
        daemon.wait_log("is back after")
    finally:
        server.kill()
