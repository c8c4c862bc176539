"""The real ``forsun`` executable (``python -m forsun.cli``) against a real forsund.

The client runs with TZ set to a zone far from UTC while forsund matches fixed times in
UTC, so printing a UTC time as local (or the reverse) cannot pass unnoticed.
"""

import datetime
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import List
from zoneinfo import ZoneInfo

import pytest

from conftest import ROOT, Forsund, free_port

LOCAL_ZONE = "Asia/Shanghai"
SPEC_INFO_ORDER = [
    "python_version", "forsun_version", "start_time", "cpu_user", "cpu_system", "mem_rss",
    "mem_vms", "current_time", "stores", "current_store", "actions", "bind_port",
    "http_bind_port", "extensions", "connecting_count", "connected_count",
    "requesting_count", "requested_count", "requested_error_count", "http_connecting_count",
    "http_connected_count", "http_requesting_count", "http_requested_count",
    "http_requested_error_count", "created_count", "create_timeouted_count",
    "removed_count", "plan_count", "timeout_handling_count", "timeout_handled_count",
    "action_executing_count", "action_executed_count", "action_executed_error_count",
    "action_retried_count", "timer_loop_count", "timer_loop_ready_error_count",
]
# The five examples of SPEC section 4, as the shell passes them: one argument each.
SPEC_EXAMPLES = [
    "set ping1 */5/1 * * * * * redis 'host=127.0.0.1;command=\\'SET b 1 EX 300\\''",
    "set job2 */5/1 * * * * * shell 'cmd=ls'",
    "set q3 */5/1 * * * * * beanstalk 'host=127.0.0.1;name=etask;body={}'",
    "set daily 0 32 16 * * * http 'url=\\'http://127.0.0.1:8080/hook\\''",
    "set m5 0 32 16 * * * mysql 'host=127.0.0.1;user=root;passwd=;db=test;"
    "sql=\\'update t set a=now() where id=1\\''",
]
SPEC_LINES = {  # what each prints after the date: the set syntax, ready to paste back
    "ping1": "ping1 */5/1 * * * * * redis \"host='127.0.0.1';command='SET b 1 EX 300'\"",
    "job2": "job2 */5/1 * * * * * shell \"cmd='ls'\"",
    "q3": "q3 */5/1 * * * * * beanstalk \"host='127.0.0.1';name='etask';body='{}'\"",
    "daily": "daily 0 32 16 * * * http \"url='http://127.0.0.1:8080/hook'\"",
    "m5": "m5 0 32 16 * * * mysql \"host='127.0.0.1';user='root';passwd='';db='test';"
          "sql='update t set a=now() where id=1'\"",
}
PLAN_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One forsund for the module (every test uses its own keys), in AGENT mode: it serves
    but never fires, so the SPEC's 5-second plans stay listed however slow the machine."""
    server = Forsund(str(tmp_path_factory.mktemp("forsund")), ["--server-mode", "AGENT"])
    server.start()
    yield server
    server.kill()


