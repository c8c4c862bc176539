"""End to end: plans created over Thrift in a real forsund fire every built-in action."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, NamedTuple

import greenstalk
import pytest

from test_action_helpers import BlackHole
from test_action_mysql import DB, db, rows  # noqa: F401

ACTIONS = {"shell", "http", "redis", "thrift", "beanstalk", "mysql"}


class Seen(NamedTuple):
    method: str
    path: str
    body: bytes
    headers: object  # an email.message.Message: names are case-insensitive
    at: float


class ThreadHttpSink:
    """An HTTP server in a thread (the test itself blocks on the Thrift client): answers
    /code/NNN with NNN and records every request."""

    def __init__(self) -> None:
        self.requests: List[Seen] = []
        self.cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with sink.cond:
                    sink.requests.append(Seen(self.command, self.path, body,
                                              self.headers, time.monotonic()))
                    sink.cond.notify_all()
                self.send_response(int(self.path.rsplit("/", 1)[-1]))
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, code: int = 200) -> str:
        return "http://127.0.0.1:%d/code/%d" % (self.port, code)

    def wait(self, count: int, timeout: float = 10) -> List[Seen]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= count, timeout), \
                "expected %d requests, saw %d" % (count, len(self.requests))
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_sink():
    sink = ThreadHttpSink()
    yield sink
    sink.close()


def wait_for(condition: Callable[[], object], timeout: float = 10) -> object:
    """Polls a condition that only another process can change (a row, a key, a counter)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in %ss" % timeout
        time.sleep(0.05)


def test_every_builtin_action_fires_from_forsund(forsund_factory, http_sink, redis_server,
                                                 beanstalkd, db, fifo_sink):
    target = forsund_factory()  # the thrift action calls this one's forsun_call
    daemon = forsund_factory()
    client = daemon.client()
    assert set(client.info()["actions"].split(";")) == ACTIONS
    plans = {
        "shell": {"cmd": fifo_sink.command("shell")},
        "http": {"url": http_sink.url(), "method": "post", "body": "hello",
                 "header_X-Tag": "e2e"},
        "redis": {"port": str(redis_server.port), "selected_db": "2",
                  "command": "SET e2e 1;LPUSH e2e:q 'a b'"},
        "thrift": {"port": str(target.port)},
        "beanstalk": {"port": str(beanstalkd.port), "name": "etask", "body": "{}"},
        "mysql": {"port": str(db.port), "db": DB, "passwd": "",
                  "sql": "INSERT INTO t (v) VALUES ('e2e')"},
    }
    due = {name: client.create_timeout("e2e:" + name, 1, action=name, params=params).next_time
           for name, params in plans.items()}

    (tag, fired_ts, _), = fifo_sink.wait(1)
    assert (tag, int(fired_ts)) == ("shell", due["shell"])
    seen, = http_sink.wait(1)
    assert (seen.method, seen.body, seen.headers["X-Tag"]) == ("POST", b"hello", "e2e")
    assert seen.headers["X-FORSUN-TIMESTAMP"] == str(due["http"])
    with greenstalk.Client(("127.0.0.1", beanstalkd.port), watch="etask") as queue:
        assert queue.reserve(timeout=10).body == "{}"
    db2 = redis_server.client(2)
    wait_for(lambda: db2.get("e2e"))
    assert db2.lrange("e2e:q", 0, -1) == [b"a b"]
    wait_for(lambda: rows(db) == ["e2e"])
    target_client = target.client()
    wait_for(lambda: int(target_client.info()["requested_count"]) >= 2)  # info + forsun_call
    info = wait_for(lambda: (lambda i: i if i["action_executed_count"] == "6" else None)(
        client.info()))
    assert info["action_executed_error_count"] == "0"
    assert info["action_retried_count"] == "0"
    assert daemon.stop() == 0  # the pools of every action close at a clean stop
    assert "uninit failed" not in daemon.log and "Traceback" not in daemon.log


def test_503_is_retried_with_the_configured_delays_and_logged_once(forsund_factory,
                                                                   http_sink):
    daemon = forsund_factory(env={"ACTION_RETRY_DELAY_SECONDS": "0.2",
                                  "ACTION_RETRY_DELAY_RATE": "1",
                                  "ACTION_RETRY_MAX_COUNT": "3"})
    client = daemon.client()
    url = http_sink.url(503).replace("127.0.0.1", "user:url-secret@127.0.0.1")
    plan = client.create_timeout("e2e:503", 1, action="http",
                                 params={"url": url, "auth_username": "u",
                                         "auth_password": "param-secret"})
    requests = http_sink.wait(4)
    gaps = [b.at - a.at for a, b in zip(requests, requests[1:])]
    for gap, expected in zip(gaps, (0.4, 0.6, 0.8)):
        assert expected - 0.05 < gap < expected + 0.3, gaps
    failed = daemon.wait_log("plan e2e:503 action http at %d failed" % plan.next_time)
    assert "gave up after 3 retries" in failed and "HTTP 503" in failed
    assert "127.0.0.1:%d/code/503" % http_sink.port in failed
    info = client.info()
    assert (info["action_retried_count"], info["action_executed_error_count"]) == ("3", "4")
    assert daemon.log.count("failed:") == 1
    assert "secret" not in daemon.log


def test_unanswering_target_does_not_delay_a_plan_due_in_the_same_second(forsund_factory,
                                                                         fifo_sink):
    hole = BlackHole()
    try:
        daemon = forsund_factory(env={"ACTION_RETRY_MAX_COUNT": "0"})
        client = daemon.client()
        second = (int(time.time()) + 2) % 60
        hung = client.create("e2e:hung", second, action="thrift",
                             params={"port": str(hole.port), "timeout": "2"})
        quick = client.create("e2e:quick", second, action="shell",
                              params={"cmd": fifo_sink.command("quick")})
        assert hung.next_time == quick.next_time
        (_, fired_ts, wall), = fifo_sink.wait(1)
        assert int(fired_ts) == quick.next_time
        assert quick.next_time <= float(wall) < quick.next_time + 1
        failed = daemon.wait_log("plan e2e:hung action thrift at %d failed" % hung.next_time)
        assert "no answer in 2.0 s" in failed
        assert client.get("e2e:hung").status == -1
        assert client.get("e2e:quick").status == 1
    finally:
        hole.close()
