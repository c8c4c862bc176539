"""The ``set`` syntax shared by the CLI and ``application/crontab`` HTTP bodies (SPEC 4).

    KEY SECOND MINUTE HOUR DAY MONTH WEEK ACTION PARAMS

A time field is ``*`` (every / unused), a number (fixed-time plan), or ``*/N`` or
``*/N/C`` (delay plan: N units, C fires, default 1, 0 = without end); one ``*/`` field makes
the whole plan a delay plan. PARAMS is ``name=value`` pairs joined by ``;``. For shell a
PARAMS without ``cmd=`` is the command, for http one without ``url=`` is the URL; ``sh`` and
``bash`` mean shell.

Quoting, the same at every level (commands, tokens, params): ' or " quote; inside quotes a
backslash escapes the quote character or a backslash, any other backslash is kept; outside
quotes a backslash keeps a following quote character from opening a quote. Quotes anywhere
protect white space and ``;``. A param value wholly enclosed in one pair of quotes loses
them; any other value is kept literally, so ``sql=update t set a='x'`` stays SQL.

Two levels of quoting meet here, so this module also formats a plan back into a line that
parses to the same plan (what the CLI's ``get`` prints can be pasted into ``set``).
"""

import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .error import InvalidArgumentError

FIELD_NAMES = ("second", "minute", "hour", "day", "month", "week")
ACTION_ALIASES = {"sh": "shell", "bash": "shell"}
# The param a PARAMS without name=value pairs is taken as, per action.
_DEFAULT_PARAM = {"shell": "cmd", "http": "url"}
SET_USAGE = "KEY SECOND MINUTE HOUR DAY MONTH WEEK ACTION [PARAMS]"
I16_MAX = (1 << 15) - 1
_QUOTES = "'\""
_NUMBER = re.compile(r"-?[0-9]+")
_DELAY = re.compile(r"\*/([0-9]+)(?:/([0-9]+))?")


def _scan(text: str, what: str) -> Iterator[Tuple[int, str, str, bool]]:
    """Yields (index, char, quote, escaped) for every char but escaping backslashes.

    ``quote`` is the quote around the char, its own for an opening or closing quote, ""
    outside quotes. The single definition of the quoting rules, so splitting commands,
    tokens and params can never disagree on where a quoted part ends. Raises
    InvalidArgumentError for an unbalanced quote.
    """
    quote, i = "", 0
    while i < len(text):
        char, following = text[i], text[i + 1:i + 2]
        if char == "\\" and following and following in (quote + "\\" if quote else _QUOTES):
            yield i + 1, following, quote, True
            i += 2
            continue
        if char == quote:
            quote = ""
            yield i, char, char, False
        else:
            if not quote and char in _QUOTES:
                quote = char
            yield i, char, quote, False
        i += 1
    if quote:
        raise InvalidArgumentError("unbalanced %s quote in %s %r" % (quote, what, text))


def _has_quote(text: str) -> bool:
    """Whether ``text`` holds a quote character. Without one, a backslash escapes nothing
    (it only ever escapes quotes, or backslashes inside quotes), so splitting is plain
    ``str.split``: lines of bulk crontab bodies take that path, ten times faster."""
    return "'" in text or '"' in text


def _split_unquoted(text: str, separator: str, what: str) -> List[str]:
    """Splits on unquoted ``separator``, keeping quotes and escapes for the next level."""
    if not _has_quote(text):  # nothing can be quoted or escaped: a plain split is the same
        return text.split(separator)
    pieces, start = [], 0
    for i, char, quote, escaped in _scan(text, what):
        if char == separator and not quote and not escaped:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return pieces


def split_commands(text: str) -> List[str]:
    """Splits a command line on unquoted ``;``, keeping the quotes for the next level."""
    return [command.strip() for command in _split_unquoted(text, ";", "command")
            if command.strip()]


