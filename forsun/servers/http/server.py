"""The HTTP server of the API: routes, its limits, access checks and connection counters.

It runs on forsund's IOLoop over the same core as the Thrift server, so both see the same
plans at once.
"""

import socket
import sys
from typing import Any, Optional

from tornado.httpserver import HTTPServer
from tornado.web import Application

from ... import config
from ...status import ForsunStatus
from ..access import ConnectionGate
from .base import NotFoundHandler, log_request
from .fastpath import FastPath, PrefixedIOStream
from .handlers import ROUTES

MAX_BODY_BYTES = config.define(
    "HTTP_MAX_BODY_BYTES", 1 << 20,
    "largest request body the HTTP API accepts; a larger one is refused (errcode 1007) "
    "without being read")
MAX_CONNECTIONS = config.define(
    "HTTP_MAX_CONNECTIONS", 1000,
    "HTTP connections open at once; more are closed at accept; 0 = no limit")
IDLE_TIMEOUT = config.define(
    "HTTP_IDLE_TIMEOUT", 60.0,
    "seconds an HTTP connection may wait for (or take to send) a request's headers, "
    "kept-alive connections included, before it is closed; 0 = never")
BODY_TIMEOUT = config.define(
    "HTTP_BODY_TIMEOUT", 60.0,
    "seconds a client may take to send a request body before the connection is closed; "
    "0 = no limit")
NEVER = 10 * 365 * 86400.0


def _get(settings: Any, setting: config.Setting) -> Any:
    value = settings.get(setting.name)
    return setting.default if value is None else value


class CountingHTTPServer(HTTPServer):
    """Keeps http_connecting_count (open now) and http_connected_count (ever accepted), and
    closes at accept the connections its ``gate`` refuses (ALLOW_IPS, HTTP_MAX_CONNECTIONS).

    With a ``fast_path`` (built from the service by :meth:`use_fast_path`), accepted
    connections start there and come to tornado at their first request it does not serve.
    """

    def initialize(self, *args: Any, status: ForsunStatus,
                   gate: Optional[ConnectionGate] = None, **kwargs: Any) -> None:
        self.status = status
        self.gate = gate
        self.open_connections = 0
        self.fast_path: Optional[FastPath] = None
        super().initialize(*args, **kwargs)

    def use_fast_path(self, service: Any, max_body_bytes: int, idle_timeout: float,
                      body_timeout: Optional[float]) -> None:
        self.fast_path = FastPath(service, max_body_bytes, idle_timeout, body_timeout,
                                  self._take_over, self._connection_closed)

    def handle_stream(self, stream: Any, address: Any) -> Any:
        if self.gate is not None and not self.gate.admit(address, self.open_connections):
            stream.close()
            return None
        self.open_connections += 1
        self.status.http_connecting_count += 1
        self.status.http_connected_count += 1
        if self.fast_path is not None:
            return self.fast_path.serve(stream, address)
        return super().handle_stream(stream, address)

    def _take_over(self, sock: socket.socket, address: Any, prefix: bytes) -> None:
        """Serves with tornado a connection the fast path hands over, ``prefix`` being
        the bytes it read and did not serve."""
        stream = PrefixedIOStream(sock, prefix, max_buffer_size=self.max_buffer_size,
                                  read_chunk_size=self.read_chunk_size)
        super().handle_stream(stream, address)

    def _connection_closed(self) -> None:
        self.open_connections -= 1
        self.status.http_connecting_count -= 1

    def on_close(self, server_conn: Any) -> None:
        self._connection_closed()
        super().on_close(server_conn)


def make_http_server(service: Any) -> HTTPServer:
    """The API server for ``service`` (a :class:`forsun.service.ForsunService`); the caller
    adds the listening sockets."""
    settings = service.settings
    limit = int(_get(settings, MAX_BODY_BYTES))
    handler_args = {"service": service, "max_body_bytes": limit}
    application = Application(
        [(path, handler, handler_args) for path, handler in ROUTES],
        default_handler_class=NotFoundHandler,
        default_handler_args=dict(handler_args, routes=[path for path, _ in ROUTES]),
        log_function=log_request)
    # The handlers enforce the limit themselves, from the headers or while streaming, so
    # they can answer in the envelope; tornado's own limit would cut in first with a bare
    # "400 Bad Request", so it is lifted.
    gate = ConnectionGate("http", service.status, getattr(service, "allow_ips", ()),
                          int(_get(settings, MAX_CONNECTIONS)))
    idle = float(_get(settings, IDLE_TIMEOUT)) or NEVER  # tornado reads 0/None as 3600
    body = float(_get(settings, BODY_TIMEOUT)) or None
    server = CountingHTTPServer(application, status=service.status, gate=gate,
                                max_body_size=sys.maxsize, idle_connection_timeout=idle,
                                body_timeout=body)
    server.use_fast_path(service, limit, idle, body)
    return server
