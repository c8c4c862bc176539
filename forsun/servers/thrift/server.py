"""The Thrift front end: a Tornado TCP server speaking Forsun's binary protocol.

``thrift.TTornado`` only speaks framed transport and its generated Tornado processor cannot
await ``async def`` handlers, while old forsun clients send unframed messages. So this server
reads the stream itself (framed or not, decided per connection) and dispatches every method
generically from the generated ``Forsun.<method>_args`` / ``_result`` classes.

Finding where an unframed message ends: the bytes read so far are first decoded as they
are with the C decoder, as many messages as they hold (a pipelining client sends many in
one read). A decode that succeeds has walked the message's whole structure, so where the
decoder stopped is where the message ends. Only when it fails (the message is incomplete,
or not a valid one) does the pure-Python :class:`~.wire.MessageScanner` take over for that
message: it tells "incomplete" (wait for more bytes) from "invalid" (drop the client), and
resumes where it stopped as more bytes arrive.

Answering: calls of one connection are answered strictly in order. On the mem store a call
runs inline in the callback that read it (no task unless it suspends), a pipelined run of
creates goes to the handler's ``call_many`` in one go (one store call for the run), and the
replies of one turn leave in one write. Creates so cost about half the CPU they cost one by
one (``scripts/bench.py --only thrift``).
"""

import asyncio
import logging
import socket
import struct
import types
from collections import deque
from typing import Any, Deque, List, Optional, Tuple

from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport.TTransport import TMemoryBuffer
from tornado.iostream import IOStream
from tornado.tcpserver import TCPServer

from forsun.error import ForsunError
from forsun.thriftapi import ttypes

from .wire import METHODS, STRICT_VERSION_PREFIX, Method, MessageScanner, binary_protocol, \
    decoding_protocol, encode_message, encode_reply, read_messages

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
# A pipelining client that sends faster than it reads stops being read beyond this many
# decoded calls waiting for their turn.
MAX_QUEUED_CALLS = 1000
# Calls of one connection answered in one go before other connections and timers get a turn.
CALLS_PER_TURN = 32


class BadMessage(Exception):
    """The peer sent bytes that are not a message we accept; its connection is dropped."""


# A decoded call: (name, message type, seqid, method or None if unknown, args or None).
Call = Tuple[str, int, int, Optional[Method], Any]


class ThriftServer(TCPServer):
    """Serves the Forsun service to many connections, each answered in request order.

    ``handler`` has an ``async def`` per IDL method taking the IDL arguments in the IDL's
    order (positionally); a method returning a struct may return any object with the
    struct's attributes. ``status`` (optional) gets the connection and request counters of
    ``info``. ``max_connections`` and ``idle_timeout`` (seconds) are off when 0.

    ``inline``: run each call's first step inside the callback that read it rather than in
    an asyncio task of its own (a call that suspends goes on in a task). Only for handlers
    whose code never needs to know its task (``asyncio.current_task``, ``asyncio.timeout``)
    before its first suspension; by default, true when the handler's core runs on a store
    that says so (``inline_requests``, the mem store). An inline server also hands runs of
    pipelined calls of the methods named in ``handler.batched`` to ``handler.call_many``
    (list of (name, arguments) -> list of, for each call, its value or the exception it
    failed with), so they are answered in one go, as if one by one.
    """

    def __init__(self, handler: Any, status: Any = None,
                 max_message_bytes: int = 16 * 1024 * 1024, max_connections: int = 0,
                 idle_timeout: float = 0, inline: Optional[bool] = None):
        super().__init__(read_chunk_size=READ_CHUNK_BYTES)
        self.handler = handler
        self.status = status
        self.max_message_bytes = max_message_bytes
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.open_connections = 0
        if inline is None:
            # A store whose request methods never need to run inside an asyncio task (the
            # mem store: it only ever awaits futures) lets calls run without a task each.
            store = getattr(getattr(handler, "forsun", None), "store", None)
            inline = bool(getattr(store, "inline_requests", False))
        self.inline = inline
        # Runs of these calls are answered with one handler.call_many (see _start_many).
        self.batched: frozenset = frozenset()
        if inline and callable(getattr(handler, "call_many", None)):
            self.batched = frozenset(getattr(handler, "batched", ()))

    def count(self, name: str, delta: int = 1) -> None:
        if self.status is not None:
            setattr(self.status, name, getattr(self.status, name, 0) + delta)

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        peer = _format_peer(address)
        if self.max_connections and self.open_connections >= self.max_connections:
            log.warning("thrift connection from %s refused: %d connections open",
                        peer, self.open_connections)
            stream.close()
            return
        self.open_connections += 1
        self.count("connecting_count")
        self.count("connected_count")
        try:
            await _Connection(self, peer).serve(stream)
        finally:
            self.open_connections -= 1
            self.count("connecting_count", -1)