def forsun(port: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, TZ=LOCAL_ZONE, PYTHONPATH=ROOT + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "forsun.cli", "--port", str(port), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def ok(port: int, *args: str) -> List[str]:
    result = forsun(port, *args)
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout.splitlines()


def fails(port: int, *args: str) -> str:
    result = forsun(port, *args)
    assert result.returncode == 1 and result.stdout == "", result
    assert "Traceback" not in result.stderr
    return result.stderr


def split_plan_line(line: str) -> tuple:
    match = PLAN_LINE.fullmatch(line)
    assert match, line
    return match.group(1), match.group(2)


def local(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, ZoneInfo(LOCAL_ZONE)).strftime(
        "%Y-%m-%d %H:%M:%S")


def next_utc(hour: int, minute: int) -> int:
    now = datetime.datetime.now(datetime.timezone.utc)
    due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due <= now:
        due += datetime.timedelta(days=1)
    return int(due.timestamp())


def test_spec_examples_and_every_command(daemon):
    port = daemon.port
    started = time.time()
    for command in SPEC_EXAMPLES:
        (line,) = ok(port, command)
        key = command.split()[1]
        assert split_plan_line(line)[1] == SPEC_LINES[key]
    listed = [split_plan_line(line) for line in ok(port, "ls")]
    assert [rest for _, rest in listed] == [SPEC_LINES[key] for key in sorted(SPEC_LINES)]
    dates = dict((rest.split()[0], date) for date, rest in listed)
    fixed_due = next_utc(16, 32)
    assert dates["daily"] == dates["m5"] == local(fixed_due)
    for key in ("ping1", "job2", "q3"):
        assert local(started + 5) <= dates[key] <= local(time.time() + 5)

    assert [split_plan_line(line) for line in ok(port, "get m5")] == [
        (local(fixed_due), SPEC_LINES["m5"])]
    assert [split_plan_line(line)[1] for line in ok(port, "ls da")] == [SPEC_LINES["daily"]]
    assert ok(port, "ls nothing-has-this-prefix") == []
    assert len(ok(port, "ls *")) == 5

    due = [split_plan_line(line)[1] for line in ok(port, "time %d" % fixed_due)]
    assert sorted(due) == [SPEC_LINES["daily"], SPEC_LINES["m5"]]
    as_date = [split_plan_line(line)[1] for line in ok(port, "time %s" % local(fixed_due))]
    assert sorted(as_date) == sorted(due)  # the date is read as local time
    quoted = ok(port, 'time "%s"' % local(fixed_due))
    assert sorted(split_plan_line(line)[1] for line in quoted) == sorted(due)
    for now in ("time", "current"):  # the 5 s plans may be due just now
        lines = [split_plan_line(line)[1] for line in ok(port, now)]
        assert set(lines) <= {SPEC_LINES["ping1"], SPEC_LINES["job2"], SPEC_LINES["q3"]}

    info = ok(port, "info")
    names = [line.split(":\t", 1)[0] for line in info]
    assert names[:len(SPEC_INFO_ORDER)] == SPEC_INFO_ORDER  # then role and extras
    assert "role" in names[len(SPEC_INFO_ORDER):]
    values = dict(line.split(":\t", 1) for line in info)
    assert re.fullmatch(r"\d+\.\d\d[KMG]", values["mem_rss"]), values["mem_rss"]
    assert re.fullmatch(r"\d+\.\d\d[KMG]", values["mem_vms"]), values["mem_vms"]
    assert local(time.time() - 5) <= values["current_time"] <= local(time.time() + 1)
    assert values["forsun_version"] == "0.2.0"

    assert ok(port, "rm daily") == ["success"]
    assert fails(port, "get daily").startswith("error 1003: ")
    assert fails(port, "rm daily").startswith("error 1003: ")
    assert [split_plan_line(line)[1] for line in ok(port, "ls da")] == []


NASTY_PARAMS = {
    "cmd": "echo 'x;y' \"it's\" > /dev/null",
    "command": "SET a 'x;y' EX 300; LPUSH q \"it's\"",
    "expr": "a=b=c",
    "path": "C:\\temp\\new\\",
    "текст": "привет, мир ✓ 计划",
    "empty": "",
}


def test_what_get_prints_can_be_pasted_after_set(daemon):
    port = daemon.port
    params = ";".join("%s=%s" % (name, "'%s'" % value.replace("\\", "\\\\").replace("'", "\\'"))
                      for name, value in NASTY_PARAMS.items())
    line = "set 'rt key ✓' */300/0 * * * * * shell %s" % json.dumps(params, ensure_ascii=False)
    (created,) = ok(port, line)
    (got,) = ok(port, "get 'rt key ✓'")
    assert got == created
    _, pasted = split_plan_line(got)
    assert pasted.startswith("\"rt key ✓\" */300/0 * * * * * shell ")
    ok(port, "rm 'rt key ✓'")
    (recreated,) = ok(port, "set " + pasted)
    assert split_plan_line(recreated)[1] == pasted
    (as_json,) = ok(port, "--json", "get 'rt key ✓'")
    plan = json.loads(as_json)
    assert plan["params"] == NASTY_PARAMS
    assert (plan["is_time_out"], plan["second"], plan["count"]) == (True, 300, 0)


def test_the_words_the_shell_split_are_quoted_again(daemon):
    port = daemon.port
    (line,) = ok(port, "set", "words", "*/300", "*", "*", "*", "*", "*", "shell",
                 "cmd='echo a  b'")
    assert split_plan_line(line)[1] == "words */300/1 * * * * * shell \"cmd='echo a  b'\""
    assert ok(port, "--exe", "rm words") == ["success"]


def test_json_output(daemon):
    port = daemon.port
    ok(port, "set json1 */300 * * * * * shell 'cmd=true'")
    lines = ok(port, "--json", "get json1; ls json; time 1; info; rm json1; version")
    plan, listed, due, info, removed, version = [json.loads(line) for line in lines]
    assert plan["key"] == "json1" and plan["params"] == {"cmd": "true"}
    assert set(plan) == {"key", "is_time_out", "second", "minute", "hour", "day", "month",
                         "week", "count", "current_count", "next_time", "last_timeout",
                         "status", "action", "params"}
    assert listed == [plan] and due == [] and removed == plan
    assert list(info)[:len(SPEC_INFO_ORDER)] == SPEC_INFO_ORDER
    assert info["mem_rss"].isdigit()  # raw values for scripts
    assert version == {"version": "0.2.0"}


def test_server_errors_and_command_lists(daemon):
    port = daemon.port
    assert fails(port, "get nope") == "error 1003: plan 'nope' not found\n"
    assert fails(port, "set feb30 0 0 0 30 2 * shell 'cmd=true'").startswith("error 1002: ")
    assert fails(port, "set bad */5 * * * * * nosuchaction a=1").startswith("error 1006: ")
    assert fails(port, "get nope; version").startswith("error 1003")  # stops at a failure
    assert ok(port, "version; exit; get nope") == ["0.2.0"]  # exit ends the list, not failed


def test_connection_refused():
    port = free_port()
    result = forsun(port, "ls")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("error: cannot connect to forsund at 127.0.0.1:%d: "
                             "Connection refused\n" % port)


def test_a_server_that_does_not_answer():
    with socket.socket() as listener:  # accepts connections (backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = forsun(port, "--timeout", "0.5", "info")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("error: forsund at 127.0.0.1:%d did not answer within 0.5s\n"
                             % port)


