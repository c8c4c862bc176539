"""The HTTP API of SPEC section 3 against a real forsund: every route, fires, and Thrift."""

import http.client
import importlib.util
import json
import os
import re
import socket
import time
from typing import Any, Dict, List, Tuple
from urllib.parse import quote

import pytest

from forsun.plan import FIELDS
from forsun.servers.http.creates import BULK_CHUNK
from forsun.thriftapi.ttypes import ForsunPlanError
from test_http_helpers import Api, check_envelope, running_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from running_daemon(tmp_path_factory)


@pytest.fixture(scope="module")
def api(daemon):
    return Api(daemon.http_port)


def test_ping(api):
    assert api.ok("GET", "/v1/ping") == {}


def test_put_creates_a_delay_plan_that_fires(api, fifo_sink):
    before = time.time()
    plan = api.ok("PUT", "/v1/plan", {
        "key": "test", "seconds": 5, "minute": 0, "hour": 0, "day": 0, "month": 0,
        "count": 1, "action": "shell", "params": {"cmd": fifo_sink.command("put")}})
    assert set(plan) == set(FIELDS)
    assert plan["key"] == "test" and plan["is_time_out"] is True
    assert (plan["second"], plan["minute"], plan["hour"], plan["day"], plan["month"],
            plan["week"]) == (5, 0, 0, 0, 0, -1)
    assert plan["count"] == 1 and plan["current_count"] == 0 and plan["status"] == 0
    assert plan["last_timeout"] == 0 and plan["action"] == "shell"
    assert int(before) + 5 <= plan["next_time"] <= int(time.time()) + 5
    assert before - 1 <= plan["created_time"] <= time.time()
    assert api.ok("GET", "/v1/plan?key=test") == plan
    assert [p["key"] for p in api.ok("GET", "/v1/time?timestamp=%d" % plan["next_time"])
            ["plans"]] == ["test"]
    (tag, fired_ts, _), = fifo_sink.wait(1, timeout=10)
    assert tag == "put" and int(fired_ts) == plan["next_time"]
    assert api.error(1003, "GET", "/v1/plan?key=test")  # count 1: gone after its fire


def test_put_defaults(api):
    plan = api.ok("PUT", "/v1/plan", {"key": "put:defaults", "seconds": 90,
                                      "params": {"cmd": "true"}})
    assert (plan["count"], plan["minute"], plan["week"]) == (0, -1, -1)
    assert plan["next_time"] - int(plan["created_time"]) in (90, 91)


def test_post_creates_a_fixed_time_plan(api):
    plan = api.ok("POST", "/v1/plan", {"key": "post:daily", "seconds": 0, "minute": 32,
                                       "hour": 16, "params": {"cmd": "true"}})
    assert plan["is_time_out"] is False and plan["count"] == 0
    assert (plan["second"], plan["minute"], plan["hour"], plan["day"], plan["month"],
            plan["week"]) == (0, 32, 16, -1, -1, -1)
    assert time.gmtime(plan["next_time"])[3:6] == (16, 32, 0)
    assert 0 < plan["next_time"] - time.time() <= 86400
    every = api.ok("POST", "/v1/plan", {"key": "post:every", "params": {"cmd": "true"}})
    assert every["next_time"] - int(time.time()) in (0, 1, 2)


def test_get_and_delete(api):
    created = api.ok("PUT", "/v1/plan", {"key": "del:me", "seconds": 600})
    assert api.ok("GET", "/v1/plan?key=del:me") == created
    assert api.ok("DELETE", "/v1/plan?key=del:me") == created
    assert "not found" in api.error(1003, "GET", "/v1/plan?key=del:me")
    assert api.error(1003, "DELETE", "/v1/plan?key=del:me")


def test_unknown_and_read_only_fields_are_ignored_as_0_1_x_did(api):
    """0.1.x clients send ``method``, or a plan object as GET answered it with a field
    changed: the extra fields are ignored, the known ones still checked."""
    got = api.ok("PUT", "/v1/plan", {"key": "resend", "seconds": 600,
                                     "params": {"cmd": "true"}})
    body = dict(got, seconds=120, method="createTimeout", next_time=1, current_count=7)
    plan = api.ok("PUT", "/v1/plan", body)
    assert plan["next_time"] - int(time.time()) in (119, 120, 121)
    assert plan["current_count"] == 0 and plan["params"] == {"cmd": "true"}
    assert api.ok("GET", "/v1/plan?key=resend") == plan
    assert "must be an integer" in api.error(1007, "PUT", "/v1/plan", dict(body, seconds=[1]))


