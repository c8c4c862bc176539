"""Bad input to the HTTP API: each gets its errcode and a message naming the problem, in the
envelope, and the server keeps answering; oversized bodies are refused unread."""

import select
import socket
import time

import pytest

from test_http_helpers import Api, check_envelope, running_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from running_daemon(tmp_path_factory)


@pytest.fixture(scope="module")
def api(daemon):
    return Api(daemon.http_port)

PLAN = "/v1/plan"
CRONTAB = {"Content-Type": "application/crontab"}


@pytest.mark.parametrize("method, path, body, errcode, words", [
    # bodies that are not a JSON object
    ("PUT", PLAN, b"", 1007, "body is empty"),
    ("PUT", PLAN, b"{not json", 1007, "not JSON"),
    ("POST", PLAN, b"\xff\xfe{}", 1007, "not UTF-8"),
    ("PUT", PLAN, b"[1, 2]", 1007, "got a JSON array"),
    ("POST", PLAN, b'"x"', 1007, "got a JSON string"),
    ("PUT", PLAN, b'{"seconds": NaN}', 1007, "NaN"),
    ("PUT", PLAN, b"[" * 50000, 1007, "not JSON"),
    # fields
    ("PUT", PLAN, {"seconds": "five"}, 1007, "second must be an integer"),
    ("PUT", PLAN, {"seconds": 1.5}, 1007, "second must be an integer"),
    ("PUT", PLAN, {"seconds": True}, 1007, "second must be an integer"),
    ("POST", PLAN, {"minute": [1]}, 1007, "minute must be an integer"),
    ("PUT", PLAN, {"seconds": 40000}, 1007, "second must be between -32768 and 32767"),
    ("PUT", PLAN, {"seconds": 5, "week": -40000}, 1007, "week must be between"),
    ("PUT", PLAN, {"seconds": 5, "count": -1}, 1007, "count must be between 0"),
    ("PUT", PLAN, {"seconds": 5, "count": 1 << 40}, 1007, "count must be between"),
    ("PUT", PLAN, {"seconds": 5, "key": 7}, 1007, "key must be a string"),
    ("PUT", PLAN, {"seconds": 5, "key": "k" * 1025}, 1007, "key is longer than 1024"),
    ("PUT", PLAN, {"seconds": 5, "action": ""}, 1007, "action must be a non-empty string"),
    ("PUT", PLAN, {"seconds": 5, "action": ["shell"]}, 1007, "action must be"),
    ("PUT", PLAN, {"seconds": 5, "params": "cmd=ls"}, 1007, "params must be an object"),
    ("PUT", PLAN, {"seconds": 5, "params": ["ls"]}, 1007, "params must be an object"),
    ("PUT", PLAN, {"seconds": 5, "params": {"cmd": 1}}, 1007, "params must map strings"),
    ("PUT", PLAN, {"seconds": 5, "params": {"cmd": None}}, 1007, "params must map strings"),
    ("PUT", PLAN, b'{"seconds": 5, "key": "\\udc80"}', 1007, "lone surrogate"),
    ("PUT", PLAN, {"seconds": 5, "action": "no-such-action"}, 1006, "unknown action"),
    # times that never arrive
    ("PUT", PLAN, {"key": "k"}, 1002, "at least 1 second"),
    ("PUT", PLAN, {"seconds": 0, "minute": 0}, 1002, "at least 1 second"),
    ("POST", PLAN, {"seconds": 60}, 1002, "second must be -1 (every) or 0-59, got 60"),
    ("POST", PLAN, {"day": 30, "month": 2}, 1002, "day 30 does not exist in month 2"),
    ("POST", PLAN, {"hour": 24}, 1002, "hour"),
    # query strings
    ("GET", PLAN, None, 1007, "key is required"),
    ("GET", PLAN + "?key=", None, 1007, "key is required"),
    ("DELETE", PLAN, None, 1007, "key is required"),
    ("GET", PLAN + "?key=%FF", None, 1007, "key is not UTF-8"),
    ("GET", PLAN + "?key=no:such:key", None, 1003, "not found"),
    ("DELETE", PLAN + "?key=no:such:key", None, 1003, "not found"),
    ("GET", "/v1/time?timestamp=soon", None, 1007, "timestamp must be an integer"),
    ("GET", "/v1/time?timestamp=99999999999", None, 1007, "timestamp must be"),
    ("GET", "/v1/keys?prefix=%C0", None, 1007, "prefix is not UTF-8"),
    # routes and methods
    ("GET", "/", None, 1007, "there is no route /"),
    ("GET", "/v1/plans", None, 1007, "there is no route /v1/plans; the routes are"),
    ("POST", "/v2/plan", {}, 1007, "there is no route"),
    ("PATCH", PLAN, {}, 1007, "method PATCH is not allowed on /v1/plan"),
    ("OPTIONS", PLAN, None, 1007, "use GET or PUT or POST or DELETE"),
    ("BREW", "/v1/ping", None, 1007, "method BREW is not allowed"),
    ("POST", "/v1/ping", {}, 1007, "use GET"),
    ("DELETE", "/v1/info", None, 1007, "not allowed"),
    ("PUT", "/v1/openapi.json", {}, 1007, "not allowed"),
])
def test_bad_input_gets_its_errcode(api, method, path, body, errcode, words):
    errmsg = api.error(errcode, method, path, body)
    assert words in errmsg


