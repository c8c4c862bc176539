"""The ``set`` syntax (forsun.crontab): quoting rules as tables, and round trips.

The round trips matter most: an operator copies a line printed by ``get`` and pastes it
after ``set``; whatever the plan's key and params hold, the pasted line must recreate it.
"""

import pytest
from hypothesis import given, settings, strategies as st

from forsun import crontab
from forsun.crontab import (SET_ARG_NAMES, format_params, format_set_args, format_time_fields,
                            parse_params, parse_plain_set_line, parse_set_args, parse_set_line,
                            parse_time_field, quote_token, split_commands, split_tokens)
from forsun.error import InvalidArgumentError
from forsun.plan import Plan


@pytest.mark.parametrize("line, expected", [
    ("ls", ["ls"]),
    ("ls; info ;; current;", ["ls", "info", "current"]),
    ("set a 1 * * * * * shell 'a;b'; ls", ["set a 1 * * * * * shell 'a;b'", "ls"]),
    ('get "x;y"; rm \'p;q\'', ['get "x;y"', "rm 'p;q'"]),
    (r"set a 1 * * * * * redis 'command=\'SET a;b\''; ls",
     [r"set a 1 * * * * * redis 'command=\'SET a;b\''", "ls"]),
    (r"get a\'b; ls", [r"get a\'b", "ls"]),  # an escaped quote outside quotes opens nothing
    ("", []),
])
def test_split_commands(line, expected):
    assert split_commands(line) == expected


@pytest.mark.parametrize("line, expected", [
    ("get  key ", ["get", "key"]),
    ("a 'b c' \"d e\"", ["a", "b c", "d e"]),
    ("a '' \"\"", ["a", "", ""]),
    (r"'it\'s' " + r'"say \"hi\""', ["it's", 'say "hi"']),
    (r"'a\\b' 'a\b' a\b", ["a\\b", "a\\b", "a\\b"]),  # only \\ and \quote are escapes
    (r"d\'e", ["d'e"]),
    ("x'y z'w", ["xy zw"]),
    ("\"it's\" 'say \"hi\"'", ["it's", 'say "hi"']),
    ("ключ 'значение с пробелом' 计划\u3000键", ["ключ", "значение с пробелом", "计划", "键"]),
])
def test_split_tokens(line, expected):
    assert split_tokens(line) == expected


@pytest.mark.parametrize("line", ["'a", 'a "b', r"'a\'", "a 'b\\'"])
def test_unbalanced_quotes_are_reported(line):
    with pytest.raises(InvalidArgumentError, match="unbalanced"):
        split_tokens(line)
    with pytest.raises(InvalidArgumentError, match="unbalanced"):
        split_commands(line)


@pytest.mark.parametrize("text, action, expected", [
    ("", "redis", {}),
    ("host=127.0.0.1;command='SET b 1 EX 300'", "redis",
     {"host": "127.0.0.1", "command": "SET b 1 EX 300"}),
    ("a=1; b = 2 ;", "x", {"a": "1", "b": "2"}),
    ("passwd=;db=test", "mysql", {"passwd": "", "db": "test"}),
    ("sql='update t set a=now() where id=1'", "mysql",
     {"sql": "update t set a=now() where id=1"}),
    ("sql=update t set a='x;y' where b=\"1\"", "mysql",  # not wholly quoted: kept literally
     {"sql": "update t set a='x;y' where b=\"1\""}),
    ("url=http://h/p?a=1&b=2", "http", {"url": "http://h/p?a=1&b=2"}),
    ("body={\"a\": \"it's;x\"}", "beanstalk", {"body": "{\"a\": \"it's;x\"}"}),
    (r"v='it\'s';w=" + r'"say \"hi\""', "x", {"v": "it's", "w": 'say "hi"'}),
    (r"v='a\\b\n'", "x", {"v": "a\\b\\n"}),
    ("v='a' 'b'", "x", {"v": "'a' 'b'"}),
    ("v='  padded  '", "x", {"v": "  padded  "}),
    ("名前='値;ü';emoji=🙂", "x", {"名前": "値;ü", "emoji": "🙂"}),
    ("ls -la /tmp", "shell", {"cmd": "ls -la /tmp"}),
    ("ls", "sh", {"cmd": "ls"}),
    ("FOO=1 make", "bash", {"cmd": "FOO=1 make"}),
    ("echo a=b", "shell", {"cmd": "echo a=b"}),
    ("cmd=echo 'a;b'", "shell", {"cmd": "echo 'a;b'"}),
    ("cmd='ls';cwd=/tmp", "shell", {"cmd": "ls", "cwd": "/tmp"}),
    ("http://h/hook?x=1", "http", {"url": "http://h/hook?x=1"}),
    ("url='http://h/hook';method=post", "http", {"url": "http://h/hook", "method": "post"}),
])
def test_parse_params(text, action, expected):
    assert parse_params(text, action) == expected


