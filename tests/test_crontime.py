"""Tests of forsun.crontime: next fire times of fixed-time plans.

Field tuples are (second, minute, hour, day, month, week) as in the public signatures; -1 is
"every". Times in the tables are written in UTC ("YYYY-mm-dd HH:MM:SS"), with the local
time in a comment where a timezone is involved.
"""

import calendar
import random
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings, strategies as st

from forsun.crontime import check_fields, next_fixed_time, resolve_timezone
from forsun.error import ConfigError, WillNeverArriveTimeError

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
ALL = (-1, -1, -1, -1, -1, -1)


def ts(text):
    """Unix seconds of a UTC "YYYY-mm-dd HH:MM:SS"."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def utc(stamp):
    return None if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))


def next_utc(fields, after, tz=None):
    return utc(next_fixed_time(*fields, ts(after), tz))


def fires(fields, after, tz, count):
    """``count`` successive fires, each searched from the previous one."""
    found, stamp = [], ts(after)
    for _ in range(count):
        stamp = next_fixed_time(*fields, stamp, tz)
        found.append(utc(stamp))
    return found


# -- UTC tables ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, after, expected", [
    # each field alone (2024-01-01 is a Monday)
    (ALL, "2024-01-01 00:00:00", "2024-01-01 00:00:01"),
    ((30, -1, -1, -1, -1, -1), "2024-01-01 00:00:29", "2024-01-01 00:00:30"),
    ((30, -1, -1, -1, -1, -1), "2024-01-01 00:00:30", "2024-01-01 00:01:30"),
    ((-1, 5, -1, -1, -1, -1), "2024-01-01 00:04:00", "2024-01-01 00:05:00"),
    ((-1, 5, -1, -1, -1, -1), "2024-01-01 00:05:10", "2024-01-01 00:05:11"),
    ((-1, 5, -1, -1, -1, -1), "2024-01-01 00:05:59", "2024-01-01 01:05:00"),
    ((-1, -1, 13, -1, -1, -1), "2024-01-01 12:59:59", "2024-01-01 13:00:00"),
    ((-1, -1, 13, -1, -1, -1), "2024-01-01 14:00:00", "2024-01-02 13:00:00"),
    ((-1, -1, -1, 15, -1, -1), "2024-01-15 23:59:59", "2024-02-15 00:00:00"),
    ((-1, -1, -1, -1, 6, -1), "2024-01-10 08:00:00", "2024-06-01 00:00:00"),
    ((-1, -1, -1, -1, 6, -1), "2024-06-30 23:59:59", "2025-06-01 00:00:00"),
    ((-1, -1, -1, -1, -1, 1), "2024-01-01 23:59:59", "2024-01-08 00:00:00"),
    ((-1, -1, -1, -1, -1, 6), "2024-01-01 10:00:00", "2024-01-06 00:00:00"),
    # week 0 and 7 are both Sunday
    ((-1, -1, -1, -1, -1, 0), "2024-01-01 12:00:00", "2024-01-07 00:00:00"),
    ((-1, -1, -1, -1, -1, 7), "2024-01-01 12:00:00", "2024-01-07 00:00:00"),
    ((0, 0, 10, -1, -1, 7), "2024-01-07 10:00:00", "2024-01-14 10:00:00"),
    # combinations and -1 mixes
    ((0, 30, 8, -1, -1, -1), "2024-01-01 08:30:00", "2024-01-02 08:30:00"),
    ((0, 30, 8, -1, -1, -1), "2024-01-01 08:29:59", "2024-01-01 08:30:00"),
    ((0, 0, 9, -1, -1, 1), "2024-01-01 09:00:00", "2024-01-08 09:00:00"),
    ((0, -1, -1, -1, -1, -1), "2024-01-01 12:34:56", "2024-01-01 12:35:00"),
    ((-1, -1, 23, -1, -1, -1), "2024-01-01 22:00:00", "2024-01-01 23:00:00"),
    ((-1, -1, 23, -1, -1, -1), "2024-01-01 23:59:59", "2024-01-02 23:00:00"),
    ((15, -1, 7, -1, -1, -1), "2024-01-01 07:59:15", "2024-01-02 07:00:15"),
    ((-1, 0, -1, 1, -1, -1), "2024-01-31 23:00:00", "2024-02-01 00:00:00"),
    ((-1, 0, -1, 1, -1, -1), "2024-02-01 00:00:59", "2024-02-01 01:00:00"),
    ((0, 0, 0, 13, -1, 5), "2024-01-01 00:00:00", "2024-09-13 00:00:00"),  # Friday 13th
    ((0, 0, 12, -1, 7, 3), "2024-07-04 00:00:00", "2024-07-10 12:00:00"),
    # year rollover
    (ALL, "2024-12-31 23:59:59", "2025-01-01 00:00:00"),
    ((0, 0, 0, 1, 1, -1), "2024-12-31 23:59:59", "2025-01-01 00:00:00"),
    ((0, 0, 0, 1, 1, -1), "2025-01-01 00:00:00", "2026-01-01 00:00:00"),
    ((59, 59, 23, -1, -1, -1), "2024-12-31 23:59:58", "2024-12-31 23:59:59"),
    ((59, 59, 23, -1, -1, -1), "2024-12-31 23:59:59", "2025-01-01 23:59:59"),
    ((-1, -1, -1, 31, 12, -1), "2024-12-31 23:59:59", "2025-12-31 00:00:00"),
    # month ends: the 31st skips short months, the 29th/30th skip February
    ((0, 0, 0, 31, -1, -1), "2024-01-31 00:00:00", "2024-03-31 00:00:00"),
    ((0, 0, 0, 31, -1, -1), "2024-03-31 00:00:00", "2024-05-31 00:00:00"),
    ((0, 0, 0, 31, -1, -1), "2024-07-31 00:00:00", "2024-08-31 00:00:00"),
    ((0, 0, 0, 31, -1, -1), "2024-08-31 00:00:00", "2024-10-31 00:00:00"),
    ((0, 0, 0, 31, -1, 5), "2024-01-01 00:00:00", "2024-05-31 00:00:00"),  # a Friday
    ((0, 0, 0, 30, -1, -1), "2024-01-30 00:00:00", "2024-03-30 00:00:00"),
    ((0, 0, 0, 29, -1, -1), "2023-01-29 00:00:00", "2023-03-29 00:00:00"),
    ((0, 0, 0, 29, -1, -1), "2024-01-29 00:00:00", "2024-02-29 00:00:00"),
    # February 29: leap years only (2100 is not one), and with a weekday
    ((0, 0, 0, 29, 2, -1), "2023-03-01 00:00:00", "2024-02-29 00:00:00"),
    ((0, 0, 0, 29, 2, -1), "2024-02-29 00:00:00", "2028-02-29 00:00:00"),
    ((0, 0, 0, 29, 2, -1), "2096-02-29 00:00:00", "2104-02-29 00:00:00"),
    ((0, 0, 0, 29, 2, 4), "2024-02-28 00:00:00", "2024-02-29 00:00:00"),  # a Thursday
    ((0, 0, 0, 29, 2, 4), "2024-03-01 00:00:00", "2052-02-29 00:00:00"),
    ((0, 0, 0, 29, 2, 1), "2023-11-15 12:00:00", "2044-02-29 00:00:00"),  # a Monday
    ((-1, -1, -1, 29, 2, -1), "2024-02-29 23:59:59", "2028-02-29 00:00:00"),
    # one-shot plans (second..month fixed) whose date has passed roll to the next year
    ((0, 0, 12, 1, 3, -1), "2024-06-01 00:00:00", "2025-03-01 12:00:00"),
    ((0, 0, 12, 1, 3, -1), "2024-03-01 12:00:00", "2025-03-01 12:00:00"),
    ((0, 0, 12, 1, 3, -1), "2024-03-01 11:59:59", "2024-03-01 12:00:00"),
    ((0, 0, 12, 1, 3, 6), "2024-06-01 00:00:00", "2025-03-01 12:00:00"),  # a Saturday
    ((0, 0, 12, 1, 3, 6), "2025-03-01 12:00:00", "2031-03-01 12:00:00"),
    ((5, 4, 3, 2, 1, -1), "2024-01-02 03:04:06", "2025-01-02 03:04:05"),
])
def test_next_time_in_utc(fields, after, expected):
    assert next_utc(fields, after) == expected
    assert next_utc(fields, after, timezone.utc) == expected


def test_every_second_of_minute_5_in_march_created_in_november():
    """The plan that froze the old server: ``* 5 * 3 * *`` from a November date."""
    fields = (-1, 5, -1, -1, 3, -1)
    assert fires(fields, "2023-11-15 12:00:00", None, 3) == [
        "2024-03-01 00:05:00", "2024-03-01 00:05:01", "2024-03-01 00:05:02"]
    assert next_utc(fields, "2024-03-01 00:05:59") == "2024-03-01 01:05:00"
    assert next_utc(fields, "2024-03-31 23:05:59") == "2025-03-01 00:05:00"


@pytest.mark.parametrize("fields", [
    (0, 0, 0, 30, 2, -1), (0, 0, 0, 31, 2, -1), (-1, -1, -1, 30, 2, 3), (0, 0, 0, 31, 4, -1),
    (0, 0, 0, 31, 6, -1), (0, 0, 0, 31, 9, -1), (0, 0, 0, 31, 11, -1),
    (0, 0, 24, -1, -1, -1), (60, -1, -1, -1, -1, -1), (-1, -1, -1, 0, -1, -1),
    (-1, -1, -1, -1, 13, -1), (-1, -1, -1, -1, -1, 8), (-2, -1, -1, -1, -1, -1),
])
@pytest.mark.parametrize("tz", [None, NEW_YORK])
def test_dates_that_never_come_give_none(fields, tz):
    assert next_fixed_time(*fields, ts("2024-01-01 00:00:00"), tz) is None


def test_fixed_offset_timezone():
    tokyo = timezone(timedelta(hours=9))
    fields = (0, 0, 9, -1, -1, -1)  # 09:00 JST = 00:00 UTC
    assert next_utc(fields, "2023-12-31 23:59:59", tokyo) == "2024-01-01 00:00:00"
    assert next_utc(fields, "2024-01-01 00:00:00", tokyo) == "2024-01-02 00:00:00"
    assert next_utc((0, 0, 0, 1, 1, -1), "2024-06-01 00:00:00", tokyo) == "2024-12-31 15:00:00"


# -- check_fields and resolve_timezone ------------------------------------------------------

@pytest.mark.parametrize("fields", [
    ALL, (0, 0, 0, 1, 1, 0), (59, 59, 23, 31, 12, 7), (0, 0, 0, 29, 2, -1),
    (0, 0, 0, 31, -1, 3), (-1, -1, -1, 30, 4, -1),
])
def test_check_fields_accepts(fields):
    check_fields(*fields)


@pytest.mark.parametrize("fields, name", [
    ((60, -1, -1, -1, -1, -1), "second"), ((-2, -1, -1, -1, -1, -1), "second"),
    ((-1, 60, -1, -1, -1, -1), "minute"), ((-1, -5, -1, -1, -1, -1), "minute"),
    ((-1, -1, 24, -1, -1, -1), "hour"), ((-1, -1, -1, 0, -1, -1), "day"),
    ((-1, -1, -1, 32, -1, -1), "day"), ((-1, -1, -1, -1, 0, -1), "month"),
    ((-1, -1, -1, -1, 13, -1), "month"), ((-1, -1, -1, -1, -1, 8), "week"),
    ((-1, -1, -1, -1, -1, -3), "week"), ((0, 0, 0, 30, 2, -1), "day 30"),
    ((0, 0, 0, 31, 9, -1), "day 31"),
])
def test_check_fields_rejects_naming_the_field(fields, name):
    with pytest.raises(WillNeverArriveTimeError) as caught:
        check_fields(*fields)
    assert caught.value.code == 1002
    assert name in caught.value.message


def test_resolve_timezone():
    assert resolve_timezone("") is timezone.utc
    assert resolve_timezone("UTC") is timezone.utc
    assert resolve_timezone("Europe/Berlin") == BERLIN
    for bad in ("Nowhere/Land", "../../etc/passwd", "/etc/localtime"):
        with pytest.raises(ConfigError) as caught:
            resolve_timezone(bad)
        assert "unknown timezone" in str(caught.value)


# -- DST ----------------------------------------------------------------------------------------
# America/New_York 2024: 03-10 02:00 EST -> 03:00 EDT at 07:00 UTC;
#                        11-03 02:00 EDT -> 01:00 EST at 06:00 UTC.
# Europe/Berlin 2024:    03-31 02:00 CET -> 03:00 CEST at 01:00 UTC;
#                        10-27 03:00 CEST -> 02:00 CET at 01:00 UTC.

@pytest.mark.parametrize("tz, fields, after, expected", [
    # hour -1 follows elapsed time: nothing in the skipped hour ...
    (NEW_YORK, (0, 30, -1, -1, -1, -1), "2024-03-10 06:00:00",
     ["2024-03-10 06:30:00", "2024-03-10 07:30:00", "2024-03-10 08:30:00"]),  # 01:30 EST, 03:30 EDT
    (NEW_YORK, (0, 0, -1, -1, -1, -1), "2024-03-10 06:00:00",
     ["2024-03-10 07:00:00", "2024-03-10 08:00:00"]),  # 03:00 EDT, 04:00 EDT
    (NEW_YORK, (-1, 59, -1, 10, 3, -1), "2024-03-10 06:59:58",
     ["2024-03-10 06:59:59", "2024-03-10 07:59:00"]),  # 01:59:59 EST, 03:59:00 EDT
    (BERLIN, (0, 15, -1, -1, -1, -1), "2024-03-31 00:00:00",
     ["2024-03-31 00:15:00", "2024-03-31 01:15:00"]),  # 01:15 CET, 03:15 CEST
    # ... and both occurrences of the repeated hour
    (NEW_YORK, (0, 30, -1, -1, -1, -1), "2024-11-03 05:00:00",  # 01:30 EDT, 01:30 EST, 02:30 EST
     ["2024-11-03 05:30:00", "2024-11-03 06:30:00", "2024-11-03 07:30:00"]),
    (NEW_YORK, (0, 30, -1, 3, 11, -1), "2024-11-03 05:45:00",
     ["2024-11-03 06:30:00", "2024-11-03 07:30:00"]),  # from 01:45 EDT: 01:30 EST comes next
    (NEW_YORK, (0, 30, -1, 3, 11, -1), "2024-11-03 06:45:00",
     ["2024-11-03 07:30:00"]),  # from 01:45 EST
    (BERLIN, (0, 15, -1, -1, -1, -1), "2024-10-27 00:00:00",  # 02:15 CEST, 02:15 CET, 03:15 CET
     ["2024-10-27 00:15:00", "2024-10-27 01:15:00", "2024-10-27 02:15:00"]),
    # a fixed hour fires once per date: a skipped wall time at the end of the jump ...
    (NEW_YORK, (0, 30, 2, -1, -1, -1), "2024-03-10 05:00:00",
     ["2024-03-10 07:00:00", "2024-03-11 06:30:00"]),  # 03:00:00 EDT, then 02:30 EDT
    (NEW_YORK, (-1, -1, 2, -1, -1, -1), "2024-03-10 05:00:00",
     ["2024-03-10 07:00:00", "2024-03-11 06:00:00", "2024-03-11 06:00:01"]),  # once, not 3600 times
    (NEW_YORK, (0, 30, 3, -1, -1, -1), "2024-03-10 05:00:00",
     ["2024-03-10 07:30:00"]),  # 03:30 EDT
    (NEW_YORK, (0, 0, 3, -1, -1, -1), "2024-03-10 05:00:00",
     ["2024-03-10 07:00:00", "2024-03-11 07:00:00"]),  # 03:00 EDT
    (NEW_YORK, (0, 30, 2, 10, 3, -1), "2024-03-10 06:59:59",
     ["2024-03-10 07:00:00", "2025-03-10 06:30:00"]),  # one-shot style date in the gap
    (BERLIN, (0, 15, 2, -1, -1, -1), "2024-03-31 00:00:00",
     ["2024-03-31 01:00:00", "2024-04-01 00:15:00"]),  # 03:00 CEST, then 02:15 CEST
    # ... and a repeated wall time only at its first occurrence
    (NEW_YORK, (0, 30, 1, -1, -1, -1), "2024-11-03 04:00:00",
     ["2024-11-03 05:30:00", "2024-11-04 06:30:00"]),  # 01:30 EDT, then 01:30 EST next day
    (NEW_YORK, (-1, -1, 1, -1, -1, -1), "2024-11-03 05:59:59",
     ["2024-11-04 06:00:00"]),  # nothing in the second 01:xx
    (NEW_YORK, (0, 45, 1, -1, -1, -1), "2024-11-03 06:10:00",
     ["2024-11-04 06:45:00"]),  # from 01:10 EST: 01:45 fired already as EDT
    (NEW_YORK, (0, 30, 2, -1, -1, -1), "2024-11-03 06:10:00",
     ["2024-11-03 07:30:00"]),  # from 01:10 EST: 02:30 EST still comes today
    (BERLIN, (0, 15, 2, -1, -1, -1), "2024-10-26 23:00:00",
     ["2024-10-27 00:15:00", "2024-10-28 01:15:00"]),  # 02:15 CEST, then 02:15 CET
    (BERLIN, (0, 30, 2, 27, 10, -1), "2024-10-27 01:00:00",
     ["2025-10-27 01:30:00"]),  # from the second 02:00 CET
])
def test_dst(tz, fields, after, expected):
    assert fires(fields, after, tz, len(expected)) == expected


@pytest.mark.parametrize("tz", [NEW_YORK, BERLIN])
def test_hourly_plan_follows_elapsed_hours_through_a_year(tz):
    """23 fires on the spring day, 25 in autumn: one per elapsed hour, none twice."""
    start, end = ts("2024-01-01 00:00:00"), ts("2025-01-01 00:00:00")
    stamps, stamp = [], start - 1
    while True:
        stamp = next_fixed_time(0, 0, -1, -1, -1, -1, stamp, tz)
        if stamp >= end:
            break
        stamps.append(stamp)
    assert stamps == list(range(start, end, 3600))


@pytest.mark.parametrize("tz", [NEW_YORK, BERLIN])
@pytest.mark.parametrize("hour", [1, 2, 3])
def test_daily_plan_fires_once_per_local_date_through_a_year(tz, hour):
    start, end = ts("2024-01-01 12:00:00"), ts("2025-01-01 12:00:00")
    dates, stamp = [], start
    while True:
        stamp = next_fixed_time(0, 30, hour, -1, -1, -1, stamp, tz)
        if stamp >= end:
            break
        dates.append(datetime.fromtimestamp(stamp, tz).date())
    first = datetime(2024, 1, 2).date()
    assert dates == [first + timedelta(days=n) for n in range(366)]


def _transitions(tz, start, end):
    """Instants in [start, end) where the UTC offset of ``tz`` changes (hourly scan + bisect)."""
    found = []
    offset = datetime.fromtimestamp(start, tz).utcoffset()
    for hour in range(start, end, 3600):
        if datetime.fromtimestamp(hour, tz).utcoffset() != offset:
            low, high = hour - 3600, hour
            while high - low > 1:
                middle = (low + high) // 2
                if datetime.fromtimestamp(middle, tz).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(high)
            offset = datetime.fromtimestamp(hour, tz).utcoffset()
    return found


class _Window:
    """Every second of a few hours around one offset change, with its wall time.

    A per-second oracle of both DST rules, against which successive next_fixed_time calls
    are compared. Sets of instants indexed by field value keep matching fast.
    """

    HALF = 3 * 3600

    def __init__(self, tz, transition):
        self.transition = transition
        self.before = int(datetime.fromtimestamp(transition - 1, tz).utcoffset().total_seconds())
        self.after = int(datetime.fromtimestamp(transition, tz).utcoffset().total_seconds())
        self.start, self.end = transition - self.HALF, transition + self.HALF
        self.instants = {}
        for instant in range(self.start, self.end):
            offset = self.before if instant < transition else self.after
            self._index(self.instants, instant, instant + offset)
        self.skipped = {}  # wall times that never happen (a gap), indexed the same way
        for wall in range(transition + self.before, transition + self.after):
            self._index(self.skipped, wall, wall)
        self.repeated = set(range(transition, transition + self.before - self.after))

    @staticmethod
    def _index(index, key, wall):
        parts = time.gmtime(wall)
        values = (parts.tm_sec, parts.tm_min, parts.tm_hour, parts.tm_mday, parts.tm_mon,
                  (parts.tm_wday + 1) % 7)
        index.setdefault("all", set()).add(key)
        for field, value in enumerate(values):
            index.setdefault((field, value), set()).add(key)

    @staticmethod
    def _matching(index, fields):
        found = index.get("all", set())
        for field, value in enumerate(fields):
            if value != -1:
                found = found & index.get((field, 0 if field == 5 and value == 7 else value), set())
        return found

    def expected(self, fields):
        matching = self._matching(self.instants, fields)
        if fields[2] == -1:
            return sorted(matching)
        once = matching - self.repeated
        if self._matching(self.skipped, fields):
            once.add(self.transition)
        return sorted(once)

    def actual(self, fields, tz):
        found, stamp = [], self.start - 1
        while True:
            stamp = next_fixed_time(*fields, stamp, tz)
            if stamp is None or stamp >= self.end:
                return found
            found.append(stamp)


def _random_fields(rng, wall):
    """Fields likely to match around a wall time: each one -1, that wall's value, or random."""
    parts = time.gmtime(wall)
    hour = rng.choice([-1, parts.tm_hour, (parts.tm_hour + rng.randint(-2, 2)) % 24])
    minute = rng.choice([-1, 0, 15, 30, 45, rng.randrange(60)])
    second = rng.choice([0, 30, rng.randrange(60)] + ([-1] if minute != -1 else []))
    day = rng.choice([-1, -1, parts.tm_mday])
    month = rng.choice([-1, -1, parts.tm_mon])
    week = rng.choice([-1, -1, (parts.tm_wday + 1) % 7, 7, rng.randrange(7)])
    return second, minute, hour, day, month, week


