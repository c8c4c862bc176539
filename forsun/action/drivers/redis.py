"""The ``redis`` action: runs one or more commands with redis.asyncio (hiredis parser).

Params: ``command`` (required; commands separated by ``;``, each split like a shell line, so
``SET b 1 EX 300;LPUSH q 'a b;c'`` is two commands and the quoted ``;`` stays in the value),
``host`` (127.0.0.1), ``port`` (6379), ``selected_db`` (0), ``password``, ``max_connections``
(default setting ACTION_REDIS_MAX_CONNECTIONS), ``connect_timeout``, ``timeout``.

The commands run in order on one connection and stop at the first error. A connection
failure or timeout raises ActionExecuteRetry; an error reply (unknown command, wrong type),
a refused password or an unparsable ``command`` is final.

One redis-py BlockingConnectionPool per (host, port, db, password): it bounds the connections,
reuses them and checks each before use, reconnecting to a restarted server; the whole pool is
closed once the target has had no fire for ACTION_IDLE_SECONDS. A fire that sends a command
changing the connection's state (SELECT, MULTI, SUBSCRIBE...) disconnects that connection
afterwards, so the next fire never inherits the state.
"""

import shlex
from typing import List

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis

from ... import config
from ...error import ActionExecuteRetry
from ..action import Action, ExecuteActionError
from ..params import integer, required, setting, timeouts
from ..pool import SharedTarget, Targets

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py before 7 has no maintenance notifications
    _POOL_OPTIONS = {}
else:
    # Left on ("auto"), redis-py 8 asks every new connection for them (an error round trip on
    # a plain server) and stops checking a pooled connection before reuse, so a restarted
    # server would fail one fire.
    _POOL_OPTIONS = {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}

# Commands after which a pooled connection is no longer a clean one.
STATEFUL_COMMANDS = frozenset((
    "SELECT", "AUTH", "HELLO", "RESET", "MULTI", "WATCH", "SUBSCRIBE", "PSUBSCRIBE",
    "SSUBSCRIBE", "MONITOR", "CLIENT", "READONLY", "READWRITE", "QUIT"))

_targets: Targets[SharedTarget] = Targets()


def split_commands(text: str) -> List[List[str]]:
    """Splits ``command`` at every ``;`` outside quotes, then each part like a shell line.

    Quotes and backslashes are tracked as shlex (POSIX mode) reads them, so a ``;`` inside
    quotes or written ``\\;`` stays in the argument. Empty parts are skipped.
    """
    parts, start, quote, i = [], 0, None, 0
    while i < len(text):
        char = text[i]
        if quote == "'":
            if char == "'":
                quote = None
        elif char == "\\":
            i += 1  # the next character is escaped (outside quotes or inside "...")
        elif quote == '"':
            if char == '"':
                quote = None
        elif char in "'\"":
            quote = char
        elif char == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    commands = []
    for part in parts:
        try:
            args = shlex.split(part)
        except ValueError as e:
            raise ExecuteActionError("param 'command' cannot be parsed: %s" % e) from None
        if args:
            commands.append(args)
    return commands


class RedisAction(Action):
    async def execute(self, *args, **kwargs) -> None:
        params = self.params
        commands = split_commands(required(params, "command"))
        if not commands:
            raise ExecuteActionError("param 'command' holds no command")
        host = (params.get("host") or "127.0.0.1").strip()
        port = integer(params, "port", 6379, 1, 65535)
        db = integer(params, "selected_db", 0)
        password = params.get("password") or None
        description = "redis %s:%d/%d" % (host, port, db)

        def make() -> SharedTarget:
            connect_timeout, timeout = timeouts(params)
            pool = BlockingConnectionPool(
                host=host, port=port, db=db, password=password,
                max_connections=integer(params, "max_connections",
                                        int(config.get("ACTION_REDIS_MAX_CONNECTIONS")), 1),
                timeout=timeout, socket_connect_timeout=connect_timeout,
                socket_timeout=timeout, **_POOL_OPTIONS)
            return SharedTarget(description, float(setting("ACTION_IDLE_SECONDS")),
                                Redis.from_pool(pool), Redis.aclose)

        target = _targets.get((host, port, db, password), make)
        stateful = any(command[0].upper() in STATEFUL_COMMANDS for command in commands)
        async with target.use() as client:
            try:
                await _run(client, commands, stateful)
            except (redis_errors.AuthenticationError, redis_errors.AuthorizationError,
                    redis_errors.ResponseError) as e:
                raise ExecuteActionError("%s: %s" % (description, e)) from None
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as e:
                raise ActionExecuteRetry("%s: %s" % (description, str(e) or type(e).__name__)) \
                    from None

    @classmethod
    async def uninit(cls) -> None:
        await _targets.close()


async def _run(client: Redis, commands: List[List[str]], stateful: bool) -> None:
    """Runs the commands in order on one pooled connection; raises at the first error."""
    async with client.client() as connection:
        try:
            for command in commands:
                await connection.execute_command(*command)
        finally:
            if stateful and connection.connection is not None:
                await connection.connection.disconnect()