def test_keys_with_and_without_prefix(api):
    for key in ("keys:a", "keys:b", "other:c"):
        api.ok("PUT", "/v1/plan", {"key": key, "seconds": 600})
    assert sorted(api.ok("GET", "/v1/keys?prefix=keys:")) == ["keys:a", "keys:b"]
    assert api.ok("GET", "/v1/keys?prefix=nothing") == []
    every = api.ok("GET", "/v1/keys")
    assert {"keys:a", "keys:b", "other:c"} <= set(every)
    assert api.ok("GET", "/v1/keys?prefix=") == every


def test_time(api):
    plan = api.ok("PUT", "/v1/plan", {"key": "time:x", "seconds": 700})
    data = api.ok("GET", "/v1/time?timestamp=%d" % plan["next_time"])
    assert abs(data["current_timestamp"] - time.time()) <= 2
    assert [p["key"] for p in data["plans"]] == ["time:x"]
    assert data["plans"][0] == plan
    assert api.ok("GET", "/v1/time?timestamp=12345")["plans"] == []
    for query in ("", "?timestamp=0", "?timestamp="):
        now = api.ok("GET", "/v1/time" + query)
        assert abs(now["current_timestamp"] - time.time()) <= 2
        assert isinstance(now["plans"], list)


def test_info_has_the_http_counters(api, daemon):
    info = api.ok("GET", "/v1/info")
    assert all(isinstance(value, str) for value in info.values())
    assert info["http_bind_port"] == "127.0.0.1:%d" % daemon.http_port
    assert int(info["http_connecting_count"]) == 1  # this request's connection
    assert int(info["http_requesting_count"]) == 1  # this request
    requested = int(info["http_requested_count"])
    errors = int(info["http_requested_error_count"])
    connected = int(info["http_connected_count"])
    api.error(1003, "GET", "/v1/plan?key=no:such:plan")
    api.ok("GET", "/v1/ping")
    after = api.ok("GET", "/v1/info")
    assert int(after["http_requested_count"]) == requested + 3
    assert int(after["http_requested_error_count"]) == errors + 1
    assert int(after["http_connected_count"]) == connected + 3
    assert int(after["http_connecting_count"]) == 1


def test_a_plan_made_over_http_is_read_over_thrift_and_back(api, daemon):
    client = daemon.client()
    made = api.ok("PUT", "/v1/plan", {"key": "cross:http", "seconds": 30, "minute": 1,
                                      "count": 2, "params": {"cmd": "true", "x": "y"}})
    seen = client.get("cross:http")
    assert (seen.key, seen.is_time_out, seen.second, seen.minute, seen.count,
            seen.next_time, seen.action, seen.params) == (
        "cross:http", True, 30, 1, 2, made["next_time"], "shell", {"cmd": "true", "x": "y"})
    fixed = client.create("cross:thrift", 0, 15, 3, -1, -1, -1, "shell", {"cmd": "true"})
    got = api.ok("GET", "/v1/plan?key=cross:thrift")
    assert (got["is_time_out"], got["second"], got["minute"], got["hour"], got["next_time"],
            got["params"]) == (False, 0, 15, 3, fixed.next_time, {"cmd": "true"})
    assert got["created_time"] > 0
    api.ok("DELETE", "/v1/plan?key=cross:http")
    with pytest.raises(ForsunPlanError) as error:
        client.get("cross:http")
    assert error.value.code == 1003
    client.remove("cross:thrift")
    assert api.error(1003, "GET", "/v1/plan?key=cross:thrift")
    client.close()


def test_an_empty_key_is_generated(api):
    plan = api.ok("PUT", "/v1/plan", {"seconds": 600})
    assert len(plan["key"]) >= 16
    assert api.ok("GET", "/v1/plan?key=" + plan["key"]) == plan


def test_put_replaces_a_plan_with_the_same_key(api):
    api.ok("PUT", "/v1/plan", {"key": "replace:me", "seconds": 600})
    second = api.ok("POST", "/v1/plan", {"key": "replace:me", "minute": 5, "seconds": 0})
    assert api.ok("GET", "/v1/plan?key=replace:me") == second
    assert second["is_time_out"] is False


