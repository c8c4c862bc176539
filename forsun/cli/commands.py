"""The commands of the ``forsun`` client (SPEC section 4): a table of name, usage and handler.

The table is the single source for dispatch, argument-count checks, ``help`` and tab
completion, so a new command cannot be half-registered.
"""

import re
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Sequence

from ..crontab import SET_USAGE, parse_set_tokens
from ..error import NOT_FOUND_PLAN, InvalidArgumentError
from ..thriftapi.ttypes import ForsunPlanError
from ..version import version
from .output import DATE_FORMAT, Printer, plan_dict

I32_MAX = (1 << 31) - 1
HELP_WIDTH = 40


class ExitRequested(Exception):
    """Raised by ``exit``: ends the prompt, or stops a one-shot command list (successfully)."""


class Context(NamedTuple):
    """What a handler works with: the Thrift client and where its results go."""

    client: Any
    printer: Printer


class Command(NamedTuple):
    """One row of the table; ``completes_keys``: Tab after the name offers the server's keys."""

    name: str
    arguments: str
    summary: str
    min_args: int
    max_args: int
    run: Callable[[Context, List[str]], None]
    completes_keys: bool = False

    @property
    def usage(self) -> str:
        return ("%s %s" % (self.name, self.arguments)).strip()


def parse_timestamp(args: Sequence[str]) -> int:
    """``1700000000``, ``"2024-01-02 03:04:05"`` or the two words unquoted (local time)."""
    text = " ".join(args)
    if re.fullmatch(r"[0-9]+", text):
        timestamp = int(text)
    else:
        try:
            timestamp = int(time.mktime(time.strptime(text, DATE_FORMAT)))
        except (ValueError, OverflowError):
            raise InvalidArgumentError('time: %r is neither a Unix timestamp nor '
                                       '"YYYY-mm-dd HH:MM:SS"' % text) from None
    if not 0 <= timestamp <= I32_MAX:
        raise InvalidArgumentError("time: %r is out of range (1970 to 2038)" % text)
    return timestamp


SET_HELP = [
    "  A time field is * (every / unused), a number (fixed-time plan, in the server's",
    "  timezone), */N or */N/C (delay plan: N units, fired C times, default 1, 0 = without",
    "  end). PARAMS is name=value pairs joined by ';', values quoted with ' or \" when",
    "  they hold ';' or spaces (a backslash escapes the quote). For shell a PARAMS without",
    "  cmd= is the command, for http one without url= is the URL.",
    "  example: set job2 */5/1 * * * * * shell 'cmd=ls'",
]


def _help(context: Context, args: List[str]) -> None:
    if args:
        command = COMMANDS.get(args[0])
        if command is None:
            raise InvalidArgumentError("unknown command %r" % args[0])
        lines = ["usage: " + command.usage, "  " + command.summary]
        if command.name == "set":
            lines += SET_HELP
        context.printer.text("\n".join(lines))
        return
    lines = []
    for command in COMMANDS.values():
        if len(command.usage) > HELP_WIDTH:
            lines += [command.usage, " " * (HELP_WIDTH + 2) + command.summary]
        else:
            lines.append("%-*s  %s" % (HELP_WIDTH, command.usage, command.summary))
    lines.append("Join commands with ';'. 'help set' explains the time fields and PARAMS.")
    context.printer.text("\n".join(lines))


def _exit(context: Context, args: List[str]) -> None:
    raise ExitRequested()


def _version(context: Context, args: List[str]) -> None:
    context.printer.message(version, {"version": version})


def _existing_plans(client: Any, keys: List[str]) -> Iterator[Any]:
    """Plans that fire their last time between ``getKeys`` and ``get`` are skipped."""
    for key in keys:
        try:
            yield client.get(key)
        except ForsunPlanError as error:
            if error.code != NOT_FOUND_PLAN:
                raise


def _ls(context: Context, args: List[str]) -> None:
    keys = sorted(context.client.get_keys(args[0] if args else ""))  # forsund strips "*"
    context.printer.plans(_existing_plans(context.client, keys))


def _current(context: Context, args: List[str]) -> None:
    context.printer.plans(context.client.get_current())


def _time(context: Context, args: List[str]) -> None:
    timestamp = parse_timestamp(args) if args else int(time.time())
    context.printer.plans(context.client.get_time(timestamp))


def _get(context: Context, args: List[str]) -> None:
    context.printer.plan(context.client.get(args[0]))


def _rm(context: Context, args: List[str]) -> None:
    removed = context.client.remove(args[0])
    context.printer.message("success", plan_dict(removed))


def _info(context: Context, args: List[str]) -> None:
    context.printer.info(context.client.info())


def _set(context: Context, args: List[str]) -> None:
    plan = parse_set_tokens(args)
    fields = [plan[name] for name in ("second", "minute", "hour", "day", "month", "week")]
    if plan["is_time_out"]:
        created = context.client.create_timeout(plan["key"], *fields, count=plan["count"],
                                                action=plan["action"], params=plan["params"])
    else:  # Thrift ``create`` has no count: fixed-time plans repeat without end
        created = context.client.create(plan["key"], *fields, action=plan["action"],
                                        params=plan["params"])
    context.printer.plan(created)


COMMANDS: Dict[str, Command] = {command.name: command for command in (
    Command("help", "[COMMAND]", "show the commands, or how to use one", 0, 1, _help),
    Command("exit", "", "leave the prompt", 0, 0, _exit),
    Command("version", "", "show the version of this client", 0, 0, _version),
    Command("ls", "[PREFIX]", "show the plans whose keys start with PREFIX (default all)",
            0, 1, _ls, True),
    Command("current", "", "show the plans due in the current second", 0, 0, _current),
    Command("time", '[TIMESTAMP | "YYYY-mm-dd HH:MM:SS"]',
            "show the plans due at that second (local time; default now)", 0, 2, _time),
    Command("get", "KEY", "show a plan", 1, 1, _get, True),
    Command("rm", "KEY", "remove a plan", 1, 1, _rm, True),
    Command("info", "", "show the server's versions, memory and counters", 0, 0, _info),
    Command("set", SET_USAGE, "create a plan, or replace the plan with that key", 8, 9,
            _set, True),
)}
