"""forsun.servers.http.bodies: what the HTTP API accepts, without a server."""

import json

import pytest

from forsun.error import InvalidArgumentError, WillNeverArriveTimeError
from forsun.servers.http.bodies import (JSON_FIELDS, crontab_plan_args, json_plan_args,
                                        line_context, query_text, query_timestamp)


def args_of(fields):
    return json_plan_args(json.dumps(fields).encode())


def refused(body):
    with pytest.raises(InvalidArgumentError) as error:
        json_plan_args(body)
    return error.value.message


def test_defaults_follow_the_spec():
    assert args_of({}) == {"key": "", "second": -1, "minute": -1, "hour": -1, "day": -1,
                           "month": -1, "week": -1, "count": 0, "action": "shell",
                           "params": None}


def test_seconds_is_plural_in_the_body():
    assert args_of({"seconds": 5})["second"] == 5
    # "second" is not a body field: ignored like every unknown one, so the default (-1) holds
    assert args_of({"second": 5})["second"] == -1


def test_null_means_default_and_decimal_strings_are_numbers():
    args = args_of({"key": None, "minute": None, "count": "3", "hour": "-1", "day": " 4",
                    "params": None, "action": None})
    assert (args["key"], args["minute"], args["count"], args["hour"]) == ("", -1, 3, -1)
    assert args["day"] == " 4"  # not a decimal string: Plan.build refuses it by name
    assert args["action"] == "shell" and args["params"] is None


def test_values_pass_through_for_plan_build_to_judge():
    args = args_of({"minute": 1.5, "hour": True, "params": {"a": 1}, "action": 3})
    assert (args["minute"], args["hour"], args["params"], args["action"]) == (
        1.5, True, {"a": 1}, 3)


@pytest.mark.parametrize("body, words", [
    (b"", "empty"),
    (b"  \n", "empty"),
    (b"{", "not JSON"),
    (b"NaN", "NaN is not a JSON number"),
    (b'{"minute": Infinity}', "Infinity"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b"\xff{}", "not UTF-8"),
    (b"[1]", "got a JSON array"),
    (b'"text"', "got a JSON string"),
    (b"null", "got a JSON null"),
    (b"3", "got a JSON number"),
    (b'{"key": "\\ud800"}', "key holds a lone surrogate"),
    (b'{"params": {"\\udfff": "x"}}', "params holds a lone surrogate"),
    (b'{"params": {"a": "\\udfff"}}', 'params["a"] holds a lone surrogate'),
])
def test_bodies_that_are_refused_name_the_problem(body, words):
    assert words in refused(body)


def test_every_json_field_is_known():
    assert list(JSON_FIELDS) == ["key", "seconds", "minute", "hour", "day", "month", "week",
                                 "count", "action", "params"]


def test_crontab_lines_skip_blanks_and_comments_and_keep_line_numbers():
    body = b"# plans\n\na */5/2 * * * * * shell 'cmd=ls'\r\nb 0 30 * * * * shell ls\n"
    (first_line, first), (second_line, second) = crontab_plan_args(body)
    assert (first_line, first["key"], first["is_time_out"], first["second"], first["count"]) \
        == (3, "a", True, 5, 2)
    assert (second_line, second["key"], second["is_time_out"], second["minute"]) \
        == (4, "b", False, 30)
    assert second["params"] == {"cmd": "ls"}


def test_a_bad_crontab_line_is_named():
    with pytest.raises(InvalidArgumentError, match="^line 3: "):
        crontab_plan_args(b"a */5 * * * * * shell ls\n\nb 0 30 * *\n")
    with pytest.raises(InvalidArgumentError, match="no plan line"):
        crontab_plan_args(b"\n# nothing\n")
    with pytest.raises(InvalidArgumentError, match="not UTF-8"):
        crontab_plan_args(b"a */5 * * * * * shell \xff")


def test_line_context_keeps_the_error_code():
    with pytest.raises(WillNeverArriveTimeError, match="^line 7: never"):
        with line_context(7):
            raise WillNeverArriveTimeError("never")
    with pytest.raises(WillNeverArriveTimeError, match="^never"):
        with line_context(None):
            raise WillNeverArriveTimeError("never")


def test_query_values_are_taken_exactly():
    arguments = {"key": [b"first", b" last "], "bad": [b"\xff"], "empty": [b""]}
    assert query_text(arguments, "key") == " last "
    assert query_text(arguments, "missing") is None
    assert query_text(arguments, "empty") == ""
    with pytest.raises(InvalidArgumentError, match="bad is not UTF-8"):
        query_text(arguments, "bad")


@pytest.mark.parametrize("value, expected", [(None, 0), (b"", 0), (b"0", 0), (b"17", 17),
                                             (b"-5", -5), (b"2147483647", 2147483647)])
def test_timestamps(value, expected):
    assert query_timestamp({} if value is None else {"timestamp": [value]}) == expected


@pytest.mark.parametrize("value", [b"abc", b"1.5", b"2147483648", b"1e3", b"99999999999999"])
def test_bad_timestamps_are_refused(value):
    with pytest.raises(InvalidArgumentError, match="timestamp must be"):
        query_timestamp({"timestamp": [value]})
