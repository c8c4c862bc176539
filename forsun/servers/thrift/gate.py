"""The Thrift server with the access checks of :mod:`forsun.servers.access` at accept.

A subclass rather than code inside :class:`~forsun.servers.thrift.server.ThriftServer`, so
the protocol server stays about the protocol: a connection from outside ``ALLOW_IPS``, or
beyond ``THRIFT_MAX_CONNECTIONS``, is closed before the server reads a byte of it.
"""

from typing import Any

from tornado.iostream import IOStream

from ..access import ConnectionGate
from .server import ThriftServer


class GatedThriftServer(ThriftServer):
    def __init__(self, handler: Any, status: Any, gate: ConnectionGate, **kwargs: Any):
        super().__init__(handler, status, **kwargs)
        self.gate = gate

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        if not self.gate.admit(address, self.open_connections):
            stream.close()
            return
        await super().handle_stream(stream, address)