@pytest.mark.parametrize("zone, year", [
    ("America/New_York", 2024), ("Europe/Berlin", 2024),
    ("Australia/Lord_Howe", 2024),  # 30-minute shifts
    ("America/Santiago", 2024),  # changes at midnight: a date starts at 01:00 or repeats 23:xx
    ("Pacific/Apia", 2011),  # skipped December 30 entirely (a 24-hour jump)
])
def test_dst_rules_against_a_per_second_oracle(zone, year):
    tz = ZoneInfo(zone)
    rng = random.Random(zone)
    changes = _transitions(tz, ts("%d-01-01 00:00:00" % year), ts("%d-01-01 00:00:00" % (year + 1)))
    assert changes
    for transition in changes:
        window = _Window(tz, transition)
        for _ in range(25):
            fields = _random_fields(rng, transition + rng.choice([window.before, window.after]))
            assert [utc(t) for t in window.actual(fields, tz)] == \
                [utc(t) for t in window.expected(fields)], fields


_FIELD_VALUES = [st.integers(0, 59), st.integers(0, 59), st.integers(0, 23), st.integers(1, 31),
                 st.integers(1, 12), st.integers(0, 7)]


@settings(max_examples=300, deadline=None)
@given(fields=st.tuples(*(st.one_of(st.just(-1), values) for values in _FIELD_VALUES)),
       after=st.integers(ts("1990-01-01 00:00:00"), ts("2037-01-01 00:00:00")),
       zone=st.sampled_from(["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata"]),
       share=st.floats(0, 1))
