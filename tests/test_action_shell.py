"""The shell action: timestamp, cwd and env reach the command; failures, timeouts, reaping."""

import time

import psutil
import pytest

from forsun.action.action import ExecuteActionError
from forsun.action.drivers.shell import ShellAction, parse_env
from test_action_helpers import (action_pools, action_settings, make_runner,  # noqa: F401
                                 plan, runner)


def shell(ts: int = 1700000000, **params: str) -> ShellAction:
    return ShellAction(ts, plan(action="shell", **params), "shell", params)


def no_live_process(pid: int, within: float = 0) -> bool:
    """True once ``pid`` is gone or a zombie of another parent (SIGKILL lands asynchronously,
    so a killed process may need ``within`` seconds to die)."""
    deadline = time.monotonic() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def test_parse_env():
    assert parse_env("a=1;b=c=d; c =x;;=y;noval") == {"a": "1", "b": "c=d", "c": "x"}
    assert parse_env("") == {}


async def test_timestamp_cwd_and_env_reach_the_command(tmp_path, action_settings):
    out = tmp_path / "out"
    await shell(cmd='echo "$FORSUN_TIMESTAMP|$(pwd)|$A|$B" > %s' % out, cwd=str(tmp_path),
                env="A=1;B=x=y").execute()
    assert out.read_text().strip() == "1700000000|%s|1|x=y" % tmp_path


async def test_default_cwd_is_the_setting(tmp_path, action_settings):
    action_settings.set("ACTION_SHELL_CWD", str(tmp_path))
    await shell(cmd="pwd > out").execute()
    assert (tmp_path / "out").read_text().strip() == str(tmp_path)


async def test_failures_are_final_with_stderr_in_the_message(tmp_path, action_settings):
    with pytest.raises(ExecuteActionError, match=r"exited with 3: boom"):
        await shell(cmd="echo boom >&2; exit 3").execute()
    with pytest.raises(ExecuteActionError, match="missing required param 'cmd'"):
        await shell(cmd=" ").execute()
    with pytest.raises(ExecuteActionError, match="cannot start in"):
        await shell(cmd="true", cwd=str(tmp_path / "missing")).execute()


async def test_background_child_holding_stderr_does_not_delay_the_action(tmp_path,
                                                                         action_settings,
                                                                         action_pools):
    started = time.monotonic()
    await shell(cmd="sleep 2 & echo $! > bg.pid", cwd=str(tmp_path)).execute()
    assert time.monotonic() - started < 1
    assert not no_live_process(int((tmp_path / "bg.pid").read_text()))  # left running


async def test_shell_timeout_kills_the_whole_session(tmp_path, action_settings):
    action_settings.set("ACTION_SHELL_TIMEOUT", 0.3)
    started = time.monotonic()
    with pytest.raises(ExecuteActionError, match="killed after"):
        await shell(cmd="sleep 30 & echo $! > bg.pid; sleep 30", cwd=str(tmp_path)).execute()
    assert time.monotonic() - started < 2
    assert no_live_process(int((tmp_path / "bg.pid").read_text()), within=2)


async def test_runner_timeout_kills_the_command(tmp_path, make_runner):
    """Past the smaller of ACTION_SHELL_TIMEOUT and ACTION_TIMEOUT the whole session is
    killed and the fire fails, not retried."""
    runner = make_runner(ACTION_SHELL_TIMEOUT=0.3, ACTION_TIMEOUT=0.1)
    runner.fire("slow", "shell", {"cmd": "echo $$ > sh.pid; sleep 30", "cwd": str(tmp_path)})
    assert await runner.outcome("slow") == -1
    assert no_live_process(int((tmp_path / "sh.pid").read_text()), within=2)
    assert runner.status.action_retried_count == 0


async def test_action_timeout_stops_shell_commands_and_their_children(tmp_path, make_runner):
    """ACTION_TIMEOUT is every action's limit, shell's too, however long ACTION_SHELL_TIMEOUT
    is: a command and the children it forked are killed at it."""
    runner = make_runner(ACTION_SHELL_TIMEOUT=3600, ACTION_TIMEOUT=0.3)
    started = time.monotonic()
    runner.fire("sleepy", "shell", {"cmd": "sleep 1000 & echo $! > bg.pid; echo $$ > sh.pid;"
                                            " sleep 1000", "cwd": str(tmp_path)})
    assert await runner.outcome("sleepy") == -1
    assert time.monotonic() - started < 5
    for name in ("sh.pid", "bg.pid"):
        assert no_live_process(int((tmp_path / name).read_text()), within=2), name


async def test_commands_do_not_see_forsunds_environment(tmp_path, action_settings,
                                                        monkeypatch):
    """Secrets handed to forsund through its environment never reach a plan's command; only
    the fixed base, ACTION_SHELL_PASS_ENV's names, the plan's env and FORSUN_TIMESTAMP do."""
    monkeypatch.setenv("STORE_REDIS_PASSWORD", "s3cret")
    monkeypatch.setenv("AUTH_TOKEN", "t0ken")
    monkeypatch.setenv("PASSED_ONE", "yes")
    action_settings.set("ACTION_SHELL_PASS_ENV", "PASSED_ONE;NOT_SET_ANYWHERE")
    out = tmp_path / "env"
    await shell(cmd="env > %s" % out, env="A=1;FORSUN_TIMESTAMP=forged").execute()
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert "s3cret" not in out.read_text() and "t0ken" not in out.read_text()
    assert env["PASSED_ONE"] == "yes" and env["A"] == "1"
    assert env["FORSUN_TIMESTAMP"] == "1700000000"
    assert "NOT_SET_ANYWHERE" not in env
    assert set(env) - {"PWD", "SHLVL", "_", "OLDPWD"} == {
        "PATH", "HOME", "LANG", "PASSED_ONE", "A", "FORSUN_TIMESTAMP"}


@pytest.mark.gen_test(timeout=30)
async def test_many_fires_leave_no_zombie(tmp_path, runner):
    me = psutil.Process()
    for i in range(60):
        runner.fire("z%d" % i, "shell", {"cmd": "exit %d" % (i % 2), "cwd": str(tmp_path)})
    outcomes = [await runner.outcome("z%d" % i) for i in range(60)]
    assert outcomes == [1, -1] * 30
    assert runner.status.action_executed_count == 60
    assert runner.status.action_executed_error_count == 30
    assert runner.status.action_retried_count == 0
    children = me.children()  # servers of other tests may be running; no shell may remain
    assert [child for child in children if child.status() == psutil.STATUS_ZOMBIE] == []
    assert [child for child in children if child.name() == "sh"] == []
