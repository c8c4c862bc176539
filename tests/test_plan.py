"""Tests of forsun.plan.Plan: validation, times (SPEC section 1) and encodings."""

import calendar
import json
import time

import msgpack
import pytest

from forsun.crontime import resolve_timezone
from forsun.error import InvalidArgumentError, WillNeverArriveTimeError
from forsun.crontab import parse_plain_set_line, parse_set_line
from forsun.plan import FIELDS, Plan, PlanBuilder, plans_json

NOW = calendar.timegm((2024, 1, 1, 12, 0, 0))  # a Monday


def ts(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def build(**kwargs):
    arguments = {"key": "k", "is_time_out": False, "now": NOW}
    arguments.update(kwargs)
    return Plan.build(**arguments)


def error_code(**kwargs):
    with pytest.raises((InvalidArgumentError, WillNeverArriveTimeError)) as caught:
        build(**kwargs)
    return caught.value.code


# -- Plan.build validation ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"key": 5}, {"key": b"bytes"}, {"key": "k" * 1025}, {"key": "\u00e9" * 513},
    {"second": "5"}, {"second": 1.5}, {"second": None}, {"minute": [1]},
    {"second": True}, {"hour": False}, {"count": True},
    {"second": 1 << 15}, {"week": -(1 << 15) - 1}, {"count": -1}, {"count": 1 << 15},
    {"action": ""}, {"action": None}, {"action": 3},
    {"params": ["cmd"]}, {"params": "cmd=ls"}, {"params": {"cmd": 1}}, {"params": {1: "ls"}},
    {"params": {"cmd": None}}, {"params": {"cmd": b"ls"}},
    {"params": {"cmd": "x" * (64 * 1024 + 1)}},
])
@pytest.mark.parametrize("is_time_out", [False, True])
def test_build_rejects_invalid_arguments_with_1007(kwargs, is_time_out):
    kwargs = dict(kwargs, is_time_out=is_time_out)
    kwargs.setdefault("second", 5)
    assert error_code(**kwargs) == 1007


@pytest.mark.parametrize("kwargs", [
    {"second": 60}, {"minute": -2}, {"hour": 24}, {"day": 0}, {"day": 32}, {"month": 13},
    {"week": 8}, {"day": 30, "month": 2}, {"day": 31, "month": 4},
    {"second": 0, "minute": 0, "hour": 0, "day": 31, "month": 11},
])
def test_build_rejects_fixed_times_that_never_come_with_1002(kwargs):
    assert error_code(**kwargs) == 1002


@pytest.mark.parametrize("kwargs", [
    {}, {"second": 0}, {"second": -1, "minute": 0}, {"second": -5, "minute": -5},
])
def test_build_rejects_a_delay_under_one_second_with_1002(kwargs):
    assert error_code(is_time_out=True, **kwargs) == 1002


def test_build_rejects_a_first_fire_after_2038_with_1002():
    assert error_code(second=0, minute=0, hour=0, day=1, month=3,
                      now=ts("2038-01-01 00:00:00")) == 1002
    assert error_code(is_time_out=True, second=0, day=30, now=ts("2038-01-01 00:00:00")) == 1002


@pytest.mark.parametrize("key", ["", None])
def test_build_generates_unique_keys_for_empty_ones(key):
    first, second = build(key=key), build(key=key)
    assert first.key and second.key and first.key != second.key


def test_build_keeps_valid_input():
    plan = build(key="job", second=1.0, minute=2, hour=3, week=7, count=4, action="http",
                 params={"url": "http://127.0.0.1/"}, created_time=123.5)
    assert (plan.key, plan.second, plan.minute, plan.hour, plan.day, plan.month, plan.week) \
        == ("job", 1, 2, 3, -1, -1, 7)
    assert (plan.count, plan.action, plan.params) == (4, "http", {"url": "http://127.0.0.1/"})
    assert (plan.current_count, plan.status, plan.last_timeout) == (0, 0, 0)
    assert plan.created_time == 123.5
    assert plan.next_time == ts("2024-01-07 03:02:01")  # the first Sunday
    assert build(params=None).params == {}
    assert build(created_time=0.0).created_time == float(NOW)


