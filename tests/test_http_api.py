"""The HTTP API of SPEC section 3 against a real forsund: every route, fires, and Thrift."""

import http.client
import time
from urllib.parse import quote

import pytest

from forsun.plan import FIELDS
from forsun.thriftapi.ttypes import ForsunPlanError
from test_http_helpers import Api, running_daemon


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