def test_keys_with_special_characters_travel_exactly(api):
    key = "spaces and / ? & = % é \u2603 "
    api.ok("PUT", "/v1/plan", {"key": key, "seconds": 600})
    assert api.ok("GET", "/v1/plan?key=" + quote(key))["key"] == key
    assert key in api.ok("GET", "/v1/keys?prefix=" + quote("spaces"))


def test_legacy_clients_sending_numbers_as_strings(api):
    plan = api.ok("PUT", "/v1/plan", {"key": "legacy", "seconds": "30", "count": "2"})
    assert (plan["second"], plan["count"]) == (30, 2)


def test_crontab_body_with_one_line_answers_the_plan(api):
    answer = api.crontab("POST", "cron:one */5/3 * * * * * shell 'cmd=ls'")
    plan = answer["data"]
    assert answer["errcode"] == 0 and plan["key"] == "cron:one"
    assert plan["is_time_out"] and (plan["second"], plan["count"]) == (5, 3)
    assert plan["params"] == {"cmd": "ls"}


def test_crontab_body_with_several_lines_answers_a_list(api):
    body = ("# two plans\n"
            "cron:a */5/1 * * * * * shell 'cmd=ls'\n"
            "\n"
            "cron:b 0 32 16 * * * sh 'cmd=\\'echo a;b\\';cwd=/'\n")
    answer = api.crontab("PUT", body)
    assert answer["errcode"] == 0, answer
    first, second = answer["data"]
    assert (first["key"], first["is_time_out"]) == ("cron:a", True)
    assert (second["key"], second["is_time_out"], second["minute"], second["hour"]) == (
        "cron:b", False, 32, 16)
    assert second["action"] == "shell" and second["params"] == {"cmd": "echo a;b", "cwd": "/"}
    assert {"cron:a", "cron:b"} <= set(api.ok("GET", "/v1/keys?prefix=cron:"))


@pytest.mark.parametrize("bad_line, errcode, words", [
    ("atomic:c 0 32 16 * *", 1007, "line 3: expected KEY"),
    ("atomic:c 0 99 16 * * * shell ls", 1002, "line 3: minute"),
    ("atomic:c */5 * * * * * nope a=1", 1006, "line 3: unknown action 'nope'"),
    ("atomic:c 0 30 2 30 2 * shell ls", 1002, "line 3: day 30 does not exist in month 2"),
])
def test_a_bad_crontab_line_creates_nothing(api, bad_line, errcode, words):
    body = "atomic:a */5 * * * * * shell ls\natomic:b 0 1 * * * * shell ls\n" + bad_line
    answer = api.crontab("POST", body)
    assert answer["errcode"] == errcode and answer["errmsg"].startswith(words), answer
    assert api.ok("GET", "/v1/keys?prefix=atomic:") == []


def test_the_server_answers_many_requests_on_one_connection(daemon):
    connection = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=10)
    for i in range(50):
        connection.request("GET", "/v1/plan?key=keepalive:%d" % i)
        response = connection.getresponse()
        assert response.status == 200 and b'"errcode": 1003' in response.read()
    connection.close()


# -- bulk crontab bodies (handled in chunks of BULK_CHUNK lines) ---------------------------

def bulk_body(prefix: str, count: int) -> str:
    return "".join("%s%05d */%d * * * * * http http://127.0.0.1:9/hook/%d\n"
                   % (prefix, n, 60 + n, n) for n in range(count))


def test_a_bulk_crontab_body_creates_every_line_in_order(api):
    count = 3 * BULK_CHUNK + 7
    status, headers, raw = api.raw("PUT", "/v1/plan", bulk_body("bulk:", count),
                                   {"Content-Type": "application/crontab"})
    answer = check_envelope(status, raw)
    assert answer["errcode"] == 0
    plans = answer["data"]
    assert [plan["key"] for plan in plans] == ["bulk:%05d" % n for n in range(count)]
    assert all(plan["second"] == 60 + n and plan["is_time_out"] and plan["count"] == 1
               and plan["params"] == {"url": "http://127.0.0.1:9/hook/%d" % n}
               for n, plan in enumerate(plans))
    assert raw == json.dumps(answer).encode()  # the encoding json.dumps would write
    assert len(api.ok("GET", "/v1/keys?prefix=bulk:")) == count
    assert api.ok("GET", "/v1/plan?key=bulk:%05d" % (count - 1)) == plans[-1]


