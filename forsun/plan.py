"""The plan model: a named timer with an action (SPEC section 1).

A :class:`Plan` is a short-lived object: servers build one from a request, the core
computes its times, stores keep it in whatever compact form suits them (the mem store keeps
:meth:`Plan.pack` bytes, not Plan objects, so ten million plans fit in a few GB).

Times are Unix seconds (UTC). Fixed-time plans are matched in a timezone (default UTC) by
:mod:`forsun.crontime`; delay plans repeat every :meth:`Plan.interval` seconds.
"""

import json
import uuid
from datetime import tzinfo
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Dict, Mapping, Optional

import msgpack

from . import crontime
from .error import InvalidArgumentError, WillNeverArriveTimeError
from .limits import MAX_PARAMS_BYTES as _MAX_PARAMS_SETTING, max_params_bytes

TIME_FIELDS = ("second", "minute", "hour", "day", "month", "week")

# Field order of the packed form; never reorder (mem store journals and dumps hold it).
_PACKED_FIELDS = ("is_time_out", "second", "minute", "hour", "day", "month", "week", "status",
                  "count", "current_count", "next_time", "last_timeout", "created_time",
                  "action", "params")

FIELDS = ("key",) + _PACKED_FIELDS

I16_MIN, I16_MAX = -(1 << 15), (1 << 15) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


# Plan.to_json: the text json.dumps writes for to_dict(), numbers and strings filled in.
_PLAN_JSON = ('{"key": %s, "is_time_out": %s, "second": %r, "minute": %r, "hour": %r, '
              '"day": %r, "month": %r, "week": %r, "status": %r, "count": %r, '
              '"current_count": %r, "next_time": %r, "last_timeout": %r, '
              '"created_time": %r, "action": %s, "params": %s}')
_json_str = encode_basestring_ascii  # a str as a JSON string, as json.dumps writes it

# surrogateescape: 0.1.x files may hold strings that are not UTF-8; they round-trip as is.
_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value if isinstance(value, str) else str(value)


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)