def split_tokens(text: str, separator: str = "") -> List[str]:
    """Splits on unquoted white space (or on ``separator``), removing one level of quotes.

    Raises InvalidArgumentError for an unbalanced quote.
    """
    if not separator and not _has_quote(text):
        return text.split()  # splits on what str.isspace() calls space, as the scan does
    tokens: List[str] = []
    current: List[str] = []
    in_token = False
    for _, char, quote, escaped in _scan(text, "line"):
        if escaped or (quote and char != quote):
            current.append(char)
            in_token = True
        elif quote:  # an opening or closing quote: "" is still a token
            in_token = True
        elif (char == separator) if separator else char.isspace():
            if in_token or separator:
                tokens.append("".join(current))
            current, in_token = [], False
        else:
            current.append(char)
            in_token = True
    if in_token or (separator and (current or tokens)):
        tokens.append("".join(current))
    return tokens


def parse_params(text: str, action: str = "") -> Dict[str, str]:
    """``a=1;b='x;y'`` -> {"a": "1", "b": "x;y"}; a bare command/URL for shell/http."""
    action = ACTION_ALIASES.get(action, action)
    default_name = _DEFAULT_PARAM.get(action)
    if not text.strip():
        return {}
    if default_name is not None and "=" not in text and "'" not in text and '"' not in text:
        return {default_name: text}  # what the loop below ends with for a bare command/URL
    params: Dict[str, str] = {}
    for piece in _split_unquoted(text, ";", "params"):
        if not piece.strip():
            continue
        name, sep, value = piece.partition("=")
        name = name.strip()
        if not sep or not name or _has_quote(name) or len(name.split()) != 1:
            if default_name:
                return {default_name: text}
            raise InvalidArgumentError("params must be name=value pairs joined by ';': %r"
                                       % piece)
        params[name] = _unquote(value.strip())
    if default_name and default_name not in params:
        return {default_name: text}
    return params


def _unquote(value: str) -> str:
    """Strips the quotes of a value wholly enclosed in one pair; keeps any other literally."""
    if not value or value[0] not in _QUOTES:
        return value
    delimiters = [i for i, char, quote, escaped in _scan(value, "value")
                  if char == quote and not escaped]
    if delimiters != [0, len(value) - 1]:
        return value
    return split_tokens(value)[0]


def parse_time_field(name: str, text: str) -> Tuple[int, bool, Optional[int]]:
    """One time field -> (value, is_delay, count); count None when the field names none."""
    if text == "*":
        return -1, False, None
    delay = _DELAY.fullmatch(text)
    if delay:
        value = _check_range(name, int(delay.group(1)), text)
        count = delay.group(2)
        return value, True, None if count is None else _check_range(name, int(count), text)
    if _NUMBER.fullmatch(text):
        return _check_range(name, int(text), text, low=-1), False, None
    raise InvalidArgumentError("%s: %r is not *, a number, */N or */N/C" % (name, text))


def _check_range(name: str, value: int, text: str, low: int = 0) -> int:
    if not low <= value <= I16_MAX:
        raise InvalidArgumentError("%s: %r is out of range (%d to %d)"
                                   % (name, text, low, I16_MAX))
    return value


# The positional arguments of ``Plan.build`` that a ``set`` line gives, in order.
SET_ARG_NAMES = ("key", "is_time_out") + FIELD_NAMES + ("count", "action", "params")


def parse_set_tokens(tokens: Sequence[str]) -> Dict[str, Any]:
    """The tokens of a ``set`` line (without ``set``) -> keyword arguments for Plan.build."""
    return dict(zip(SET_ARG_NAMES, set_token_args(tokens)))


def set_token_args(tokens: Sequence[str]) -> Tuple[Any, ...]:
    """:func:`parse_set_tokens` as a tuple of the positional arguments of ``Plan.build``
    (:data:`SET_ARG_NAMES`), for bulk bodies that build thousands of plans."""
    if not 8 <= len(tokens) <= 9:
        raise InvalidArgumentError("expected %s, got %d fields%s" % (
            SET_USAGE, len(tokens), ": quote PARAMS that contain spaces" if tokens[9:] else ""))
    action = tokens[7]
    action = ACTION_ALIASES.get(action, action)
    values, is_time_out, count = _time_fields(tuple(tokens[1:7]))
    return (tokens[0], is_time_out) + values + (
        count, action, parse_params(tokens[8] if len(tokens) > 8 else "", action))


# _time_fields' results, at most _TIMES_SIZE (emptied when full: bulk bodies repeat a few).
_times: Dict[Tuple[str, ...], Tuple[Tuple[int, ...], bool, int]] = {}
_TIMES_SIZE = 4096


