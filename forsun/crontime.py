"""Next fire time of fixed-time (crontab-like) plans.

A fixed-time plan has six fields -- second, minute, hour, day, month, week (day of the week,
0 and 7 = Sunday) -- where -1 means "every" and any other value must match. Unlike classic
cron, day and week are ANDed like every other field (SPEC section 1: a plan "fires at every
second that matches all fields").

Why it is written this way: the old server stepped second by second and froze for minutes on
plans such as ``* 5 * 3 * *`` created in November. Here the search goes field by field: find
the first matching date (year -> month -> day, checking the weekday), then the first matching
clock time on it (hour -> minute -> second), jumping straight to the next candidate value of
a field and resetting the lower ones. Dates that can never exist (Feb 30, Apr 31) are
rejected before searching; any other combination occurs within a few decades (Feb 29 on a
given weekday can take 40 years), and the search gives up after one full 400-year Gregorian
cycle, after which calendar and weekdays repeat.

Wall times are handled as "local epoch seconds": seconds since 1970-01-01 00:00 of the local
calendar, counted as if every day had 86400 s. In UTC (or any fixed offset) wall time and
Unix time differ by a constant, so that path is integer arithmetic only. With a zone that
has daylight-saving time (a zoneinfo zone) the rules are those of vixie cron:

* A plan whose hour is -1 repeats at least hourly, so it follows elapsed time: it fires at
  every instant whose local wall time matches. In a repeated hour (autumn, clocks go back)
  it fires in both occurrences; in a skipped hour (spring, clocks go forward) nothing exists,
  so nothing fires.
* A plan with a fixed hour fires once per local date and wall time: in a repeated hour only
  at the first occurrence; a wall time inside a skipped hour fires at the first second after
  the jump (02:30 on the spring-forward day in America/New_York fires at 03:00:00 EDT).
  Several skipped wall times collapse into that single fire.

Offsets are read through the public tzinfo API (``fromtimestamp``/``utcoffset``/``fold``);
the exact instant of a transition is found by bisection. This assumes a zone changes its UTC
offset at most once in any 26 hours and never by more than 26 hours, which holds for the
tz database in modern times.
"""

import time
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .error import ConfigError, WillNeverArriveTimeError

EVERY = -1

# (name, lowest, highest) of each time field, in the order of the public signatures.
_RANGES = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31),
           ("month", 1, 12), ("week", 0, 7))

_MONTHS = tuple(range(13))  # _MONTHS[first:] lists the months from ``first`` on
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Longest possible length of each month (February counts its leap day).
_MAX_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Days before the first of each month in a common year.
_DAYS_BEFORE_MONTH = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)

# The Gregorian calendar with its weekdays repeats every 400 years: a date not found in one
# full cycle after the starting year never occurs.
_MAX_YEARS = 401

_DAY = 86400
# Bound on any change of a zone's UTC offset, and on how close two changes can be.
_SPAN = 26 * 3600
# Offset changes crossed in one search are few (near the start and near the result); the
# cap only guards against a tzinfo that breaks the assumptions above.
_MAX_STEPS = 64

_EPOCH = datetime(1970, 1, 1)

Spec = Tuple[int, int, int, int, int, int]


# -- public API -------------------------------------------------------------------------------

def check_fields(second: int, minute: int, hour: int, day: int, month: int, week: int) -> None:
    """Rejects fields that can never match, so a plan is refused (1002) instead of stored.

    Raises WillNeverArriveTimeError naming the field that is out of range, or the day that
    no allowed month has (day 30 of February, day 31 of April).
    """
    for (name, low, high), value in zip(_RANGES, (second, minute, hour, day, month, week)):
        if value != EVERY and not low <= value <= high:
            raise WillNeverArriveTimeError(
                "%s must be -1 (every) or %d-%d, got %d" % (name, low, high, value))
    if month != EVERY and day > _MAX_MONTH_DAYS[month]:
        raise WillNeverArriveTimeError("day %d does not exist in month %d" % (day, month))


def next_fixed_time(second: int, minute: int, hour: int, day: int, month: int, week: int,
                    after: int, tz: Optional[tzinfo] = None) -> Optional[int]:
    """The first Unix second strictly after ``after`` whose wall time in ``tz`` matches.

    ``tz`` None means UTC. Returns None when no such second will ever come: impossible
    dates and out-of-range fields (see :func:`check_fields`) are never searched.
    The DST rules are in the module docstring.
    """
    if not _possible(second, minute, hour, day, month, week):
        return None
    spec = (second, minute, hour, day, month, 0 if week == 7 else week)
    after = int(after)
    if tz is None or isinstance(tz, timezone):
        offset = 0 if tz is None else _seconds(tz.utcoffset(None))
        wall = _next_wall(after + 1 + offset, spec)
        return None if wall is None else wall - offset
    if hour == EVERY:
        return _next_elapsed(spec, after, tz)
    return _next_once_per_date(spec, after, tz)


