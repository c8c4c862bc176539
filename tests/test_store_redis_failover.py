"""Failover acceptance of issue 7: three TIMER nodes over one Redis, the leader SIGKILLed.

Three real forsund TIMER nodes share one redis-server (AOF on). 200 delay plans fire every
second (count 0) for about a minute; three times the leader (the node whose ``info`` says
``role: leader``) is killed with SIGKILL once the previous takeover has completed, and
restarted, so three nodes stay. The plans' action ``record`` (tests/extensions/record_ext.py)
appends ``KEY TS PID WALL`` to one file for every execution, so the test knows exactly which
(plan, due second) pairs ran, on which node and when. At the end the nodes are stopped
(followers first, so nobody takes over from the stopped leader) and an AGENT node, which
never fires, answers for the plans' final state. The test checks:

- every fire the store recorded was executed: for every plan the distinct seconds executed
  are exactly ``current_count`` many, start at its first due second and end at its
  ``last_timeout``;
- no due second is missing: consecutive seconds of a plan are 1 apart, except where the
  earlier one was fired late (SPEC section 1's catch-up: a missed second fires once, late,
  and the plan continues from the present: the next second is the one after the late
  fire's wall time). Such gaps are expected at each takeover; gaps elsewhere (the leader's
  loop late by a second, which the SPEC allows too) are counted and printed;
- one firing node at a time, and each kill was taken over within TAKEOVER_BOUND seconds
  (from the kill to the new leader's log line, and to its first executed fire);
- a (plan, second) executed twice was executed by a killed leader and then by the node that
  took over from it, for the last second the killed node executed or the one after (the
  second it was in the middle of). How many there were is printed.

Kills land at different points of a second: as soon as the leader has executed the first
fires of a new second (so it dies in the middle of firing it: the new leader dispatches that
second again, the only source of duplicates), and mid-second while the leader is idle.
"""

import collections
import datetime
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Tuple

from conftest import ROOT
from services import RedisServer

EXTENSIONS = os.path.join(ROOT, "tests", "extensions")
NODES = 3
PLANS = 200
RUN_SECONDS = 57              # from the plans' creation to the stop of the nodes
KILL_AT = (10.0, 24.0, 38.0)  # seconds after the plans' creation
# When each kill lands: FIRING (just after the leader executed its first fire of a new
# second) or a point of the wall-clock second (0.5: mid-second, the leader is idle).
FIRING = "firing"
KILL_WHEN = (FIRING, 0.5, FIRING)
TAKEOVER_BOUND = 5.0          # issue 7: another node takes over within 5 s
TAKEOVER_WAIT = 20.0          # how long to watch for a takeover before failing
CATCH_UP_SLACK = 2.0          # a late fire runs this soon after its second's handling began
LEADER_LINE = "this node is now the firing leader"


@dataclass(frozen=True)
class Fire:
    key: str
    ts: int
    pid: int
    wall: float


class FireLog:
    """The record action's file, read incrementally (complete lines only)."""

    def __init__(self, path: str):
        self.path = path
        self.fires: List[Fire] = []
        self._offset = 0
        self._partial = b""
        open(path, "ab").close()

    def poll(self) -> List[Fire]:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            key, ts, pid, wall = line.decode().split()
            self.fires.append(Fire(key, int(ts), int(pid), float(wall)))
        return self.fires


@dataclass
class Kill:
    pid: int
    wall: float
    new_pid: int = 0
    first_fire: float = 0.0  # wall time of the new leader's first executed fire
    log_takeover: float = 0.0  # wall time of the new leader's LEADER_LINE


def log_time(line: str) -> float:
    """The wall time of a forsund log line (``%(asctime)s`` is local time, ms precision)."""
    stamp = " ".join(line.split()[:2])
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def roles(nodes) -> Dict[str, List]:
    found: Dict[str, List] = collections.defaultdict(list)
    for node in nodes:
        with node.client() as api:
            found[api.info()["role"]].append(node)
    return found


