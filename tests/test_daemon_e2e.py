"""End to end: a real forsund process, the Thrift client, plans that really fire."""

import os
import socket
import subprocess
import sys
import time

import msgpack
import psutil
import pytest

from conftest import ROOT, free_port
from forsun.thriftapi.ttypes import ForsunPlanError


def test_delay_plan_fires_within_its_due_second(forsund, fifo_sink):
    client = forsund.client()
    plan = client.create_timeout("e2e:delay", 2, action="shell",
                                 params={"cmd": fifo_sink.command("delay")})
    assert plan.is_time_out and plan.key == "e2e:delay" and plan.count == 1
    assert plan.next_time - time.time() <= 2.01
    (tag, fired_ts, wall), = fifo_sink.wait(1, timeout=6)
    assert tag == "delay" and int(fired_ts) == plan.next_time
    assert plan.next_time <= float(wall) < plan.next_time + 1
    with pytest.raises(ForsunPlanError) as error:  # count 1: gone after its fire
        client.get("e2e:delay")
    assert error.value.code == 1003


def test_repeating_delay_plan_fires_count_times(forsund, fifo_sink):
    client = forsund.client()
    plan = client.create_timeout("e2e:repeat", 1, count=3, action="shell",
                                 params={"cmd": fifo_sink.command("r")})
    fires = fifo_sink.wait(3, timeout=8)
    assert [int(ts) for _, ts, _ in fires] == [plan.next_time, plan.next_time + 1,
                                              plan.next_time + 2]
    assert fifo_sink.quiet_for(1.5) == []


def test_thrift_api_behaves_as_the_spec_says(forsund):
    client = forsund.client()
    assert client.ping() == 0
    fixed = client.create("api:fixed", 0, 0, 3, 1, 1, -1, "shell", {"cmd": "true"})
    assert not fixed.is_time_out and fixed.count == 0 and fixed.action == "shell"
    assert time.gmtime(fixed.next_time)[1:6] == (1, 1, 3, 0, 0)
    delay = client.create_timeout("api:delay", 30, 1, count=2, params={"cmd": "true"})
    assert delay.next_time - int(time.time()) in (89, 90) and delay.count == 2
    got = client.get("api:delay")
    assert (got.key, got.second, got.minute, got.next_time) == ("api:delay", 30, 1,
                                                                delay.next_time)
    assert sorted(client.get_keys("api:")) == ["api:delay", "api:fixed"]
    assert client.get_keys("nothing") == []
    assert [p.key for p in client.get_time(delay.next_time)] == ["api:delay"]
    assert client.get_time(12345) == []
    assert isinstance(client.get_current(), list)
    removed = client.remove("api:delay")
    assert removed.key == "api:delay"
    assert client.get_keys("api:") == ["api:fixed"]
    generated = client.create_timeout("", 100, params={"cmd": "true"})
    assert len(generated.key) >= 16 and client.get(generated.key).key == generated.key

    for call, code in [
        (lambda: client.get("missing"), 1003),
        (lambda: client.remove("missing"), 1003),
        (lambda: client.create("bad", 0, 0, 0, 30, 2), 1002),  # Feb 30
        (lambda: client.create("bad", 61), 1002),
        (lambda: client.create_timeout("bad", 0, 0), 1002),  # interval below 1 s
        (lambda: client.create_timeout("bad", 5, action="nope"), 1006),
    ]:
        with pytest.raises(ForsunPlanError) as error:
            call()
        assert error.value.code == code, error.value.message
        assert error.value.message
    assert "bad" not in client.get_keys("")

    info = client.info()
    assert list(info)[:6] == ["python_version", "forsun_version", "start_time", "cpu_user",
                              "cpu_system", "mem_rss"]
    assert info["current_store"] == "mem" and "shell" in info["actions"].split(";")
    assert info["plan_count"] == "2" and info["removed_count"] == "1"
    assert int(info["mem_rss"]) > 0 and all(isinstance(v, str) for v in info.values())


def test_replacing_a_plan_cancels_its_pending_fire(forsund, fifo_sink):
    client = forsund.client()
    client.create_timeout("swap", 1, action="shell", params={"cmd": fifo_sink.command("old")})
    new = client.create_timeout("swap", 2, action="shell",
                                params={"cmd": fifo_sink.command("new")})
    (tag, ts, _), = fifo_sink.wait(1, timeout=6)
    assert (tag, int(ts)) == ("new", new.next_time)
    assert fifo_sink.quiet_for(1.2) == []


