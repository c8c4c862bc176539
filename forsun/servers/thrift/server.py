"""The Thrift front end: a Tornado TCP server speaking Forsun's binary protocol.

``thrift.TTornado`` only speaks framed transport and its generated Tornado processor cannot
await ``async def`` handlers, while old forsun clients send unframed messages. So this server
reads the stream itself (framed or not, decided per connection) and dispatches every method
generically from the generated ``Forsun.<method>_args`` / ``_result`` classes.
"""

import logging
import struct
from typing import Any, Optional, Tuple

from thrift.Thrift import TApplicationException, TMessageType
from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer

from forsun.error import ForsunError
from forsun.thriftapi import ttypes

from .wire import METHODS, STRICT_VERSION_PREFIX, Method, MessageScanner, decoding_protocol, \
    encode_message

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024


class BadMessage(Exception):
    """The peer sent bytes that are not a message we accept; its connection is dropped."""


class ThriftServer(TCPServer):
    """Serves the Forsun service to many connections, each answered in request order.

    ``handler`` has an ``async def`` per IDL method taking the IDL argument names as keyword
    arguments. ``status`` (optional) gets the connection and request counters of ``info``.
    ``max_connections`` and ``idle_timeout`` (seconds) are off when 0.
    """

    def __init__(self, handler: Any, status: Any = None,
                 max_message_bytes: int = 16 * 1024 * 1024, max_connections: int = 0,
                 idle_timeout: float = 0):
        super().__init__(read_chunk_size=READ_CHUNK_BYTES)
        self.handler = handler
        self.status = status
        self.max_message_bytes = max_message_bytes
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.open_connections = 0

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
            await _Connection(self, stream, peer).serve()
        finally:
            self.open_connections -= 1
            self.count("connecting_count", -1)


class _Connection:
    """One client: requests are read, answered and written strictly one after another, so
    pipelined requests get their replies in order and a slow call only delays its own client."""

    def __init__(self, server: ThriftServer, stream: IOStream, peer: str):
        self.server = server
        self.stream = stream
        self.peer = peer
        self.buffer = bytearray()
        self.framed: Optional[bool] = None
        self.scanner = MessageScanner(server.max_message_bytes)
        self.idle_deadline = 0.0

    async def serve(self) -> None:
        self.stream.set_nodelay(True)
        self._touch()
        try:
            while True:
                message = self._next_message()
                if message is None:
                    await self._read()
                else:
                    await self._answer(message)
                    self._touch()
        except StreamClosedError:
            if self.buffer:
                log.warning("thrift client %s closed the connection inside a message "
                            "(%d bytes unread)", self.peer, len(self.buffer))
        except BadMessage as e:
            log.warning("thrift client %s dropped: %s", self.peer, e)
        except TimeoutError:
            log.info("thrift client %s closed after %ss without a request",
                     self.peer, self.server.idle_timeout)
        finally:
            self.stream.close()

    def _touch(self) -> None:
        if self.server.idle_timeout:
            self.idle_deadline = IOLoop.current().time() + self.server.idle_timeout

    async def _read(self) -> None:
        read = self.stream.read_bytes(READ_CHUNK_BYTES, partial=True)
        if self.server.idle_timeout:
            read = gen.with_timeout(self.idle_deadline, read,
                                    quiet_exceptions=(StreamClosedError,))
        self.buffer += await read

    def _next_message(self) -> Optional[bytes]:
        """Cuts the next complete message off the buffer, or returns None until it is whole."""
        try:
            if self.framed is None:
                self.framed = self._detect_framing()
                if self.framed is None:
                    return None
            end = self._framed_end() if self.framed else self.scanner.scan(self.buffer)
        except BadMessage:
            raise
        except Exception as e:
            raise BadMessage("bad message: %r" % e) from e
        if not end:
            return None
        start = 4 if self.framed else 0
        message = bytes(self.buffer[start:end])
        del self.buffer[:end]
        return message

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

    async def _answer(self, message: bytes) -> None:
        try:
            protocol = decoding_protocol(message, self.server.max_message_bytes)
            name, mtype, seqid = protocol.readMessageBegin()
            if mtype not in (TMessageType.CALL, TMessageType.ONEWAY):
                raise BadMessage("message type %d is not a call" % mtype)
            method = METHODS.get(name)
            args = None
            if method is not None:
                args = method.args_cls()
                args.read(protocol)
        except BadMessage:
            raise
        except Exception as e:
            raise BadMessage("undecodable message: %r" % e) from e

        server = self.server
        server.count("requesting_count")
        try:
            reply, failed = await self._call(method, name, seqid, args)
        finally:
            server.count("requesting_count", -1)
        server.count("requested_count")
        if failed:
            server.count("requested_error_count")
        if mtype == TMessageType.CALL:
            if self.framed:
                reply = struct.pack("!I", len(reply)) + reply
            await self.stream.write(reply)

    async def _call(self, method: Optional[Method], name: str, seqid: int,
                    args: Any) -> Tuple[bytes, bool]:
        """Returns the encoded reply and whether it reports a failure."""
        if method is None:
            error = TApplicationException(TApplicationException.UNKNOWN_METHOD,
                                          "unknown method %r" % name)
            return encode_message(name, TMessageType.EXCEPTION, seqid, error), True
        try:
            return await self._invoke(method, name, seqid, args)
        except Exception as e:
            log.exception("thrift %s from %s failed", name, self.peer)
            error = TApplicationException(TApplicationException.INTERNAL_ERROR,
                                          str(e) or type(e).__name__)
            return encode_message(name, TMessageType.EXCEPTION, seqid, error), True

    async def _invoke(self, method: Method, name: str, seqid: int,
                      args: Any) -> Tuple[bytes, bool]:
        kwargs = {arg: getattr(args, arg) for arg in method.arg_names}
        result = method.result_cls()
        try:
            value = await getattr(self.server.handler, name)(**kwargs)
        except ForsunError as e:
            if method.error_field is None:
                raise
            setattr(result, method.error_field,
                    ttypes.ForsunPlanError(code=e.code, message=e.message))
            return encode_message(name, TMessageType.REPLY, seqid, result), True
        if method.returns:
            result.success = value
        return encode_message(name, TMessageType.REPLY, seqid, result), False


def _format_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return "%s:%s" % address[:2]
    return str(address) or "unix socket"