def test_results_are_consistent(fields, after, zone, share):
    """Strictly later, the wall time matches (or ends a gap), and nothing fires in between."""
    tz = resolve_timezone(zone)
    stamp = next_fixed_time(*fields, after, tz)
    if stamp is None:
        with pytest.raises(WillNeverArriveTimeError):
            check_fields(*fields)
        return
    assert stamp > after
    local = datetime.fromtimestamp(stamp, tz)
    values = (local.second, local.minute, local.hour, local.day, local.month,
              local.isoweekday() % 7)
    wanted = tuple(0 if field == 5 and v == 7 else v for field, v in enumerate(fields))
    if all(w in (-1, v) for w, v in zip(wanted, values)):
        assert fields[2] == -1 or not local.fold  # fixed hour: first occurrence only
    else:  # a skipped wall time fires at the jump
        assert fields[2] != -1
        assert datetime.fromtimestamp(stamp - 1, tz).utcoffset() < local.utcoffset()
    between = after + int((stamp - after) * share)
    assert next_fixed_time(*fields, min(between, stamp - 1), tz) == stamp


# -- cross-check against croniter ---------------------------------------------------------

def _cron_field(value):
    return "*" if value == -1 else str(value)


def test_agrees_with_croniter_in_utc():
    """Successive next times of random field sets match croniter's with AND semantics."""
    rng = random.Random(20240229)
    checked = 0
    for _ in range(2000):
        fields = tuple(-1 if rng.random() < 0.5 else rng.randint(low, high)
                       for low, high in ((0, 59), (0, 59), (0, 23), (1, 28), (1, 12), (0, 6)))
        after = rng.randint(ts("1980-01-01 00:00:00"), ts("2030-01-01 00:00:00"))
        expression = " ".join(_cron_field(v) for v in fields)
        cron = croniter(expression, datetime.fromtimestamp(after, timezone.utc), day_or=False,
                        second_at_beginning=True)
        stamp = after
        for _ in range(3):
            stamp = next_fixed_time(*fields, stamp)
            assert stamp == int(cron.get_next(float)), (expression, utc(after))
            checked += 1
    assert checked == 6000
