"""The leader lease of TIMER nodes on one Redis: one leader, hand-over, fencing, takeover."""

import asyncio
import os
import signal
import time

import pytest

from forsun.store.drivers.redis_lease import LeaderLease, NotLeaderError
from test_store_redis import delay_plan, open_store
from test_store_redis_e2e import redis_args, timed_fires


async def test_one_timer_store_leads_the_other_follows_and_a_clean_stop_hands_over(
        redis_server):
    client = redis_server.client()
    due = int(time.time()) + 100
    async with open_store(redis_server) as leader:
        async with open_store(redis_server) as follower:
            assert leader.leadership.role == "leader" and follower.leadership.role == "follower"
            assert client.get("forsun:0:leader").decode() == leader.leadership.token
            for call in (follower.commit_fired(due, [delay_plan("x", due + 10)], []),
                         follower.set_current(due), follower.delete_time_plans(due)):
                with pytest.raises(NotLeaderError):
                    await call
            await follower.put_plan(delay_plan("req", due))  # requests are served by every node
            assert (await leader.get_plan("req")).next_time == due
            await leader.set_current(due)
            await leader.uninit()  # a clean stop hands the lease back at once
            assert await follower.leadership.refresh()
            await follower.set_current(due + 1)
            assert await follower.get_current() == due + 1
    async with open_store(redis_server, mode="AGENT") as agent:
        assert agent.leadership is None


async def test_a_leader_that_stops_renewing_stops_firing_before_another_takes_over(
        redis_server):
    async with open_store(redis_server, mode="AGENT") as store:
        first = LeaderLease(store.redis, "forsun:0:leader", ttl=1.0)
        second = LeaderLease(store.redis, "forsun:0:leader", ttl=1.0)
        assert await first.refresh() and not await second.refresh()
        died = time.monotonic()  # "first" never renews again, like a killed process
        while not await second.refresh():
            assert time.monotonic() - died < 3
            await asyncio.sleep(0.02)
        took_over = time.monotonic() - died
        assert not first.is_leader() and second.is_leader()
        assert took_over <= 1.2
        await asyncio.wait_for(second.wait_leader(), 0.1)


async def test_a_stale_leader_is_fenced_by_redis_itself(redis_server):
    client = redis_server.client()
    due = int(time.time()) + 100
    async with open_store(redis_server) as store:
        plan = delay_plan("p", due)
        await store.put_plan(plan)
        client.set("forsun:0:leader", "another-node", px=3000)  # its lease ran out meanwhile
        assert store.leadership.is_leader()  # its own view has not caught up yet...
        rescheduled = delay_plan("p", due + 10, last_timeout=due, current_count=1)
        with pytest.raises(NotLeaderError):  # ...but Redis refuses its fire writes
            await store.commit_fired(due, [rescheduled], [])
        with pytest.raises(NotLeaderError):
            await store.set_current(due)
        assert await store.get_plan("p") == plan and await store.get_current() == 0


def test_when_the_leader_is_killed_another_timer_node_takes_over_and_fires_once(
        redis_server, forsund_factory, fifo_sink):
    nodes = [forsund_factory(*redis_args(redis_server)) for _ in range(2)]
    client = redis_server.client()
    leader_pid = int(client.get("forsun:0:leader").decode().split(":")[-2])
    leader, follower = sorted(nodes, key=lambda node: node.process.pid != leader_pid)
    api = follower.client()
    plans = {"p%d" % i: api.create_timeout("p%d" % i, i, params={
        "cmd": fifo_sink.command("p%d" % i)}).next_time for i in range(1, 9)}
    fifo_sink.wait(1, timeout=5)
    time.sleep(0.3)  # mid-second: the leader is idle
    os.kill(leader.process.pid, signal.SIGKILL)
    killed = time.time()
    follower.wait_log("now the firing leader", timeout=8)
    took_over = time.time() - killed
    fifo_sink.wait(len(plans), timeout=10)
    assert fifo_sink.quiet_for(1.2) == []
    fires = timed_fires(fifo_sink.lines)
    assert {key: [ts for ts, _ in fires[key]] for key in plans} == {
        key: [ts] for key, ts in plans.items()}  # every plan once, none twice
    late = max(wall - ts for key in plans for ts, wall in fires[key])
    assert took_over < 5 and late < 6, (took_over, late)
    print("the follower took over %.1f s after the kill; the latest fire was %.1f s late"
          % (took_over, late))