@pytest.mark.parametrize("text, message", [
    ("novalue", "name=value"),
    ("a=1;b", "name=value"),
    ("a='x", "unbalanced"),
    ("cmd=it's", "unbalanced"),
])
def test_bad_params(text, message):
    with pytest.raises(InvalidArgumentError, match=message):
        parse_params(text, "redis" if not text.startswith("cmd") else "shell")


@pytest.mark.parametrize("text, expected", [
    ("*", (-1, False, None)),
    ("0", (0, False, None)),
    ("59", (59, False, None)),
    ("-1", (-1, False, None)),
    ("*/5", (5, True, None)),
    ("*/5/3", (5, True, 3)),
    ("*/5/0", (5, True, 0)),
    ("*/0", (0, True, None)),
])
def test_parse_time_field(text, expected):
    assert parse_time_field("second", text) == expected


@pytest.mark.parametrize("text", ["x", "", "**", "*/", "*/a", "*/5/", "*/5/1/2", "5/1",
                                  "1.5", "-2", "40000", "*/40000", "*/1/40000", "５", "²",
                                  "*/-5"])
def test_bad_time_fields(text):
    with pytest.raises(InvalidArgumentError, match="second"):
        parse_time_field("second", text)


# The five examples of SPEC section 4, as the shell hands them to forsun (one argument each).
SPEC_EXAMPLES = [
    ("set ping1 */5/1 * * * * * redis 'host=127.0.0.1;command=\\'SET b 1 EX 300\\''",
     dict(key="ping1", is_time_out=True, count=1, second=5, action="redis",
          params={"host": "127.0.0.1", "command": "SET b 1 EX 300"})),
    ("set job2 */5/1 * * * * * shell 'cmd=ls'",
     dict(key="job2", is_time_out=True, count=1, second=5, action="shell",
          params={"cmd": "ls"})),
    ("set q3 */5/1 * * * * * beanstalk 'host=127.0.0.1;name=etask;body={}'",
     dict(key="q3", is_time_out=True, count=1, second=5, action="beanstalk",
          params={"host": "127.0.0.1", "name": "etask", "body": "{}"})),
    ("set daily 0 32 16 * * * http 'url=\\'http://127.0.0.1:8080/hook\\''",
     dict(key="daily", is_time_out=False, count=0, second=0, minute=32, hour=16,
          action="http", params={"url": "http://127.0.0.1:8080/hook"})),
    ("set m5 0 32 16 * * * mysql 'host=127.0.0.1;user=root;passwd=;db=test;"
     "sql=\\'update t set a=now() where id=1\\''",
     dict(key="m5", is_time_out=False, count=0, second=0, minute=32, hour=16,
          action="mysql", params={"host": "127.0.0.1", "user": "root", "passwd": "",
                                  "db": "test", "sql": "update t set a=now() where id=1"})),
]


@pytest.mark.parametrize("line, expected", SPEC_EXAMPLES)
def test_spec_examples(line, expected):
    (command,) = split_commands(line)
    assert command.startswith("set ")
    parsed = parse_set_args(command[4:])
    full = dict(dict(second=-1, minute=-1, hour=-1, day=-1, month=-1, week=-1), **expected)
    assert parsed == full