class Plan:
    __slots__ = FIELDS

    def __init__(self, key: str, is_time_out: bool = False, second: int = -1, minute: int = -1,
                 hour: int = -1, day: int = -1, month: int = -1, week: int = -1,
                 status: int = 0, count: int = 0, current_count: int = 0, next_time: int = 0,
                 last_timeout: int = 0, created_time: float = 0.0, action: str = "shell",
                 params: Optional[Dict[str, str]] = None):
        self.key = key
        self.is_time_out = is_time_out
        self.second = second
        self.minute = minute
        self.hour = hour
        self.day = day
        self.month = month
        self.week = week
        self.status = status
        self.count = count
        self.current_count = current_count
        self.next_time = next_time
        self.last_timeout = last_timeout
        self.created_time = created_time
        self.action = action
        self.params = params if params is not None else {}

    # -- time ---------------------------------------------------------------------------

    def interval(self) -> int:
        """Seconds between fires of a delay plan; each field counts only when >= 0."""
        return _interval(self.second, self.minute, self.hour, self.day, self.month, self.week)

    def is_one_shot(self) -> bool:
        """A fixed-time plan with second..month all fixed fires once (SPEC section 1)."""
        return not self.is_time_out and min(self.second, self.minute, self.hour, self.day,
                                            self.month) >= 0

    def compute_next_time(self, after: int, tz: Optional[tzinfo] = None) -> Optional[int]:
        """The next fire strictly after ``after``, or None once the plan is finished.

        ``after`` is the later of the second just fired and the present, so a plan that
        missed fires while the server was down continues from now (no burst of repeats).
        """
        if self.count > 0 and self.current_count >= self.count:
            return None
        if self.is_time_out:
            return after + self.interval()
        if self.current_count > 0 and self.is_one_shot():
            return None
        return crontime.next_fixed_time(self.second, self.minute, self.hour, self.day,
                                        self.month, self.week, after, tz)

    # -- building from user input --------------------------------------------------------

    @classmethod
    def build(cls, key: Any, is_time_out: bool, second: Any = -1, minute: Any = -1,
              hour: Any = -1, day: Any = -1, month: Any = -1, week: Any = -1, count: Any = 0,
              action: Any = "shell", params: Any = None, now: int = 0,
              tz: Optional[tzinfo] = None, created_time: float = 0.0) -> "Plan":
        """Validates user input (from Thrift, HTTP or the CLI) into a plan with its next_time.

        The one place where requests are checked, so every front end gives the same error
        for the same input: 1007 for a missing or mistyped argument, 1002 for times that
        never arrive. Whether the action exists is the core's check (1006).
        """
        if key is None:
            key = ""
        if key.__class__ is not str:
            if not isinstance(key, str):
                raise InvalidArgumentError("key must be a string, got %s" % type(key).__name__)
        # 256 characters are at most 1024 bytes: only longer keys need encoding to check
        if len(key) > 256 and len(key.encode("utf-8", "surrogatepass")) > 1024:
            raise InvalidArgumentError("key is longer than 1024 bytes")
        fields = (second, minute, hour, day, month, week)
        # fast path, one expression (bulk bodies build thousands): plain ints in range;
        # anything else is checked field by field
        if not (second.__class__ is int and minute.__class__ is int and hour.__class__ is int
                and day.__class__ is int and month.__class__ is int and week.__class__ is int
                and I16_MIN <= second <= I16_MAX and I16_MIN <= minute <= I16_MAX
                and I16_MIN <= hour <= I16_MAX and I16_MIN <= day <= I16_MAX
                and I16_MIN <= month <= I16_MAX and I16_MIN <= week <= I16_MAX):
            fields = tuple(_check_int(name, value, I16_MIN, I16_MAX)
                           for name, value in zip(TIME_FIELDS, fields))
        if count.__class__ is not int or not 0 <= count <= I16_MAX:
            count = _check_int("count", count, 0, I16_MAX)
        if action.__class__ is not str or not action:
            if not isinstance(action, str) or not action:
                raise InvalidArgumentError("action must be a non-empty string")
        params = _check_params(params)
        plan = cls(key or uuid.uuid4().hex, bool(is_time_out), *fields, 0, count, 0, 0, 0,
                   created_time or float(now), action, params)
        if plan.is_time_out:
            interval = _interval(*fields)
            if interval < 1:
                raise WillNeverArriveTimeError(
                    "the delay is %d seconds; a delay plan needs at least 1 second" % interval)
            plan.next_time = now + interval
        else:
            values = dict(zip(TIME_FIELDS, fields))
            crontime.check_fields(**values)
            next_time = crontime.next_fixed_time(plan.second, plan.minute, plan.hour,
                                                 plan.day, plan.month, plan.week, now, tz)
            if next_time is None:
                raise WillNeverArriveTimeError(
                    "no date matches second=%d minute=%d hour=%d day=%d month=%d week=%d"
                    % tuple(values[name] for name in TIME_FIELDS))
            plan.next_time = next_time
        if plan.next_time > I32_MAX:
            raise WillNeverArriveTimeError("the next fire time is beyond the year 2038")
        return plan

    # -- encodings -----------------------------------------------------------------------

    def pack(self) -> bytes:
        """The compact form the mem store keeps (the key is kept beside it, not inside)."""
        return _packer.pack([self.is_time_out, self.second, self.minute, self.hour, self.day,
                             self.month, self.week, self.status, self.count,
                             self.current_count, self.next_time, self.last_timeout,
                             self.created_time, self.action, self.params])

    @classmethod
    def unpack(cls, key: str, data: bytes) -> "Plan":
        return cls(key, *msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape"))

    def to_dict(self) -> Dict[str, Any]:
        """The field map used on the wire (HTTP), in dump files and in Redis, keys in
        :data:`FIELDS` order. Spelled out: every HTTP create answers one (bulk bodies
        thousands), and this is three times faster than a comprehension over FIELDS."""
        return {"key": self.key, "is_time_out": self.is_time_out, "second": self.second,
                "minute": self.minute, "hour": self.hour, "day": self.day,
                "month": self.month, "week": self.week, "status": self.status,
                "count": self.count, "current_count": self.current_count,
                "next_time": self.next_time, "last_timeout": self.last_timeout,
                "created_time": self.created_time, "action": self.action,
                "params": self.params}

    def to_json(self) -> str:
        """``json.dumps(self.to_dict())``, the same text, twice as fast: HTTP creates answer
        with it (a bulk body answers thousands). Any field of an unexpected type (only a
        plan built by hand could hold one) takes the ``json.dumps`` way."""
        created_time = self.created_time
        numbers = (self.second, self.minute, self.hour, self.day, self.month, self.week,
                   self.status, self.count, self.current_count, self.next_time,
                   self.last_timeout)
        for number in numbers:
            if number.__class__ is not int:
                return json.dumps(self.to_dict())
        # a finite float (json writes NaN where repr writes nan) and plain strings
        if created_time.__class__ is not float or created_time - created_time != 0.0 \
                or self.key.__class__ is not str or self.action.__class__ is not str \
                or self.params.__class__ is not dict or self.is_time_out.__class__ is not bool:
            return json.dumps(self.to_dict())
        try:
            params = "{" + ", ".join([_json_str(name) + ": " + _json_str(value)
                                      for name, value in self.params.items()]) + "}"
        except TypeError:  # a name or value that is not a string
            return json.dumps(self.to_dict())
        return _PLAN_JSON % ((_json_str(self.key), "true" if self.is_time_out else "false")
                             + numbers + (created_time, _json_str(self.action), params))

    def dumps(self) -> bytes:
        """msgpack map with the field names, as forsun 0.1.x wrote plans."""
        return _packer.pack(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[Any, Any]) -> "Plan":
        """Reads a field map, tolerating 0.1.x encodings (raw bytes for every string)."""
        fields = {_text(k): v for k, v in data.items()}
        params = fields.get("params") or {}
        if not isinstance(params, Mapping):
            params = {}
        return cls(
            key=_text(fields.get("key") or ""),
            is_time_out=bool(fields.get("is_time_out")),
            second=_int(fields.get("second"), -1),
            minute=_int(fields.get("minute"), -1),
            hour=_int(fields.get("hour"), -1),
            day=_int(fields.get("day"), -1),
            month=_int(fields.get("month"), -1),
            week=_int(fields.get("week"), -1),
            status=_int(fields.get("status"), 0),
            count=_int(fields.get("count"), 0),
            current_count=_int(fields.get("current_count"), 0),
            next_time=_int(fields.get("next_time"), 0),
            last_timeout=_int(fields.get("last_timeout"), 0),
            created_time=float(fields.get("created_time") or 0),
            action=_text(fields.get("action") or "shell"),
            params={_text(k): _text(v) for k, v in params.items()},
        )

    @classmethod
    def loads(cls, data: bytes) -> "Plan":
        """Decodes :meth:`dumps` output, including 0.1.x raw-string blobs."""
        return cls.from_dict(msgpack.unpackb(data, raw=True, strict_map_key=False))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and all(
            getattr(self, name) == getattr(other, name) for name in FIELDS)

    def __repr__(self) -> str:
        return "Plan(%s)" % ", ".join("%s=%r" % (name, getattr(self, name)) for name in FIELDS)


def _interval(second: int, minute: int, hour: int, day: int, month: int, week: int) -> int:
    return ((second if second > 0 else 0) + (minute * 60 if minute > 0 else 0)
            + (hour * 3600 if hour > 0 else 0) + (day * 86400 if day > 0 else 0)
            + (month * 2592000 if month > 0 else 0) + (week * 604800 if week > 0 else 0))


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidArgumentError("%s must be an integer, got %r" % (name, value))
    if not low <= value <= high:
        raise InvalidArgumentError("%s must be between %d and %d, got %d" % (name, low, high, value))
    return value


MAX_PARAMS_BYTES = _MAX_PARAMS_SETTING.default  # the setting's default; see max_params_bytes()


def _check_params(params: Any) -> Dict[str, str]:
    if params is None:
        return {}
    if params.__class__ is not dict and not isinstance(params, Mapping):
        raise InvalidArgumentError("params must be an object of strings")
    if params.__class__ is dict:  # fast path: a dict of plain strings, checked in one pass
        size = 0
        for name, value in params.items():
            if name.__class__ is not str or value.__class__ is not str:
                break
            size += len(name) + len(value)
        else:
            _check_params_size(size)
            return params.copy()
    checked = {}
    size = 0
    for name, value in params.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgumentError("params must map strings to strings; %r is %s"
                                       % (name, type(value).__name__))
        size += len(name) + len(value)
        checked[name] = value
    _check_params_size(size)
    return checked


def _check_params_size(size: int) -> None:
    limit = max_params_bytes()  # the MAX_PARAMS_BYTES setting (forsun/limits.py)
    if size > limit:
        raise InvalidArgumentError("params are %d bytes, more than the %d allowed "
                                   "(MAX_PARAMS_BYTES)" % (size, limit))
