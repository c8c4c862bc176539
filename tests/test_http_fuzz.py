"""Property-based fuzzing of the HTTP API against a real forsund.

Thousands of generated requests (JSON values, near-miss plan bodies, bodies valid under the
OpenAPI PlanInput schema, crontab text, random bytes, methods, paths and query strings):
every answer is HTTP 200 in the envelope and matches the OpenAPI document, never a 5xx, and
the server keeps answering. The daemon runs in AGENT mode so generated plans never fire.
"""

import json
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from forsun.servers.http.bodies import JSON_FIELDS
from forsun.servers.http.handlers import ROUTES
from forsun.servers.http.openapi import document
from test_http_helpers import AnswerSchemas, Api, check_envelope, running_daemon



def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ROUTE_PATHS = [path for path, _ in ROUTES]
METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "HEAD"]
CONTENT_TYPES = [None, "application/json", "application/crontab",
                 "application/crontab; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from running_daemon(tmp_path_factory, "--server-mode", "AGENT")


@pytest.fixture(scope="module")
def api(daemon):
    return Api(daemon.http_port)


@pytest.fixture(scope="module")
def schemas(api):
    return AnswerSchemas(json.loads(api.raw("GET", "/v1/openapi.json")[2]))


def exchange(api, schemas, method, path, query="", body=None, content_type=None):
    """Sends one request and checks the answer against the envelope and the document."""
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, raw = api.raw(method, path + query, body, headers)
    if method == "HEAD":
        assert status == 200 and raw == b""
        return None
    if method == "GET" and path == "/v1/openapi.json":
        assert status == 200 and json.loads(raw)["openapi"]
        return None
    if method == "GET" and path == "/metrics":  # Prometheus text, bare like the document
        assert status == 200 and raw.startswith(b"# HELP")
        return None
    answer = check_envelope(status, raw)
    schemas.validate(path, method, answer)
    event("errcode %d" % answer["errcode"])  # shown by --hypothesis-show-statistics
    return answer


# -- strategies ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 40), 1 << 40), st.integers(-2, 100),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10),
    st.from_regex(r"\A-?[0-9]{1,6}\Z"),
    st.sampled_from(["shell", "sh", "", "nope"]),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6) | st.integers(), max_size=3),
    st.lists(st.integers(), max_size=2))

# Plans that are right (so many are created), to which a test may add one odd field.
good_plans = st.fixed_dictionaries({}, optional={
    "key": st.text(max_size=12), "seconds": st.integers(-1, 59),
    "minute": st.integers(-1, 59), "hour": st.integers(-1, 23), "day": st.integers(-1, 31),
    "month": st.integers(-1, 12), "week": st.integers(-1, 7), "count": st.integers(0, 5),
    "action": st.just("shell"),
    "params": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)})
odd_fields = st.tuples(st.sampled_from(list(JSON_FIELDS) + ["second", "extra"]), odd_values)

schema_plans = from_schema(document()["components"]["schemas"]["PlanInput"])

crontab_tokens = st.one_of(
    st.sampled_from(["*", "*/5", "*/5/2", "*/0", "0", "-1", "59", "60", "99999", "shell",
                     "sh", "bash", "nope", "'cmd=ls'", "a=b;c='d e'", "'", '"', "\\", ";",
                     "#", "set", "k"]),
    st.text(max_size=8))
crontab_fields = st.lists(st.sampled_from(["*", "*", "*/5", "*/5/2", "0", "1", "30", "*/0",
                                           "60", "x"]), min_size=6, max_size=6)
shaped_lines = st.tuples(
    st.from_regex(r"\A[a-z0-9:]{1,8}\Z"), crontab_fields,
    st.sampled_from(["shell", "sh", "bash", "nope"]),
    st.sampled_from(["'cmd=ls'", "cmd=true", "'a=b;c=\\'d e\\''", "", "'unbalanced"])
    | st.text(max_size=8),
).map(lambda parts: " ".join([parts[0]] + parts[1] + [parts[2], parts[3]]))
crontab_lines = shaped_lines | st.lists(crontab_tokens, max_size=11).map(" ".join)
crontab_bodies = st.lists(crontab_lines, max_size=4).map("\n".join)

query_values = st.one_of(
    st.text(max_size=12).map(lambda text: quote(text, safe="")),
    st.binary(max_size=8).map(lambda data: quote_from_bytes(data, safe="")),
    st.integers(-(1 << 40), 1 << 40).map(str))
