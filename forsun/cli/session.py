"""Runs command lines against forsund and turns every failure into one line on stderr.

Both the one-shot mode and the prompt go through :meth:`Session.execute`, so a command
behaves and fails the same way in both; only the prompt keeps going after an error.
"""

import socket
import sys
from typing import Any, Optional, TextIO

from thrift.Thrift import TApplicationException
from thrift.transport.TTransport import TTransportException

from ..crontab import split_commands, split_tokens
from ..error import InvalidArgumentError
from ..thriftapi.ttypes import ForsunPlanError
from .commands import COMMANDS, Context, ExitRequested
from .output import Printer


class UsageError(Exception):
    """A command given the wrong number of arguments; the message is its usage line."""


def describe_connection_error(error: Exception, host: str, port: int,
                              timeout: Optional[float]) -> str:
    """One line naming the server and what went wrong, instead of a Thrift traceback."""
    where = "forsund at %s:%d" % (host, port)
    inner = getattr(error, "inner", None) or error
    if isinstance(inner, (socket.timeout, TimeoutError)):
        return "%s did not answer within %gs" % (where, timeout) if timeout \
            else "%s did not answer" % where
    reason = getattr(inner, "strerror", None) or getattr(inner, "message", None) or str(inner)
    if isinstance(error, TTransportException):
        if error.type == TTransportException.NOT_OPEN:
            return "cannot connect to %s: %s" % (where, reason)
        if error.type == TTransportException.END_OF_FILE:
            return "%s closed the connection" % where
    return "lost the connection to %s: %s" % (where, reason)


class Session:
    """One client connection and its output, shared by every line typed or given."""

    def __init__(self, client: Any, printer: Printer, host: str, port: int,
                 timeout: Optional[float] = None, errors: Optional[TextIO] = None):
        self.context = Context(client, printer)
        self.host = host
        self.port = port
        self.timeout = timeout
        self.errors = errors or sys.stderr
        self.exited = False

    @property
    def client(self) -> Any:
        return self.context.client

    def report(self, line: str) -> None:
        self.errors.write(line + "\n")
        self.errors.flush()

    def execute(self, line: str) -> bool:
        """Runs the ``;``-joined commands of ``line``, stopping at the first that fails.

        Returns False when one failed (its message is on stderr). After ``exit`` the rest
        of the line is skipped and :attr:`exited` is set.
        """
        try:
            commands = split_commands(line)
        except InvalidArgumentError as error:
            self.report("error: %s" % error.message)
            return False
        for text in commands:
            try:
                self.run(text)
            except ExitRequested:
                self.exited = True
                return True
            except UsageError as error:
                self.report("usage: %s" % error)
            except InvalidArgumentError as error:
                self.report("error: %s" % error.message)
            except ForsunPlanError as error:
                self.report("error %s: %s" % (error.code, error.message))
            except TApplicationException as error:
                self.report("error: forsund at %s:%d failed: %s"
                            % (self.host, self.port, error.message))
            except (TTransportException, OSError) as error:
                self.report("error: " + describe_connection_error(error, self.host, self.port,
                                                                  self.timeout))
            else:
                continue
            return False
        return True

    def run(self, text: str) -> None:
        tokens = split_tokens(text)
        command = COMMANDS.get(tokens[0])
        if command is None:
            raise InvalidArgumentError("unknown command %r; type 'help' for the commands"
                                       % tokens[0])
        args = tokens[1:]
        if not command.min_args <= len(args) <= command.max_args:
            raise UsageError(command.usage)
        command.run(self.context, args)
