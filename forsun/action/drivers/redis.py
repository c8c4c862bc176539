"""The ``redis`` action: runs one or more commands with redis.asyncio (hiredis parser).

Params: ``command`` (required; commands separated by ``;``, each split like a shell line, so
``SET b 1 EX 300;LPUSH q 'a b;c'`` is two commands and the quoted ``;`` stays in the value),
``host`` (127.0.0.1), ``port`` (6379), ``selected_db`` (0), ``password``, ``max_connections``
(default setting ACTION_REDIS_MAX_CONNECTIONS), ``connect_timeout``, ``timeout``.

The commands of a fire run in order and stop at the first error. A connection failure or
timeout raises ActionExecuteRetry; an error reply (unknown command, wrong type), a refused
password or an unparsable ``command`` is final.

Fires are pipelined per target (host, port, db, password). The first fire that finds no
writer starting one starts it; every command queued before the loop gets to that writer
(the fires of that loop turn) is written in one go on one connection, up to
:data:`BATCH_MAX` commands, and the replies are read in order, each resolving its own fire.
A busy second's fires arrive through ``execute_batch`` (the runner's hook), in lists that are
queued at once; ``execute`` (single fires, retries) returns the reply's future itself.
Up to ``max_connections`` writers run at once, each on its own connection; while all have a
batch out, new commands wait for the first one free. A fire with several commands queues its
next command only once the previous one succeeded, so each rides in a later batch. A
connection that fails or times out (``timeout`` bounds getting a connection, writing a batch
and reading all its replies) fails every fire of the batch whose reply was not read yet with
ActionExecuteRetry: Redis may or may not have run those commands. A missing or refused
password fails the whole batch finally (every command of it gets the same answer).

The connections come from one redis-py BlockingConnectionPool per target: it bounds them,
reuses them and checks each before use, reconnecting to a restarted server; the whole pool is
closed once the target has had no fire for ACTION_IDLE_SECONDS. Two kinds of fires are not
pipelined and take a pooled connection of their own: one with a command changing the
connection's state (SELECT, MULTI, SUBSCRIBE... STATEFUL_COMMANDS), after which that
connection is disconnected so the next fire never inherits the state, and one with a command
that may wait for other clients (BLPOP, XREAD, WAIT... BLOCKING_COMMANDS), which would hold
up the fires behind it in a batch.

``command`` is split and packed once per text: the result is kept for the last
:data:`PARSE_CACHE_SIZE` texts, so plans sharing a command text cost no parsing; the split of
a text up to its last quote is kept too, so texts that differ only in plain words after it
(``EVAL "<same script>" 1 <key>``) split their quoted part once.
"""

import asyncio
import logging
import math
import re
from collections import OrderedDict
from functools import partial
from typing import Any, Awaitable, Dict, List, Optional, Set, Tuple

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.utils import HIREDIS_AVAILABLE
from tornado.ioloop import IOLoop

from ... import config
from ...error import ActionExecuteRetry
from ..action import Action, ExecuteActionError
from ..params import integer, required, setting, timeouts
from ..pool import SharedTarget, Targets

try:
    from asyncio import timeout as _timeout
except ImportError:  # Python before 3.11: the package redis-py itself uses there
    from async_timeout import timeout as _timeout

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py before 7 has no maintenance notifications
    _POOL_OPTIONS = {}
else:
    # Left on ("auto"), redis-py 8 asks every new connection for them (an error round trip on
    # a plain server) and stops checking a pooled connection before reuse, so a restarted
    # server would fail one fire.
    _POOL_OPTIONS = {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}
# No CLIENT SETINFO when connecting: its round trip costs a loop turn, tens of milliseconds in
# a busy second, before a new connection can take its first batch.
try:
    import redis.driver_info  # noqa: F401
except ImportError:  # redis-py before 7.1
    _POOL_OPTIONS.update(lib_name=None, lib_version=None)