@pytest.mark.parametrize("args, expected", [
    ("k */5 */2 * * * * shell ls", dict(second=5, minute=2, count=1)),
    ("k */5/3 */2 * * * * shell ls", dict(second=5, minute=2, count=3)),
    ("k */5/3 */2/3 * * * * shell ls", dict(second=5, minute=2, count=3)),
    ("k */30 5 * * * * shell ls", dict(second=30, minute=5, count=1)),
    ("k * * * * * */1/0 shell ls", dict(week=1, count=0)),
])
def test_delay_plan_fields(args, expected):
    parsed = parse_set_args(args)
    assert parsed["is_time_out"]
    assert {name: parsed[name] for name in expected} == expected


def test_set_aliases_and_missing_params():
    parsed = parse_set_args("k 0 0 * * * * bash")
    assert (parsed["action"], parsed["params"], parsed["count"]) == ("shell", {}, 0)


@pytest.mark.parametrize("args, message", [
    ("k 1 * * * * *", "got 7 fields"),
    ("k 1 * * * * * shell cmd=echo hi", "quote PARAMS"),
    ("k */1/2 */1/3 * * * * shell ls", "different counts"),
    ("k 1 * * x * * shell ls", "day: 'x'"),
])
def test_bad_set_lines(args, message):
    with pytest.raises(InvalidArgumentError, match=message):
        parse_set_args(args)


def _plan(**fields) -> Plan:
    return Plan(**dict(dict(key="k", action="shell", params={"cmd": "ls"}), **fields))


@pytest.mark.parametrize("plan, fields", [
    (_plan(second=0, minute=32, hour=16), ["0", "32", "16", "*", "*", "*"]),
    (_plan(is_time_out=True, second=5, count=1), ["*/5/1", "*", "*", "*", "*", "*"]),
    (_plan(is_time_out=True, second=30, minute=1, count=0), ["*/30/0", "*/1", "*", "*", "*",
                                                              "*"]),
    (_plan(is_time_out=True, hour=2, count=4), ["*", "*", "*/2/4", "*", "*", "*"]),
])
def test_format_time_fields(plan, fields):
    assert format_time_fields(plan) == fields


def test_format_set_args_quotes_both_levels():
    plan = _plan(key="a b", params={"cmd": "echo \"it's\" \\o/", "x": "1;2=3"})
    line = format_set_args(plan)
    assert line == ("\"a b\" * * * * * * shell "
                    "\"cmd='echo \\\"it\\\\'s\\\" \\\\\\\\o/';x='1;2=3'\"")
    assert format_params(plan.params) == "cmd='echo \"it\\'s\" \\\\o/';x='1;2=3'"


def _round_trip(plan: Plan) -> None:
    line = format_set_args(plan)
    (command,) = split_commands("set " + line)  # what the CLI does with a pasted line
    parsed = parse_set_args(command[4:])
    again = Plan(**parsed)
    for name in ("key", "is_time_out", "second", "minute", "hour", "day", "month", "week",
                 "count", "action", "params"):
        assert getattr(again, name) == getattr(plan, name), (name, line)


@pytest.mark.parametrize("plan", [
    _plan(params={"cmd": "ls"}),
    _plan(key="job:1", second=0, minute=32, hour=16, day=1, month=2, week=3),
    _plan(is_time_out=True, second=5, minute=0, count=0, action="redis",
          params={"host": "127.0.0.1", "command": "SET b 1 EX 300;LPUSH q 'a b'"}),
    _plan(action="mysql", params={"passwd": "", "sql": "update t set a='x' where b=\"y\""}),
    _plan(action="http", params={"url": "http://h/?a=1;b=2", "header_X": "a\\'b\\\\"}),
    _plan(key="键 😀 'q' \"d\" ;", params={"cmd": "echo 'привет; мир' \\"}),
    _plan(action="beanstalk", params={"body": "{\"a\": [1, \"x'y\"]}", "name": "t"}),
    _plan(params={}),
])
def test_round_trips(plan):
    _round_trip(plan)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_name = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"),
                              blacklist_characters="=;'\""), min_size=1, max_size=6).filter(
    lambda name: name.strip() == name and not any(c.isspace() for c in name))


@settings(max_examples=300, deadline=None)
@given(key=_text.filter(lambda key: key.strip() != ""), action=st.sampled_from(
       ["redis", "mysql", "beanstalk", "thrift"]),
       params=st.dictionaries(_name, _text, max_size=4),
       delay=st.booleans(), count=st.integers(0, 100), second=st.integers(-1, 59))