def test_plans_survive_sigterm_and_missed_seconds_fire_once(forsund, fifo_sink):
    client = forsund.client()
    client.create_timeout("keep", 3600, params={"cmd": "true"})
    due = client.create_timeout("due-while-down", 2, action="shell",
                                params={"cmd": fifo_sink.command("late")})
    assert forsund.stop() == 0
    while time.time() < due.next_time + 1.5:  # let the due second pass while it is down
        time.sleep(0.2)
    forsund.start()
    (tag, ts, wall), = fifo_sink.wait(1, timeout=10)
    assert (tag, int(ts)) == ("late", due.next_time) and float(wall) > due.next_time + 1
    client = forsund.client()
    assert client.get("keep").key == "keep"
    assert fifo_sink.quiet_for(1.2) == []


def test_old_format_dump_file_loads_with_all_its_plans(forsund_factory, tmp_path):
    future = int(time.time()) + 3600
    plans = []
    for i in range(3):
        plans.append(msgpack.packb({
            "key": "old%d" % i, "second": 10, "minute": -1, "hour": -1, "day": -1,
            "month": -1, "week": -1, "status": 0, "count": 1, "is_time_out": True,
            "next_time": future + i, "current_count": 0, "last_timeout": 0,
            "created_time": 1500000000.0, "action": "shell", "params": {"cmd": "ls"},
        }, use_bin_type=False))
    data = {"plans": plans, "time_plans": {future + i: ["old%d" % i] for i in range(3)},
            "current_time": int(time.time()) - 1}
    daemon = forsund_factory(start=False)
    with open(daemon.store_file, "wb") as fp:
        fp.write(msgpack.packb(data, use_bin_type=False))
    daemon.start()
    client = daemon.client()
    assert sorted(client.get_keys("old")) == ["old0", "old1", "old2"]
    plan = client.get("old1")
    assert (plan.next_time, plan.params, plan.is_time_out) == (future + 1, {"cmd": "ls"}, True)


def test_garbage_on_the_thrift_port_does_not_stop_the_server(forsund):
    for payload in (b"\x00\x01garbage" * 100, b"\x80\x01\x00\x01\x00\x00\x00\x04pi",
                    os.urandom(4096)):
        with socket.create_connection(("127.0.0.1", forsund.port)) as sock:
            sock.sendall(payload)
    assert forsund.client().ping() == 0


def wait_gone(pid: int, timeout: float) -> bool:
    """The detached daemon is not our child: poll psutil until it is gone (or a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def run_forsund(*args, env=None):
    return subprocess.run([sys.executable, "-m", "forsun.daemon", "--nodemon", "--log", "-",
                           *args], cwd=ROOT, env=dict(os.environ, **(env or {})),
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "invalid PORT"),
    (["--port", "abc"], "invalid value 'abc' for PORT (command line): expected a whole number"),
    (["--driver", "nosuch"], "unknown store driver 'nosuch'"),
    (["--conf", "/nonexistent/forsun.conf"], "cannot read conf file"),
    (["--timezone", "Mars/Olympus"], "unknown timezone"),
    (["--extension", "nosuchmodule.Ext"], "cannot be imported"),
])
def test_unusable_settings_stop_it_with_one_clear_line(args, message, tmp_path):
    result = run_forsund("--driver-mem-store-file", str(tmp_path / "d"), *args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("forsund:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_stops_it(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_forsund("--port", str(port), "--driver-mem-store-file",
                             str(tmp_path / "d"))
    assert result.returncode == 1 and "cannot listen on 127.0.0.1:%d" % port in result.stderr


def test_detaches_by_default_prints_its_pid_and_stops_on_sigterm(tmp_path):
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "forsun.daemon", "--port", str(port),
                             "--log", str(tmp_path / "forsun.log"),
                             "--driver-mem-store-file", str(tmp_path / "dump")],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout.strip())
    try:
        from forsun.clients import ThriftClient
        with ThriftClient(port=port, timeout=10) as client:
            client.create_timeout("detached", 600, params={"cmd": "true"})
    finally:
        os.kill(pid, 15)
    assert wait_gone(pid, 15)
    assert "ready" in open(tmp_path / "forsun.log").read()
    assert os.path.getsize(tmp_path / "dump") > 0
