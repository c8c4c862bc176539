"""``forsun``: the command-line client of forsund (SPEC section 4).

    forsun [--host 127.0.0.1] [--port 6458] [--timeout 10] [--json] [--exe CMD] [CMD ...]

With a command it runs it and exits 0, or 1 at the first command that fails; without, it
opens the ``forsun> `` prompt. The modules: :mod:`.commands` (what each command does),
:mod:`.session` (running lines, reporting errors), :mod:`.output` (text and JSON),
:mod:`.shell` (the prompt); the ``set`` syntax itself is :mod:`forsun.crontab`.
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

from ..clients import ThriftClient
from ..crontab import quote_token
from ..version import version
from .output import OutputClosed, Printer
from .session import Session
from .shell import run_shell

DEFAULT_TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forsun", description="Create, inspect and remove the plans of a forsund server. "
        "Without a command, opens an interactive prompt.")
    parser.add_argument("--host", default="127.0.0.1", help="server host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6458, help="server port (default 6458)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for the server (default %g)" % DEFAULT_TIMEOUT)
    parser.add_argument("--json", action="store_true",
                        help="print plans, lists and info as JSON, one document per command")
    parser.add_argument("--exe", metavar="CMD", help="commands to run (same as CMD)")
    parser.add_argument("--version", action="version", version="forsun %s" % version)
    parser.add_argument("cmd", nargs="*", metavar="CMD",
                        help="commands to run, joined with ';' (e.g. \"ls; info\")")
    return parser


def command_line(exe: Optional[str], words: List[str]) -> Optional[str]:
    """The line to run, or None for the prompt.

    One CMD word is taken as written (the documented ``forsun "set ..."`` form). Several
    words are what the shell split: each is re-quoted so that it stays one token.
    """
    parts = [exe] if exe is not None else []
    if len(words) == 1:
        parts.append(words[0])
    elif words:
        parts.append(" ".join(quote_token(word) for word in words))
    return ";".join(parts) if parts else None


def _quiet_thrift_logging() -> None:
    """thrift logs every failed connect as an ERROR with a traceback; the CLI says it once."""
    logger = logging.getLogger("thrift")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_thrift_logging()
    client = ThriftClient(port=args.port, host=args.host, timeout=args.timeout)
    session = Session(client, Printer(args.json), args.host, args.port, args.timeout)
    line = command_line(args.exe, args.cmd)
    try:
        if line is None:
            return run_shell(session)
        return 0 if session.execute(line) else 1
    except KeyboardInterrupt:
        return 130
    except OutputClosed:
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        client.close()