@pytest.mark.parametrize("body, errcode, words", [
    ("", 1007, "no plan line"),
    ("# only a comment\n\n", 1007, "no plan line"),
    ("k */5 * * *", 1007, "line 1: expected KEY"),
    ("ok */5 * * * * * shell ls\n\nk 1 2 3 4 5 6 shell 'unbalanced", 1007, "line 3: unbalanced"),
    ("k x * * * * * shell ls", 1007, "line 1: second"),
    ("k */0 * * * * * shell ls", 1002, "line 1: the delay is 0 seconds"),
    ("k 0 30 2 31 4 * shell ls", 1002, "line 1: day 31 does not exist in month 4"),
    ("k */5 * * * * * mystery a=b", 1006, "line 1: unknown action"),
])
def test_bad_crontab_bodies(api, body, errcode, words):
    answer = api.crontab("PUT", body)
    assert answer["errcode"] == errcode and words in answer["errmsg"], answer
    assert api.ok("GET", "/v1/keys?prefix=ok") == []


def test_crontab_content_type_parameters_are_ignored(api):
    answer = api.call("POST", PLAN, "ct:x */60 * * * * * shell ls",
                      {"Content-Type": "Application/Crontab; charset=utf-8"})
    assert answer["errcode"] == 0 and answer["data"]["key"] == "ct:x"


