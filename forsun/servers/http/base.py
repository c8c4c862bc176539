"""What every route shares: the envelope, the body limit, errors and the request counters.

Every answer, errors included, is HTTP 200 with ``{"errcode", "errmsg", "data"}`` (SPEC
section 3): handlers return data through :meth:`BaseHandler.answer` or raise; a
:class:`forsun.error.ForsunError` keeps its code, tornado's own errors (unknown method, bad
query encoding) become 1007, anything unexpected becomes 1001 and is logged with its
traceback.

With ``AUTH_TOKEN`` set, a request without ``Authorization: Bearer <token>`` is answered
HTTP 401 (the envelope, errcode 1007) from its headers, before its body is read.

Bodies are streamed (``stream_request_body``) so the limit is enforced before a byte of an
oversized body is read: a ``Content-Length`` above ``HTTP_MAX_BODY_BYTES`` is answered from
the headers alone, a chunked body as soon as it passes the limit. Either way the connection
is closed after the answer, since the rest of the body is never read.
"""

import json
import logging
from typing import Any, Optional, Sequence

from tornado.http1connection import is_transfer_encoding_chunked
from tornado.httputil import HTTPInputError
from tornado.web import HTTPError, RequestHandler, stream_request_body

from ...error import ForsunError, InvalidArgumentError, UnknownError

log = logging.getLogger("forsun")

# An errmsg quotes user input at times (an unknown field, a bad value); cap what we echo.
MAX_ERRMSG_CHARS = 500

ROUTE_METHODS = ("GET", "PUT", "POST", "DELETE")
CONTENT_TYPE = "application/json; charset=UTF-8"


def success_envelope(data_json: str) -> str:
    """The envelope of a success whose data is already JSON; the same text as
    ``json.dumps({"errcode": 0, "errmsg": "", "data": data})``.

    Envelopes are ASCII JSON (json.dumps' default): text read from 0.1.x dump files may hold
    lone surrogates, which ``\\u`` escapes carry but UTF-8 cannot."""
    return '{"errcode": 0, "errmsg": "", "data": ' + data_json + "}"


def error_envelope(error: ForsunError) -> str:
    """The envelope of a failure, its errmsg cut at :data:`MAX_ERRMSG_CHARS`."""
    message = error.message
    if len(message) > MAX_ERRMSG_CHARS:
        message = message[:MAX_ERRMSG_CHARS] + "..."
    return json.dumps({"errcode": error.code, "errmsg": message, "data": {}})


def unexpected_error(error: Any) -> ForsunError:
    """What a failure that is no ForsunError is answered with (1001)."""
    return UnknownError("internal error: %s" % error)