def test_build_computes_the_first_fire():
    assert build(is_time_out=True, second=5).next_time == NOW + 5
    assert build(second=0, minute=0).next_time == NOW + 3600
    # one-shot date already passed this year: next year
    assert build(second=0, minute=0, hour=0, day=1, month=1).next_time == ts("2025-01-01 00:00:00")
    new_york = resolve_timezone("America/New_York")
    assert build(second=0, minute=0, hour=9, tz=new_york).next_time == ts("2024-01-01 14:00:00")


# -- PlanBuilder: Plan.build for many plans of one moment -------------------------------------

def outcome(make):
    """The plan made, or what the error says, to compare two ways of building."""
    try:
        return make()
    except (InvalidArgumentError, WillNeverArriveTimeError) as e:
        return type(e), e.code, e.message


BUILD_CASES = [
    dict(key="job", second=1.0, minute=2, hour=3, week=7, count=4, action="http",
         params={"url": "http://127.0.0.1/"}),
    dict(key="d", is_time_out=True, second=5, count=3), dict(key="d", is_time_out=1, second=5),
    dict(second=0, minute=0, hour=0, day=1, month=1), dict(second=0, minute=0, hour=9),
    dict(is_time_out=True, second=0, day=30), dict(second=0, minute=0, hour=0, day=1, month=3),
] + [dict(kwargs, second=kwargs.get("second", 5), is_time_out=is_time_out)
     for kwargs in [{"key": 5}, {"key": "k" * 1025}, {"second": "5"}, {"second": True},
                    {"minute": [1]}, {"week": 1 << 15}, {"count": -1}, {"count": True},
                    {"action": ""}, {"action": 3}, {"params": {"cmd": 1}},
                    {"params": {"cmd": "x" * (64 * 1024 + 1)}}, {"second": 60},
                    {"day": 30, "month": 2}, {"second": -1}]
     for is_time_out in (False, True)]


@pytest.mark.parametrize("kwargs", BUILD_CASES)
@pytest.mark.parametrize("tz", [None, "America/New_York"])
def test_plan_builder_builds_what_plan_build_builds(kwargs, tz):
    tz = resolve_timezone(tz) if tz else None
    arguments = dict({"key": "k", "is_time_out": False}, **kwargs)
    builder = PlanBuilder(NOW, tz, 123.5)
    for _ in range(2):  # the second time from the builder's cache of times
        assert outcome(lambda: builder.build(**arguments)) == outcome(
            lambda: Plan.build(**arguments, now=NOW, tz=tz, created_time=123.5))


def test_plan_builder_generates_keys_and_copies_params():
    builder, params = PlanBuilder(NOW), {"cmd": "ls"}
    first, second = builder.build("", True, 5, params=params), builder.build(None, True, 5)
    assert first.key and second.key and first.key != second.key
    assert first.params == params and first.params is not params
    assert first.created_time == float(NOW)


@pytest.mark.parametrize("line", [
    "k */5/3 */2 * * * * shell ls", "k 0 32 16 * * * http http://127.0.0.1:8080/hook",
    "k 0 32 16 * * * redis command=GET;host=h", "k */30 * * * * * sh", "k 5 * * * * * shell",
    "k 60 * * * * * shell ls", "k 0 30 2 30 2 * shell ls", "k * * * * * * shell ls",
    "k */0 * * * * * shell ls", "%s */5 * * * * * shell ls" % ("k" * 1025),
    "k 1 2 3 4 5 7 http url=u;a=" + "x" * (64 * 1024),
])
def test_build_parsed_builds_what_plan_build_builds_from_the_line(line):
    """Bulk bodies build from ``parse_plain_set_line``, which checks types and ranges
    itself; whatever the line, the plan or the error must be Plan.build's."""
    builder = PlanBuilder(NOW, None, 123.5)
    parsed = parse_plain_set_line(line)
    assert parsed is not None
    assert outcome(lambda: builder.build_parsed(parsed)) == outcome(
        lambda: Plan.build(*parse_set_line(line), now=NOW, created_time=123.5))


def test_plans_json_is_the_plans_to_json_joined():
    plans = [build(key="p%d" % n, is_time_out=bool(n % 2), second=n % 60, count=n % 3,
                   action=("http", "shell")[n % 2],
                   params={"url" if n % 2 else "cmd": "v%d \"\u00e9" % n, "n": ""})
             for n in range(200)]
    plans.append(full_plan())
    assert plans_json(plans) == ", ".join([plan.to_json() for plan in plans])
    assert plans_json([]) == ""