class _Connection(asyncio.Protocol):
    """One client: requests are answered strictly one after another, so pipelined requests
    get their replies in order and a slow call only delays its own client.

    The socket is served by an asyncio transport rather than a Tornado IOStream: bytes
    arrive in :meth:`data_received`, and each call takes its first step there and then
    (inline, or in a task, see :func:`_start_now`); most calls (a create on the mem store
    among them) are answered in that step, costing no future or extra loop iteration. A call
    that suspends runs on in a task, and the calls behind it wait for it. The replies of
    the calls answered in one go are sent with one write.
    """

    def __init__(self, server: ThriftServer, peer: str):
        self.server = server
        self.peer = peer
        self.buffer = bytearray()
        self.framed: Optional[bool] = None
        self.scanner = MessageScanner(server.max_message_bytes)
        self.scanning = False  # the scanner is part way through the message at the front
        self.calls: Deque[Call] = deque()
        self.protocol: Any = None  # the C protocol of the fast path, reused
        self.transport: Optional[asyncio.Transport] = None
        self.busy = False  # a call is being answered by a task
        self.continuing = False  # a _process is scheduled to go on with the buffered calls
        self.replies: Optional[List[bytes]] = None  # answers _process has yet to send
        self.reading_paused = False
        self.writing_paused = False
        self.closing_reason: Optional[Tuple[int, str]] = None
        self.closed: Optional[asyncio.Future] = None
        self.last_activity = 0.0
        self._idle_handle: Optional[asyncio.TimerHandle] = None

    async def serve(self, stream: IOStream) -> None:
        """Takes the connection's socket over from the IOStream and serves it until it
        closes."""
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        sock = stream.socket.dup()
        stream.close()  # closes only the IOStream's descriptor; the connection lives on
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            await loop.connect_accepted_socket(lambda: self, sock=sock)
        except Exception:
            sock.close()
            raise
        if self.server.idle_timeout:
            self._idle_handle = loop.call_later(self.server.idle_timeout, self._check_idle)
        try:
            await self.closed
        finally:
            if self._idle_handle is not None:
                self._idle_handle.cancel()
        if self.closing_reason is not None:
            level, message = self.closing_reason
            log.log(level, message)
        elif self.buffer:
            log.warning("thrift client %s closed the connection inside a message "
                        "(%d bytes unread)", self.peer, len(self.buffer))

    # -- transport events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last_activity = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_activity = asyncio.get_running_loop().time()
        if not self.continuing:
            self._process()

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if not self.continuing:
            self._process()

    def _drop(self, level: int, message: str) -> None:
        if self.closing_reason is None:
            self.closing_reason = (level, message)
        self.calls.clear()
        self._flush()  # the calls answered before this point still get their replies
        if self.transport is not None:
            self.transport.close()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = self.server.idle_timeout
        due = self.last_activity + idle
        if self.busy or self.calls:
            due = loop.time() + idle
        if loop.time() >= due:
            self._idle_handle = None
            self._drop(logging.INFO, "thrift client %s closed after %ss without a request"
                       % (self.peer, idle))
        else:
            self._idle_handle = loop.call_at(due, self._check_idle)

    # -- answering -------------------------------------------------------------------------

    def _process(self) -> None:
        """Answers the buffered calls in order until one has to wait; after
        :data:`CALLS_PER_TURN` it lets the IOLoop run other work and goes on later."""
        self.continuing = False
        self.replies = []  # written together: one send for the answers of this turn
        try:
            self._answer_buffered()
        finally:
            self._flush()
            self.replies = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.busy or self.writing_paused or self.continuing or \
                len(self.calls) > MAX_QUEUED_CALLS:
            self._pause_reading()
        elif self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def _answer_buffered(self) -> None:
        calls = self.calls
        batched = self.server.batched
        answered = 0
        while not self.busy and not self.writing_paused and self.closing_reason is None:
            if answered >= CALLS_PER_TURN:
                self.continuing = True
                asyncio.get_running_loop().call_soon(self._process)
                return
            if not calls:
                answered += 1
                try:
                    self._decode_buffered()
                except BadMessage as e:
                    self._drop(logging.WARNING, "thrift client %s dropped: %s" % (self.peer, e))
                    return
                if not calls:
                    return
            call = calls.popleft()
            if batched and call[0] in batched and calls and call[1] == TMessageType.CALL:
                run = [call]
                room = CALLS_PER_TURN - answered  # the turn's limit counts each call
                while calls and len(run) < room:
                    name, mtype = calls[0][:2]
                    if name not in batched or mtype != TMessageType.CALL:
                        break
                    run.append(calls.popleft())
                answered += len(run)
                if len(run) > 1:
                    self._start_many(run)
                    continue
            answered += 1
            self._start(call)

    def _flush(self) -> None:
        """Sends the replies :meth:`_process` has gathered so far."""
        replies = self.replies
        if replies:
            self.replies = []
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(b"".join(replies))

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and \
                not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def _start(self, call: Call) -> None:
        """Runs a call up to its answer, or up to its first suspension (it then goes on in a
        task and the connection is busy until it ends)."""
        name, mtype, seqid, method, args = call
        if mtype != TMessageType.CALL and mtype != TMessageType.ONEWAY:
            self._drop(logging.WARNING, "thrift client %s dropped: message type %d is not a "
                       "call" % (self.peer, mtype))
            return
        server = self.server
        status = server.status
        if status is not None:
            status.requesting_count += 1
        if method is None:
            error = TApplicationException(TApplicationException.UNKNOWN_METHOD,
                                          "unknown method %r" % name)
            self._finish(mtype, encode_message(name, TMessageType.EXCEPTION, seqid, error),
                         True)
            return
        try:
            coroutine = getattr(server.handler, name)(*method.arguments(args))
            if server.inline:
                # StopIteration: it returned without suspending (a create on the mem store)
                task = asyncio.get_running_loop().create_task(
                    _resume(coroutine, coroutine.send(None)))
            else:
                task = _start_now(coroutine)
                if task.done():
                    if task.cancelled():
                        raise asyncio.CancelledError()
                    error = task.exception()
                    if error is not None:
                        raise error
                    raise StopIteration(task.result())
        except StopIteration as done:
            try:
                reply = encode_reply(name, method, seqid, done.value)
            except Exception as e:  # a value the IDL type cannot carry
                self._finish(mtype, *self._failed(name, method, seqid, e))
                return
            self._finish(mtype, reply, False)
            return
        except asyncio.CancelledError:
            self._cancelled()
            return
        except Exception as e:
            self._finish(mtype, *self._failed(name, method, seqid, e))
            return
        self.busy = True
        task.add_done_callback(
            lambda finished: self._finished(name, mtype, seqid, method, finished))

    def _finished(self, name: str, mtype: int, seqid: int, method: Method,
                  task: asyncio.Future) -> None:
        self.busy = False
        if task.cancelled():
            self._cancelled()
            return
        error = task.exception()
        if error is None:
            try:
                self._finish(mtype, encode_reply(name, method, seqid, task.result()), False)
            except Exception as e:  # a value the IDL type cannot carry
                error = e
        if error is not None:
            self._finish(mtype, *self._failed(name, method, seqid, error))
        if not self.continuing:
            self._process()

    def _cancelled(self, calls: int = 1) -> None:
        for _ in range(calls):
            self._finish(TMessageType.CALL, None, False)
        self._drop(logging.INFO, "thrift client %s: call cancelled" % self.peer)

    def _start_many(self, run: List[Call]) -> None:
        """:meth:`_start` for a run of consecutive calls the handler answers together
        (``handler.call_many``); their replies go out in order, each its own."""
        server = self.server
        status = server.status
        if status is not None:
            status.requesting_count += len(run)
        try:
            coroutine = server.handler.call_many(
                [(name, method.arguments(args)) for name, _, _, method, args in run])
            # StopIteration: answered without suspending (creates on the mem store)
            task = asyncio.get_running_loop().create_task(
                _resume(coroutine, coroutine.send(None)))
        except StopIteration as done:
            self._finish_many(run, done.value)
            return
        except asyncio.CancelledError:
            self._cancelled(len(run))
            return
        except Exception as e:
            self._finish_many(run, [e] * len(run))
            return
        self.busy = True
        task.add_done_callback(lambda finished: self._many_finished(run, finished))

    def _many_finished(self, run: List[Call], task: asyncio.Future) -> None:
        self.busy = False
        if task.cancelled():
            self._cancelled(len(run))
            return
        error = task.exception()
        self._finish_many(run, [error] * len(run) if error is not None else task.result())
        if not self.continuing:
            self._process()

    def _finish_many(self, run: List[Call], outcomes: Any) -> None:
        """Answers each call of ``run`` (all CALLs) with its outcome: a value, or an
        exception; :meth:`_finish` for each, its counting done once for all."""
        if not isinstance(outcomes, list) or len(outcomes) != len(run):
            error = TypeError("call_many answered %r for %d calls" % (outcomes, len(run)))
            outcomes = [error] * len(run)
        replies = []
        failures = 0
        for (name, _, seqid, method, _), outcome in zip(run, outcomes):
            if not isinstance(outcome, BaseException):
                try:
                    replies.append(encode_reply(name, method, seqid, outcome))
                    continue
                except Exception as e:  # a value the IDL type cannot carry
                    outcome = e
            replies.append(self._failed(name, method, seqid, outcome)[0])
            failures += 1
        status = self.server.status
        if status is not None:
            status.requesting_count -= len(run)
            status.requested_count += len(run)
            status.requested_error_count += failures
        if self.framed:
            replies = [struct.pack("!I", len(reply)) + reply for reply in replies]
        if self.replies is not None:  # inside _process: sent when it ends
            self.replies += replies
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(replies))

    def _failed(self, name: str, method: Method, seqid: int,
                error: BaseException) -> Tuple[bytes, bool]:
        """The encoded reply of a call that raised ``error``, and True: the method's
        ForsunPlanError for a ForsunError, else an internal-error TApplicationException."""
        if isinstance(error, ForsunError) and method.error_field is not None:
            try:
                result = method.result_cls()
                setattr(result, method.error_field,
                        ttypes.ForsunPlanError(code=error.code, message=error.message))
                return encode_message(name, TMessageType.REPLY, seqid, result), True
            except Exception as e:  # a code or message the IDL type cannot carry
                error = e
        log.error("thrift %s from %s failed", name, self.peer, exc_info=error)
        failure = TApplicationException(TApplicationException.INTERNAL_ERROR,
                                        str(error) or type(error).__name__)
        return encode_message(name, TMessageType.EXCEPTION, seqid, failure), True

    def _finish(self, mtype: int, reply: Optional[bytes], failed: bool) -> None:
        """Counts a call as answered and sends its reply (None: it has none, cancelled)."""
        status = self.server.status
        if status is not None:
            status.requesting_count -= 1
            if reply is not None:
                status.requested_count += 1
                if failed:
                    status.requested_error_count += 1
        if reply is None or mtype != TMessageType.CALL:
            return
        if self.framed:
            reply = struct.pack("!I", len(reply)) + reply
        replies = self.replies
        if replies is not None:  # inside _process: sent when it ends
            replies.append(reply)
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(reply)

    def _decode_buffered(self) -> None:
        """Decodes the complete messages at the front of the buffer into ``self.calls``."""
        try:
            if self.framed is None:
                self.framed = self._detect_framing()
                if self.framed is None:
                    return
            if self.framed:  # the whole frames buffered, up to a turn's worth of calls
                while len(self.calls) < CALLS_PER_TURN:
                    end = self._framed_end()
                    if not end:
                        break
                    call = self._decode_message(bytes(self.buffer[4:end]))
                    del self.buffer[:end]
                    self.calls.append(call)
                return
            if not self.scanning and self._decode_fast():
                return
            self.scanning = True
            end = self.scanner.scan(self.buffer)
        except Exception as e:
            if self.calls:  # answer the calls before it first; it is met again after them
                return
            if isinstance(e, BadMessage):
                raise
            raise BadMessage("bad message: %r" % e) from e
        if end:
            self.scanning = False
            message = bytes(self.buffer[:end])
            del self.buffer[:end]
            self.calls.append(self._decode_message(message))

    def _decode_fast(self) -> bool:
        """Decodes every whole message the buffer starts with, with the C decoder; False
        when not even the first one decodes (incomplete or invalid: the scanner decides)."""
        if not self.buffer:
            return True
        data = bytes(self.buffer)
        transport = TMemoryBuffer(data)
        protocol = self.protocol
        if protocol is None:
            protocol = self.protocol = binary_protocol(transport,
                                                       self.server.max_message_bytes)
        protocol.trans = transport
        consumed = read_messages(data, transport, protocol, self.calls)
        if not consumed:
            return False
        del self.buffer[:consumed]
        return True

    def _decode_message(self, message: bytes) -> Call:
        """Decodes exactly one complete message (its end found by framing or the scanner)."""
        try:
            return _read_call(decoding_protocol(message, self.server.max_message_bytes))
        except BadMessage:
            raise
        except Exception as e:
            raise BadMessage("undecodable message: %r" % e) from e

    def _detect_framing(self) -> Optional[bool]:
        """A strict message starts with 0x80 0x01; a frame starts with its length, then such a
        message. Anything else is not a Thrift binary client."""
        if len(self.buffer) < 2:
            return None
        if self.buffer[:2] == STRICT_VERSION_PREFIX:
            return False
        if len(self.buffer) < 6:
            return None
        if self.buffer[4:6] == STRICT_VERSION_PREFIX:
            return True
        raise BadMessage("neither a strict binary message nor a frame: %r"
                         % bytes(self.buffer[:6]))

    def _framed_end(self) -> int:
        if len(self.buffer) < 4:
            return 0
        size, = struct.unpack_from("!I", self.buffer)
        if not 0 < size <= self.server.max_message_bytes:
            raise BadMessage("frame of %d bytes (limit %d)" % (size, self.server.max_message_bytes))
        return 4 + size if len(self.buffer) >= 4 + size else 0


