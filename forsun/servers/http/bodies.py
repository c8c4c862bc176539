"""Turning HTTP request bodies and query strings into :meth:`forsun.plan.Plan.build` arguments.

Pure functions with no I/O, so every rule about what the HTTP API accepts is tested without
a server. They only translate: whether values make a plan is decided by ``Plan.build`` (the
one validation shared with Thrift) and, for the action, by the core's registry.

What a JSON body may hold (SPEC section 3): ``key``, ``seconds`` (plural here, unlike the
plan object's ``second``), ``minute``, ``hour``, ``day``, ``month``, ``week``, ``count``,
``action``, ``params``. A missing or ``null`` field takes its default. Unknown fields are
refused, so a typo (``second``, ``minutes``) cannot silently become a default. Integers may
be given as decimal strings (``"5"``) because forsun 0.1.x converted them with ``int()``
and existing clients send them that way.
"""

import json
import re
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from ...crontab import parse_set_args
from ...error import ForsunError, InvalidArgumentError
from ...plan import I32_MAX, I32_MIN

# Field of a JSON body -> its default; the order is the one the docs list them in.
JSON_FIELDS: Dict[str, Any] = {
    "key": "", "seconds": -1, "minute": -1, "hour": -1, "day": -1, "month": -1, "week": -1,
    "count": 0, "action": "shell", "params": None,
}
INTEGER_FIELDS = ("seconds", "minute", "hour", "day", "month", "week", "count")

# A decimal string we convert; anything else goes to Plan.build as it is and is refused
# there with the field's name. The length cap keeps int() cheap; longer is out of range.
_DECIMAL = re.compile(r"[+-]?[0-9]{1,12}")

PlanArgs = Dict[str, Any]


def decode_text(body: bytes) -> str:
    """The body as text; JSON and crontab bodies are UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError("the body is not UTF-8 text: invalid byte at offset %d"
                                   % e.start) from None


def json_plan_args(body: bytes) -> PlanArgs:
    """The keyword arguments of ``Plan.build`` (all but is_time_out) from a JSON body."""
    text = decode_text(body)
    if not text.strip():
        raise InvalidArgumentError("the body is empty; send a JSON object with the plan's "
                                   "fields, e.g. {\"key\": \"k\", \"seconds\": 5}")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidArgumentError("the body is not JSON: it is nested too deeply") from None
    except ValueError as e:
        raise InvalidArgumentError("the body is not JSON: %s" % e) from None
    if not isinstance(value, dict):
        raise InvalidArgumentError("the body must be a JSON object with the plan's fields, "
                                   "got a JSON %s" % json_type(value))
    return _plan_args(value)


def _plan_args(fields: Mapping[str, Any]) -> PlanArgs:
    """The known fields of a body; unknown and read-only ones (``method``, or a whole plan
    object as a GET answered it: ``next_time``, ``current_count``, ...) are ignored, as 0.1.x
    ignored them and its clients send them."""
    values = {name: fields.get(name) for name in JSON_FIELDS}
    for name, value in values.items():
        if value is None:
            values[name] = JSON_FIELDS[name]
        elif name in INTEGER_FIELDS and isinstance(value, str) and _DECIMAL.fullmatch(value):
            values[name] = int(value)
        elif isinstance(value, str):
            _check_unicode(name, value)
    _check_params_unicode(values["params"])
    values["second"] = values.pop("seconds")
    return values


def crontab_plan_args(body: bytes) -> List[Tuple[int, PlanArgs]]:
    """(line number, ``Plan.build`` arguments) of every plan line of a crontab body.

    One plan a line in the ``set`` syntax without the word ``set``; blank lines and lines
    starting with ``#`` are skipped, and numbers count every line so they match an editor's.
    """
    entries = []
    for number, line in crontab_lines(body):
        with line_context(number):
            entries.append((number, parse_set_args(line)))
    return entries


def crontab_lines(body: bytes) -> List[Tuple[int, str]]:
    """(line number, text) of every plan line of a crontab body, not parsed yet, so a
    body of thousands of lines can be parsed a chunk at a time between turns of the IOLoop.
    Refuses a body without a plan line."""
    lines = []
    # split("\n") then strip() is the \r?\n split: strip() also drops the \r
    for number, line in enumerate(decode_text(body).split("\n"), 1):
        line = line.strip()
        if line and line[0] != "#":
            lines.append((number, line))
    if not lines:
        raise InvalidArgumentError("the body holds no plan line; send one plan a line as "
                                   "KEY SECOND MINUTE HOUR DAY MONTH WEEK ACTION PARAMS")
    return lines


@contextmanager
def line_context(number: Optional[int]) -> Iterator[None]:
    """Prefixes a ForsunError raised inside with ``line N:``, keeping its code."""
    try:
        yield
    except ForsunError as e:
        if number is None:
            raise
        raise type(e)("line %d: %s" % (number, e.message), e.code) from None


def query_text(arguments: Mapping[str, List[bytes]], name: str) -> Optional[str]:
    """The last value of a query argument, exactly as sent (no stripping), or None."""
    values = arguments.get(name)
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError("%s is not UTF-8 text" % name) from None


def query_timestamp(arguments: Mapping[str, List[bytes]]) -> int:
    """The ``timestamp`` argument of ``/v1/time``; 0 when absent or empty (meaning now)."""
    text = query_text(arguments, "timestamp")
    if not text:
        return 0
    if not _DECIMAL.fullmatch(text):
        raise InvalidArgumentError("timestamp must be an integer (Unix seconds), got %r"
                                   % text)
    value = int(text)
    if not I32_MIN <= value <= I32_MAX:
        raise InvalidArgumentError("timestamp must be between %d and %d, got %d"
                                   % (I32_MIN, I32_MAX, value))
    return value


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not a JSON number" % name)


def _check_unicode(name: str, value: str) -> None:
    """JSON may carry lone surrogates (``"\\ud800"``) that no store can encode as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError("%s holds a lone surrogate escape, which is not text"
                                   % name) from None


def _check_params_unicode(params: Any) -> None:
    if isinstance(params, dict):
        for name, value in params.items():
            _check_unicode("params", name)
            if isinstance(value, str):
                _check_unicode("params[%s]" % json.dumps(name), value)

