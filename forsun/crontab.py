"""The ``set`` syntax shared by the CLI and ``application/crontab`` HTTP bodies (SPEC 4).

    KEY SECOND MINUTE HOUR DAY MONTH WEEK ACTION PARAMS

A time field is ``*`` (every / unused), a number (fixed-time plan), or ``*/N`` or
``*/N/C`` (delay plan: N units, C fires, default 1); one ``*/`` field makes the whole plan a
delay plan. PARAMS is ``name=value`` pairs joined by ``;``; values may be quoted with ' or "
(a backslash escapes the quote or a backslash). For shell a PARAMS without ``cmd=`` is the
command, for http one without ``url=`` is the URL; ``sh`` and ``bash`` mean shell.

Two levels of quoting meet here, so this module also formats a plan back into a line that
parses to the same plan (what the CLI's ``get`` prints can be pasted into ``set``).
"""

from typing import Any, Dict, List, Tuple

from .error import InvalidArgumentError

FIELD_NAMES = ("second", "minute", "hour", "day", "month", "week")
ACTION_ALIASES = {"sh": "shell", "bash": "shell"}
_QUOTES = "'\""


def split_tokens(text: str, separator: str = "") -> List[str]:
    """Splits on unquoted white space (or on ``separator``), removing one level of quotes.

    Inside quotes a backslash escapes the quote character or a backslash; elsewhere the
    backslash is kept as it is. Raises InvalidArgumentError for an unbalanced quote.
    """
    tokens: List[str] = []
    current: List[str] = []
    in_token = False
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
                current.append(text[i + 1])
                i += 2
                continue
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in _QUOTES:
            quote = char
            in_token = True
        elif (char == separator) if separator else char.isspace():
            if in_token or separator:
                tokens.append("".join(current))
            current, in_token = [], False
        else:
            current.append(char)
            in_token = True
        i += 1
    if quote:
        raise InvalidArgumentError("unbalanced %s quote in %r" % (quote, text))
    if in_token or (separator and (current or tokens)):
        tokens.append("".join(current))
    return tokens


def split_commands(text: str) -> List[str]:
    """Splits a command line on unquoted ``;``, keeping the quotes for the next level."""
    commands, start, quote, i = [], 0, "", 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and i + 1 < len(text):
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in _QUOTES:
            quote = char
        elif char == ";":
            commands.append(text[start:i])
            start = i + 1
        i += 1
    if quote:
        raise InvalidArgumentError("unbalanced %s quote in %r" % (quote, text))
    commands.append(text[start:])
    return [command.strip() for command in commands if command.strip()]


def parse_params(text: str, action: str = "") -> Dict[str, str]:
    """``a=1;b='x;y'`` -> {"a": "1", "b": "x;y"}; a bare command/URL for shell/http."""
    action = ACTION_ALIASES.get(action, action)
    default_name = {"shell": "cmd", "http": "url"}.get(action)
    params: Dict[str, str] = {}
    if not text.strip():
        return params
    pieces = _split_unquoted(text, ";")
    for piece in pieces:
        name, sep, value = piece.partition("=")
        name = name.strip()
        if not sep or not name or any(c in name for c in _QUOTES + " \t"):
            if default_name:
                return {default_name: text}
            raise InvalidArgumentError("params must be name=value pairs joined by ';': %r"
                                       % piece)
        params[name] = _unquote(value.strip())
    if default_name and default_name not in params:
        return {default_name: text}
    return params


def _split_unquoted(text: str, separator: str) -> List[str]:
    pieces, start, quote, i = [], 0, "", 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and i + 1 < len(text):
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in _QUOTES and (i == 0 or text[i - 1] in "=;"):
            quote = char
        elif char == separator:
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    if quote:
        raise InvalidArgumentError("unbalanced %s quote in params %r" % (quote, text))
    pieces.append(text[start:])
    return [piece for piece in pieces if piece.strip()]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] in _QUOTES and value[-1] == value[0]:
        parts = split_tokens(value)
        return parts[0] if len(parts) == 1 else value
    return value


def parse_time_field(name: str, text: str) -> Tuple[int, bool, int]:
    """One time field -> (value, is_delay, count); count 0 when the field names none."""
    if text == "*":
        return -1, False, 0
    if text.startswith("*/"):
        parts = text[2:].split("/")
        if len(parts) > 2 or not all(part.isdigit() for part in parts):
            raise InvalidArgumentError("%s: %r is not */N or */N/C" % (name, text))
        return int(parts[0]), True, int(parts[1]) if len(parts) == 2 else 0
    try:
        return int(text), False, 0
    except ValueError:
        raise InvalidArgumentError("%s: %r is not *, a number, */N or */N/C"
                                   % (name, text)) from None


def parse_set_args(text: str) -> Dict[str, Any]:
    """A ``set`` line without the word ``set`` -> keyword arguments for ``Plan.build``."""
    tokens = split_tokens(text)
    if len(tokens) < 8:
        raise InvalidArgumentError(
            "expected KEY SECOND MINUTE HOUR DAY MONTH WEEK ACTION [PARAMS], got %d fields"
            % len(tokens))
    if len(tokens) > 9:
        raise InvalidArgumentError("too many fields (%d): quote PARAMS that contain spaces"
                                   % len(tokens))
    key, fields, action = tokens[0], tokens[1:7], tokens[7]
    action = ACTION_ALIASES.get(action, action)
    values: Dict[str, Any] = {}
    is_time_out, count = False, 0
    for name, field in zip(FIELD_NAMES, fields):
        value, delay, field_count = parse_time_field(name, field)
        values[name] = value
        is_time_out = is_time_out or delay
        count = count or field_count
    return dict(key=key, is_time_out=is_time_out, count=(count or 1) if is_time_out else 0,
                action=action, params=parse_params(tokens[8] if len(tokens) > 8 else "", action),
                **values)


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


def format_params(params: Dict[str, str]) -> str:
    """``k='v';...`` — the inner level of quoting."""
    return ";".join("%s=%s" % (name, _quote(value, "'")) for name, value in params.items())


def format_set_args(plan: Any) -> str:
    """KEY, fields, ACTION and PARAMS, quoted so :func:`parse_set_args` gives them back."""
    key = plan.key if plan.key and not any(c.isspace() or c in _QUOTES + ";\\"
                                           for c in plan.key) else _quote(plan.key, '"')
    return " ".join([key] + format_time_fields(plan) + [
        plan.action, _quote(format_params(plan.params), '"')])