def test_any_plan_round_trips(key, action, params, delay, count, second):
    _round_trip(_plan(key=key, action=action, params=params, is_time_out=delay,
                      second=second if not delay else max(second, 1),
                      count=count if delay else 0))


def test_quote_token():
    assert quote_token("job:1") == "job:1"
    assert split_tokens(quote_token("a 'b' \\ ;")) == ["a 'b' \\ ;"]
    assert split_tokens(quote_token("")) == [""]


@pytest.mark.parametrize("line", [
    "k */5/3 */2 * * * * shell ls",
    "k 0 32 16 * * * http http://127.0.0.1:8080/hook",
    "k 0 32 16 * * * redis 'command=SET a 1;host=h'",
    "k */30 * * * * * sh",
    "k\t*/1\u3000*  * * * * bash echo\\x",  # no quote: a backslash is a plain character
])
def test_parse_set_line_gives_plan_build_arguments_in_order(line):
    """Bulk bodies build plans from the positional form; it must say what the dict says."""
    args = parse_set_line(line)
    assert dict(zip(SET_ARG_NAMES, args)) == parse_set_args(line)
    plan = Plan.build(*args, now=1700000000)
    assert plan == Plan.build(**parse_set_args(line), now=1700000000, created_time=1700000000)


@pytest.mark.parametrize("line, words", [
    ("k */5/3 */2/4 * * * * shell ls", "different counts"),
    ("k */5 * *", "expected KEY"),
    ("k 60 * * * * * shell ls", None),  # parsed; Plan.build refuses the range
    ("k */x * * * * * shell ls", "is not *"),
])
def test_parse_set_line_refuses_as_parse_set_args_does(line, words):
    if words is None:
        assert parse_set_line(line)[2] == 60
        return
    with pytest.raises(InvalidArgumentError, match=words):
        parse_set_line(line)
    with pytest.raises(InvalidArgumentError, match=words):
        parse_set_args(line)


@pytest.mark.parametrize("line", [
    "k */5/3 */2 * * * * shell ls", "k 0 32 16 * * * http http://127.0.0.1:8080/hook",
    "k 0 32 16 * * * redis command=GET;host=h", "k */30 * * * * * sh", "k 1 2 3 4 5 6 bash",
    "k\t*/1\u3000*  * * * * bash echo\\x", "k 0 0 * * * * shell a=", "k 60 -1 * * * * x y=1",
    "k */5/0 * * * * * http ;url=u;;", "k 1 * * * * * http =u", "k 1 * * * * * thrift a=b",
])
def test_parse_plain_set_line_says_what_parse_set_line_says(line):
    """The bulk fast path: the same values, grouped as ``PlanBuilder.build_parsed`` takes
    them."""
    key, is_time_out, fields, count, action, params = parse_plain_set_line(line)
    assert (key, is_time_out, *fields, count, action, params) == parse_set_line(line)


@pytest.mark.parametrize("line", [
    "k */5 * * * * * shell 'cmd=ls'", 'k 1 * * * * * "sh" ls', "k */5 * *",
    "k 1 2 3 4 5 6 shell a b", "k 1 * * * * * shell a\\'b",
])
def test_parse_plain_set_line_leaves_other_lines_to_parse_set_line(line):
    assert parse_plain_set_line(line) is None


@pytest.mark.parametrize("line", [
    "k */5/3 */2/4 * * * * shell ls", "k */x * * * * * shell ls", "k 40000 * * * * * a b",
    "k -2 * * * * * shell ls", "k */5/40000 * * * * * shell ls", "k 1 * * * * * thrift a",
])
def test_parse_plain_set_line_refuses_as_parse_set_line_does(line):
    with pytest.raises(InvalidArgumentError) as plain:
        parse_plain_set_line(line)
    with pytest.raises(InvalidArgumentError) as general:
        parse_set_line(line)
    assert plain.value.message == general.value.message


def test_the_time_fields_cache_stays_bounded():
    for n in range(crontab._TIMES_SIZE + 10):
        assert parse_plain_set_line("k */%d * * * * * shell ls" % (n + 1))[2][0] == n + 1
    assert len(crontab._times) <= crontab._TIMES_SIZE
