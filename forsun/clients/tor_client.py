"""The Tornado client: Forsun calls as coroutines over a small pool of unframed streams."""

import socket
from typing import Any, Dict, List, Optional

from thrift.Thrift import TApplicationException, TMessageType
from thrift.transport.TTransport import TTransportException
from tornado.iostream import IOStream
from tornado.locks import Semaphore
from tornado.tcpclient import TCPClient

from forsun.servers.thrift.wire import METHODS, Method, MessageScanner, decoding_protocol, \
    encode_message
from forsun.thriftapi import ttypes

READ_CHUNK_BYTES = 64 * 1024
# A reply is trusted more than a request, but getKeys over millions of plans is large.
MAX_REPLY_BYTES = 1024 * 1024 * 1024


class TorThriftClient:
    """Runs each call on a stream of its own, opening at most ``max_stream`` connections and
    reusing idle ones; more concurrent calls wait for a free stream. A stream that fails in a
    call is closed and replaced by a new one on a later call."""

    def __init__(self, port: int = 6458, host: str = "127.0.0.1", max_stream: int = 4):
        self.host = host
        self.port = port
        self.max_stream = max_stream
        self._slots = Semaphore(max_stream)
        self._idle: List[IOStream] = []
        self._seqid = 0

    async def _call(self, name: str, *args: Any) -> Any:
        method = METHODS[name]
        self._seqid = (self._seqid + 1) & 0x7FFFFFFF
        seqid = self._seqid
        request = encode_message(name, TMessageType.CALL, seqid, method.args_cls(*args))
        async with self._slots:
            stream = await self._stream()
            try:
                reply = await self._exchange(stream, request, seqid)
            except BaseException:
                stream.close()
                raise
            self._idle.append(stream)
        return _unpack_reply(method, name, reply)

    async def _stream(self) -> IOStream:
        while self._idle:
            stream = self._idle.pop()
            if _is_usable(stream):
                return stream
            stream.close()
        stream = await TCPClient().connect(self.host, self.port)
        stream.set_nodelay(True)
        return stream

    @staticmethod
    async def _exchange(stream: IOStream, request: bytes, seqid: int) -> bytes:
        """Sends a request and reads its reply; raises when the stream is out of step."""
        await stream.write(request)
        buffer = bytearray()
        scanner = MessageScanner(MAX_REPLY_BYTES)
        end = 0
        while not end:
            buffer += await stream.read_bytes(READ_CHUNK_BYTES, partial=True)
            end = scanner.scan(buffer)
        if end != len(buffer):
            raise TTransportException(TTransportException.UNKNOWN,
                                      "server sent %d bytes after the reply" % (len(buffer) - end))
        reply = bytes(buffer)
        _, _, reply_seqid = decoding_protocol(reply, MAX_REPLY_BYTES).readMessageBegin()
        if reply_seqid != seqid:
            raise TApplicationException(TApplicationException.BAD_SEQUENCE_ID,
                                        "reply %d to request %d" % (reply_seqid, seqid))
        return reply

    async def ping(self) -> int:
        return await self._call("ping")

    async def create(self, key: str, second: int, minute: int = -1, hour: int = -1,
                     day: int = -1, month: int = -1, week: int = -1, action: str = "shell",
                     params: Optional[Dict[str, str]] = None) -> ttypes.ForsunPlan:
        return await self._call("create", key, second, minute, hour, day, month, week, action,
                                params or {})

    async def create_timeout(self, key: str, second: int, minute: int = -1, hour: int = -1,
                             day: int = -1, month: int = -1, week: int = -1, count: int = 1,
                             action: str = "shell",
                             params: Optional[Dict[str, str]] = None) -> ttypes.ForsunPlan:
        return await self._call("createTimeout", key, second, minute, hour, day, month, week,
                                count, action, params or {})

    async def remove(self, key: str) -> ttypes.ForsunPlan:
        return await self._call("remove", key)

    async def get(self, key: str) -> ttypes.ForsunPlan:
        return await self._call("get", key)

    async def get_current(self) -> List[ttypes.ForsunPlan]:
        return await self._call("getCurrent")

    async def get_time(self, timestamp: int) -> List[ttypes.ForsunPlan]:
        return await self._call("getTime", timestamp)

    async def get_keys(self, prefix: str = "") -> List[str]:
        return await self._call("getKeys", prefix)

    async def forsun_call(self, key: str, ts: int, params: Dict[str, str]) -> None:
        return await self._call("forsun_call", key, ts, params)

    async def info(self) -> Dict[str, str]:
        return await self._call("info")

    def close(self) -> None:
        """Closes the idle streams (a call still running puts its stream back afterwards)."""
        while self._idle:
            self._idle.pop().close()


def _is_usable(stream: IOStream) -> bool:
    """Whether an idle stream can carry a call. A stream the server closed (say for idleness)
    reads as EOF at once, before Tornado notices: peeking keeps the call off a dead stream."""
    if stream.closed():
        return False
    try:
        stream.socket.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # EOF, or bytes nobody asked for


def _unpack_reply(method: Method, name: str, reply: bytes) -> Any:
    protocol = decoding_protocol(reply, MAX_REPLY_BYTES)
    _, mtype, _ = protocol.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        error = TApplicationException()
        error.read(protocol)
        raise error
    result = method.result_cls()
    result.read(protocol)
    if method.error_field is not None and getattr(result, method.error_field) is not None:
        raise getattr(result, method.error_field)
    if not method.returns:
        return None
    if result.success is None:
        raise TApplicationException(TApplicationException.MISSING_RESULT,
                                    "%s failed: unknown result" % name)
    return result.success
