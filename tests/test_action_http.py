"""The http action against an HTTP sink served on the test's IOLoop."""

import asyncio
import base64
import logging
import time
from typing import List, NamedTuple

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from conftest import free_port
from forsun.action.action import ExecuteActionError
from forsun.action.drivers.http import HttpAction, describe_url
from forsun.error import ActionExecuteRetry
from forsun.version import version
from test_action_helpers import (action_pools, action_settings, make_runner,  # noqa: F401
                                 plan)


class Seen(NamedTuple):
    method: str
    path: str
    body: bytes
    headers: dict
    at: float


class Sink:
    """Answers /code/NNN with status NNN and /hang never; records every request."""

    def __init__(self) -> None:
        self.requests: List[Seen] = []
        self.arrived = asyncio.Event()
        sink = self

        class Handler(RequestHandler):
            SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")

            async def _any(self, code: str = "200") -> None:
                sink.requests.append(Seen(self.request.method, self.request.path,
                                          self.request.body, dict(self.request.headers),
                                          time.monotonic()))
                sink.arrived.set()
                if code == "hang":
                    await asyncio.Event().wait()
                self.set_status(int(code))

            get = post = put = delete = head = patch = options = _any

        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.server = HTTPServer(Application([(r"/code/(\w+)", Handler)]))
        self.server.add_sockets(sockets)

    def url(self, code: str = "200") -> str:
        return "http://127.0.0.1:%d/code/%s" % (self.port, code)

    async def wait(self, count: int) -> List[Seen]:
        while len(self.requests) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)
        return self.requests


@pytest.fixture
def sink(io_loop):
    sink = Sink()
    yield sink
    sink.server.stop()


def http(ts: int = 1700000000, **params: str) -> HttpAction:
    return HttpAction(ts, plan(action="http", **params), "http", params)


async def test_request_carries_method_body_headers_auth_agent_and_timestamp(sink,
                                                                             action_settings,
                                                                             action_pools):
    await http(url=sink.url(), method="post", body="a=1&b=2",
               **{"header_X-Custom": "yes",
                  "header_Content-Type": "application/x-www-form-urlencoded"},
               auth_username="ann", auth_password="s3cret", auth_mode="basic",
               user_agent="agent/7").execute()
    seen = sink.requests[0]
    assert (seen.method, seen.body) == ("POST", b"a=1&b=2")
    assert seen.headers["X-Custom"] == "yes"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"ann:s3cret").decode()
    assert seen.headers["User-Agent"] == "agent/7"
    assert seen.headers["X-Forsun-Timestamp"] == "1700000000"


async def test_defaults_get_and_forsun_user_agent(sink, action_settings, action_pools):
    await http(ts=5, url=sink.url()).execute()
    await http(ts=6, url=sink.url(), method="delete", body="x").execute()
    action_settings.set("ACTION_HTTP_USER_AGENT", "configured/1")
    await http(ts=7, url=sink.url(), method="HEAD").execute()
    first, second, third = sink.requests
    assert (first.method, first.headers["User-Agent"]) == ("GET", "forsun/%s" % version)
    assert "Authorization" not in first.headers
    assert (second.method, second.body) == ("DELETE", b"x")
    assert (third.method, third.headers["User-Agent"]) == ("HEAD", "configured/1")


async def test_answers_decide_retry_or_final(sink, action_settings, action_pools):
    await http(url=sink.url("204")).execute()
    await http(url=sink.url("302")).execute()  # a redirect without Location is an answer
    with pytest.raises(ActionExecuteRetry, match="HTTP 503"):
        await http(url=sink.url("503")).execute()
    with pytest.raises(ExecuteActionError, match="HTTP 404"):
        await http(url=sink.url("404")).execute()
    with pytest.raises(ActionExecuteRetry, match="Timeout"):
        await http(url=sink.url("hang"), request_timeout="0.2").execute()
    with pytest.raises(ActionExecuteRetry, match="refused"):
        await http(url="http://127.0.0.1:%d/" % free_port()).execute()


@pytest.mark.parametrize("params, message", [
    ({}, "missing required param 'url'"),
    ({"url": "ftp://example.org/x"}, "http:// or https://"),
    ({"url": "http://127.0.0.1/", "method": "brew"}, "param 'method'"),
    ({"url": "http://127.0.0.1/", "auth_username": "a", "auth_mode": "digest"}, "auth_mode"),
    ({"url": "http://127.0.0.1/", "request_timeout": "soon"}, "request_timeout"),
])
async def test_bad_params_are_final(params, message, action_settings, action_pools):
    with pytest.raises(ExecuteActionError, match=message):
        await http(**params).execute()


def test_describe_url_drops_credentials_and_query():
    assert describe_url("https://u:pw@host:8443/a/b?token=x") == "https://host:8443/a/b"


@pytest.mark.gen_test(timeout=20)
async def test_503_is_retried_with_the_configured_delays_then_failed(sink, make_runner,
                                                                     caplog):
    runner = make_runner(ACTION_RETRY_DELAY_SECONDS=0.2, ACTION_RETRY_DELAY_RATE=1,
                         ACTION_RETRY_MAX_COUNT=3)
    caplog.set_level(logging.INFO, logger="forsun.action")
    runner.fire("http:503", "http", {"url": sink.url("503").replace("127.0.0.1",
                                                                    "u:pw1@127.0.0.1"),
                                     "auth_username": "u", "auth_password": "pw2"})
    assert await runner.outcome("http:503") == -1
    times = [seen.at for seen in sink.requests]
    assert len(times) == 4
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    for gap, expected in zip(gaps, (0.4, 0.6, 0.8)):  # 0.2 * (1 + 1 * n)
        assert expected - 0.05 < gap < expected + 0.25, gaps
    status = runner.status
    assert (status.action_retried_count, status.action_executed_count) == (3, 4)
    assert status.action_executed_error_count == 4
    failures = [r.getMessage() for r in caplog.records
                if r.name == "forsun.action" and r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert "http:503" in failures[0] and "HTTP 503" in failures[0]
    assert "127.0.0.1:%d/code/503" % sink.port in failures[0]
    assert not any("pw1" in r.getMessage() or "pw2" in r.getMessage() for r in caplog.records)


async def test_refused_connection_is_retried(make_runner):
    runner = make_runner(ACTION_RETRY_DELAY_SECONDS=0.05, ACTION_RETRY_MAX_COUNT=2)
    runner.fire("http:refused", "http", {"url": "http://127.0.0.1:%d/" % free_port()})
    assert await runner.outcome("http:refused") == -1
    assert runner.status.action_retried_count == 2


async def test_404_is_not_retried(sink, make_runner):
    runner = make_runner(ACTION_RETRY_DELAY_SECONDS=0.05)
    runner.fire("http:404", "http", {"url": sink.url("404")})
    assert await runner.outcome("http:404") == -1
    assert runner.status.action_retried_count == 0 and len(sink.requests) == 1
    runner.fire("http:ok", "http", {"url": sink.url("200")})
    assert await runner.outcome("http:ok") == 1


async def test_max_clients_queues_requests_beyond_it(sink, action_settings, action_pools):
    action_settings.set("ACTION_HTTP_MAX_CLIENTS", 2)
    hanging = [asyncio.ensure_future(http(url=sink.url("hang"), request_timeout="5").execute())
               for _ in range(2)]
    await sink.wait(2)
    queued = asyncio.ensure_future(http(url=sink.url("200"), connect_timeout="0.3").execute())
    with pytest.raises(ActionExecuteRetry, match="in request queue"):
        await queued
    assert len(sink.requests) == 2
    for task in hanging:
        task.cancel()
