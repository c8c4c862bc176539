"""Crash safety of the mem store with a real forsund: SIGKILL at random moments while a
client creates and removes plans, with snapshots and journal rotations going on all the
time (tiny compaction threshold), then a restart and a check of every acknowledged change.
"""

import os
import random
import signal
import threading
import time
from typing import Dict, List, Optional, Set

import pytest

from forsun.store.drivers.mem_journal import list_segments

# Snapshots and journal rotations every second or few KB, so kills land in the middle of them.
CHURN = {"STORE_MEM_COMPACT_BYTES": "20000", "STORE_MEM_FLUSH_SECONDS": "0.5"}


class Writer(threading.Thread):
    """Creates plans and removes some of those it created, recording what was acknowledged
    (and when); stops at the first failure, which is the kill."""

    def __init__(self, daemon, tag: str):
        super().__init__(daemon=True)
        self.client = daemon.client()
        self.tag = tag
        self.created: Dict[str, float] = {}  # key -> when its create was acknowledged
        self.removed: Dict[str, float] = {}  # key -> when its remove was acknowledged
        self.unsure: Set[str] = set()  # the call in flight at the kill
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(self.tag)
        n = 0
        while not self.stop.is_set():
            key = None
            try:
                if self.created and rng.random() < 0.3:
                    key = rng.choice([k for k in self.created if k not in self.removed][:50]
                                     or [None])
                    if key is None:
                        continue
                    self.client.remove(key)
                    self.removed[key] = time.monotonic()
                else:
                    key = "%s-%06d" % (self.tag, n)
                    n += 1
                    self.client.create_timeout(key, 3600, params={"cmd": "true"})
                    self.created[key] = time.monotonic()
            except Exception:
                if key is not None:
                    self.unsure.add(key)
                return


def kill9(daemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)
    daemon.wait_log("<exited>", timeout=10)  # its log reader is done before a restart


def kill_round(daemon, tag: str, rng: random.Random, before_kill=None) -> Writer:
    writer = Writer(daemon, tag)
    writer.start()
    time.sleep(rng.uniform(0.15, 0.9))
    if before_kill:
        before_kill()
    killed_at = time.monotonic()
    kill9(daemon)
    writer.join(10)
    writer.killed_at = killed_at
    return writer


def check(keys: Set[str], writers: List[Writer], grace: float = 0.0) -> int:
    """Every create acknowledged (``grace`` seconds before the kill) whose plan was not
    removed afterwards is there; no acknowledged remove came back. Returns the count."""
    checked = 0
    for writer in writers:
        for key, at in writer.created.items():
            if key in writer.removed or key in writer.unsure:
                continue
            if at <= writer.killed_at - grace:
                assert key in keys, "acknowledged create of %s lost" % key
                checked += 1
        for key in writer.removed:
            assert key not in keys, "acknowledged remove of %s undone" % key
            checked += 1
    return checked


@pytest.mark.parametrize("fsync, rounds, grace", [
    pytest.param("always", 20, 0.0, id="fsync-always"),
    pytest.param("everysec", 6, 1.0, id="fsync-everysec"),
])
def test_kill_9_at_random_moments_loses_no_acknowledged_change(forsund_factory, fsync, rounds,
                                                               grace):
    rng = random.Random(fsync)
    daemon = forsund_factory(env=dict(CHURN, STORE_MEM_FSYNC=fsync))
    writers: List[Writer] = []
    checked = 0
    for round_number in range(rounds):
        writers.append(kill_round(daemon, "%s%02d" % (fsync[0], round_number), rng))
        daemon.start()
        keys = set(daemon.client().get_keys(""))
        checked = check(keys, writers, grace)
    assert checked > 100, "the writers did too little to prove anything"
    # everything at the end, also what was acknowledged within the grace: a killed process
    # loses nothing, whatever the fsync policy (only a power cut could)
    assert check(set(daemon.client().get_keys("")), writers) >= checked
    assert os.path.exists(daemon.store_file), "no snapshot was ever written"


def test_plans_due_while_killed_fire_once_after_the_restart(forsund_factory, fifo_sink):
    daemon = forsund_factory(env=CHURN)
    client = daemon.client()
    due = [client.create_timeout("due%d" % n, 2, action="shell",
                                 params={"cmd": fifo_sink.command("due%d" % n)})
           for n in range(5)]
    client.create_timeout("later", 3600, params={"cmd": "true"})
    kill9(daemon)
    while time.time() < max(plan.next_time for plan in due) + 1.5:
        time.sleep(0.1)
    daemon.start()
    fires = fifo_sink.wait(5, timeout=10)
    assert sorted(tag for tag, _, _ in fires) == ["due%d" % n for n in range(5)]
    assert all(float(wall) > plan.next_time + 1 for (_, _, wall), plan in zip(fires, due))
    assert fifo_sink.quiet_for(1.5) == []
    assert daemon.client().get_keys("") == ["later"]
    # and once more after another kill: they stay fired
    kill9(daemon)
    daemon.start()
    assert fifo_sink.quiet_for(2.0) == []


def test_a_torn_journal_tail_is_cut_with_a_log_line(forsund_factory):
    daemon = forsund_factory()
    client = daemon.client()
    for n in range(10):
        client.create_timeout("kept%d" % n, 3600, params={"cmd": "true"})
    kill9(daemon)
    _, segment = list_segments(daemon.store_file)[-1]
    size = os.path.getsize(segment)
    with open(segment, "ab") as fp:
        fp.write(b"\x40\x00\x00\x00\x12\x34")  # half a record header: a write cut short
    daemon.start()
    line = daemon.wait_log("cut 6 bytes at offset %d" % size)
    assert segment in line
    assert sorted(daemon.client().get_keys("")) == ["kept%d" % n for n in range(10)]


def test_a_corrupt_snapshot_stops_the_start_and_is_kept(forsund_factory):
    daemon = forsund_factory()
    client = daemon.client()
    for n in range(10):
        client.create_timeout("p%d" % n, 3600, params={"cmd": "true"})
    assert daemon.stop() == 0  # a clean stop writes the snapshot
    with open(daemon.store_file, "r+b") as fp:
        fp.truncate(os.path.getsize(daemon.store_file) // 2)
    before = {name: open(os.path.join(daemon.workdir, name), "rb").read()
              for name in os.listdir(daemon.workdir) if name.startswith("forsun.dump")}
    daemon.start(wait=False)
    daemon.wait_log("<exited>", timeout=30)
    assert daemon.process.wait(10) == 1
    assert "not a readable forsun dump" in daemon.log and daemon.store_file in daemon.log
    after = {name: open(os.path.join(daemon.workdir, name), "rb").read()
             for name in os.listdir(daemon.workdir) if name.startswith("forsun.dump")}
    assert after == before
