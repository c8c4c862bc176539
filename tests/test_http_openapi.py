"""The OpenAPI document at /v1/openapi.json is valid and true: live answers match it."""

import json

import pytest
from jsonschema import Draft202012Validator, ValidationError
from openapi_spec_validator import validate

from forsun.plan import FIELDS
from forsun.servers.http.bodies import JSON_FIELDS
from forsun.servers.http.handlers import ROUTES
from forsun.servers.http.openapi import INFO_KEYS, document
from test_http_helpers import AnswerSchemas, Api, check_envelope, running_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from running_daemon(tmp_path_factory)


@pytest.fixture(scope="module")
def api(daemon):
    return Api(daemon.http_port)


@pytest.fixture(scope="module")
def served(api):
    status, headers, raw = api.raw("GET", "/v1/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    return json.loads(raw)


@pytest.fixture(scope="module")
def schemas(served):
    return AnswerSchemas(served)


def test_the_served_document_is_valid_openapi_3_1(served):
    assert served["openapi"].startswith("3.1")
    validate(served)
    assert served == json.loads(json.dumps(document()))


def test_every_schema_is_valid_json_schema(served):
    for schema in served["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for operations in served["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                for content in response["content"].values():
                    Draft202012Validator.check_schema(content["schema"])


def test_the_document_covers_exactly_the_routes(served):
    assert set(served["paths"]) == {path for path, _ in ROUTES}
    methods = {path: {method.upper() for method in operations}
               for path, operations in served["paths"].items()}
    assert methods["/v1/plan"] == {"GET", "PUT", "POST", "DELETE"}
    assert all(methods[path] == {"GET"} for path in methods if path != "/v1/plan")


def test_the_document_uses_the_servers_own_field_tables(served):
    components = served["components"]["schemas"]
    assert components["Plan"]["required"] == list(FIELDS)
    assert set(components["PlanInput"]["properties"]) == set(JSON_FIELDS)
    assert components["Info"]["required"] == list(INFO_KEYS)


def exchanges(api):
    """(method, path, body, headers) of a tour of every route, successes and failures."""
    crontab = {"Content-Type": "application/crontab"}
    yield "GET", "/v1/ping", None, None
    yield "PUT", "/v1/plan", {"key": "doc:delay", "seconds": 30, "params": {"cmd": "true"}}, None
    yield "POST", "/v1/plan", {"key": "doc:fixed", "minute": 5, "seconds": 0}, None
    yield "POST", "/v1/plan", "doc:c1 */9 * * * * * shell ls", crontab
    yield ("PUT", "/v1/plan", "doc:c2 */9 * * * * * shell ls\ndoc:c3 0 0 0 * * * shell ls",
           crontab)
    yield "GET", "/v1/plan?key=doc:delay", None, None
    yield "GET", "/v1/keys?prefix=doc:", None, None
    yield "GET", "/v1/keys", None, None
    yield "GET", "/v1/time", None, None
    due = api.ok("GET", "/v1/plan?key=doc:delay")["next_time"]
    yield "GET", "/v1/time?timestamp=%d" % due, None, None
    yield "GET", "/v1/info", None, None
    yield "DELETE", "/v1/plan?key=doc:delay", None, None
    yield "DELETE", "/v1/plan?key=doc:delay", None, None
    yield "GET", "/v1/plan", None, None
    yield "PUT", "/v1/plan", b"nope", None
    yield "POST", "/v1/plan", {"day": 31, "month": 4}, None
    yield "PUT", "/v1/plan", {"seconds": 3, "action": "none"}, None
    yield "POST", "/v1/plan", "bad line", crontab
    yield "GET", "/v1/time?timestamp=x", None, None
    yield "PATCH", "/v1/plan", None, None
    yield "GET", "/v1/nothing", None, None


def test_live_answers_match_the_document(api, schemas):
    seen_errcodes = set()
    for method, path, body, headers in exchanges(api):
        answer = api.call(method, path, body, headers)
        seen_errcodes.add(answer["errcode"])
        schemas.validate(path.split("?")[0], method, answer)
    assert seen_errcodes == {0, 1002, 1003, 1006, 1007}


def test_a_wrong_answer_would_be_caught(schemas):
    """The check has teeth: answers that break the contract fail validation."""
    plan = {name: 0 for name in FIELDS}
    plan.update(key="k", is_time_out=True, created_time=1.5, action="shell", params={})
    good = {"errcode": 0, "errmsg": "", "data": plan}
    schemas.validate("/v1/plan", "GET", good)
    for broken in ({**good, "data": {**plan, "next_time": "1"}},
                   {**good, "data": {k: v for k, v in plan.items() if k != "created_time"}},
                   {**good, "errcode": 1003},
                   {"errcode": 1007, "errmsg": "", "data": {}},
                   {"errcode": 1008, "errmsg": "x", "data": {}},
                   {"errcode": 0, "errmsg": "", "data": [plan]}):
        with pytest.raises(ValidationError):
            schemas.validate("/v1/plan", "GET", broken)


def test_unknown_routes_answer_the_error_schema(api, schemas):
    status, _, raw = api.raw("GET", "/v2")
    schemas.validate("/v2", "GET", check_envelope(status, raw))
