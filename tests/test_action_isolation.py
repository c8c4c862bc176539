"""A target that never answers delays nothing but its own plan, and that by its own timeout."""

import time

import pytest

from test_action_helpers import (action_pools, action_settings, black_hole,  # noqa: F401
                                 make_runner)
from test_action_http import sink  # noqa: F401
from test_action_mysql import DB, db  # noqa: F401
from test_action_thrift import thrift_sink  # noqa: F401

TIMEOUT = 1.0


@pytest.mark.gen_test(timeout=30)
async def test_unanswering_targets_do_not_delay_plans_due_in_the_same_second(
        make_runner, black_hole, sink, thrift_sink, redis_server, beanstalkd, db, tmp_path):
    runner = make_runner(ACTION_RETRY_MAX_COUNT=0)
    hole = str(black_hole.port)
    limit = {"timeout": str(TIMEOUT), "connect_timeout": str(TIMEOUT)}
    hung = {
        "http": {"url": "http://127.0.0.1:%s/" % hole, "request_timeout": str(TIMEOUT)},
        "redis": dict(limit, port=hole, command="SET a 1"),
        "mysql": dict(limit, port=hole, sql="SELECT 1"),
        "beanstalk": dict(limit, port=hole, body="x"),
        "thrift": dict(limit, port=hole),
    }
    good = {
        "http": {"url": sink.url("200")},
        "redis": {"port": str(redis_server.port), "command": "SET a 1"},
        "mysql": {"port": str(db.port), "db": DB, "passwd": "", "sql": "SELECT 1"},
        "beanstalk": {"port": str(beanstalkd.port), "body": "x"},
        "thrift": {"port": str(thrift_sink.port)},
        "shell": {"cmd": "true", "cwd": str(tmp_path)},
    }
    ts = int(time.time())
    started = time.monotonic()
    for action, params in hung.items():
        runner.fire("hung:" + action, action, params, ts)
    for action, params in good.items():
        runner.fire("good:" + action, action, params, ts)

    for action in good:
        assert await runner.outcome("good:" + action) == 1, action
    good_done = max(runner.store.statuses["good:" + action][-1][2] for action in good)
    assert good_done - started < 0.5 * TIMEOUT

    for action in hung:
        assert await runner.outcome("hung:" + action) == -1, action
        done = runner.store.statuses["hung:" + action][-1][2]
        assert TIMEOUT * 0.9 < done - started < TIMEOUT + 1, action
