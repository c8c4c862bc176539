"""The beanstalk action against private beanstalkd processes."""

import asyncio
import time

import greenstalk
import pytest

from conftest import free_port
from forsun.action.action import ExecuteActionError
from forsun.action.drivers import beanstalk as beanstalk_driver
from forsun.action.drivers.beanstalk import BeanstalkAction
from forsun.error import ActionExecuteRetry
from test_action_helpers import (action_pools, action_settings, black_hole,  # noqa: F401
                                 make_runner, plan, until)


def beanstalk(server_port: int, **params: str) -> BeanstalkAction:
    params = dict(params, port=str(server_port))
    return BeanstalkAction(1700000000, plan(action="beanstalk", **params), "beanstalk", params)


def take(server, tube: str) -> str:
    """The next job body of ``tube``, deleting the job; raises TimedOutError if none."""
    with greenstalk.Client(("127.0.0.1", server.port), watch=tube) as client:
        job = client.reserve(timeout=0)
        client.delete(job)
        return job.body


def current_connections(server) -> int:
    with greenstalk.Client(("127.0.0.1", server.port)) as client:
        return int(client.stats()["current-connections"]) - 1  # minus this one


async def test_body_arrives_in_the_named_tube(beanstalkd, action_settings, action_pools):
    await beanstalk(beanstalkd.port, name="etask", body='{"id": 1}').execute()
    await beanstalk(beanstalkd.port, body="plain").execute()
    await beanstalk(beanstalkd.port, name="etask", body="").execute()
    assert take(beanstalkd, "etask") == '{"id": 1}'
    assert take(beanstalkd, "etask") == ""
    assert take(beanstalkd, "default") == "plain"
    assert current_connections(beanstalkd) == 1  # one pooled connection switched tubes


async def test_failures(beanstalkd, action_settings, action_pools, black_hole):
    with pytest.raises(ExecuteActionError, match="missing required param 'body'"):
        await beanstalk(beanstalkd.port, name="etask").execute()
    with pytest.raises(ExecuteActionError, match="BadFormatError"):
        await beanstalk(beanstalkd.port, name="-bad name", body="x").execute()
    with pytest.raises(ActionExecuteRetry, match="refused"):
        await beanstalk(free_port(), body="x").execute()
    started = time.monotonic()
    with pytest.raises(ActionExecuteRetry, match="timed out"):
        await beanstalk(black_hole.port, body="x", timeout="0.3").execute()
    assert time.monotonic() - started < 2
    await beanstalk(beanstalkd.port, body="still fine").execute()
    assert take(beanstalkd, "default") == "still fine"


async def test_restarted_server_gets_a_new_connection_and_idle_ones_close(tmp_path,
                                                                          beanstalkd,
                                                                          action_settings,
                                                                          action_pools):
    action_settings.set("ACTION_IDLE_SECONDS", 0.3)
    await beanstalk(beanstalkd.port, name="t", body="before").execute()
    assert take(beanstalkd, "t") == "before"
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, beanstalkd.kill)
    await loop.run_in_executor(None, beanstalkd.start)
    await beanstalk(beanstalkd.port, name="t", body="after").execute()
    assert take(beanstalkd, "t") == "after"
    await until(lambda: current_connections(beanstalkd) == 0)
    assert len(beanstalk_driver._targets) == 0


async def test_runner_retries_a_refused_connection(make_runner):
    runner = make_runner(ACTION_RETRY_DELAY_SECONDS=0.05, ACTION_RETRY_MAX_COUNT=1)
    runner.fire("bs:refused", "beanstalk", {"port": str(free_port()), "body": "x"})
    assert await runner.outcome("bs:refused") == -1
    assert runner.status.action_retried_count == 1
