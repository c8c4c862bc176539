"""The ``shell`` action: runs ``cmd`` with /bin/sh, as forsun 0.1.x did.

Params: ``cmd`` (required), ``cwd`` (default setting ACTION_SHELL_CWD), ``env`` (``a=1;b=c``).
The fire's timestamp is in ``FORSUN_TIMESTAMP``.

The command does not inherit forsund's environment: secrets handed to forsund that way
(``STORE_REDIS_PASSWORD``, ``AUTH_TOKEN``, ...) must not reach every plan's command, and 0.1.x
passed none of it either. It gets a small fixed environment (``PATH``, ``HOME``, ``LANG``),
the variables of forsund's that ACTION_SHELL_PASS_ENV names, the plan's ``env``, and
``FORSUN_TIMESTAMP`` last, so no plan can fake it. A non-zero
exit is a final failure (its last stderr bytes in the message), never retried; so is a ``cwd``
that does not exist.

The command runs in a session of its own. The action ends when the shell exits, even if a
command it started in the background still holds stderr open (asyncio's ``Process.wait()``
would wait for that pipe too): the exit comes from a SubprocessProtocol, and the pipe is
closed only once those children close it (or forsund stops), so they do not get SIGPIPE.
asyncio's child watcher reaps the shell, so no zombie is left. When the command runs longer
than the smaller of ACTION_TIMEOUT and ACTION_SHELL_TIMEOUT (ACTION_TIMEOUT is documented as
every action's limit), or the runner gives up on it, the whole session is killed with SIGKILL.
"""

import asyncio
import os
import signal
from typing import Dict, Optional, Set

from ... import config
from ..action import Action, ExecuteActionError
from ..params import required

STDERR_TAIL_BYTES = 2048
# After a failed exit, how long stderr may take to reach its end (its last bytes can arrive
# after the exit is noticed); background children holding it open cost no more than this.
STDERR_GRACE_SECONDS = 0.2

# Shells that exited while background children still hold their stderr; closed at stop.
_lingering: Set[asyncio.SubprocessTransport] = set()


# What every command gets, whatever forsund's own environment holds.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_env(plan_env: str, ts: int) -> Dict[str, str]:
    """The environment of one command: the fixed base, the passed-through variables, the
    plan's ``env``, then ``FORSUN_TIMESTAMP``."""
    env = {"PATH": BASE_PATH, "HOME": os.environ.get("HOME", "/"),
           "LANG": os.environ.get("LANG", "C.UTF-8")}
    for name in str(config.get("ACTION_SHELL_PASS_ENV") or "").replace(",", ";").split(";"):
        name = name.strip()
        if name and name in os.environ:
            env[name] = os.environ[name]
    env.update(parse_env(plan_env))
    env["FORSUN_TIMESTAMP"] = str(ts)
    return env


def parse_env(text: str) -> Dict[str, str]:
    """``a=1;b=c`` -> {"a": "1", "b": "c"}; the value may itself contain ``=``; items without
    a name are skipped."""
    env = {}
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            env[name.strip()] = value
    return env


class _Shell(asyncio.SubprocessProtocol):
    """Keeps the last stderr bytes and tells when the shell exits."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.exited: "asyncio.Future[None]" = loop.create_future()
        self.finished: "asyncio.Future[None]" = loop.create_future()
        self.stderr = b""
        self.transport: Optional[asyncio.SubprocessTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-STDERR_TAIL_BYTES:]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """The shell exited and every holder of its stderr closed it."""
        self.finished.set_result(None)
        if self.transport is not None:
            _lingering.discard(self.transport)
            self.transport.close()


def shell_timeout() -> float:
    """Seconds a command may run: ACTION_SHELL_TIMEOUT, but never past ACTION_TIMEOUT."""
    return min(float(config.get("ACTION_TIMEOUT")), float(config.get("ACTION_SHELL_TIMEOUT")))


class ShellAction(Action):
    async def execute(self, *args, **kwargs) -> None:
        cmd = required(self.params, "cmd")
        cwd = self.params.get("cwd") or config.get("ACTION_SHELL_CWD") or None
        env = command_env(self.params.get("env", ""), self.ts)
        loop = asyncio.get_running_loop()
        try:
            transport, shell = await loop.subprocess_shell(
                _Shell, cmd, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
        except OSError as e:
            raise ExecuteActionError("%r cannot start in %s: %s"
                                     % (cmd, cwd or "the daemon's directory", e.strerror or e)) \
                from None
        timeout = shell_timeout()
        try:
            await asyncio.wait_for(asyncio.shield(shell.exited), timeout)
        except asyncio.TimeoutError:
            await _kill(transport, shell)
            raise ExecuteActionError("%r killed after %.0f s (ACTION_TIMEOUT / "
                                     "ACTION_SHELL_TIMEOUT)" % (cmd, timeout)) from None
        except asyncio.CancelledError:
            await _kill(transport, shell)
            raise
        code = transport.get_returncode()
        if code != 0:
            await asyncio.wait([shell.finished], timeout=STDERR_GRACE_SECONDS)
        if not shell.finished.done():
            _lingering.add(transport)
        if code != 0:
            detail = shell.stderr.decode("utf-8", "replace").strip()
            raise ExecuteActionError("%r exited with %d%s"
                                     % (cmd, code, (": " + detail) if detail else ""))

    @classmethod
    def uninit(cls) -> None:
        """At stop, stops reading the stderr that background children still hold."""
        while _lingering:
            _lingering.pop().close()


async def _kill(transport: asyncio.SubprocessTransport, shell: _Shell) -> None:
    """Kills the command's whole session and waits until the shell is reaped."""
    try:
        os.killpg(transport.get_pid(), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    await shell.exited
    transport.close()