def _time_fields(fields: Tuple[str, ...]) -> Tuple[Tuple[int, ...], bool, int]:
    """The six time fields of a ``set`` line -> (values, is_time_out, count). Cached in
    :data:`_times` (a dict: a look-up is a third of an lru_cache call's cost, and
    :func:`parse_plain_set_line` does it inline)."""
    times = _times.get(fields)
    if times is None:
        times = _parse_time_fields(fields)
        if len(_times) >= _TIMES_SIZE:
            _times.clear()
        _times[fields] = times
    return times


def _parse_time_fields(fields: Tuple[str, ...]) -> Tuple[Tuple[int, ...], bool, int]:
    values = []
    is_time_out, counts = False, set()
    for name, field in zip(FIELD_NAMES, fields):
        value, delay, field_count = parse_time_field(name, field)
        values.append(value)
        is_time_out = is_time_out or delay
        if field_count is not None:
            counts.add(field_count)
    if len(counts) > 1:
        raise InvalidArgumentError("the fields give different counts %s: give C in one */N/C"
                                   % sorted(counts))
    count = counts.pop() if counts else 1
    return tuple(values), is_time_out, count if is_time_out else 0


def parse_set_args(text: str) -> Dict[str, Any]:
    """A ``set`` line without the word ``set`` -> keyword arguments for ``Plan.build``."""
    return parse_set_tokens(split_tokens(text))


def parse_set_line(text: str) -> Tuple[Any, ...]:
    """:func:`parse_set_args` as positional arguments of ``Plan.build``
    (:data:`SET_ARG_NAMES`)."""
    return set_token_args(split_tokens(text))


ParsedLine = Tuple[str, bool, Tuple[int, ...], int, str, Dict[str, str]]


def parse_plain_set_line(text: str) -> Optional[ParsedLine]:
    """The common line of a bulk body, one without quotes, parsed for
    ``PlanBuilder.build_parsed``: (key, is_time_out, the six time fields, count, action,
    params), what :func:`parse_set_line` gives, grouped. None for a line with a quote or
    the wrong number of fields: :func:`parse_set_line` parses (or refuses) it.

    What it returns is typed and ranged by this parser (a non-empty key and action, ints
    from -1 to 32767, a count from 0, a new dict of strings), so the builder checks only
    what the values cannot show by their form.
    """
    if "'" in text or '"' in text:
        return None
    tokens = text.split()
    if len(tokens) == 8:
        tokens.append("")  # no PARAMS
    elif len(tokens) != 9:
        return None
    key, second, minute, hour, day, month, week, action, params = tokens
    action = ACTION_ALIASES.get(action, action)
    fields = (second, minute, hour, day, month, week)
    times = _times.get(fields)  # inline hit: the lines of a bulk body mostly repeat them
    values, is_time_out, count = times if times is not None else _time_fields(fields)
    return key, is_time_out, values, count, action, parse_params(params, action)


def format_time_fields(plan: Any) -> List[str]:
    """The six time fields of a plan in ``set`` syntax."""
    if not plan.is_time_out:
        return ["*" if getattr(plan, name) < 0 else str(getattr(plan, name))
                for name in FIELD_NAMES]
    fields, count_written = [], False
    for name in FIELD_NAMES:
        value = getattr(plan, name)
        if value < 0:
            fields.append("*")
        elif not count_written:
            fields.append("*/%d/%d" % (value, plan.count))
            count_written = True
        else:
            fields.append("*/%d" % value)
    return fields


def _quote(text: str, quote: str) -> str:
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def format_params(params: Optional[Dict[str, str]]) -> str:
    """``k='v';...`` — the inner level of quoting."""
    return ";".join("%s=%s" % (name, _quote(value, "'"))
                    for name, value in (params or {}).items())


def quote_token(text: str) -> str:
    """``text`` as one token of a command line: as it is when that is safe, else quoted."""
    if text and not any(c.isspace() or c in _QUOTES + ";\\" for c in text):
        return text
    return _quote(text, '"')


def format_set_args(plan: Any) -> str:
    """KEY, fields, ACTION and PARAMS, quoted so :func:`parse_set_args` gives them back."""
    return " ".join([quote_token(plan.key)] + format_time_fields(plan) + [
        quote_token(plan.action), _quote(format_params(plan.params), '"')])