def resolve_timezone(name: str) -> tzinfo:
    """The tzinfo for a configured zone name; "UTC" or "" take the integer fast path."""
    if name in ("", "UTC"):
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError("unknown timezone %r: %s" % (name, exc)) from None


# -- field checks -----------------------------------------------------------------------------

def _possible(second: int, minute: int, hour: int, day: int, month: int, week: int) -> bool:
    try:
        check_fields(second, minute, hour, day, month, week)
    except WillNeverArriveTimeError:
        return False
    return True


def _at_least(spec: int, value: int, top: int) -> Optional[int]:
    """The smallest value >= ``value`` (and <= ``top``) that ``spec`` allows, if any."""
    if spec == EVERY:
        return value if value <= top else None
    return spec if spec >= value else None


def _lowest(spec: int) -> int:
    """The smallest value a clock field (hour, minute, second) allows."""
    return 0 if spec == EVERY else spec


# -- calendar arithmetic ----------------------------------------------------------------------

def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _month_days(year: int, month: int) -> int:
    return 29 if month == 2 and _is_leap(year) else _MONTH_DAYS[month]


def _days_from_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to the given date of the proleptic Gregorian calendar."""
    before = year - 1
    leap_days = before // 4 - before // 100 + before // 400 - 477  # 477 leap days before 1970
    days = (year - 1970) * 365 + leap_days + _DAYS_BEFORE_MONTH[month] + day - 1
    return days + 1 if month > 2 and _is_leap(year) else days


def _weekday_of(days: int) -> int:
    """0 = Sunday .. 6 = Saturday (1970-01-01 was a Thursday)."""
    return (days + 4) % 7


def _weekday(year: int, month: int, day: int) -> int:
    return _weekday_of(_days_from_epoch(year, month, day))


# -- search in wall time ----------------------------------------------------------------------

def _next_wall(wall: int, spec: Spec) -> Optional[int]:
    """The smallest matching wall time (local epoch seconds) >= ``wall``."""
    second, minute, hour, day, month, week = spec
    days, clock = divmod(wall, _DAY)
    first = _next_day(days, day, month, week)
    if first == days:
        today = _next_clock(clock, hour, minute, second)
        if today is not None:
            return wall - clock + today
        first = _next_day(days + 1, day, month, week)
    if first is None:
        return None
    return first * _DAY + _lowest(hour) * 3600 + _lowest(minute) * 60 + _lowest(second)


def _next_day(days: int, day: int, month: int, week: int) -> Optional[int]:
    """The first matching date (days from 1970-01-01) on or after ``days``.

    Daily and weekly plans, the common case, need no calendar at all.
    """
    if day == EVERY and month == EVERY:
        return days if week == EVERY else days + (week - _weekday_of(days)) % 7
    date = time.gmtime(days * _DAY)
    found = _next_date(date.tm_year, date.tm_mon, date.tm_mday, day, month, week)
    return None if found is None else _days_from_epoch(*found)


def _next_clock(clock: int, hour: int, minute: int, second: int) -> Optional[int]:
    """The smallest matching second of the day >= ``clock``, or None if none is left today.

    Works upwards: a field with no candidate left carries into the next higher one, and a
    field that moved forward resets every lower field to its smallest value.
    """
    h, m, s = clock // 3600, clock // 60 % 60, clock % 60
    s2 = _at_least(second, s, 59)
    if s2 is None:
        m, s2 = m + 1, _lowest(second)
    m2 = _at_least(minute, m, 59)
    if m2 is None:
        h, m2, s2 = h + 1, _lowest(minute), _lowest(second)
    elif m2 > m:
        s2 = _lowest(second)
    h2 = _at_least(hour, h, 23)
    if h2 is None:
        return None
    if h2 > h:
        m2, s2 = _lowest(minute), _lowest(second)
    return h2 * 3600 + m2 * 60 + s2


def _next_date(year: int, month: int, mday: int, day: int, month_spec: int,
               week: int) -> Optional[Tuple[int, int, int]]:
    """The first matching date on or after year-month-mday, as (year, month, day)."""
    for y in range(year, year + _MAX_YEARS):
        for m in _months_from(month if y == year else 1, month_spec):
            start = mday if y == year and m == month else 1
            found = _day_in_month(y, m, start, day, week)
            if found is not None:
                return y, m, found
    return None


def _months_from(first: int, month_spec: int) -> Tuple[int, ...]:
    """The months from ``first`` to December that the month field allows."""
    if month_spec == EVERY:
        return _MONTHS[first:]
    return (month_spec,) if month_spec >= first else ()


def _day_in_month(year: int, month: int, start: int, day: int, week: int) -> Optional[int]:
    """The first day >= ``start`` of this month matching day and weekday, if any."""
    length = _month_days(year, month)
    if day != EVERY:
        if start <= day <= length and week in (EVERY, _weekday(year, month, day)):
            return day
        return None
    if start > length:
        return None
    if week != EVERY:
        start += (week - _weekday(year, month, start)) % 7
    return start if start <= length else None


# -- DST-aware search -------------------------------------------------------------------------

def _seconds(delta: Optional[timedelta]) -> int:
    return 0 if delta is None else delta.days * _DAY + delta.seconds


def _offset_at(tz: tzinfo, instant: int) -> int:
    """UTC offset in seconds in force at a Unix second."""
    return _seconds(datetime.fromtimestamp(instant, tz).utcoffset())


def _wall_offset(tz: tzinfo, wall: int, fold: int) -> int:
    """UTC offset the zone gives a wall time (PEP 495 fold semantics for gaps and repeats)."""
    local = (_EPOCH + timedelta(seconds=wall)).replace(tzinfo=tz, fold=fold)
    return _seconds(local.utcoffset())


def _first_change(tz: tzinfo, low: int, high: int, offset: int) -> int:
    """The first second in (low, high] whose offset differs from ``offset``.

    ``low`` has ``offset`` and ``high`` does not; with at most one change in between the
    bisection finds the exact transition instant.
    """
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(tz, middle) == offset:
            low = middle
        else:
            high = middle
    return high


def _next_elapsed(spec: Spec, after: int, tz: tzinfo) -> Optional[int]:
    """Hour -1 rule: the first instant > after whose wall time matches.

    Within a stretch of constant offset wall time moves with Unix time, so the candidate
    is the next matching wall time under the current offset. An instant under another
    offset can only match earlier if it lies within one offset change (``_SPAN``) of the
    start or of the candidate, so only those two windows are checked; the stretch between
    is skipped whatever its offsets.
    """
    start = after + 1
    for _ in range(_MAX_STEPS):
        offset = _offset_at(tz, start)
        wall = _next_wall(start + offset, spec)
        if wall is None:
            return None
        candidate = wall - offset
        if candidate - start <= _SPAN:
            if _offset_at(tz, candidate) == offset:
                return candidate
            start = _first_change(tz, start, candidate, offset)
        elif _offset_at(tz, start + _SPAN) != offset:
            start = _first_change(tz, start, start + _SPAN, offset)
        else:
            start = candidate - _SPAN
    return None


def _next_once_per_date(spec: Spec, after: int, tz: tzinfo) -> Optional[int]:
    """Fixed hour rule: each matching wall time fires once, at :func:`_fire_instant`.

    That instant never decreases as wall time increases, so the answer is the fire instant
    of the first matching wall time whose fire instant is past ``after``.
    """
    wall = _next_wall(_first_unfired_wall(after, tz), spec)
    return None if wall is None else _fire_instant(wall, tz)


def _first_unfired_wall(after: int, tz: tzinfo) -> int:
    """The smallest wall time whose fire instant is later than ``after``.

    Normally the wall time one second after that of ``after``. In the second occurrence
    of a repeated hour every wall time up to the end of the repeat already fired at its
    first occurrence, so the search starts where the repeat ends.
    """
    local = datetime.fromtimestamp(after, tz)
    offset = _seconds(local.utcoffset())
    wall = after + offset
    if not local.fold:
        return wall + 1
    before = _wall_offset(tz, wall, 0)
    repeated = before - offset
    transition = _first_change(tz, after - repeated, after, before)
    return transition + before


def _fire_instant(wall: int, tz: tzinfo) -> int:
    """When a wall time fires: its first occurrence, or the jump if it was skipped."""
    before = _wall_offset(tz, wall, 0)
    instant = wall - before
    now = _offset_at(tz, instant)
    if now == before:
        return instant
    # In a gap fold=0 reads the wall with the earlier offset, which lands after the jump;
    # the same wall with the later offset lands before it.
    return _first_change(tz, wall - now, instant, before)