else:
    _POOL_OPTIONS["driver_info"] = None

if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _pack_args
else:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
    from redis.asyncio.connection import Connection as _Connection

    def _pack_args(args: tuple) -> bytes:
        return b"".join(_Connection().pack_command(*args))

# Commands after which a pooled connection is no longer a clean one.
STATEFUL_COMMANDS = frozenset((
    "SELECT", "AUTH", "HELLO", "RESET", "MULTI", "WATCH", "SUBSCRIBE", "PSUBSCRIBE",
    "SSUBSCRIBE", "MONITOR", "CLIENT", "READONLY", "READWRITE", "QUIT"))

# Commands that may wait for other clients: pipelined, they would hold up the fires behind
# them in their batch, so they get a pooled connection of their own.
BLOCKING_COMMANDS = frozenset((
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
    "XREAD", "XREADGROUP", "WAIT", "WAITAOF"))

# Most commands written to one connection in one go.
BATCH_MAX = 1000
# Command texts whose parse is kept, and the longest text kept.
PARSE_CACHE_SIZE = 4096
PARSE_CACHE_MAX_TEXT = 4096

log = logging.getLogger("forsun.action")
_targets: Targets["_RedisTarget"] = Targets()
_FAILED = object()

# A piece of a word as shlex (POSIX mode) reads it: unquoted characters, '...', "..." (where
# a backslash escapes " and \ only), or a backslash and the character it escapes. A quote or
# backslash that starts no piece (unclosed, or last) is a word of its own: an error.
_WORDS = re.compile(r"""(?:[^ \t\r\n'"\\;]+|'[^']*'|"[^"\\]*(?:\\.[^"\\]*)*"|\\.)+|;|['"\\]""",
                    re.S)
_WORDS_NO_ESCAPES = re.compile(r"""(?:[^ \t\r\n'";]+|'[^']*'|"[^"]*")+|;|['"]""")  # no \ in text
_PLAIN_WORDS = re.compile(r"[^ \t\r\n;]+|;")  # no quote or backslash in the text
_UNREADABLE = frozenset(("'", '"', "\\"))
_QUOTED = re.compile(r"""'([^']*)'|"([^"\\]*(?:\\.[^"\\]*)*)"|\\(.)""", re.S)
_IN_DOUBLE_QUOTES = re.compile(r'\\(["\\])')


def _unquote(match: "re.Match[str]") -> str:
    single, double, escaped = match.groups()
    if single is not None:
        return single
    if double is not None:
        return _IN_DOUBLE_QUOTES.sub(r"\1", double) if "\\" in double else double
    return escaped


def split_commands(text: str) -> List[List[str]]:
    """Splits ``command`` at every ``;`` outside quotes, then each part like a shell line.

    Words are read as ``shlex.split`` (POSIX mode) reads them, so a ``;`` inside quotes or
    written ``\\;`` stays in the argument. Empty parts are skipped.
    """
    escapes = "\\" in text
    if escapes:
        words = _WORDS.findall(text)
    elif "'" in text or '"' in text:
        words = _WORDS_NO_ESCAPES.findall(text)
    else:
        words = _PLAIN_WORDS.findall(text)
        if ";" not in text:
            return [words] if words else []
    if not _UNREADABLE.isdisjoint(words):
        raise ExecuteActionError("param 'command' cannot be parsed: %s" % (
            "No closing quotation" if "'" in words or '"' in words
            else "No escaped character"))
    commands: List[List[str]] = []
    args: List[str] = []
    for word in words:
        if word == ";":
            if args:
                commands.append(args)
                args = []
        elif escapes or "'" in word or '"' in word:
            quote = word[0]
            if (quote == '"' or quote == "'") and word.find(quote, 1) == len(word) - 1 \
                    and not escapes:
                args.append(word[1:-1])  # the whole word is one quoted piece
            else:
                args.append(_QUOTED.sub(_unquote, word))
        else:
            args.append(word)
    if args:
        commands.append(args)
    return commands