def test_a_bulk_body_of_every_kind_of_line_answers_what_json_dumps_writes(api):
    """Plain lines take the bulk fast path, quoted ones the general parser; both answer
    the plans as json.dumps writes them, in order, as stored."""
    kinds = ["mix:%05d */%d/2 * * * * * sh echo\\x",
             "mix:%05d 0 %d 3 * * * http 'url=u;a=\"b\"'",
             "mix:%05d\u00e9\u2603 */%d * * * * * shell",
             "mix:%05d 5 %d * * * 1 redis host=h;db=0",
             "'mix:%05d q' */%d * * 1 * * shell \"cmd=ls -l\""]
    count = BULK_CHUNK + 3
    body = "\n".join(kinds[n % len(kinds)] % (n, 1 + n % 59) for n in range(count))
    status, headers, raw = api.raw("POST", "/v1/plan", body.encode(),
                                   {"Content-Type": "application/crontab"})
    answer = check_envelope(status, raw)
    assert answer["errcode"] == 0, answer
    assert raw == json.dumps(answer).encode()
    plans = answer["data"]
    assert [plan["key"][4:9] for plan in plans] == ["%05d" % n for n in range(count)]
    assert [plan["is_time_out"] for plan in plans[:5]] == [True, False, True, False, True]
    assert plans[2]["params"] == {} and plans[1]["params"] == {"url": "u", "a": "b"}
    for n in (0, 1, 2, 3, 4, count - 1):
        assert api.ok("GET", "/v1/plan?key=" + quote(plans[n]["key"])) == plans[n]