@pytest.mark.parametrize("line, message", [
    ("frobnicate", "error: unknown command 'frobnicate'; type 'help' for the commands"),
    ("get", "usage: get KEY"),
    ("rm a b", "usage: rm KEY"),
    ("info now", "usage: info"),
    ("set k 1 * * * *", "usage: set KEY SECOND MINUTE HOUR DAY MONTH WEEK ACTION [PARAMS]"),
    ("set k x * * * * * shell ls",
     "error: second: 'x' is not *, a number, */N or */N/C"),
    ("set k */5/1 * * */a * * shell ls", "error: day: '*/a' is not *, a number, */N or */N/C"),
    ("set k 1 * * * * * shell 'ls", "error: unbalanced ' quote in command "
                                    "\"set k 1 * * * * * shell 'ls\""),
    ("set k 1 * * * * * redis 'command=\"x'", "error: unbalanced \" quote in params "
                                             "'command=\"x'"),
    ("time tomorrow", "error: time: 'tomorrow' is neither a Unix timestamp nor "
                      "\"YYYY-mm-dd HH:MM:SS\""),
])
def test_input_errors_need_no_server(line, message):
    assert fails(free_port(), line) == message + "\n"


def test_help_and_version_work_without_a_server():
    port = free_port()
    usages = ok(port, "help")
    assert usages[0].startswith("help [COMMAND]")
    assert any(line.startswith("set KEY SECOND") for line in usages)
    assert ok(port, "help rm")[0] == "usage: rm KEY"
    assert ok(port, "version") == ["0.2.0"]


@pytest.mark.parametrize("driver", ["mem", "redis"])
def test_key_prefixes_lose_trailing_stars_and_blanks_everywhere(driver, request,
                                                                forsund_factory):
    """As 0.1.x's stores did (``rstrip("\\n\\t *")``), in Thrift, HTTP and ``ls`` alike."""
    args = ["--server-mode", "AGENT"]
    if driver == "redis":
        server = request.getfixturevalue("redis_server")
        args += ["--driver", "redis", "--driver-redis-port", str(server.port)]
    daemon = forsund_factory(*args, http=True)
    for key in ("order_1", "order_2", "other"):
        ok(daemon.port, "set %s */300 * * * * * shell true" % key)
    client = daemon.client()
    try:
        for prefix, keys in (("order_*", ["order_1", "order_2"]), ("*", ["order_1", "order_2",
                             "other"]), ("o* \t\n", ["order_1", "order_2", "other"]),
                             ("order_1*", ["order_1"]), ("*order", [])):
            assert sorted(client.get_keys(prefix)) == keys, prefix
            url = "http://127.0.0.1:%d/v1/keys?%s" % (
                daemon.http_port, urllib.parse.urlencode({"prefix": prefix}))
            with urllib.request.urlopen(url, timeout=10) as response:
                assert sorted(json.load(response)["data"]) == keys, prefix
    finally:
        client.close()
    listed = [split_plan_line(line)[1].split()[0] for line in ok(daemon.port, "ls order_*")]
    assert listed == ["order_1", "order_2"]
    assert len(ok(daemon.port, "ls *")) == 3
