"""The ``shell`` action: runs ``cmd`` with /bin/sh, as forsun 0.1.x did.

Params: ``cmd``, ``cwd`` (default setting ACTION_SHELL_CWD), ``env`` (``a=1;b=c``, added
to the daemon's environment). The fire's timestamp is in ``FORSUN_TIMESTAMP``. The process
is awaited (so it is reaped, never left a zombie) and killed with its whole process group
when it runs longer than ACTION_SHELL_TIMEOUT. A non-zero exit is a failure, not retried.
"""

import asyncio
import os
import signal
from typing import Dict

from ... import config
from ..action import Action

STDERR_TAIL_BYTES = 2048


def parse_env(text: str) -> Dict[str, str]:
    """``a=1;b=c`` -> {"a": "1", "b": "c"}; the value may itself contain ``=``."""
    env = {}
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            env[name.strip()] = value
    return env


class ShellAction(Action):
    async def execute(self, *args, **kwargs) -> None:
        cmd = self.params.get("cmd", "")
        if not cmd.strip():
            raise ValueError("shell action without cmd")
        cwd = self.params.get("cwd") or config.get("ACTION_SHELL_CWD") or None
        env = dict(os.environ)
        env.update(parse_env(self.params.get("env", "")))
        env["FORSUN_TIMESTAMP"] = str(self.ts)
        process = await asyncio.create_subprocess_shell(
            cmd, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        timeout = float(config.get("ACTION_SHELL_TIMEOUT"))
        try:
            stderr = await asyncio.wait_for(_read_tail(process), timeout)
            code = await asyncio.wait_for(process.wait(), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            _kill_group(process)
            await process.wait()
            raise
        if code != 0:
            detail = stderr.decode("utf-8", "replace").strip()
            raise RuntimeError("%r exited with %d%s" % (cmd, code, (": " + detail) if detail else ""))


async def _read_tail(process: asyncio.subprocess.Process) -> bytes:
    """Reads stderr to its end, keeping only the last bytes for the error message."""
    tail = b""
    while True:
        chunk = await process.stderr.read(65536)
        if not chunk:
            return tail
        tail = (tail + chunk)[-STDERR_TAIL_BYTES:]


def _kill_group(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
