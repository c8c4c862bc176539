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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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
        never arrive. Whether the action exists is the core's check (1006). Many plans made
        at one moment go through :class:`PlanBuilder`, which runs the same checks.
        """
        key, fields, count = _checked_args(key, second, minute, hour, day, month, week,
                                           count, action)
        params = _check_params(params)
        is_time_out = bool(is_time_out)
        return cls(key or uuid.uuid4().hex, is_time_out, *fields, 0, count, 0,
                   _first_time(is_time_out, fields, now, tz), 0, created_time or float(now),
                   action, params)

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


def _checked_args(key: Any, second: Any, minute: Any, hour: Any, day: Any, month: Any,
                  week: Any, count: Any, action: Any) -> Tuple[str, Tuple[int, ...], int]:
    """The checks of :meth:`Plan.build` before the params, in order: (key, time fields,
    count), or the 1007 error of the first bad argument."""
    if key.__class__ is not str or len(key) > 256:  # the checks' fast path, inline
        key = _checked_key(key)
    fields = _checked_fields(second, minute, hour, day, month, week)
    if count.__class__ is not int or not 0 <= count <= I16_MAX:
        count = _check_int("count", count, 0, I16_MAX)
    if action.__class__ is not str or not action:
        _check_action(action)
    return key, fields, count


class PlanBuilder:
    """:meth:`Plan.build` for many plans created at one moment (the lines of a bulk body).

    The same checks in the same order, so the same plan or error for the same input, for
    less: the MAX_PARAMS_BYTES setting is read once, and the first next_time (with its 1002
    checks) is computed once per distinct time fields, which bulk bodies mostly repeat.
    """

    __slots__ = ("now", "tz", "created_time", "_limit", "_delays", "_fixed")

    def __init__(self, now: int, tz: Optional[tzinfo] = None, created_time: float = 0.0):
        self.now = now
        self.tz = tz
        self.created_time = created_time or float(now)
        self._limit = max_params_bytes()
        # checked time fields -> next_time at this builder's now (and tz), by plan kind
        self._delays: Dict[Tuple[int, ...], int] = {}
        self._fixed: Dict[Tuple[int, ...], int] = {}

    def build(self, key: Any, is_time_out: bool, second: Any = -1, minute: Any = -1,
              hour: Any = -1, day: Any = -1, month: Any = -1, week: Any = -1,
              count: Any = 0, action: Any = "shell", params: Any = None) -> Plan:
        """``Plan.build(..., now=self.now, tz=self.tz, created_time=self.created_time)``."""
        key, fields, count = _checked_args(key, second, minute, hour, day, month, week,
                                           count, action)
        params = _check_params(params, self._limit)
        is_time_out = bool(is_time_out)
        return Plan(key or uuid.uuid4().hex, is_time_out, *fields, 0, count, 0,
                    self._first_time(is_time_out, fields), 0, self.created_time, action,
                    params)

    def build_parsed(self, parsed: Tuple[str, bool, Tuple[int, ...], int, str,
                                         Dict[str, str]]) -> Plan:
        """:meth:`build` for what ``forsun.crontab.parse_plain_set_line`` returns: (key,
        is_time_out, time fields, count, action, params).

        That parser already guarantees the types and ranges :meth:`build` checks first (a
        non-empty key and action, i16 time fields from -1, a count from 0, a new dict of
        strings), so only the rest is checked here, in the same order: the key's length,
        the params' size, then the times (1002).
        """
        key, is_time_out, fields, count, action, params = parsed
        if len(key) > 256:
            _checked_key(key)
        size = 0
        for name, value in params.items():
            size += len(name) + len(value)
        if size > self._limit:
            _check_params_size(size, self._limit)
        return Plan(key, is_time_out, *fields, 0, count, 0,
                    self._first_time(is_time_out, fields), 0, self.created_time, action,
                    params)

    def _first_time(self, is_time_out: bool, fields: Tuple[int, ...]) -> int:
        """:func:`_first_time` at this builder's moment, once per distinct checked fields
        (equal ints give equal times)."""
        times = self._delays if is_time_out else self._fixed
        next_time = times.get(fields)
        if next_time is None:
            next_time = times[fields] = _first_time(is_time_out, fields, self.now, self.tz)
        return next_time


def plans_json(plans: Sequence[Plan]) -> str:
    """``", ".join([plan.to_json() for plan in plans])`` (the inside of the JSON list
    json.dumps writes for their dicts), twice as fast: a bulk body answers thousands
    of plans. What repeats from plan to plan is encoded once: small numbers (the time
    fields, counts), the action, param names, the created_time of one moment. A plan with a
    field of an unexpected type takes :meth:`Plan.to_json`."""
    texts: List[str] = []
    strings: Tuple[Dict[str, str], Dict[str, str]] = ({}, {})  # see _plain_plan_json
    time_value: Any = None
    time_text = ""
    for plan in plans:
        created_time = plan.created_time
        if created_time is not time_value:
            time_value, time_text = created_time, _float_json(created_time)
        text = None
        if time_text and _plain_fields(plan):
            text = _plain_plan_json(plan, time_text, strings)
        texts.append(text if text is not None else plan.to_json())
    return ", ".join(texts)


# i16 value -> its decimal text, filled as met (formatting an int costs as much as a
# dozen look-ups); at most 65,536 entries.
_int_texts: Dict[int, str] = {}


def _learn_ints(plan: Plan) -> bool:
    """Adds the plan's i16 fields to ``_int_texts``; False when one is out of range (a
    plan not made by Plan.build), which is then left to :meth:`Plan.to_json`."""
    values = (plan.second, plan.minute, plan.hour, plan.day, plan.month, plan.week,
              plan.status, plan.count, plan.current_count)
    if not all(I16_MIN <= value <= I16_MAX for value in values):
        return False
    for value in values:
        _int_texts[value] = str(value)
    return True


def _float_json(value: Any) -> str:
    """repr of a finite float, as json.dumps writes it; "" for anything else."""
    if value.__class__ is not float or value - value != 0.0:
        return ""
    return repr(value)


def _plain_fields(plan: Plan) -> bool:
    """Whether the plan's fields but params and created_time have the types
    :func:`_plain_plan_json` formats as json.dumps does (an int look-up must not meet a
    bool or a float: True == 1 == 1.0)."""
    return (plan.second.__class__ is int and plan.minute.__class__ is int
            and plan.hour.__class__ is int and plan.day.__class__ is int
            and plan.month.__class__ is int and plan.week.__class__ is int
            and plan.status.__class__ is int and plan.count.__class__ is int
            and plan.current_count.__class__ is int and plan.next_time.__class__ is int
            and plan.last_timeout.__class__ is int and plan.key.__class__ is str
            and plan.action.__class__ is str and plan.is_time_out.__class__ is bool
            and plan.params.__class__ is dict)


def _plain_plan_json(plan: Plan, time_text: str,
                     strings: Tuple[Dict[str, str], Dict[str, str]]) -> Optional[str]:
    """:meth:`Plan.to_json` of a plan that passed :func:`_plain_fields`; ``strings`` holds
    the texts met before (action -> its JSON, param name -> its JSON and ": "). None when
    a param is not a string."""
    actions, names = strings
    action = actions.get(plan.action)
    if action is None:
        action = actions[plan.action] = _json_str(plan.action)
    params = []
    for name, value in plan.params.items():
        if name.__class__ is not str or value.__class__ is not str:
            return None
        name_text = names.get(name)
        if name_text is None:
            name_text = names[name] = _json_str(name) + ": "
        params.append(name_text + _json_str(value))
    number = _int_texts
    try:  # one f-string: the cheapest way Python builds a string of 30 parts
        return (f'{{"key": {_json_str(plan.key)}, '
                f'"is_time_out": {"true" if plan.is_time_out else "false"}, '
                f'"second": {number[plan.second]}, "minute": {number[plan.minute]}, '
                f'"hour": {number[plan.hour]}, "day": {number[plan.day]}, '
                f'"month": {number[plan.month]}, "week": {number[plan.week]}, '
                f'"status": {number[plan.status]}, "count": {number[plan.count]}, '
                f'"current_count": {number[plan.current_count]}, '
                f'"next_time": {plan.next_time}, "last_timeout": {plan.last_timeout}, '
                f'"created_time": {time_text}, "action": {action}, '
                f'"params": {{{", ".join(params)}}}}}')
    except KeyError:  # a number met for the first time
        if not _learn_ints(plan):
            return None
        return _plain_plan_json(plan, time_text, strings)


def _interval(second: int, minute: int, hour: int, day: int, month: int, week: int) -> int:
    return ((second if second > 0 else 0) + (minute * 60 if minute > 0 else 0)
            + (hour * 3600 if hour > 0 else 0) + (day * 86400 if day > 0 else 0)
            + (month * 2592000 if month > 0 else 0) + (week * 604800 if week > 0 else 0))


def _checked_key(key: Any) -> str:
    """The key as given ("" for None: the caller generates one); 1007 when not a string or
    longer than 1024 bytes."""
    if key.__class__ is not str:
        if key is None:
            return ""
        if not isinstance(key, str):
            raise InvalidArgumentError("key must be a string, got %s" % type(key).__name__)
    # 256 characters are at most 1024 bytes: only longer keys need encoding to check
    if len(key) > 256 and len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise InvalidArgumentError("key is longer than 1024 bytes")
    return key


def _checked_fields(second: Any, minute: Any, hour: Any, day: Any, month: Any,
                    week: Any) -> Tuple[int, ...]:
    """The six time fields as i16 integers (1007 otherwise); whether they make a time that
    comes is :func:`_first_time`'s check."""
    # fast path, one expression (bulk bodies build thousands): plain ints in range;
    # anything else is checked field by field
    if (second.__class__ is int and minute.__class__ is int and hour.__class__ is int
            and day.__class__ is int and month.__class__ is int and week.__class__ is int
            and I16_MIN <= second <= I16_MAX and I16_MIN <= minute <= I16_MAX
            and I16_MIN <= hour <= I16_MAX and I16_MIN <= day <= I16_MAX
            and I16_MIN <= month <= I16_MAX and I16_MIN <= week <= I16_MAX):
        return (second, minute, hour, day, month, week)
    return tuple(_check_int(name, value, I16_MIN, I16_MAX)
                 for name, value in zip(TIME_FIELDS, (second, minute, hour, day, month, week)))


