"""How the CLI shows plans, lists and info: text for people, ``--json`` for scripts.

A plan line is ``DATE TIME`` (next fire, local time) followed by exactly what ``set`` takes,
so an operator can copy a line from ``get`` or ``ls`` and paste it after ``set``.
"""

import json
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, TextIO

from ..crontab import format_set_args

# SPEC section 6: the order ``info`` lists its keys in; extension counters follow.
INFO_KEYS = (
    "python_version", "forsun_version", "start_time", "cpu_user", "cpu_system", "mem_rss",
    "mem_vms", "current_time", "stores", "current_store", "actions", "bind_port",
    "http_bind_port", "extensions", "connecting_count", "connected_count", "requesting_count",
    "requested_count", "requested_error_count", "http_connecting_count",
    "http_connected_count", "http_requesting_count", "http_requested_count",
    "http_requested_error_count", "created_count", "create_timeouted_count", "removed_count",
    "plan_count", "timeout_handling_count", "timeout_handled_count", "action_executing_count",
    "action_executed_count", "action_executed_error_count", "action_retried_count",
    "timer_loop_count", "timer_loop_ready_error_count",
)
MEMORY_KEYS = ("mem_rss", "mem_vms")
DATE_KEYS = ("current_time",)
PLAN_FIELDS = ("key", "is_time_out", "second", "minute", "hour", "day", "month", "week",
               "count", "current_count", "next_time", "last_timeout", "status", "action",
               "params")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def local_date(timestamp: int) -> str:
    """A Unix timestamp as the operator's local wall-clock time."""
    return time.strftime(DATE_FORMAT, time.localtime(timestamp))


def plan_line(plan: Any) -> str:
    return "%s %s" % (local_date(plan.next_time), format_set_args(plan))


def plan_dict(plan: Any) -> Dict[str, Any]:
    return {name: getattr(plan, name) if name != "params" else dict(plan.params or {})
            for name in PLAN_FIELDS}


def human_bytes(text: str) -> str:
    """``52428800`` -> ``50.00M``; a value that is not a byte count is shown unchanged."""
    try:
        size = float(text)
    except ValueError:
        return text
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20)):
        if size >= scale:
            return "%.2f%s" % (size / scale, unit)
    return "%.2fK" % (size / 1024)


def ordered_info(info: Dict[str, str]) -> List[str]:
    """SPEC order first, then whatever else the server sent (extension counters)."""
    return [key for key in INFO_KEYS if key in info] + [key for key in info
                                                        if key not in INFO_KEYS]


def info_lines(info: Dict[str, str]) -> List[str]:
    lines = []
    for key in ordered_info(info):
        value = info[key]
        if key in MEMORY_KEYS:
            value = human_bytes(value)
        elif key in DATE_KEYS and value.isdigit():
            value = local_date(int(value))
        lines.append("%s:\t%s" % (key, value))
    return lines


class OutputClosed(Exception):
    """stdout went away (``forsun ls | head -1``): not a connection error, just stop."""


class Printer:
    """Writes command results to stdout as text lines or as one JSON document each."""

    def __init__(self, as_json: bool = False, out: Optional[TextIO] = None):
        self.as_json = as_json
        self.out = out or sys.stdout

    def _write(self, lines: Iterable[str]) -> None:
        try:
            for line in lines:
                self.out.write(line + "\n")
            self.out.flush()
        except BrokenPipeError:
            raise OutputClosed() from None

    def _json(self, value: Any) -> None:
        self._write([json.dumps(value, ensure_ascii=False)])

    def plan(self, plan: Any) -> None:
        if self.as_json:
            self._json(plan_dict(plan))
        else:
            self._write([plan_line(plan)])

    def plans(self, plans: Iterable[Any]) -> None:
        if self.as_json:
            self._json([plan_dict(plan) for plan in plans])
        else:
            self._write(plan_line(plan) for plan in plans)

    def info(self, info: Dict[str, str]) -> None:
        if self.as_json:
            self._json({key: info[key] for key in ordered_info(info)})
        else:
            self._write(info_lines(info))

    def message(self, text: str, value: Any) -> None:
        """``text`` for people, ``value`` (any JSON-able object) for scripts."""
        if self.as_json:
            self._json(value)
        else:
            self._write([text])

    def text(self, text: str) -> None:
        """Help and the like: the same in both modes."""
        self._write([text])