@pytest.mark.parametrize("name, value", [
    ("second", True), ("minute", 5.0), ("created_time", float("nan")),
    ("created_time", float("inf")), ("created_time", 7), ("params", {"n": 1}),
    ("params", {1: "one"}), ("is_time_out", 1), ("count", 1 << 20), ("status", -(1 << 40)),
    ("last_timeout", 1 << 40), ("key", None), ("action", 5),
])
def test_plans_json_of_plans_with_odd_fields_is_still_json_dumps(name, value):
    odd, plain = full_plan(), full_plan()
    setattr(odd, name, value)
    expected = ", ".join(json.dumps(plan.to_dict()) for plan in (plain, odd, plain))
    assert plans_json([plain, odd, plain]) == expected


# -- interval and compute_next_time -----------------------------------------------------------

@pytest.mark.parametrize("fields, seconds", [
    ((5, -1, -1, -1, -1, -1), 5),
    ((0, 1, -1, -1, -1, -1), 60),
    ((1, 2, 3, 4, 5, 6), 1 + 2 * 60 + 3 * 3600 + 4 * 86400 + 5 * 30 * 86400 + 6 * 7 * 86400),
    ((-1, -1, 1, -1, 1, -1), 3600 + 30 * 86400),
    ((-3, 10, -1, -7, -1, 1), 600 + 7 * 86400),
    ((-1, -1, -1, -1, -1, -1), 0),
])
def test_interval(fields, seconds):
    assert Plan("k", True, *fields).interval() == seconds


def test_compute_next_time_of_a_delay_plan():
    plan = build(is_time_out=True, second=30, minute=1, count=3)
    assert plan.compute_next_time(NOW + 1000) == NOW + 1090
    plan.current_count = 2
    assert plan.compute_next_time(NOW) == NOW + 90
    plan.current_count = 3
    assert plan.compute_next_time(NOW) is None


def test_compute_next_time_of_a_fixed_plan():
    plan = build(second=0, minute=30, count=2)
    assert plan.next_time == ts("2024-01-01 12:30:00")
    plan.current_count = 1
    assert plan.compute_next_time(plan.next_time) == ts("2024-01-01 13:30:00")
    plan.current_count = 2
    assert plan.compute_next_time(plan.next_time) is None


def test_compute_next_time_without_end():
    plan = build(second=0, minute=0, hour=0, week=1)
    plan.current_count = 1000
    assert plan.compute_next_time(ts("2024-01-08 00:00:00")) == ts("2024-01-15 00:00:00")


def test_compute_next_time_in_a_timezone():
    berlin = resolve_timezone("Europe/Berlin")
    plan = build(second=0, minute=30, hour=2, tz=berlin)
    plan.current_count = 1
    # 02:30 does not exist on 2024-03-31 in Berlin: fires at 03:00 CEST
    assert plan.compute_next_time(ts("2024-03-30 12:00:00"), berlin) == ts("2024-03-31 01:00:00")


@pytest.mark.parametrize("fields, first, then", [
    ((0, 0, 12, 1, 3, -1), "2025-03-01 12:00:00", None),
    ((0, 0, 12, 1, 3, 6), "2025-03-01 12:00:00", None),  # a Saturday
    ((-1, 0, 12, 1, 3, -1), "2025-03-01 12:00:00", "2025-03-01 12:00:01"),
    ((0, 0, 12, 1, -1, -1), "2024-06-01 12:00:00", "2024-07-01 12:00:00"),
])
def test_only_plans_with_second_to_month_fixed_are_one_shot(fields, first, then):
    keys = ("second", "minute", "hour", "day", "month", "week")
    plan = build(now=ts("2024-06-01 00:00:00"), **dict(zip(keys, fields)))
    assert plan.is_one_shot() is (then is None)
    assert plan.next_time == ts(first)
    plan.current_count = 1
    assert plan.compute_next_time(plan.next_time) == (then and ts(then))


def test_delay_plans_are_never_one_shot():
    plan = build(is_time_out=True, second=0, minute=0, hour=12, day=1, month=3)
    assert not plan.is_one_shot()


# -- encodings ----------------------------------------------------------------------------------

