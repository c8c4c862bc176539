"""The HTTP server of the API: routes, the body limit and the connection counters.

It runs on forsund's IOLoop over the same core as the Thrift server, so both see the same
plans at once.
"""

import sys
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.web import Application

from ... import config
from ...status import ForsunStatus
from .base import NotFoundHandler, log_request
from .handlers import ROUTES

MAX_BODY_BYTES = config.define(
    "HTTP_MAX_BODY_BYTES", 1 << 20,
    "largest request body the HTTP API accepts; a larger one is refused (errcode 1007) "
    "without being read")


class CountingHTTPServer(HTTPServer):
    """Keeps http_connecting_count (open now) and http_connected_count (ever accepted)."""

    def initialize(self, *args: Any, status: ForsunStatus, **kwargs: Any) -> None:
        self.status = status
        super().initialize(*args, **kwargs)

    def handle_stream(self, stream: Any, address: Any) -> None:
        self.status.http_connecting_count += 1
        self.status.http_connected_count += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: Any) -> None:
        self.status.http_connecting_count -= 1
        super().on_close(server_conn)


def make_http_server(service: Any) -> HTTPServer:
    """The API server for ``service`` (a :class:`forsun.service.ForsunService`); the caller
    adds the listening sockets."""
    limit = int(service.settings.get(MAX_BODY_BYTES.name, MAX_BODY_BYTES.default))
    handler_args = {"service": service, "max_body_bytes": limit}
    application = Application(
        [(path, handler, handler_args) for path, handler in ROUTES],
        default_handler_class=NotFoundHandler,
        default_handler_args=dict(handler_args, routes=[path for path, _ in ROUTES]),
        log_function=log_request)
    # The handlers enforce the limit themselves, from the headers or while streaming, so
    # they can answer in the envelope; tornado's own limit would cut in first with a bare
    # "400 Bad Request", so it is lifted.
    return CountingHTTPServer(application, status=service.status, max_body_size=sys.maxsize)