def the_leader(nodes, timeout: float = 5.0):
    """The one node whose info says leader, the others followers.

    Retried briefly: a leader whose loop is stalled longer than its renewal margin (a loaded
    machine) reports follower until its next renewal.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = roles(nodes)
        if len(found["leader"]) == 1 and len(found["follower"]) == NODES - 1:
            return found["leader"][0]
        assert time.monotonic() < deadline, {
            role: [node.process.pid for node in members] for role, members in found.items()}
        time.sleep(0.1)


def sleep_until_wall_phase(phase: float) -> None:
    """Sleeps until the wall clock is ``phase`` into a second."""
    now = time.time()
    target = int(now) + phase
    time.sleep(target - now if target >= now else target + 1 - now)


def await_firing(fire_log: FireLog, pid: int) -> None:
    """Returns as soon as ``pid`` executed a fire of a second it had not fired before."""
    seen = max((fire.ts for fire in fire_log.poll()[-PLANS:] if fire.pid == pid), default=0)
    deadline = time.monotonic() + 5
    while not any(fire.pid == pid and fire.ts > seen for fire in fire_log.poll()[-PLANS:]):
        assert time.monotonic() < deadline, "the leader %d stopped firing" % pid
        time.sleep(0.001)  # a second's 200 fires take a few ms: land among them


def kill_leader_and_await_takeover(nodes, fire_log: FireLog, when) -> Kill:
    leader = the_leader(nodes)
    survivors = [node for node in nodes if node is not leader]
    marks = [len(node.lines) for node in survivors]
    if when == FIRING:
        await_firing(fire_log, leader.process.pid)
    else:
        sleep_until_wall_phase(when)
    kill = Kill(pid=leader.process.pid, wall=time.time())
    leader.kill()  # SIGKILL
    deadline = time.monotonic() + TAKEOVER_WAIT
    while not kill.first_fire:
        for fire in fire_log.poll()[-PLANS * 10:]:
            if fire.pid != kill.pid and fire.wall > kill.wall:
                kill.new_pid, kill.first_fire = fire.pid, fire.wall
                break
        else:
            assert time.monotonic() < deadline, "no node fired %ss after the leader %d was " \
                "killed:\n%s" % (TAKEOVER_WAIT, kill.pid, "\n".join(n.log for n in survivors))
            time.sleep(0.05)
    new_leader, = [node for node in survivors if node.process.pid == kill.new_pid]
    mark = marks[survivors.index(new_leader)]
    kill.log_takeover = log_time(new_leader.wait_log(LEADER_LINE, timeout=5, start=mark))
    leader.start()  # three nodes again (a new process: a new pid and lease token)
    return kill


def test_three_timer_nodes_survive_three_leader_kills_without_losing_a_fire(
        tmp_path, forsund_factory):
    started = time.monotonic()
    server = RedisServer(str(tmp_path / "redis"), persist=True).start()
    try:
        run(tmp_path, forsund_factory, server, started)
    finally:
        server.kill()


def run(tmp_path, forsund_factory, server: RedisServer, started: float) -> None:
    fire_log = FireLog(str(tmp_path / "fires.log"))
    args = ["--driver", "redis", "--driver-redis-port", str(server.port),
            "--extension-path", EXTENSIONS, "--extension", "record_ext.RecordExtension"]
    nodes = [forsund_factory(*args, start=False) for _ in range(NODES)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_log("ready", timeout=30)

    with nodes[0].client() as api:
        first_due = {"p%03d" % i: api.create_timeout(
            "p%03d" % i, 1, count=0, action="record", params={"path": fire_log.path}).next_time
            for i in range(PLANS)}
    created = time.monotonic()

    kills: List[Kill] = []
    for at, when in zip(KILL_AT, KILL_WHEN):
        time.sleep(max(0.0, created + at - time.monotonic()))
        kills.append(kill_leader_and_await_takeover(nodes, fire_log, when))
    time.sleep(max(0.0, created + RUN_SECONDS - time.monotonic()))

    leader = the_leader(nodes)  # every node reports its role
    for node in [node for node in nodes if node is not leader] + [leader]:
        assert node.stop() == 0, node.log
    fires = fire_log.poll()
    agent = forsund_factory(*args, "--server-mode", "AGENT")
    with agent.client() as api:
        assert api.info()["role"] == "agent"
        final = {key: api.get(key) for key in first_due}

    report = check(fires, first_due, final, kills)
    report["runtime"] = "%.1f s" % (time.monotonic() - started)
    print("\nfailover: " + ", ".join("%s %s" % item for item in report.items()))


def check(fires: List[Fire], first_due: Dict[str, int], final: Dict, kills: List[Kill]
          ) -> Dict[str, str]:
    by_pair: Dict[Tuple[str, int], List[Fire]] = collections.defaultdict(list)
    pids_of_second: Dict[int, set] = collections.defaultdict(set)
    last_of_pid: Dict[int, int] = collections.defaultdict(int)
    seconds_of: Dict[str, set] = collections.defaultdict(set)
    for fire in fires:
        by_pair[fire.key, fire.ts].append(fire)
        seconds_of[fire.key].add(fire.ts)
        pids_of_second[fire.ts].add(fire.pid)
        last_of_pid[fire.pid] = max(last_of_pid[fire.pid], fire.ts)
    duplicated = {pair: runs for pair, runs in by_pair.items() if len(runs) > 1}
    duplicates = sum(len(runs) - 1 for runs in duplicated.values())
    report = {
        "duplicates": "%d (per kill: %s)" % (duplicates, " ".join(
            str(sum(1 for runs in duplicated.values() if runs[0].pid == kill.pid))
            for kill in kills)),
        "takeover s (lease/first fire)": " ".join(
            "%.1f/%.1f" % (kill.log_takeover - kill.wall, kill.first_fire - kill.wall)
            for kill in kills),
        "fires": str(len(fires)),
    }
    print("\nfailover: %d duplicate executions" % duplicates)
    note = "failover: %s" % report

    def was_in(kill: Kill, ts: int) -> bool:
        """The killed leader may have been in the middle of second ``ts``."""
        return ts in (last_of_pid[kill.pid], last_of_pid[kill.pid] + 1)

    # Duplicates: only the second a killed leader was executing, run again by its successor.
    for (key, ts), runs in sorted(duplicated.items()):
        assert any([run.pid for run in runs] == [kill.pid, kill.new_pid] and was_in(kill, ts)
                   for kill in kills), ("unexpected duplicate", key, ts, runs, kills, note)
    # One firing node at a time: a second is executed by one node, or by a killed leader and
    # its successor (the second the killed one was in the middle of).
    for ts, pids in pids_of_second.items():
        assert len(pids) == 1 or any(pids == {kill.pid, kill.new_pid} and was_in(kill, ts)
                                     for kill in kills), (ts, pids, kills, note)

    # Every fire the store recorded was executed, and no due second is missing.
    takeover_gaps, late_loop_gaps = 0, 0
    for key, due in sorted(first_due.items()):
        plan = final[key]
        seconds = sorted(seconds_of[key])
        assert seconds and seconds[0] == due, (key, due, seconds[:3], note)
        assert (len(seconds), seconds[-1]) == (plan.current_count, plan.last_timeout), (
            "executed seconds vs the store's count", key, len(seconds), seconds[-3:], plan, note)
        assert plan.next_time > plan.last_timeout, (plan, note)
        for a, b in zip(seconds, seconds[1:]):
            if b == a + 1:
                continue
            # Catch-up: a fired once, late (its handling began at b - 1 or later, which
            # rescheduled the plan to b), and the plan continued from the present. The first
            # execution of a is the one that rescheduled it (a second one only repeats it).
            late = min(by_pair[key, a], key=lambda run: run.wall).wall
            assert b - 1 <= late < b + CATCH_UP_SLACK, (
                "second(s) %d..%d of %s missing" % (a + 1, b - 1, key),
                by_pair[key, a], by_pair.get((key, b)), kills, note)
            if any(kill.wall <= late <= kill.first_fire + CATCH_UP_SLACK for kill in kills):
                takeover_gaps += 1
            else:
                late_loop_gaps += 1  # the leader's loop was a second late: SPEC allows it
    latest = 0.0
    for runs in by_pair.values():
        assert runs[0].wall >= runs[0].ts, (runs, note)  # nothing fired before it was due
        latest = max(latest, runs[0].wall - runs[0].ts)

    report.update({
        "catch-up gaps at takeovers": str(takeover_gaps),
        "elsewhere": str(late_loop_gaps),
        "latest first execution s": "%.1f" % latest,
    })
    assert all(kill.first_fire - kill.wall <= TAKEOVER_BOUND for kill in kills) and \
        all(kill.log_takeover - kill.wall <= TAKEOVER_BOUND for kill in kills), report
    assert takeover_gaps >= PLANS * len(kills) // 2, report  # the takeovers did catch up
    return report
