"""A light path for the requests that matter for throughput: plan creates.

Tornado's HTTP stack costs 270 µs (a bare ``HTTPServer``) to 420 µs (an ``Application``) of
CPU per request on the 2-core machine the benchmark runs on, more than the whole create
behind it. So each accepted connection starts on this path instead: an asyncio protocol
that reads ``PUT``/``POST /v1/plan`` requests of the plainest form (HTTP/1.1, a valid
``Host``, a ``Content-Length`` within the limit, nothing but printable ASCII in the head),
creates the plans through :func:`.creates.create_from_body` exactly as the tornado handler
does, and writes the answers of pipelined requests with one send. A create costs about
120 µs this way. A body that arrives in pieces (bulk crontab bodies) is waited for, with
tornado's timeouts: ``idle_timeout`` for a head, ``body_timeout`` for a body.

The first request that is anything else (another route or method, chunked, ``Expect``,
``Connection: close``, a token that fails, odd bytes, a head too large...) hands the
connection over to tornado for good, at that request: the bytes already read are given to
tornado's stream first (:class:`PrefixedIOStream`), so tornado sees the byte stream the
client sent and answers every unusual case as it always has. Answers are byte for byte
tornado's (status line, ``Server``, ``Content-Type``, ``Date``, ``Content-Length``).
"""

import asyncio
import logging
import re
import socket
import time
from email.utils import formatdate
from typing import Any, Callable, List, Optional, Tuple

import tornado
from tornado.iostream import IOStream

from ...error import ForsunError
from .base import (CONTENT_TYPE, error_envelope, log, log_answer, success_envelope,
                   unexpected_error)
from .creates import create_from_body

# Requests answered in one turn of the IOLoop before the rest of a pipelined burst waits
# for the next turn, so one client cannot hold the loop.
REQUESTS_PER_TURN = 64
# A head larger than this is left to tornado (which refuses it past its own limit).
MAX_HEAD_BYTES = 16 * 1024
_READ_CHUNK_BYTES = 256 * 1024

