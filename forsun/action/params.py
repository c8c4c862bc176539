"""Reading an action's params (all strings, as plans carry them) the same way in every action.

A param that is missing or malformed is the plan author's mistake: retrying cannot fix it, so
these helpers raise :class:`ExecuteActionError` (a final failure), never
:class:`~forsun.error.ActionExecuteRetry`. Messages name the param but never echo its value,
so a mistyped password cannot end up in the log.
"""

from typing import Any, Mapping, Optional, Tuple

from .. import config
from .action import ExecuteActionError


def setting(name: str) -> Any:
    """A setting's value, or its default when the installed Settings were built before the
    setting was defined (``config.get`` alone would return None then)."""
    return config.get(name, config.SETTINGS[name].default)


def required(params: Mapping[str, str], name: str, allow_empty: bool = False) -> str:
    """The value of a param the action cannot run without."""
    value = params.get(name)
    if value is None or (not allow_empty and not str(value).strip()):
        raise ExecuteActionError("missing required param %r" % name)
    return str(value)


def integer(params: Mapping[str, str], name: str, default: int, minimum: int = 0,
            maximum: Optional[int] = None) -> int:
    """An integer param; absent or empty means ``default``."""
    value = params.get(name)
    if value is None or not str(value).strip():
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ExecuteActionError("param %r must be an integer" % name) from None
    if number < minimum or (maximum is not None and number > maximum):
        raise ExecuteActionError("param %r must be between %s and %s"
                                 % (name, minimum, "any" if maximum is None else maximum))
    return number


def seconds(params: Mapping[str, str], name: str, default: float) -> float:
    """A positive duration param in seconds (fractions allowed); absent or empty = ``default``."""
    value = params.get(name)
    if value is None or not str(value).strip():
        return float(default)
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ExecuteActionError("param %r must be a number of seconds" % name) from None
    if not number > 0:
        raise ExecuteActionError("param %r must be more than 0 seconds" % name)
    return number


def timeouts(params: Mapping[str, str]) -> Tuple[float, float]:
    """(connect_timeout, timeout) of a network action: seconds to connect, and seconds any
    later wait on the target may take; defaults ACTION_CONNECT_TIMEOUT and ACTION_TIMEOUT."""
    return (seconds(params, "connect_timeout", float(setting("ACTION_CONNECT_TIMEOUT"))),
            seconds(params, "timeout", float(setting("ACTION_TIMEOUT"))))