async def _resume(coroutine: Any, awaiting: Any) -> Any:
    """Goes on with ``coroutine`` in the task this makes, as if the task had run it from
    the start: ``coroutine`` already ran inline up to yielding ``awaiting`` (a future, or
    None for a bare yield)."""
    return await _continue(coroutine, awaiting)


@types.coroutine
def _continue(coroutine: Any, awaiting: Any) -> Any:
    """Passes what ``coroutine`` yields to the task and what the task sends or throws in
    (a cancellation, as a CancelledError at the coroutine's await) back to it."""
    while True:
        try:
            yield awaiting
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as e:
            try:
                awaiting = coroutine.throw(e)
            except StopIteration as done:
                return done.value
        else:
            try:
                awaiting = coroutine.send(None)
            except StopIteration as done:
                return done.value


def _start_now(coroutine: Any) -> asyncio.Task:
    """A task for ``coroutine`` whose first step runs right away, not in a later turn of the
    IOLoop: most calls never suspend, so they are answered within the callback that read
    them (no extra loop turn per request). It is a real task, so code that needs one (such
    as ``asyncio.timeout`` in a network store's client) works. Called from transport
    callbacks, never from inside another task (asyncio allows one running task per loop).
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(coroutine)
    ready = getattr(loop, "_ready", None)  # the queue create_task put the first step in
    if ready and getattr(ready[-1]._callback, "__self__", None) is task:
        ready.pop()._run()
    return task


def _read_call(protocol: Any) -> Call:
    """Reads one whole message; an unknown method's arguments are skipped."""
    name, mtype, seqid = protocol.readMessageBegin()
    method = METHODS.get(name)
    args = None
    if method is not None:
        args = method.args_cls()
        args.read(protocol)
    else:
        protocol.skip(TType.STRUCT)
    protocol.readMessageEnd()
    return name, mtype, seqid, method, args


def _format_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return "%s:%s" % address[:2]
    return str(address) or "unix socket"