# What _parse returns: (the commands if they must not be pipelined, else None; each command
# packed in Redis' protocol; whether one of them changes the connection's state). Only tuples
# of strings: the cyclic GC stops tracking them, so a full cache costs collections nothing.
_Parsed = Tuple[Optional[Tuple[Tuple[str, ...], ...]], Tuple[bytes, ...], bool]
_parsed: "OrderedDict[str, _Parsed]" = OrderedDict()
# The head of a text up to its last quote -> (its arguments, packed without the array
# header), or None when such a head cannot be extended by plain words (several commands,
# a command that is not pipelined, unparsable).
_heads: "OrderedDict[str, Optional[Tuple[int, bytes]]]" = OrderedDict()


def _parse(text: str) -> _Parsed:
    """``command`` split and packed, from the cache of recent texts if there.

    Texts that differ only in plain words after their last quote (the same script or
    JSON value, then a plan's own key: thousands of one-shot plans) reuse the packed
    head: their own words are packed and appended, and nothing is cached per text."""
    parsed = _parsed.get(text)
    if parsed is not None:
        return parsed
    packed = _pack_by_head(text)
    if packed is not None:
        return None, (packed,), False
    parsed = _pack_commands(split_commands(text))
    if len(text) <= PARSE_CACHE_MAX_TEXT:
        _remember(_parsed, text, parsed)
    return parsed


def _pack_commands(commands: List[List[str]]) -> _Parsed:
    if not commands:
        raise ExecuteActionError("param 'command' holds no command")
    packed = []
    stateful = alone = False
    try:
        for command in commands:  # a list of lists: no longer than this call
            name = command[0]
            if name.isalpha():  # the usual command name
                args = tuple(command)
                name = name.upper()
            else:  # as redis-py packs a command: a first argument like 'CONFIG GET' is split
                first = name.encode().split()
                if not first:  # Redis would not even answer it
                    raise ExecuteActionError("param 'command' holds an empty command name")
                args = (*first, *command[1:])
                name = first[0].decode("utf-8", "replace").upper()
            if name in STATEFUL_COMMANDS:
                stateful = alone = True
            elif name in BLOCKING_COMMANDS:
                alone = True
            packed.append(_pack_args(args))
    except (TypeError, ValueError) as e:  # a lone surrogate, from a client's bad encoding
        raise ExecuteActionError("param 'command' cannot be sent: %s" % e) from None
    return (tuple(map(tuple, commands)) if alone else None, tuple(packed), stateful)


def _pack_by_head(text: str) -> Optional[bytes]:
    """The packed command of ``text`` from the packed head up to its last quote and the
    plain words after it; None if the text is not of that shape (see :func:`_parse`)."""
    cut = max(text.rfind("'"), text.rfind('"')) + 1
    if cut == 0 or cut == len(text) or text[cut] not in " \t\r\n":
        return None
    tail = text[cut:]
    if "\\" in tail or ";" in tail:
        return None
    head_text = text[:cut]  # ends a word: the character after it is a space
    try:
        head = _heads[head_text]
    except KeyError:
        head = _pack_head(head_text)
        if len(head_text) <= PARSE_CACHE_MAX_TEXT:
            _remember(_heads, head_text, head)
    if head is None:
        return None
    count, packed_head = head
    words = tuple(_PLAIN_WORDS.findall(tail))
    try:
        packed_words = _pack_args(words)  # b"*N\r\n" then the words: the header is redone
    except (TypeError, ValueError):  # a lone surrogate: the full path says so
        return None
    total = count + len(words)
    header = _ARRAY_HEADERS[total] if total < len(_ARRAY_HEADERS) else b"*%d\r\n" % total
    return header + packed_head + packed_words[packed_words.index(b"\n") + 1:]


_ARRAY_HEADERS = tuple(b"*%d\r\n" % count for count in range(64))