@stream_request_body
class BaseHandler(RequestHandler):
    def initialize(self, service: Any, max_body_bytes: int) -> None:
        self.service = service
        self.forsun = service.forsun
        self.max_body_bytes = max_body_bytes
        self.body = bytearray()
        self.errcode = 0
        self._in_flight = True
        service.status.http_requesting_count += 1

    # -- the body ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Refuses a request without the auth token, and a body that is too large or
        framed in a way tornado would refuse, from its headers, so it is answered in the
        envelope and the body is never read."""
        headers = self.request.headers
        problem = self.service.auth.problem(headers.get("Authorization"))
        if problem:
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer realm="forsun"')
            self._refuse_body(problem)
            return
        try:
            is_transfer_encoding_chunked(headers)
            length = _content_length(headers.get("Content-Length"))
        except HTTPInputError as e:
            self._refuse_body("the request's framing is invalid: %s" % e)
            return
        if length is not None and length > self.max_body_bytes:
            self._refuse_body("the body is %d bytes; this server accepts at most %d "
                              "(HTTP_MAX_BODY_BYTES)" % (length, self.max_body_bytes))

    def data_received(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > self.max_body_bytes:
            self.body = bytearray()
            self._refuse_body("the body is larger than %d bytes (HTTP_MAX_BODY_BYTES)"
                              % self.max_body_bytes)

    def _refuse_body(self, message: str) -> None:
        """Answers now and closes the connection without reading the rest of the body.

        Tornado closes a connection whose request was answered before its body was read;
        dropping the framing headers tells it there is nothing left to read meanwhile
        (otherwise it would read on, or append its own bare "400 Bad Request").
        """
        headers = self.request.headers
        if "Content-Length" in headers or "Transfer-Encoding" in headers:
            for name in ("Content-Length", "Transfer-Encoding"):
                headers.pop(name, None)
            self.set_header("Connection", "close")
        self.answer_error(InvalidArgumentError(message))

    # -- answers -------------------------------------------------------------------------

    def answer(self, data: Any) -> None:
        self.answer_encoded(json.dumps(data))

    def answer_encoded(self, data_json: str) -> None:
        """:meth:`answer` for data already encoded as JSON (bulk answers are encoded a
        chunk at a time)."""
        self._finish_envelope(0, success_envelope(data_json))

    def answer_error(self, error: ForsunError) -> None:
        self._finish_envelope(error.code, error_envelope(error))

    def _finish_envelope(self, errcode: int, envelope: str) -> None:
        self.errcode = errcode
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(envelope.encode("ascii"))

    def compute_etag(self) -> None:
        """No ETag: tornado would answer a matching If-None-Match with a bodiless 304."""
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Turns every failure tornado reports into the envelope, with HTTP status 200."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        self.set_status(200)
        if isinstance(error, ForsunError):
            self.answer_error(error)
        elif status_code == 405:
            self.answer_error(self.routing_error())
        elif isinstance(error, HTTPError):
            self.answer_error(InvalidArgumentError(error.log_message % error.args
                                                   if error.log_message else error.reason))
        else:
            self.answer_error(unexpected_error(error or status_code))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Errors a client caused are answered, not logged as server failures."""
        if isinstance(value, (ForsunError, HTTPError)):
            return
        log.error("http %s %s failed", self.request.method, self.request.uri,
                  exc_info=(typ, value, tb))

    def routing_error(self) -> ForsunError:
        """The answer to a method this route lacks."""
        allowed = [method for method in ROUTE_METHODS
                   if getattr(type(self), method.lower()) is not getattr(RequestHandler,
                                                                         method.lower())]
        return InvalidArgumentError("method %s is not allowed on %s; use %s"
                                    % (self.request.method, self.request.path,
                                       " or ".join(allowed)))

    # -- counters (SPEC section 6) ---------------------------------------------------------

    def on_finish(self) -> None:
        status = self.service.status
        self._settle()
        status.http_requested_count += 1
        if self.errcode:
            status.http_requested_error_count += 1

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._settle()

    def _settle(self) -> None:
        if self._in_flight:
            self._in_flight = False
            self.service.status.http_requesting_count -= 1


class NotFoundHandler(BaseHandler):
    """Any path that is not a route: the envelope with 1007 naming the routes."""

    def initialize(self, service: Any, max_body_bytes: int,  # type: ignore[override]
                   routes: Sequence[str] = ()) -> None:
        super().initialize(service, max_body_bytes)
        self.routes = routes

    def prepare(self) -> None:
        super().prepare()
        if not self._finished:
            raise self.routing_error()

    def routing_error(self) -> ForsunError:
        return InvalidArgumentError("there is no route %s; the routes are %s"
                                    % (self.request.path, ", ".join(self.routes)))


def log_request(handler: RequestHandler) -> None:
    """Access log of tornado's requests (see :func:`log_answer`)."""
    request = handler.request
    log_answer(request.method, request.uri, getattr(handler, "errcode", 0),
               request.request_time())


def log_answer(method: Optional[str], uri: Optional[str], errcode: int,
               seconds: float) -> None:
    """Access log: answered errors at INFO (with their code), the rest at DEBUG."""
    if errcode:
        log.info("http %s %s errcode %d %.1fms", method, uri, errcode, 1000 * seconds)
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("http %s %s %.1fms", method, uri, 1000 * seconds)


def _content_length(value: Optional[str]) -> Optional[int]:
    """The declared length, checked as tornado's connection will check it."""
    if value is None:
        return None
    pieces = {piece.strip() for piece in value.split(",")}
    if len(pieces) != 1:
        raise HTTPInputError("unequal Content-Length headers %r" % value)
    text = pieces.pop()
    if not text.isdigit() or not text.isascii():
        raise HTTPInputError("Content-Length %r is not a number" % value)
    return int(text)