def full_plan():
    return Plan("clé/1", is_time_out=False, second=1, minute=-1, hour=3, day=-1, month=12,
                week=7, status=-1, count=9, current_count=4, next_time=2 ** 31 - 1,
                last_timeout=1700000000, created_time=1699999999.25, action="http",
                params={"url": "http://127.0.0.1/", "body": "ünïcode ✓", "": ""})


def test_pack_unpack_round_trip():
    plan = full_plan()
    assert Plan.unpack(plan.key, plan.pack()) == plan
    assert Plan.unpack("other", plan.pack()).key == "other"


def test_dumps_loads_round_trip():
    plan = full_plan()
    assert Plan.loads(plan.dumps()) == plan
    assert set(msgpack.unpackb(plan.dumps(), raw=False)) == set(FIELDS)
    assert Plan.from_dict(plan.to_dict()) == plan


def test_loads_reads_an_old_raw_string_blob():
    """0.1.x wrote plans with msgpack 0.6 defaults: every string is raw (bytes)."""
    old = {"key": "daily", "is_time_out": False, "second": 0, "minute": 32, "hour": 16,
           "day": -1, "month": -1, "week": -1, "status": 0, "count": 0,
           "current_count": 3, "next_time": 1700065920, "last_timeout": 1699979520,
           "created_time": 1699800000.5, "action": "shell",
           "params": {"cmd": "echo 1", "cwd": "/tmp"}}
    blob = msgpack.packb(old, use_bin_type=False)
    assert msgpack.unpackb(blob, raw=True)[b"action"] == b"shell"  # really raw
    plan = Plan.loads(blob)
    assert plan == Plan(**old)
    assert isinstance(plan.key, str) and isinstance(plan.params["cmd"], str)
    assert Plan.unpack(plan.key, plan.pack()) == plan


def test_loads_fills_fields_missing_from_old_blobs():
    plan = Plan.loads(msgpack.packb({"key": "k", "is_time_out": True, "second": 5},
                                    use_bin_type=False))
    assert plan == Plan("k", True, 5)


def test_old_blob_with_non_utf8_bytes_can_be_packed_again():
    """A 0.1.x plan whose command is not UTF-8 (e.g. GBK) must survive loads -> pack.

    mem_dump reads old dumps with Plan.loads then Plan.pack; SPEC section 9 says forsund
    must start from such a dump.
    """
    blob = msgpack.packb({"key": "gbk", "is_time_out": False, "second": 0,
                          "params": {"cmd": "echo 你好".encode("gbk")}}, use_bin_type=False)
    plan = Plan.loads(blob)
    assert Plan.unpack(plan.key, plan.pack()).params == plan.params
    assert Plan.loads(plan.dumps()).params["cmd"].encode("utf-8", "surrogateescape") == \
        "echo 你好".encode("gbk")


def test_nil_time_fields_in_an_old_blob_read_as_every():
    plan = Plan.from_dict({b"key": b"n", b"second": None, b"minute": None})
    assert (plan.second, plan.minute) == (-1, -1)


@pytest.mark.parametrize("fields", [
    {},
    {"key": "quote\" back\\ nl\n é \u2603 \U0001f600", "action": "http",
     "params": {"url": "http://h/?a=1&b=\"2\"", "header_X": "\u00e9"}},
    {"key": "surrogate \udcff from a 0.1.x file", "params": {"\udc80": "\ud800"}},
    {"created_time": 1700000000.123456, "next_time": 2 ** 31 - 1, "current_count": 32767},
    {"params": {}},
])
def test_to_json_writes_what_json_dumps_writes(fields):
    plan = full_plan()
    for name, value in fields.items():
        setattr(plan, name, value)
    assert plan.to_json() == json.dumps(plan.to_dict())


@pytest.mark.parametrize("name, value", [
    ("second", True), ("minute", 5.0), ("created_time", float("nan")),
    ("created_time", float("inf")), ("created_time", 7), ("params", {"n": 1}),
    ("params", {1: "one"}), ("is_time_out", 1),
])
def test_to_json_of_a_plan_with_odd_field_types_is_still_json_dumps(name, value):
    plan = full_plan()
    setattr(plan, name, value)
    assert plan.to_json() == json.dumps(plan.to_dict())


def test_to_dict_lists_the_fields_in_order():
    assert list(full_plan().to_dict()) == list(FIELDS)
