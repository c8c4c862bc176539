"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /v1/openapi.json``.

Built in Python from the same tables the server uses (plan fields, JSON body fields and
defaults, error codes, info keys, integer ranges), so it cannot drift from them; a test
validates live answers against it. OpenAPI 3.1 schemas are plain JSON Schema 2020-12, so
any JSON Schema validator checks answers against it.
"""

from functools import lru_cache
from typing import Any, Dict

from ... import error
from ...plan import FIELDS, I16_MAX, I16_MIN, I32_MAX, I32_MIN, TIME_FIELDS
from ...status import COUNTERS
from ...version import version
from .bodies import INTEGER_FIELDS, JSON_FIELDS

Schema = Dict[str, Any]

ERROR_CODES = {
    error.UNKNOWN_ERROR: "unknown (internal) error",
    error.WILL_NEVER_ARRIVE: "the time will never arrive / invalid time fields",
    error.NOT_FOUND_PLAN: "plan not found",
    error.STORE_PLAN_ERROR: "storing the plan failed",
    error.REMOVE_PLAN_ERROR: "removing the plan failed",
    error.UNKNOWN_ACTION: "unknown action",
    error.INVALID_ARGUMENT: "a required argument is missing or invalid (also: unknown route "
                            "or method, body too large, body not parseable, and with HTTP "
                            "status 401 a missing or wrong auth token)",
}

# SPEC section 6, in order; the counters follow.
INFO_KEYS = ("python_version", "forsun_version", "start_time", "cpu_user", "cpu_system",
             "mem_rss", "mem_vms", "current_time", "stores", "current_store", "actions",
             "bind_port", "http_bind_port", "extensions") + COUNTERS

I16: Schema = {"type": "integer", "minimum": I16_MIN, "maximum": I16_MAX}
I32: Schema = {"type": "integer", "minimum": I32_MIN, "maximum": I32_MAX}
PARAMS: Schema = {"type": "object", "additionalProperties": {"type": "string"}}

PLAN_FIELD_SCHEMAS: Dict[str, Schema] = {
    "key": {"type": "string"},
    "is_time_out": {"type": "boolean", "description": "true: delay plan; false: fixed-time"},
    **{name: I16 for name in TIME_FIELDS},
    "status": dict(I16, description="result of the last fire: 0 none yet, 1 ok, -1 failed"),
    "count": dict(I16, description="fires in total; 0 = without end"),
    "current_count": dict(I16, description="fires so far"),
    "next_time": dict(I32, description="Unix time of the next fire"),
    "last_timeout": dict(I32, description="Unix time of the last fire, 0 before the first"),
    "created_time": {"type": "number", "description": "Unix time of creation"},
    "action": {"type": "string"},
    "params": PARAMS,
}


def _integer_input(low: int, high: int, default: int, description: str) -> Schema:
    return {"type": ["integer", "null"], "minimum": low, "maximum": high,
            "description": "%s; default %d" % (description, default)}


def _plan_input() -> Schema:
    time_help = "PUT: counted into the delay when >= 0; POST: -1 = every, else must match"
    properties: Dict[str, Schema] = {
        "key": {"type": ["string", "null"],
                "description": "unique name (at most 1024 UTF-8 bytes); empty or missing = "
                               "generated; an existing plan with this key is replaced"},
    }
    for name in JSON_FIELDS:
        if name in INTEGER_FIELDS:
            low, help_text = (0, "fires in total, 0 = without end") if name == "count" \
                else (I16_MIN, time_help)
            properties[name] = _integer_input(low, I16_MAX, JSON_FIELDS[name], help_text)
    properties["action"] = {"type": ["string", "null"], "minLength": 1,
                            "description": "registered action; default shell"}
    properties["params"] = {"oneOf": [PARAMS, {"type": "null"}],
                            "description": "the action's parameters"}
    return {"type": "object", "properties": properties,
            "description": "A missing or null field takes its default; other fields are "
                           "ignored, as 0.1.x ignored them. For 0.1.x clients an "
                           "integer may also be sent as a decimal string (\"5\")."}


def _answer(data: Schema) -> Schema:
    """An envelope that is either a success carrying ``data`` or an error."""
    success = {"type": "object", "additionalProperties": False,
               "required": ["errcode", "errmsg", "data"],
               "properties": {"errcode": {"const": 0}, "errmsg": {"const": ""}, "data": data}}
    return {"oneOf": [success, {"$ref": "#/components/schemas/Error"}]}


EXECUTION: Schema = {
    "type": "object", "additionalProperties": False,
    "required": ["key", "due", "action", "outcome", "status", "attempts", "started_time",
                 "duration", "error"],
    "properties": {
        "key": {"type": "string"},
        "due": dict(I32, description="the second the plan was due (its fire timestamp)"),
        "action": {"type": "string"},
        "outcome": {"enum": ["succeeded", "failed"]},
        "status": {"enum": [1, -1], "description": "1 succeeded, -1 failed"},
        "attempts": {"type": "integer", "minimum": 1, "description": "1 + retries"},
        "started_time": {"type": "number", "description": "Unix time the last attempt started"},
        "duration": {"type": "number", "minimum": 0,
                     "description": "seconds the last attempt ran"},
        "error": {"type": ["string", "null"], "description": "why it failed; null if it "
                                                             "succeeded"},
    },
}


def _ref(name: str) -> Schema:
    return {"$ref": "#/components/schemas/%s" % name}


def _json_response(schema: Schema, description: str) -> Dict[str, Any]:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": schema}}}}


def _query(name: str, schema: Schema, required: bool, description: str) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _create(summary: str, description: str) -> Schema:
    return {
        "summary": summary,
        "description": description,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("PlanInput")},
            "application/crontab": {"schema": {
                "type": "string",
                "description": "one plan a line: KEY SECOND MINUTE HOUR DAY MONTH WEEK "
                               "ACTION PARAMS (the CLI set syntax without 'set'); blank "
                               "lines and lines starting with # are skipped"}},
        }},
        "responses": _json_response(_answer({"oneOf": [_ref("Plan"), {
            "type": "array", "items": _ref("Plan"), "minItems": 2}]}),
            "the plan, or the list of plans of a crontab body with several lines"),
    }


KEY_PARAMETER = _query("key", {"type": "string", "minLength": 1}, True, "the plan's key")


def _paths() -> Dict[str, Any]:
    plan_answer = _json_response(_answer(_ref("Plan")), "the plan")
    return {
        "/v1/ping": {"get": {"summary": "liveness check",
                             "responses": _json_response(
                                 _answer({"type": "object", "maxProperties": 0}), "{}")}},
        "/v1/plan": {
            "get": {"summary": "read a plan", "parameters": [KEY_PARAMETER],
                    "responses": plan_answer},
            "delete": {"summary": "remove a plan", "parameters": [KEY_PARAMETER],
                       "responses": _json_response(_answer(_ref("Plan")), "the removed plan")},
            "put": _create("create a delay plan",
                           "Fires interval seconds after creation and every interval seconds "
                           "after that, count times (0 = without end); interval = seconds + "
                           "60*minute + 3600*hour + 86400*day + 2592000*month + 604800*week, "
                           "fields below 0 not counted. A crontab body's lines decide delay "
                           "or fixed-time by their own syntax."),
            "post": _create("create a fixed-time plan",
                            "Fires at every second matching all time fields (-1 = every; "
                            "week 0 and 7 = Sunday), count times (0 = without end)."),
        },
        "/v1/time": {"get": {
            "summary": "plans due at a second",
            "parameters": [_query("timestamp", dict(I32, default=0), False,
                                  "Unix time; absent or 0 = now")],
            "responses": _json_response(_answer({
                "type": "object", "additionalProperties": False,
                "required": ["current_timestamp", "plans"],
                "properties": {"current_timestamp": I32,
                               "plans": {"type": "array", "items": _ref("Plan")}}}),
                "the server's current Unix time and the plans due at the second")}},
        "/v1/keys": {"get": {
            "summary": "keys starting with a prefix",
            "parameters": [_query("prefix", {"type": "string", "default": ""}, False,
                                  "absent or empty = every key")],
            "responses": _json_response(_answer({"type": "array", "items": {"type": "string"}}),
                                        "the keys")}},
        "/v1/info": {"get": {
            "summary": "server information and counters",
            "responses": _json_response(_answer(_ref("Info")), "the info map")}},
        "/v1/executions": {"get": {
            "summary": "the last fires and their outcomes (EXECUTION_HISTORY_SIZE kept), "
                       "newest first",
            "parameters": [_query("key", {"type": "string"}, False, "only this plan's fires"),
                           _query("limit", {"type": "integer", "minimum": 1}, False,
                                  "at most this many")],
            "responses": _json_response(_answer({"type": "array", "items": _ref("Execution")}),
                                        "the fires")}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text format 0.0.4, not in the envelope)",
            "responses": {"200": {"description": "the metrics",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/v1/openapi.json": {"get": {
            "summary": "this document (bare, not in the envelope)",
            "responses": _json_response({"type": "object", "required": ["openapi", "paths"]},
                                        "the OpenAPI document")}},
    }


UNAUTHORIZED = {"description": "AUTH_TOKEN is set and the request lacks 'Authorization: "
                               "Bearer <token>' (or has another token); errcode 1007",
                "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Error"}}}}


def _with_unauthorized(paths: Dict[str, Any]) -> Dict[str, Any]:
    for operations in paths.values():
        for operation in operations.values():
            operation["responses"]["401"] = UNAUTHORIZED
    return paths


def _components() -> Dict[str, Any]:
    return {"securitySchemes": {"bearerToken": {
        "type": "http", "scheme": "bearer",
        "description": "only when forsund has an AUTH_TOKEN (auth_token in the conf file)"}},
            "schemas": {
        "Plan": {"type": "object", "additionalProperties": False, "required": list(FIELDS),
                 "properties": {name: PLAN_FIELD_SCHEMAS[name] for name in FIELDS}},
        "PlanInput": _plan_input(),
        "Execution": EXECUTION,
        "Info": {"type": "object", "additionalProperties": {"type": "string"},
                 "required": list(INFO_KEYS),
                 "description": "SPEC section 6; extensions may add counters"},
        "Error": {"type": "object", "additionalProperties": False,
                  "required": ["errcode", "errmsg", "data"],
                  "properties": {
                      "errcode": {"enum": sorted(ERROR_CODES),
                                  "description": "; ".join("%d %s" % item
                                                           for item in ERROR_CODES.items())},
                      "errmsg": {"type": "string", "minLength": 1},
                      "data": {"type": "object", "maxProperties": 0}}},
    }}


@lru_cache(maxsize=1)
def document() -> Dict[str, Any]:
    """The document, built once; callers only serialise it, never change it."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "forsun HTTP API",
            "version": version,
            "description": "Every answer is HTTP 200 with {errcode, errmsg, data}; errcode 0 "
                           "is success. With an auth token configured, a request without "
                           "it is answered HTTP 401 in the same envelope. A path that is no route, or a method a route lacks, "
                           "is answered with errcode 1007 in the same envelope.",
        },
        "security": [{"bearerToken": []}, {}],
        "paths": _with_unauthorized(_paths()),
        "components": _components(),
    }

