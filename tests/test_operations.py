"""Operating forsun safely, against real forsund processes (issue 9): access control,
limits, metrics, execution history, log rotation, the version flag.

Everything waits for events (a log line, a fire in a FIFO, a socket closing, a counter
reaching a value) with deadlines, never for fixed sleeps.
"""

import http.client
import json
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families
from thrift.Thrift import TMessageType

from conftest import ROOT, Forsund, free_port
from forsun.daemon import load_settings, parse_args, parse_host_port
from forsun.servers.thrift.wire import METHODS, encode_message
from forsun.thriftapi.ttypes import ForsunPlanError
from test_http_helpers import AnswerSchemas, Api

TOKEN = "s3cret-token"
AUTH = {"Authorization": "Bearer " + TOKEN}

Metrics = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


# -- helpers ----------------------------------------------------------------------------------

def until(condition: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    """Polls ``condition`` until it returns something truthy (for state only visible by
    asking: a counter, an HTTP answer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.02)


def scrape(api: Api, headers: Optional[Dict[str, str]] = None) -> Metrics:
    status, response_headers, raw = api.raw("GET", "/metrics", headers=headers)
    assert status == 200, raw[:300]
    assert response_headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Metrics = {}
    for family in text_string_to_metric_families(raw.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: Metrics, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(api: Api, condition: Callable[[Metrics], bool], what: str) -> Metrics:
    """Scrapes until ``condition`` holds for the metrics; returns them."""
    return until(lambda: (lambda samples: samples if condition(samples) else None)(
        scrape(api)), what=what)


def thrift_ping_bytes() -> bytes:
    return encode_message("ping", TMessageType.CALL, 1, METHODS["ping"].args_cls())


def connect(port: int, source: Optional[str] = None) -> socket.socket:
    sock = socket.socket()
    if source:
        sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def is_closed_by_peer(sock: socket.socket, timeout: float = 5) -> bool:
    """True once the peer closed (EOF or reset) within ``timeout``; False if it answered."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def http_request_from(port: int, source: str, headers: Dict[str, str]) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                            source_address=(source, 0))
    try:
        connection.request("GET", "/v1/ping", headers=headers)
        return connection.getresponse().status
    except (ConnectionError, http.client.RemoteDisconnected) as e:
        return e
    finally:
        connection.close()


def create_delay(api: Api, key: str, seconds: int, action: str = "shell", count: int = 1,
                 headers: Optional[Dict[str, str]] = None, **params: str) -> Dict[str, Any]:
    return api.call("PUT", "/v1/plan", {"key": key, "seconds": seconds, "count": count,
                                        "action": action, "params": params}, headers)


# -- access -----------------------------------------------------------------------------------

def test_both_servers_bind_loopback_by_default():
    settings = load_settings(parse_args([]), {})
    assert settings.get("BIND_ADDRESS") == "127.0.0.1"
    assert parse_host_port("9002", "HTTP_BIND") == ("127.0.0.1", 9002)
    assert parse_host_port(":9002", "HTTP_BIND") == ("127.0.0.1", 9002)


def test_forsund_version_flag():
    done = subprocess.run([sys.executable, "-m", "forsun.daemon", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    from forsun.version import version
    assert done.returncode == 0 and done.stdout.strip() == "forsund %s" % version


def test_http_needs_the_token_and_thrift_stays_on_loopback(forsund_factory):
    daemon = forsund_factory(http=True, env={"AUTH_TOKEN": TOKEN})
    assert daemon.wait_log("forsun serving thrift on 127.0.0.1:%d" % daemon.port)
    api = Api(daemon.http_port)
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": "Basic " + TOKEN}):
        for path in ("/v1/ping", "/v1/info", "/metrics", "/v1/executions", "/v1/nothing"):
            status, response_headers, raw = api.raw("GET", path, headers=headers)
            assert status == 401, (path, headers, raw[:200])
            lowered = {name.lower(): value for name, value in response_headers.items()}
            assert lowered["www-authenticate"].startswith("Bearer")
            answer = json.loads(raw)
            assert answer["errcode"] == 1007 and answer["data"] == {}, answer
            assert "token" in answer["errmsg"] or "Authorization" in answer["errmsg"]
    # A body is refused from the headers alone, and nothing is created.
    status, headers, raw = api.raw("PUT", "/v1/plan", {"key": "x", "seconds": 5})
    assert status == 401 and headers.get("Connection") == "close"
    assert api.ok("GET", "/v1/ping", headers=AUTH) == {}
    assert api.ok("GET", "/v1/keys", headers=AUTH) == []
    assert scrape(api, AUTH)[("forsun_plans", ())] == 0
    assert daemon.client().ping() == 0  # Thrift has no token: bind and ALLOW_IPS guard it


def test_connections_from_outside_allow_ips_are_closed(forsund_factory):
    daemon = forsund_factory(http=True, env={"ALLOW_IPS": "127.0.0.1/32"})
    refused = connect(daemon.port, source="127.0.0.2")
    refused.sendall(thrift_ping_bytes())
    assert is_closed_by_peer(refused)
    refused.close()
    allowed = connect(daemon.port, source="127.0.0.1")
    allowed.sendall(thrift_ping_bytes())
    assert not is_closed_by_peer(allowed, timeout=0.5)  # an answer, not a close
    allowed.close()
    answer = http_request_from(daemon.http_port, "127.0.0.2", {})
    assert isinstance(answer, Exception), answer
    assert http_request_from(daemon.http_port, "127.0.0.1", {}) == 200
    daemon.wait_log("thrift connection from 127.0.0.2")
    daemon.wait_log("http connection from 127.0.0.2")
    samples = scrape(Api(daemon.http_port))
    assert metric(samples, "forsun_connections_refused_total", server="thrift",
                  reason="address") == 1
    assert metric(samples, "forsun_connections_refused_total", server="http",
                  reason="address") == 1
    assert daemon.client().ping() == 0


def test_a_server_reachable_from_other_hosts_without_protection_is_warned_about(
        forsund_factory):
    daemon = forsund_factory("--bind", "0.0.0.0")
    line = daemon.wait_log("accepts connections from other hosts")
    assert "WARNING" in line and "ALLOW_IPS" in line and daemon.client().ping() == 0


def test_disallowed_actions_are_refused_and_stored_ones_fail_at_fire(forsund_factory):
    # A shell plan stored while shell was allowed...
    before = forsund_factory()
    due = before.client().create_timeout("legacy", 3, action="shell",
                                         params={"cmd": "true"}).next_time
    assert before.stop() == 0
    # ...fails when it fires on a server that no longer allows shell.
    daemon = forsund_factory(http=True, env={"ALLOWED_ACTIONS": "http;redis"})
    line = daemon.wait_log("plan legacy action shell at %d failed" % due, timeout=10)
    assert "not allowed" in line and "ALLOWED_ACTIONS" in line
    api = Api(daemon.http_port)
    fired = until(lambda: api.ok("GET", "/v1/executions?key=legacy"), what="legacy's fire")
    assert fired[0]["outcome"] == "failed" and "not allowed" in fired[0]["error"]

    with pytest.raises(ForsunPlanError) as refused:
        daemon.client().create_timeout("sh", 60, action="shell", params={"cmd": "id"})
    assert refused.value.code == 1006 and "not allowed" in refused.value.message
    answer = create_delay(api, "sh", 60, cmd="id")
    assert answer["errcode"] == 1006 and "allowed actions: http; redis" in answer["errmsg"]
    crontab = api.call("PUT", "/v1/plan", "a */9 * * * * * http http://127.0.0.1:1/\n"
                                          "b */9 * * * * * shell id",
                       {"Content-Type": "application/crontab"})
    assert crontab["errcode"] == 1006 and api.ok("GET", "/v1/keys") == []
    assert create_delay(api, "hook", 60, "http", url="http://127.0.0.1:1/")["errcode"] == 0


# -- limits -----------------------------------------------------------------------------------

def test_each_limit_has_its_clear_error_and_others_are_served(forsund_factory):
    daemon = forsund_factory(http=True, env={
        "MAX_PLANS": "3", "MAX_PARAMS_BYTES": "1000", "HTTP_MAX_BODY_BYTES": "4096",
        "THRIFT_MAX_MESSAGE_BYTES": "65536", "THRIFT_MAX_CONNECTIONS": "4",
        "HTTP_MAX_CONNECTIONS": "4"})
    api = Api(daemon.http_port)
    client = daemon.client()

    # MAX_PLANS: 1004 for a new key, replacing works, room again after a removal.
    for n in range(3):
        client.create_timeout("p%d" % n, 600, params={"cmd": "true"})
    with pytest.raises(ForsunPlanError) as full:
        client.create_timeout("p3", 600, params={"cmd": "true"})
    assert full.value.code == 1004 and "MAX_PLANS = 3" in full.value.message
    answer = create_delay(api, "p3", 600, cmd="true")
    assert answer["errcode"] == 1004 and "its limit (MAX_PLANS = 3)" in answer["errmsg"]
    assert client.create_timeout("p0", 900, params={"cmd": "true"}).next_time > 0
    client.remove("p2")
    assert create_delay(api, "p3", 600, cmd="true")["errcode"] == 0

    # MAX_PARAMS_BYTES: 1007 over both APIs.
    with pytest.raises(ForsunPlanError) as big:
        client.create_timeout("p0", 600, params={"cmd": "x" * 2000})
    assert big.value.code == 1007 and "MAX_PARAMS_BYTES" in big.value.message
    assert "MAX_PARAMS_BYTES" in api.error(1007, "PUT", "/v1/plan", {
        "key": "p0", "seconds": 600, "params": {"cmd": "x" * 2000}})

    # HTTP_MAX_BODY_BYTES: 1007 without reading the body.
    assert "HTTP_MAX_BODY_BYTES" in api.error(1007, "PUT", "/v1/plan", "x" * 5000)

    # THRIFT_MAX_MESSAGE_BYTES: the sender is disconnected and the log says why.
    client.close()
    sock = connect(daemon.port)
    big_call = encode_message("createTimeout", TMessageType.CALL, 1, METHODS[
        "createTimeout"].args_cls("huge", 600, -1, -1, -1, -1, -1, 1, "shell",
                                  {"cmd": "x" * 100000}))
    try:
        sock.sendall(big_call)
    except ConnectionError:
        pass  # closed while we were still sending: also a refusal
    assert is_closed_by_peer(sock)
    sock.close()
    daemon.wait_log("thrift client 127.0.0.1")

    # THRIFT_MAX_CONNECTIONS / HTTP_MAX_CONNECTIONS: the one too many is closed at accept.
    for port, server in ((daemon.port, "thrift"), (daemon.http_port, "http")):
        held = [connect(port) for _ in range(4)]
        extra = connect(port)
        assert is_closed_by_peer(extra), server
        extra.close()
        held.pop().close()
        if server == "thrift":
            until(lambda: _thrift_ping(daemon), what="a free thrift connection")
        else:
            until(lambda: _http_ping(api), what="a free http connection")
        for sock in held:
            sock.close()
    daemon.wait_log("connections open, the limit (THRIFT_MAX_CONNECTIONS)")
    daemon.wait_log("connections open, the limit (HTTP_MAX_CONNECTIONS)")

    samples = until(lambda: _scrape_when_free(api), what="a scrape")
    for server in ("thrift", "http"):
        # 1, plus any ping above that came before the server saw the freed connection
        assert metric(samples, "forsun_connections_refused_total", server=server,
                      reason="max_connections") >= 1
    assert sorted(daemon.client().get_keys("")) == ["p0", "p1", "p3"]


def _thrift_ping(daemon: Forsund) -> bool:
    client = daemon.client()
    try:
        return client.ping() == 0
    except Exception:
        return False
    finally:
        client.close()


def _http_ping(api: Api) -> bool:
    try:
        return api.ok("GET", "/v1/ping") == {}
    except (ConnectionError, http.client.HTTPException):
        return False


def _scrape_when_free(api: Api) -> Optional[Metrics]:
    try:
        return scrape(api)
    except (ConnectionError, http.client.HTTPException):
        return None


def test_idle_and_slow_connections_are_closed_after_the_timeout(forsund_factory):
    count = 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * count + 200
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip("needs %d open files, the hard limit is %d" % (needed, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    daemon = forsund_factory(http=True, env={
        "THRIFT_IDLE_TIMEOUT": "1", "HTTP_IDLE_TIMEOUT": "1", "HTTP_BODY_TIMEOUT": "1"})
    api = Api(daemon.http_port)
    sockets: List[Tuple[socket.socket, float, str]] = []
    try:
        for _ in range(count):
            sockets.append((connect(daemon.port), time.monotonic(), "thrift idle"))
            sockets.append((connect(daemon.http_port), time.monotonic(), "http idle"))
        slow = [(connect(daemon.port), b"\x80\x01\x00\x01\x00\x00", "thrift half message"),
                (connect(daemon.http_port), b"GET /v1/ping HTTP/1.1\r\nHost: x", "http headers"),
                (connect(daemon.http_port), b"PUT /v1/plan HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: 100\r\n\r\n{\"key\"",
                 "http body")]
        for sock, data, what in slow:
            sock.sendall(data)
            sockets.append((sock, time.monotonic(), what))
        assert daemon.client().ping() == 0 and api.ok("GET", "/v1/ping") == {}

        selector = selectors.DefaultSelector()
        for sock, opened, what in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, (opened, what))
        closed_after: List[Tuple[float, str]] = []
        deadline = time.monotonic() + 10
        while len(closed_after) < len(sockets) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=deadline - time.monotonic()):
                opened, what = key.data
                try:
                    data = key.fileobj.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert data == b"", "%s got an answer: %r" % (what, data)
                selector.unregister(key.fileobj)
                closed_after.append((time.monotonic() - opened, what))
        assert len(closed_after) == len(sockets), "%d of %d closed" % (len(closed_after),
                                                                        len(sockets))
        too_soon = [item for item in closed_after if item[0] < 0.9]
        assert not too_soon, too_soon[:5]
        assert {what for _, what in closed_after} == {
            "thrift idle", "http idle", "thrift half message", "http headers", "http body"}
    finally:
        for sock, _, _ in sockets:
            sock.close()
    # Still serving, and the connections are gone from the gauges.
    assert daemon.client().ping() == 0
    samples = scrape_until(api, lambda s: metric(s, "forsun_connections_open",
                                                 server="http") <= 1,
                           what="http connections to close")
    assert metric(samples, "forsun_connections_total", server="http") >= count + 2


# -- metrics and execution history ------------------------------------------------------------

def test_metrics_move_and_executions_show_outcomes_bounded(forsund_factory, fifo_sink):
    daemon = forsund_factory(http=True, env={
        "EXECUTION_HISTORY_SIZE": "5", "ACTION_RETRY_MAX_COUNT": "1",
        "ACTION_RETRY_DELAY_SECONDS": "0.05", "IOLOOP_LAG_PROBE_SECONDS": "0.05"})
    api = Api(daemon.http_port)
    schemas = AnswerSchemas(json.loads(api.raw("GET", "/v1/openapi.json")[2]))
    before = scrape(api)
    assert api.ok("GET", "/v1/executions") == []

    for n in range(6):
        assert create_delay(api, "ok-%d" % n, 1, cmd=fifo_sink.command("ok"))["errcode"] == 0
    dead = "http://127.0.0.1:%d/" % free_port()
    assert create_delay(api, "retry", 1, "http", url=dead)["errcode"] == 0
    assert create_delay(api, "bad", 1, count=0, cmd="echo boom >&2; exit 3")["errcode"] == 0
    daemon.client().create_timeout("thrift-made", 600, params={"cmd": "true"})
    fifo_sink.wait(6, timeout=10)

    bad = until(lambda: api.ok("GET", "/v1/executions?key=bad"), what="bad's fire")
    assert bad[0]["outcome"] == "failed" and bad[0]["status"] == -1
    assert "exited with 3" in bad[0]["error"] and "boom" in bad[0]["error"]
    assert api.ok("GET", "/v1/plan?key=bad")["status"] == -1  # the last outcome in status
    retried = until(lambda: api.ok("GET", "/v1/executions?key=retry"), what="retry's fire")
    assert retried[0]["outcome"] == "failed" and retried[0]["attempts"] == 2
    assert retried[0]["action"] == "http" and "gave up after 1 retries" in retried[0]["error"]

    answer = api.call("GET", "/v1/executions")
    schemas.validate("/v1/executions", "GET", answer)
    executions = answer["data"]
    assert len(executions) == 5  # bounded to EXECUTION_HISTORY_SIZE, 8+ fires so far
    assert all(e["outcome"] in ("succeeded", "failed") and e["duration"] >= 0
               for e in executions)
    assert len(api.ok("GET", "/v1/executions?limit=2")) == 2
    assert api.error(1007, "GET", "/v1/executions?limit=x")

    after = scrape_until(api, lambda s: metric(s, "forsun_fires_total", action="shell",
                                               outcome="succeeded") >= 6,
                         what="six fires counted")
    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("forsun_plans_created_total", kind="delay") == 9
    assert moved("forsun_fires_total", action="shell", outcome="failed") >= 1
    assert moved("forsun_fires_total", action="http", outcome="failed") == 1
    assert moved("forsun_action_retries_total", action="http") == 1
    assert moved("forsun_action_duration_seconds_count", action="shell") >= 7
    assert moved("forsun_action_duration_seconds_count", action="http") == 2
    assert moved("forsun_timer_lateness_seconds_count") >= 1
    assert metric(after, "forsun_timer_lateness_seconds_bucket", le="+Inf") >= 1
    assert moved("forsun_ioloop_lag_seconds_count") >= 1
    assert moved("forsun_requests_total", server="http") >= 10
    assert moved("forsun_requests_total", server="thrift") >= 1
    assert metric(after, "forsun_plans") == 2  # bad (repeating) and thrift-made
    assert metric(after, "forsun_executions_kept") == 5

    api.ok("DELETE", "/v1/plan?key=bad")
    final = scrape(api)
    assert metric(final, "forsun_plans_removed_total") == 1
    assert metric(final, "forsun_plans") == 1
    # The old info counters stay.
    info = api.ok("GET", "/v1/info")
    assert int(info["action_executed_error_count"]) >= 2 and info["removed_count"] == "1"


def test_store_persistence_errors_are_counted(forsund_factory, tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    daemon = forsund_factory("--driver-mem-store-file", str(store_dir / "forsun.dump"),
                             http=True, env={"STORE_MEM_FLUSH_SECONDS": "1"})
    api = Api(daemon.http_port)
    shutil.rmtree(str(store_dir))  # the next snapshot cannot be written
    assert create_delay(api, "k", 600, cmd="true")["errcode"] == 0
    scrape_until(api, lambda s: metric(s, "forsun_store_errors_total",
                                       operation="snapshot") >= 1,
                 what="the failed snapshot to be counted")
    assert api.ok("GET", "/v1/plan?key=k")["key"] == "k"  # still serving


# -- running it -------------------------------------------------------------------------------

def test_log_rotates_by_size(tmp_path):
    log_file = tmp_path / "forsun.log"
    daemon = Forsund(str(tmp_path), ["--log", str(log_file)], env={
        "LOG_ROTATE": "2K", "LOG_BACKUP_COUNT": "2"}, http=True)
    try:
        daemon.start(wait=False)
        until(lambda: log_file.exists() and "ready" in log_file.read_text(), timeout=30,
              what="forsund to start")
        api = Api(daemon.http_port)
        for n in range(60):  # each is an INFO line "http GET /v1/plan?key=... errcode 1003"
            api.error(1003, "GET", "/v1/plan?key=missing-%d" % n)
        until(lambda: (tmp_path / "forsun.log.2").exists(), what="two rotations")
        assert not (tmp_path / "forsun.log.3").exists()  # LOG_BACKUP_COUNT
        for path in (log_file, tmp_path / "forsun.log.1", tmp_path / "forsun.log.2"):
            assert path.stat().st_size <= 2048, path
        api.error(1003, "GET", "/v1/plan?key=last-one")
        until(lambda: "last-one" in log_file.read_text(), what="logging to go on")
    finally:
        assert daemon.stop() == 0