# Anything but printable ASCII, tab, CR and LF in a head is left to tornado.
_ODD_HEAD_BYTES = re.compile(rb"[^\t\r\n\x20-\x7e]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A Host that tornado's own check accepts (a name or IPv4 address, a port); tornado refuses
# an HTTP/1.1 request without a valid one, so any other is left to it.
_HOST = re.compile(rb"[A-Za-z0-9._~-]+(?::[0-9]*)?")
# Headers the path reads; one of them twice is left to tornado.
_KNOWN = frozenset((b"host", b"content-length", b"content-type", b"authorization",
                    b"connection", b"transfer-encoding", b"expect"))
_CREATES = {b"PUT": True, b"POST": False}  # method -> is_time_out
_PATH = b"/v1/plan"
_HANDOFF = object()  # _next_request: tornado takes the connection from here

Request = Tuple[str, bool, str, bytes]  # method, is_time_out, Content-Type, body


class PrefixedIOStream(IOStream):
    """An IOStream that reads ``prefix`` (bytes the fast path read but did not serve)
    before the socket's own bytes, through ``read_from_fd``, the hook tornado reads with.

    Tornado reads inline before it waits for the socket, but waits once a read has what it
    needs (a head's ``max_bytes``, say): bytes left in the prefix then would wait for the
    socket to become readable. So the first read takes the whole prefix (its chunk size is
    made large enough), and later reads use the usual chunk size.
    """

    def __init__(self, sock: socket.socket, prefix: bytes,
                 read_chunk_size: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(sock, read_chunk_size=read_chunk_size, **kwargs)
        self._usual_chunk_size = self.read_chunk_size
        self.read_chunk_size = max(self.read_chunk_size, len(prefix))
        self._prefix: Optional[bytes] = prefix

    def read_from_fd(self, buf: Any) -> Optional[int]:
        prefix = self._prefix
        if prefix:
            self._prefix = None
            self.read_chunk_size = self._usual_chunk_size
            buf[:len(prefix)] = prefix
            return len(prefix)
        return super().read_from_fd(buf)


class FastPath:
    """What the connections of one HTTP server share: the service, the limits and
    ``handoff(sock, address, prefix)``, which gives a connection to tornado."""

    def __init__(self, service: Any, max_body_bytes: int, idle_timeout: float,
                 body_timeout: Optional[float],
                 handoff: Callable[[socket.socket, Any, bytes], None],
                 closed: Callable[[], None]):
        self.service = service
        self.forsun = service.forsun
        self.status = service.status
        self.auth = service.auth
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.handoff = handoff
        self.closed = closed  # called when a connection served here to its end closes
        # what a connection buffers at most before it stops reading: a whole request and a
        # read's worth of the next
        self.max_buffer_bytes = max_body_bytes + MAX_HEAD_BYTES + _READ_CHUNK_BYTES
        # a store that never needs a task for a request (the mem store) runs creates inline
        self.inline = bool(getattr(self.forsun.store, "inline_requests", False))
        self._date_second = -1
        self._date = b""

    async def serve(self, stream: IOStream, address: Any) -> None:
        """Takes the accepted connection's socket over from tornado's ``stream``."""
        loop = asyncio.get_running_loop()
        sock = stream.socket.dup()
        stream.close()  # closes only that descriptor; the connection lives on in ``sock``
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            await loop.connect_accepted_socket(lambda: _Connection(self, address), sock=sock)
        except Exception:
            sock.close()
            self.closed()
            raise

    def head(self, length: int) -> bytes:
        """The head tornado writes for a JSON answer of ``length`` bytes."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True).encode("ascii")
        return (b"HTTP/1.1 200 OK\r\nServer: TornadoServer/%s\r\nContent-Type: %s\r\n"
                b"Date: %s\r\nContent-Length: %d\r\n\r\n"
                % (_TORNADO_VERSION, _CONTENT_TYPE, self._date, length))


_TORNADO_VERSION = tornado.version.encode("ascii")
_CONTENT_TYPE = CONTENT_TYPE.encode("ascii")


class _Connection(asyncio.Protocol):
    """One client on the fast path: its requests are answered in order; one whose create
    has to wait (a store that suspends) holds the ones behind it."""

    def __init__(self, path: FastPath, address: Any):
        self.path = path
        self.address = address
        self.buffer = bytearray()
        self.transport: Any = None
        self.busy = False  # a create is running in a task
        self.continuing = False  # a _process is scheduled for the next turn
        self.handing_off = False
        self.handed_over = False  # tornado serves the connection now, and counts its close
        self.writing_paused = False
        self.reading = True
        self.replies: List[bytes] = []
        # the head of a request whose body is still arriving: (end of head, total length)
        self.pending: Optional[Tuple[int, int]] = None
        self.waiting_since = 0.0  # when the wait for the current request began
        self.request_line: Tuple[str, bool, str] = ("", False, "")  # of the pending head
        self.timer: Optional[asyncio.TimerHandle] = None

    # -- transport events ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.waiting_since = time.monotonic()
        self._arm(self.path.idle_timeout)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.handed_over:
            self.path.closed()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy and not self.continuing and not self.handing_off:
            self._process()
        elif len(self.buffer) > self.path.max_buffer_bytes:
            self._update_reading()

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.handing_off:
            self._hand_over()
        elif not self.busy and not self.continuing:
            self._process()

    def _update_reading(self) -> None:
        """Reads while requests can be answered and the buffer is not too full: a client
        that does not read its answers, or sends faster than they are made, waits."""
        reading = not (self.busy or self.writing_paused or self.handing_off
                       or len(self.buffer) > self.path.max_buffer_bytes)
        if reading != self.reading and not self.transport.is_closing():
            self.reading = reading
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # -- timeouts (tornado's: idle_connection_timeout for a head, body_timeout for a body) -

    def _arm(self, timeout: Optional[float]) -> None:
        if timeout and self.timer is None:
            self.timer = asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + timeout, self._check_timeout)

    def _check_timeout(self) -> None:
        self.timer = None
        if self.handing_off or self.transport.is_closing():
            return
        if self.busy or self.continuing:
            self._arm(self.path.idle_timeout)
            return
        timeout = self.path.body_timeout if self.pending else self.path.idle_timeout
        left = self.waiting_since + (timeout or 0) - time.monotonic()
        if timeout and left <= 0:
            self.transport.close()  # as tornado: a late client is closed, not answered
            return
        self._arm(left if timeout else self.path.idle_timeout)

    # -- requests ------------------------------------------------------------------------

    def _process(self) -> None:
        """Answers the buffered requests in order until one is incomplete or has to wait."""
        self.continuing = False
        if self.transport.is_closing():
            return
        answered = 0
        while not self.busy and not self.writing_paused:
            if answered == REQUESTS_PER_TURN:
                self.continuing = True
                asyncio.get_running_loop().call_soon(self._process)
                break
            request = self._next_request()
            if request is None:
                break
            if request is _HANDOFF:
                self._flush()
                self._start_handoff()
                return
            answered += 1
            self._start(request)  # type: ignore[arg-type]
        self._flush()
        self._update_reading()

    def _flush(self) -> None:
        if self.replies:
            replies, self.replies = self.replies, []
            self.transport.write(b"".join(replies))

    def _next_request(self) -> Any:
        """The next complete request taken off the buffer; None while it is incomplete;
        _HANDOFF when it is not one for this path."""
        buffer = self.buffer
        if self.pending is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                # a head ended by a bare LF, which tornado still reads
                if len(buffer) > MAX_HEAD_BYTES or b"\n\n" in buffer or b"\n\r\n" in buffer:
                    return _HANDOFF
                return None
            head = bytes(buffer[:end])
            total = self._read_head(head)
            if total is None:
                return _HANDOFF
            self.pending = (end + 4, end + 4 + total)
            if len(buffer) < end + 4 + total:
                self.waiting_since = time.monotonic()
                self._arm(self.path.body_timeout)
        start, stop = self.pending
        if len(buffer) < stop:
            return None
        body = bytes(buffer[start:stop])
        del buffer[:stop]
        self.pending = None
        self.waiting_since = time.monotonic()
        method, is_time_out, content_type = self.request_line
        return method, is_time_out, content_type, body

    def _read_head(self, head: bytes) -> Optional[int]:
        """The body length of a head this path serves, else None. Keeps the method and
        Content-Type in ``request_line``."""
        if _ODD_HEAD_BYTES.search(head) or head.count(b"\n") != head.count(b"\r\n") \
                or head.count(b"\r") != head.count(b"\n"):
            return None
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[1] != _PATH or parts[2] != b"HTTP/1.1" \
                or parts[0] not in _CREATES:
            return None
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                return None
            name = name.lower()
            if name in _KNOWN:
                if name in headers:
                    return None
                headers[name] = value.strip(b" \t")
        length = headers.get(b"content-length")
        if length is None or not length.isdigit() or b"transfer-encoding" in headers \
                or b"expect" in headers or not _HOST.fullmatch(headers.get(b"host", b"")):
            return None
        connection = headers.get(b"connection")
        if connection is not None and connection.lower() != b"keep-alive":
            return None
        total = int(length)
        if total > self.path.max_body_bytes:
            return None
        auth = self.path.auth
        if auth.enabled and auth.problem(
                headers.get(b"authorization", b"").decode("ascii") or None):
            return None
        method = parts[0].decode("ascii")
        self.request_line = (method, _CREATES[parts[0]],
                             headers.get(b"content-type", b"").decode("ascii"))
        return total

    def _start(self, request: Request) -> None:
        """Creates the request's plans; the answer is queued, or written when a task that
        had to wait is done."""
        method, is_time_out, content_type, body = request
        status = self.path.status
        status.http_requesting_count += 1
        started = time.monotonic()
        coroutine = create_from_body(self.path.forsun, content_type, body, is_time_out)
        if self.path.inline:
            try:
                awaiting = coroutine.send(None)
            except StopIteration as done:
                self._answer(method, started, done.value, None)
                return
            except Exception as e:
                self._answer(method, started, None, e)
                return
            task = asyncio.ensure_future(_resume(coroutine, awaiting))
        else:
            task = asyncio.ensure_future(coroutine)
        self.busy = True
        task.add_done_callback(lambda done: self._finished(method, started, done))

    def _finished(self, method: str, started: float, task: "asyncio.Future[Any]") -> None:
        self.busy = False
        if task.cancelled():
            self.path.status.http_requesting_count -= 1
            self.transport.close()
            return
        error = task.exception()
        self._answer(method, started, None if error else task.result(), error)
        if not self.transport.is_closing():
            self._process()

    def _answer(self, method: str, started: float, data_json: Optional[str],
                error: Optional[BaseException]) -> None:
        """Queues the answer (written at the end of :meth:`_process`) and counts it."""
        status = self.path.status
        status.http_requesting_count -= 1
        status.http_requested_count += 1
        errcode = 0
        if error is None:
            text = success_envelope(data_json or "")
        else:
            if not isinstance(error, ForsunError):
                log.error("http %s %s failed", method, _PATH.decode(),
                          exc_info=(type(error), error, error.__traceback__))
                error = unexpected_error(error)
            errcode = error.code
            status.http_requested_error_count += 1
            text = error_envelope(error)
        body = text.encode("ascii")
        self.replies.append(self.path.head(len(body)) + body)  # sent by _process
        if errcode or log.isEnabledFor(logging.DEBUG):
            log_answer(method, _PATH.decode(), errcode, time.monotonic() - started)

    # -- handing the connection to tornado -------------------------------------------------

    def _start_handoff(self) -> None:
        """Gives the connection to tornado once what was written here is sent."""
        self.handing_off = True
        self._update_reading()
        if self.transport.get_write_buffer_size():
            self.transport.set_write_buffer_limits(high=0)  # resume_writing once drained
        else:
            self._hand_over()

    def _hand_over(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            sock = self.transport.get_extra_info("socket").dup()
        except OSError:
            self.transport.abort()  # the connection is gone
            return
        self.handed_over = True
        self.transport.abort()  # closes only this descriptor, nothing is left to send
        self.path.handoff(sock, self.address, bytes(self.buffer))


async def _resume(coroutine: Any, awaiting: Any) -> Any:
    """Runs on a coroutine that was stepped once by hand and suspended on ``awaiting`` (an
    asyncio future, or None for ``asyncio.sleep(0)``), the way a task would have."""
    while True:
        try:
            if awaiting is None:
                await asyncio.sleep(0)
            else:
                awaiting._asyncio_future_blocking = False
                await asyncio.wait([awaiting])
        except asyncio.CancelledError:
            coroutine.close()
            raise
        try:
            awaiting = coroutine.send(None)
        except StopIteration as done:
            return done.value