def _pack_head(head_text: str) -> Optional[Tuple[int, bytes]]:
    try:
        alone, packed, _ = _pack_commands(split_commands(head_text))
    except ExecuteActionError:
        return None
    if alone is not None or len(packed) != 1:
        return None
    header_end = packed[0].index(b"\r\n") + 2  # b"*N\r\n": N counts the head's arguments
    return int(packed[0][1:header_end - 2]), packed[0][header_end:]


def _remember(cache: "OrderedDict[str, Any]", text: str, value: Any) -> None:
    if len(cache) >= PARSE_CACHE_SIZE:
        cache.popitem(last=False)  # the oldest
    cache[text] = value


def _target(params: Dict[str, str]) -> "_RedisTarget":
    """The open target the params name, made if there is none."""
    host = params.get("host")
    host = host.strip() if host else "127.0.0.1"
    port = integer(params, "port", 6379, 1, 65535)
    db = integer(params, "selected_db", 0)
    password = params.get("password") or None
    return _targets.get((host, port, db, password),
                        partial(_RedisTarget, host, port, db, password, params))


# The target of recent (host, port, selected_db, password) params as plans hold them, so a
# fire does not read them again.
_recent_targets: Dict[Tuple[Optional[str], ...], "_RedisTarget"] = {}
RECENT_TARGETS_SIZE = 256


def _target_of(params: Dict[str, str]) -> "_RedisTarget":
    """:func:`_target`, through a small cache keyed by the params as plans hold them."""
    get = params.get
    where = (get("host"), get("port"), get("selected_db"), get("password"))
    target = _recent_targets.get(where)
    if target is None or target.closed:
        target = _target(params)
        if len(_recent_targets) >= RECENT_TARGETS_SIZE:
            _recent_targets.clear()
        _recent_targets[where] = target
    return target


class RedisAction(Action):
    #: (the parsed command, its target), when prepare_batch got the fire ahead of its second
    _ready: Optional[Tuple[_Parsed, "_RedisTarget"]] = None

    def execute(self, *args: Any, **kwargs: Any) -> Awaitable[None]:
        """A plain function returning what to await: for the usual fire of one command, the
        future of its reply itself (no coroutine to make and step through)."""
        ready = self._ready
        if ready is None or ready[1].closed:
            params = self.params
            alone, packed, stateful = _parse(required(params, "command"))
            target = _target_of(params)
        else:
            (alone, packed, stateful), target = ready
        if alone is not None:
            return target.run_alone(alone, stateful)
        if len(packed) == 1:
            return target.send(packed[0])
        return _send_in_turn(target, packed)

    @classmethod
    def prepare_batch(cls, fires: List["RedisAction"]) -> None:
        """Fires prepared ahead of their second: their commands are parsed now, and their
        targets open a connection, so at the second a busy batch only has to be sent."""
        warmed: Set[int] = set()
        for fire in fires:
            params = fire.params
            try:
                parsed = _parse(required(params, "command"))
                target = _target_of(params)
            except Exception:  # a bad param: its fire will say so
                continue
            fire._ready = (parsed, target)
            if id(target) not in warmed:
                warmed.add(id(target))
                target.warm()

    @classmethod
    async def execute_batch(cls, fires: List["RedisAction"]) -> List[Optional[BaseException]]:
        """Many fires at once (the runner's hook for a busy second): each is queued as
        ``execute`` queues it, so they share the batches, and its outcome is collected; no
        task or coroutine per fire. A fire with several commands, or one that is not
        pipelined, runs in a task of its own so it does not hold up the others."""
        outcomes: List[Optional[BaseException]] = [None] * len(fires)
        waits: List[Tuple[int, "asyncio.Future[None]"]] = []
        for index, fire in enumerate(fires):
            try:
                result = fire.execute()
            except Exception as e:  # an unparsable command, a bad param
                outcomes[index] = e
                continue
            waits.append((index, result if isinstance(result, asyncio.Future)
                          else asyncio.ensure_future(result)))
        try:
            for index, future in waits:
                try:
                    await future  # mostly done already: no suspension
                except Exception as e:
                    outcomes[index] = e
        except BaseException:  # timed out or cancelled: the fires not answered yet are dropped
            for _, future in waits:
                if not future.cancel() and not future.cancelled():
                    future.exception()  # retrieved: no "never retrieved" warning
            raise
        return outcomes

    @classmethod
    async def uninit(cls) -> None:
        _recent_targets.clear()
        await _targets.close()