def test_the_bench_checks_bulk_answers_without_decoding_them(api):
    """scripts/bench.py counts the plans of an answer instead of decoding it: the count
    must be right on real answers, and wrong answers must not pass."""
    spec = importlib.util.spec_from_file_location(
        "forsun_bench", os.path.join(os.path.dirname(__file__), "..", "scripts", "bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    body = bench.crontab_body("benchcheck", 0, 30)
    status, headers, raw = api.raw("PUT", "/v1/plan", body,
                                   {"Content-Type": "application/crontab"})
    assert bench.check_bulk_answer(body, raw) == 30 == len(json.loads(raw)["data"])
    one = bench.crontab_body("benchcheck1", 0, 1)
    assert bench.check_bulk_answer(one, api.raw("PUT", "/v1/plan", one, {
        "Content-Type": "application/crontab"})[2]) == 1
    plans = json.loads(raw)["data"]
    for wrong in (json.dumps({"errcode": 0, "errmsg": "", "data": plans[:-1]}),
                  json.dumps({"errcode": 0, "errmsg": "", "data": plans[:-1] + plans[:1]}),
                  json.dumps({"errcode": 1007, "errmsg": "line 1: bad", "data": {}})):
        with pytest.raises(RuntimeError):
            bench.check_bulk_answer(body, wrong.encode())


def test_a_bad_line_late_in_a_bulk_body_creates_nothing(api):
    count = 2 * BULK_CHUNK + 10
    body = bulk_body("late:", count) + "late:bad */5 * * * * * nope a=1\n"
    answer = api.crontab("POST", body)
    assert answer["errcode"] == 1006
    assert answer["errmsg"].startswith("line %d: unknown action 'nope'" % (count + 1))
    assert api.ok("GET", "/v1/keys?prefix=late:") == []


# -- pipelined and keep-alive creates (the fast path) --------------------------------------

def put_request(key: str, extra_headers: str = "") -> bytes:
    body = json.dumps({"key": key, "seconds": 600, "params": {"cmd": "true"}}).encode()
    return b"PUT /v1/plan HTTP/1.1\r\nHost: forsun\r\nContent-Type: application/json\r\n" \
           b"Content-Length: %d\r\n%s\r\n%s" % (len(body), extra_headers.encode(), body)


def read_answers(sock: socket.socket, count: int) -> List[Tuple[bytes, Dict[str, Any]]]:
    """``count`` answers of a keep-alive connection: (head, decoded envelope) each."""
    sock.settimeout(10)
    answers, data = [], b""
    while len(answers) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end]
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
            if len(data) >= end + 4 + length:
                answers.append((head, json.loads(data[end + 4:end + 4 + length])))
                data = data[end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection after %d answers" % len(answers)
        data += chunk
    return answers


def test_pipelined_creates_are_answered_in_order_with_tornados_headers(daemon, api):
    keys = ["pipe:%02d" % n for n in range(40)]
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(b"".join(put_request(key) for key in keys))
        answers = read_answers(sock, len(keys))
    assert [envelope["data"]["key"] for _, envelope in answers] == keys
    status, headers, _ = api.raw("GET", "/v1/ping")  # served by tornado
    for head, envelope in answers:
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK" and envelope["errcode"] == 0
        names = [line.split(b":")[0].decode() for line in lines[1:]]
        assert names == ["Server", "Content-Type", "Date", "Content-Length"]
        assert b"Server: " + headers["Server"].encode() in lines
        assert b"Content-Type: " + headers["Content-Type"].encode() in lines


def test_a_connection_switches_to_tornado_at_another_request_and_goes_on(daemon, api):
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(put_request("switch:a") + put_request("switch:b", "Expect: nothing\r\n")
                     + b"GET /v1/plan?key=switch:a HTTP/1.1\r\nHost: forsun\r\n\r\n"
                     + put_request("switch:c") + b"PUT /v1/plan HTTP/1.1\r\nHost: forsun\r\n"
                     + b'Content-Length: 9\r\n\r\n{"key": 5')
        answers = read_answers(sock, 5)
    envelopes = [envelope for _, envelope in answers]
    assert [e["data"]["key"] for e in envelopes[:4]] == ["switch:a", "switch:b",
                                                         "switch:a", "switch:c"]
    assert envelopes[4]["errcode"] == 1007 and envelopes[4]["data"] == {}
    assert api.ok("GET", "/v1/plan?key=switch:c")["key"] == "switch:c"


def test_a_create_without_host_is_refused_as_tornado_refuses_it(daemon):
    """HTTP/1.1 requires Host: tornado answers a bare 400 and closes, on every path."""
    body = b'{"key": "nohost", "seconds": 60}'
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(b"PUT /v1/plan HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        sock.settimeout(10)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_errors_on_the_fast_path_are_answered_and_counted(daemon, api):
    before = api.ok("GET", "/v1/info")
    body = b'{"key": "fast:bad", "seconds": "soon"}'
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(b"POST /v1/plan HTTP/1.1\r\nHost: forsun\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body) + put_request("fast:good"))
        (_, bad), (_, good) = read_answers(sock, 2)
    assert bad == {"errcode": 1007, "errmsg": "second must be an integer, got 'soon'",
                   "data": {}}
    assert good["errcode"] == 0
    after = api.ok("GET", "/v1/info")
    assert int(after["http_requested_count"]) == int(before["http_requested_count"]) + 3
    assert int(after["http_requested_error_count"]) == \
        int(before["http_requested_error_count"]) + 1
    assert "errcode 1007" in daemon.log


def test_a_request_that_arrives_in_pieces(daemon):
    request = put_request("pieces:one")
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(request), 25):
            sock.sendall(request[start:start + 25])
            time.sleep(0.01)  # nothing to wait for: the server answers only the whole request
        (_, envelope), = read_answers(sock, 1)
    assert envelope["errcode"] == 0 and envelope["data"]["key"] == "pieces:one"


def test_creates_with_an_auth_token(forsund_factory):
    """With AUTH_TOKEN, a create carrying the token is served; without it, refused (401)."""
    daemon = forsund_factory(http=True, env={"AUTH_TOKEN": "s3cret"})
    assert daemon.wait_log("ready")
    granted = put_request("auth:ok", "Authorization: Bearer s3cret\r\n")
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as sock:
        sock.sendall(granted + granted.replace(b"auth:ok", b"auth:no").replace(b"s3cret",
                                                                              b"wrong!"))
        (_, created), (head, refused) = read_answers(sock, 2)
    assert created["errcode"] == 0 and created["data"]["key"] == "auth:ok"
    assert head.startswith(b"HTTP/1.1 401 ") and refused["errcode"] == 1007
    api = Api(daemon.http_port)
    assert api.ok("GET", "/v1/keys", headers={"Authorization": "Bearer s3cret"}) == ["auth:ok"]


def test_max_plans_stops_a_bulk_body_at_the_line_past_the_limit(forsund_factory):
    limit = BULK_CHUNK + 2
    daemon = forsund_factory(http=True, env={"MAX_PLANS": str(limit)})
    api = Api(daemon.http_port)
    answer = api.crontab("PUT", bulk_body("full:", BULK_CHUNK + 5))
    assert answer["errcode"] == 1004
    assert answer["errmsg"].startswith("line %d: " % (limit + 1))
    assert answer["errmsg"].endswith("(the %d plan(s) of the lines before it were created)"
                                     % limit)
    assert len(api.ok("GET", "/v1/keys?prefix=full:")) == limit