queries = st.lists(
    st.tuples(st.sampled_from(["key", "prefix", "timestamp", "x"]), query_values),
    max_size=3).map(lambda pairs: "?" + "&".join("%s=%s" % pair for pair in pairs)
                    if pairs else "")

paths = st.one_of(
    st.sampled_from(ROUTE_PATHS + ["/", "/v1", "/v1/plan/", "/v1/PLAN", "/v2/plan"]),
    st.text(max_size=12).map(lambda text: "/" + quote(text)))

methods = st.one_of(st.sampled_from(METHODS), st.from_regex(r"\A[A-Z]{1,8}\Z"))


# -- properties ------------------------------------------------------------------------------

@fuzz(400)
@given(body=json_values, method=st.sampled_from(["PUT", "POST"]),
       content_type=st.sampled_from(CONTENT_TYPES[:2]))
def test_any_json_value_as_a_plan_body(api, schemas, body, method, content_type):
    exchange(api, schemas, method, "/v1/plan", body=json.dumps(body), content_type=content_type)


@fuzz(400)
@given(plan=good_plans, odd=st.none() | odd_fields, method=st.sampled_from(["PUT", "POST"]))
def test_near_miss_plan_bodies(api, schemas, plan, odd, method):
    """A refused field is named in errmsg; a created plan is the kind the method says."""
    body = dict(plan, **dict([odd] if odd else []))
    answer = exchange(api, schemas, method, "/v1/plan", body=json.dumps(body))
    if answer["errcode"] == 1007:
        assert odd is not None, answer
        assert odd[0].rstrip("s") in answer["errmsg"], (odd, answer)
    elif answer["errcode"] == 0:
        assert answer["data"]["is_time_out"] is (method == "PUT")


@fuzz(300)
@given(body=schema_plans, method=st.sampled_from(["PUT", "POST"]))
def test_bodies_valid_under_the_schema_are_never_refused_as_malformed(api, schemas, body,
                                                                      method):
    """What the document allows is accepted, or refused only for its time (1002) or an
    action that is not registered (1006); keys over 1024 bytes are the one documented
    exception the schema cannot express."""
    answer = exchange(api, schemas, method, "/v1/plan", body=json.dumps(body))
    if len((body.get("key") or "").encode("utf-8")) > 1024:
        assert answer["errcode"] == 1007
    else:
        assert answer["errcode"] in (0, 1002, 1006), answer
    if answer["errcode"] == 0:
        assert api.ok("GET", "/v1/plan?key=" + quote(answer["data"]["key"], safe="")) \
            == answer["data"]


@fuzz(300)
@given(body=crontab_bodies, method=st.sampled_from(["PUT", "POST"]))
def test_crontab_bodies(api, schemas, body, method):
    """One plan per plan line, or nothing and an errmsg naming a plan line."""
    answer = exchange(api, schemas, method, "/v1/plan", body=body.encode("utf-8"),
                      content_type="application/crontab")
    lines = [line.rstrip("\r").strip() for line in body.split("\n")]
    plan_lines = [line for line in lines if line and not line.startswith("#")]
    errmsg = answer["errmsg"]
    if answer["errcode"] == 0:
        data = answer["data"]
        assert len(data if isinstance(data, list) else [data]) == len(plan_lines)
    elif errmsg.startswith("line "):
        number = int(errmsg[5:errmsg.index(":")])
        assert lines[number - 1] in plan_lines
    else:
        assert not plan_lines and "no plan line" in errmsg


@fuzz(400)
@given(method=methods, path=paths, query=queries, body=st.none() | st.binary(max_size=300),
       content_type=st.sampled_from(CONTENT_TYPES))
def test_random_requests(api, schemas, method, path, query, body, content_type):
    exchange(api, schemas, method, path, query, body, content_type)


@fuzz(300)
@given(route=st.sampled_from(["/v1/plan", "/v1/time", "/v1/keys"]), query=queries)
def test_random_query_strings(api, schemas, route, query):
    exchange(api, schemas, "GET", route, query)


def test_the_server_survived(api, daemon):
    assert api.alive()
    info = api.ok("GET", "/v1/info")
    assert info["http_requesting_count"] == "1" and info["http_connecting_count"] == "1"
    assert int(info["http_requested_count"]) > 1000
    assert "Traceback" not in daemon.log and " ERROR " not in daemon.log, daemon.log[-3000:]
