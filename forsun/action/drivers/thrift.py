"""The ``thrift`` action: calls ``forsun_call(key, ts, params)`` on another Forsun service.

Params: ``host`` (127.0.0.1), ``port`` (5643), ``max_connections`` (setting
ACTION_THRIFT_MAX_CONNECTIONS), ``connect_timeout``, ``timeout`` (seconds for the call once
connected). The target gets the plan's key, the fire's timestamp and all of the plan's params.

It speaks plain (unframed) strict binary like forsun 0.1.x servers, on Tornado streams, and
reads the reply with the message scanner the Thrift server uses, since an unframed reply only
ends where its parse ends. A refused or dropped connection and a timeout raise
ActionExecuteRetry; an exception the target answers with, or a reply that is not one, is final.

Each (host, port) target has an :class:`forsun.action.pool.AsyncPool` of at most
``max_connections`` streams: reused one call at a time, dropped after any error, closed after
ACTION_IDLE_SECONDS unused. A stream watches for the target closing it while idle, so a
restarted target is reconnected without a failed fire.
"""

import asyncio
import itertools
from typing import Dict

from thrift.Thrift import TApplicationException, TMessageType
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from ... import config
from ...error import ActionExecuteRetry
from ...servers.thrift.wire import MessageScanner, decoding_protocol, encode_message
from ...thriftapi import Forsun
from ..action import Action, ExecuteActionError
from ..params import integer, setting, timeouts
from ..pool import AsyncPool, Targets

METHOD = "forsun_call"
MAX_REPLY_BYTES = 1024 * 1024  # a forsun_call reply is a few bytes; more is not a reply
READ_CHUNK_BYTES = 64 * 1024

_targets: Targets[AsyncPool] = Targets()
_seqids = itertools.count(1)


class _BadReply(Exception):
    """The target answered with something that is not a forsun_call reply."""


class ThriftAction(Action):
    async def execute(self, *args, **kwargs) -> None:
        params = self.params
        host = (params.get("host") or "127.0.0.1").strip()
        port = integer(params, "port", 5643, 1, 65535)
        connect_timeout, timeout = timeouts(params)
        description = "thrift %s:%d" % (host, port)

        async def connect() -> IOStream:
            try:
                stream = await TCPClient().connect(host, port, timeout=connect_timeout)
            except asyncio.TimeoutError:
                raise ActionExecuteRetry("%s: cannot connect in %.1f s"
                                         % (description, connect_timeout)) from None
            stream.set_nodelay(True)
            stream.set_close_callback(lambda: None)  # makes Tornado notice a close while idle
            return stream

        def make() -> AsyncPool:
            size = integer(params, "max_connections",
                           int(config.get("ACTION_THRIFT_MAX_CONNECTIONS")), 1)
            return AsyncPool(description, size, float(setting("ACTION_IDLE_SECONDS")),
                             connect, IOStream.close, lambda stream: not stream.closed())

        pool = _targets.get((host, port), make)
        try:
            async with pool.connection(timeout) as stream:
                await asyncio.wait_for(_call(stream, self.plan.key, int(self.ts), dict(params)),
                                       timeout)
        except asyncio.TimeoutError:
            raise ActionExecuteRetry("%s: no answer in %.1f s" % (description, timeout)) \
                from None
        except (StreamClosedError, OSError) as e:
            raise ActionExecuteRetry("%s: %s" % (description, _reason(e))) from None
        except (TApplicationException, _BadReply) as e:
            raise ExecuteActionError("%s: %s" % (description, _reason(e))) from None

    @classmethod
    async def uninit(cls) -> None:
        await _targets.close()


async def _call(stream: IOStream, key: str, ts: int, params: Dict[str, str]) -> None:
    seqid = next(_seqids) & 0x7FFFFFFF
    args = Forsun.forsun_call_args(key=key, ts=ts, params=params)
    await stream.write(encode_message(METHOD, TMessageType.CALL, seqid, args))
    buffer = bytearray()
    scanner = MessageScanner(MAX_REPLY_BYTES)
    try:
        while True:
            buffer += await stream.read_bytes(READ_CHUNK_BYTES, partial=True)
            end = scanner.scan(buffer)
            if end:
                break
        if end != len(buffer):
            raise _BadReply("%d bytes after the reply" % (len(buffer) - end))
        protocol = decoding_protocol(bytes(buffer), MAX_REPLY_BYTES)
        name, mtype, reply_seqid = protocol.readMessageBegin()
        if name != METHOD or reply_seqid != seqid:
            raise _BadReply("reply to %r #%d, expected %r #%d" % (name, reply_seqid, METHOD, seqid))
        if mtype == TMessageType.EXCEPTION:
            error = TApplicationException()
            error.read(protocol)
            raise error
        if mtype != TMessageType.REPLY:
            raise _BadReply("message type %d is not a reply" % mtype)
        Forsun.forsun_call_result().read(protocol)
    except (StreamClosedError, OSError, TApplicationException, _BadReply):
        raise
    except Exception as e:  # the scanner and decoder raise many kinds on garbage
        raise _BadReply("undecodable reply: %r" % e) from None


def _reason(error: BaseException) -> str:
    if isinstance(error, StreamClosedError) and error.real_error is not None:
        error = error.real_error
    if isinstance(error, TApplicationException):
        return "remote exception: %s" % (error.message or error.type)
    return str(error) or type(error).__name__