def test_json_with_any_other_content_type(api):
    """curl -d sends x-www-form-urlencoded; the body is still read as JSON."""
    plan = api.ok("PUT", PLAN, '{"key": "ct:form", "seconds": 60}',
                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert plan["key"] == "ct:form"


def test_an_overlong_errmsg_is_cut(api):
    errmsg = api.error(1007, "PUT", PLAN, {"seconds": "x" * 5000})
    assert 500 <= len(errmsg) <= 510 and errmsg.endswith("...")


def test_head_gets_headers_only(api):
    status, headers, body = api.raw("HEAD", "/v1/ping")
    assert status == 200 and body == b"" and "Etag" not in headers


def test_if_none_match_never_gets_a_bodiless_304(api):
    status, headers, first = api.raw("GET", "/v1/ping")
    status, _, again = api.raw("GET", "/v1/ping", headers={"If-None-Match": "*"})
    assert status == 200 and again == first


# -- bodies over HTTP_MAX_BODY_BYTES (1 MiB by default) ------------------------------------

def request_head(length_header: str, extra: str = "") -> bytes:
    return ("PUT /v1/plan HTTP/1.1\r\nHost: forsun\r\nContent-Type: application/json\r\n"
            "%s\r\n%s\r\n" % (length_header, extra)).encode()


def read_answer(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes (a reset after the answer is fine)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def parse_answer(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"connection: close" in head.lower()
    return check_envelope(status, body)


def send_until_answered(sock: socket.socket, total: int) -> int:
    """Sends up to ``total`` body bytes, stopping as soon as an answer can be read."""
    chunk = b"x" * 65536
    sent = 0
    while sent < total:
        readable, writable, _ = select.select([sock], [sock], [], 10)
        if readable:
            break
        try:
            sent += sock.send(chunk[:total - sent])
        except (BrokenPipeError, ConnectionResetError):
            break
    return sent


def test_a_declared_10_mib_body_is_refused_from_its_headers(daemon, api):
    """Only the headers are sent: the answer comes without waiting for the body."""
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(request_head("Content-Length: %d" % (10 << 20)) + b'{"key": ')
        answer = parse_answer(read_answer(sock))
    assert answer["errcode"] == 1007
    assert "10485760 bytes" in answer["errmsg"] and "HTTP_MAX_BODY_BYTES" in answer["errmsg"]
    assert api.alive()


def test_a_client_sending_10_mib_gets_the_answer_early(daemon, api):
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(request_head("Content-Length: %d" % (10 << 20)))
        sent = send_until_answered(sock, 10 << 20)
        answer = parse_answer(read_answer(sock))
    assert answer["errcode"] == 1007 and sent < 10 << 20
    assert api.alive()


def test_a_chunked_body_is_refused_once_past_the_limit(daemon, api):
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(request_head("Transfer-Encoding: chunked"))
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        sent = 0
        while sent < 10 << 20:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 65536
        answer = parse_answer(read_answer(sock))
    assert answer["errcode"] == 1007 and "larger than 1048576 bytes" in answer["errmsg"]
    assert sent < 10 << 20  # answered before all was sent (kernel buffers hold megabytes)
    assert api.alive()


def test_one_huge_announced_chunk_is_refused(daemon, api):
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(request_head("Transfer-Encoding: chunked") + b"40000000\r\n")
        send_until_answered(sock, 4 << 20)
        answer = parse_answer(read_answer(sock))
    assert answer["errcode"] == 1007
    assert api.alive()


@pytest.mark.parametrize("framing, words", [
    ("Content-Length: ten", "not a number"),
    ("Content-Length: 5, 6", "unequal Content-Length"),
    ("Content-Length: 5\r\nTransfer-Encoding: chunked", "both Transfer-Encoding"),
    ("Transfer-Encoding: gzip", "Transfer-Encoding"),
])
def test_bad_framing_is_answered_in_the_envelope(daemon, api, framing, words):
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(request_head(framing) + b"{}")
        answer = parse_answer(read_answer(sock))
    assert answer["errcode"] == 1007 and words in answer["errmsg"], answer
    assert api.alive()


def test_a_body_just_under_the_limit_is_read(api):
    body = b'{"key": "big:ok", "seconds": 60, "params": {"cmd": "true"}}'
    body += b" " * ((1 << 20) - len(body))
    assert api.ok("PUT", PLAN, body)["key"] == "big:ok"
    assert "1048577 bytes" in api.error(1007, "PUT", PLAN, body + b" ")


def test_expect_100_continue_gets_the_refusal_instead_of_continue(daemon, api):
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(request_head("Content-Length: %d" % (10 << 20), "Expect: 100-continue\r\n"))
        answer = read_answer(sock)
    assert b"100 (Continue)" not in answer
    assert parse_answer(answer)["errcode"] == 1007


# -- garbage and abrupt clients ------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"\x00\xff" * 100 + b"\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nno colon here\r\n\r\n",
    b"PUT /v1/plan HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: " + b"h" * 100000 + b"\r\n\r\n",
])
def test_non_http_input_is_dropped_without_a_5xx(daemon, api, garbage):
    """Input that is no HTTP request cannot be answered in the envelope: tornado answers a
    bare 400 or closes; never a 5xx, and the server goes on."""
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        try:
            sock.sendall(garbage)
            data = read_answer(sock)
        except (BrokenPipeError, ConnectionResetError):
            data = b""
    assert data == b"" or data.startswith(b"HTTP/1.1 400"), data[:200]
    assert api.alive()


def test_clients_that_vanish_mid_request_leave_no_trace(daemon, api):
    for head in (request_head("Content-Length: 1000") + b'{"key"',
                 request_head("Transfer-Encoding: chunked") + b"5\r\nab",
                 b"GET /v1/pi"):
        with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
            sock.sendall(head)
    deadline = time.monotonic() + 5
    while True:
        info = api.ok("GET", "/v1/info")
        if info["http_connecting_count"] == "1" and info["http_requesting_count"] == "1":
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def test_the_server_still_answers_everything(api, daemon):
    assert api.alive()
    assert "ready" in daemon.log and "Traceback" not in daemon.log