async def _send_in_turn(target: "_RedisTarget", packed: Tuple[bytes, ...]) -> None:
    """Sends each command once the one before it succeeded."""
    for command in packed:
        await target.send(command)


class _RedisTarget(SharedTarget):
    """The pool of one (host, port, db, password) and the batches of fires written to it."""

    def __init__(self, host: str, port: int, db: int, password: Optional[str],
                 params: Dict[str, str]):
        connect_timeout, timeout = timeouts(params)
        size = integer(params, "max_connections",
                       int(config.get("ACTION_REDIS_MAX_CONNECTIONS")), 1)
        # No socket timeout: every wait on the target (connecting, the handshake, a batch's
        # replies, a fire run alone) is bounded here as a whole, not by a timer per reply.
        pool = BlockingConnectionPool(
            host=host, port=port, db=db, password=password, max_connections=size,
            timeout=timeout, socket_connect_timeout=connect_timeout, socket_timeout=None,
            **_POOL_OPTIONS)
        super().__init__("redis %s:%d/%d" % (host, port, db),
                         float(setting("ACTION_IDLE_SECONDS")), Redis.from_pool(pool),
                         Redis.aclose)
        self.pool = pool
        self.size = size
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._pending: List[Tuple[bytes, asyncio.Future]] = []  # not written yet
        self._writers: Set[asyncio.Task] = set()  # each sends batches on its own connection
        self._starting = False  # a writer was started and has not taken its batch yet
        self._active = False  # counted in busy: commands pending or writers running
        self._warming = False  # a connection is being opened ahead of fires

    def send(self, packed: bytes) -> asyncio.Future:
        """Queues one packed command; the future resolves once its reply came (an error reply
        as ExecuteActionError, a failed connection as ActionExecuteRetry). A writer started
        now takes every command queued until the loop gets to it."""
        future = self._loop.create_future()
        self._pending.append((packed, future))
        if not self._starting:
            if not self._active:
                self._active = True
                self.busy += 1
            if len(self._writers) < self.size:
                self._start_writer()
        return future

    def warm(self) -> None:
        """Opens a connection ahead of fires that are about to come (see prepare_batch),
        unless batches are being written or a warm-up runs; it goes back to the pool open."""
        if self._writers or self._warming or self.closed:
            return
        self._warming = True
        self.busy += 1  # not closed for idleness meanwhile
        self._loop.create_task(self._warm())

    async def _warm(self) -> None:
        try:
            async with _timeout(self.timeout):
                connection = await self.pool.get_connection()
            await self.pool.release(connection)
        except Exception as e:  # the fires will meet the same failure and report it
            log.debug("%s: opening a connection ahead failed: %s", self.description, e)
        finally:
            self._warming = False
            self.busy -= 1
            self._last_used = IOLoop.current().time()
            self._schedule()

    def _start_writer(self) -> None:
        self._starting = True
        self._writers.add(self._loop.create_task(self._write()))

    def _take(self) -> List[Tuple[bytes, asyncio.Future]]:
        """The next batch; starts another writer for what is left, if any."""
        pending = self._pending
        if len(pending) <= BATCH_MAX:
            self._pending = []
            return pending
        batch = pending[:BATCH_MAX]
        del pending[:BATCH_MAX]
        if not self._starting and len(self._writers) < self.size:
            self._start_writer()
        return batch

    async def _write(self) -> None:
        """Sends batches on one connection while commands are pending."""
        self._starting = False
        connection = None
        try:
            batch = self._take()
            while batch:
                result = await self._exchange(connection, batch)
                if result is _FAILED:  # the connection was dropped
                    connection = None
                    break
                connection = result
                batch = self._take()
        finally:
            self._writers.discard(asyncio.current_task())  # type: ignore[arg-type]
            if connection is not None:
                await self.pool.release(connection)
            if self._pending and not self._starting and not self.closed:
                self._start_writer()  # what came in after a failed batch
            elif self._active and not self._writers and not self._pending:
                self._active = False
                self.busy -= 1
                self._last_used = IOLoop.current().time()  # the clock Target uses
                self._schedule()

    async def _exchange(self, connection: Any, batch: List[Tuple[bytes, asyncio.Future]]) \
            -> Any:
        """Writes the batch, reads its replies in order and resolves its futures. Returns the
        connection (taken from the pool if None), or _FAILED once it is dropped."""
        batch = [entry for entry in batch if not entry[1].done()]  # fires timed out meanwhile
        if not batch:
            return connection
        index = 0
        try:
            async with _timeout(self.timeout):
                if connection is None:
                    connection = await self.pool.get_connection()
                read = connection.read_response
                await connection.send_packed_command(b"".join([entry[0] for entry in batch]),
                                                     check_health=False)
                for index in range(len(batch)):
                    future = batch[index][1]
                    try:
                        await read(timeout=math.inf)
                    except redis_errors.ResponseError as e:
                        if not future.done():
                            future.set_exception(ExecuteActionError(
                                "%s: %s" % (self.description, e)))
                    else:
                        if not future.done():
                            future.set_result(None)
            return connection
        except BaseException as e:
            self._fail(batch, index, e)
            if connection is not None:
                await connection.disconnect(nowait=True)
                await self.pool.release(connection)
            if not isinstance(e, Exception):
                raise
            return _FAILED

    def _fail(self, batch: List[Tuple[bytes, asyncio.Future]], start: int,
              error: BaseException) -> None:
        """Fails the fires of ``batch`` from ``start`` on, whose replies were not read."""
        if isinstance(error, redis_errors.AuthenticationError):
            # every command of the batch gets the same answer: a refused or missing password
            make = ExecuteActionError
        elif isinstance(error, (redis_errors.ConnectionError, redis_errors.TimeoutError,
                                OSError, asyncio.TimeoutError)) \
                or not isinstance(error, Exception):  # or cancelled at stop
            make = ActionExecuteRetry
        else:
            make = ExecuteActionError
        text = "%s: %s" % (self.description, str(error) or type(error).__name__)
        for _, future in batch[start:]:
            if not future.done():
                future.set_exception(make(text))

    async def close(self) -> None:
        pending, self._pending = self._pending, []
        self._fail(pending, 0, redis_errors.ConnectionError("closed at stop"))
        await super().close()

    async def run_alone(self, commands: Tuple[Tuple[str, ...], ...], stateful: bool) -> None:
        """Runs the commands in order on a pooled connection of their own, disconnected
        afterwards if they change its state; raises at the first error."""
        async with self.use() as client:
            try:
                async with _timeout(self.timeout), client.client() as single:
                    try:
                        for command in commands:
                            await single.execute_command(*command)
                    finally:
                        if stateful and single.connection is not None:
                            await single.connection.disconnect()
            except (redis_errors.AuthenticationError, redis_errors.AuthorizationError,
                    redis_errors.ResponseError) as e:
                raise ExecuteActionError("%s: %s" % (self.description, e)) from None
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError,
                    asyncio.TimeoutError) as e:
                raise ActionExecuteRetry("%s: %s" % (self.description,
                                                     str(e) or type(e).__name__)) from None