def _check_action(action: Any) -> None:
    if not isinstance(action, str) or not action:
        raise InvalidArgumentError("action must be a non-empty string")


def _first_time(is_time_out: bool, fields: Tuple[int, ...], now: int,
                tz: Optional[tzinfo]) -> int:
    """The first next_time of a plan created at ``now``; 1002 when it never comes.

    Depends on nothing but its arguments, so :class:`PlanBuilder` computes it once per
    distinct time fields."""
    if is_time_out:
        interval = _interval(*fields)
        if interval < 1:
            raise WillNeverArriveTimeError(
                "the delay is %d seconds; a delay plan needs at least 1 second" % interval)
        next_time = now + interval
    else:
        crontime.check_fields(*fields)
        next_time = crontime.next_fixed_time(*fields, now, tz)
        if next_time is None:
            raise WillNeverArriveTimeError(
                "no date matches second=%d minute=%d hour=%d day=%d month=%d week=%d"
                % fields)
    if next_time > I32_MAX:
        raise WillNeverArriveTimeError("the next fire time is beyond the year 2038")
    return next_time


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


def _check_params(params: Any, limit: Optional[int] = None) -> Dict[str, str]:
    """A copy of params checked to map strings to strings within ``limit`` bytes (the
    MAX_PARAMS_BYTES setting when None, read only when there are params)."""
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
            _check_params_size(size, limit)
            return params.copy()
    checked = {}
    size = 0
    for name, value in params.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgumentError("params must map strings to strings; %r is %s"
                                       % (name, type(value).__name__))
        size += len(name) + len(value)
        checked[name] = value
    _check_params_size(size, limit)
    return checked


def _check_params_size(size: int, limit: Optional[int]) -> None:
    if limit is None:
        limit = max_params_bytes()  # the MAX_PARAMS_BYTES setting (forsun/limits.py)
    if size > limit:
        raise InvalidArgumentError("params are %d bytes, more than the %d allowed "
                                   "(MAX_PARAMS_BYTES)" % (size, limit))
