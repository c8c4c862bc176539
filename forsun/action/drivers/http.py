"""The ``http`` action: one request with Tornado's async client.

Params: ``url`` (required), ``method`` (get, post, put, delete, head; also patch and options;
default GET), ``body``, ``header_NAME`` (sent as header NAME), ``auth_username``,
``auth_password``, ``auth_mode`` (only basic, the one Tornado's client speaks),
``user_agent`` (default setting ACTION_HTTP_USER_AGENT, else ``forsun/<version>``),
``connect_timeout`` (default setting ACTION_HTTP_CONNECT_TIMEOUT, 5 s) and ``request_timeout``
(60 s; setting ACTION_HTTP_REQUEST_TIMEOUT caps it). The fire's timestamp is sent as
``X-FORSUN-TIMESTAMP``.

Outcome: 2xx and 3xx succeed; a 5xx answer, a refused or dropped connection and a timeout
raise ActionExecuteRetry; a 4xx answer or a request that cannot be built (bad URL or method) is
final. One client per IOLoop, created on first use: at most ACTION_HTTP_MAX_CLIENTS requests
run at once, the others queue inside it (a queued request times out like a slow one). Tornado's
simple client opens a connection per request, so there is no idle connection to close.
"""

import ssl
from typing import Dict, Optional
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from ... import config
from ...error import ActionExecuteRetry
from ...version import version
from ..action import Action, ExecuteActionError
from ..params import required, seconds

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
BODY_METHODS = ("POST", "PUT", "PATCH")
HEADER_PREFIX = "header_"
DEFAULT_REQUEST_TIMEOUT = 60.0

_client: Optional[AsyncHTTPClient] = None


def describe_url(url: str) -> str:
    """The URL without credentials or query string, safe to write into the log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = ":%d" % parts.port if parts.port else ""
    except ValueError:
        return "an invalid URL"
    return "%s://%s%s%s" % (parts.scheme, host, port, parts.path)


def client() -> AsyncHTTPClient:
    """The action's own client (not Tornado's shared one, whose max_clients the first caller
    would fix for everybody), made again if the IOLoop it belongs to was replaced."""
    global _client
    if _client is None or _client.io_loop is not IOLoop.current():
        _client = AsyncHTTPClient(force_instance=True,
                                  max_clients=int(config.get("ACTION_HTTP_MAX_CLIENTS")))
    return _client


class HttpAction(Action):
    async def execute(self, *args, **kwargs) -> None:
        request = self.build_request()
        target = "%s %s" % (request.method, describe_url(request.url))
        try:
            response = await client().fetch(request, raise_error=False)
        except HTTPClientError as e:  # only 599s come here with raise_error=False
            raise ActionExecuteRetry("%s: %s" % (target, e.message or e)) from None
        except ssl.SSLCertVerificationError as e:
            raise ExecuteActionError("%s: %s" % (target, e.verify_message or e)) from None
        except (OSError, StreamClosedError) as e:
            raise ActionExecuteRetry("%s: %s" % (target, str(e) or type(e).__name__)) from None
        if response.code >= 500:
            raise ActionExecuteRetry("%s: HTTP %d %s" % (target, response.code, response.reason))
        if response.code >= 400:
            raise ExecuteActionError("%s: HTTP %d %s" % (target, response.code, response.reason))

    def build_request(self) -> HTTPRequest:
        """The request the params describe; a param that cannot work is a final failure."""
        params = self.params
        url = required(params, "url").strip()
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise ExecuteActionError("param 'url' must be an http:// or https:// URL, got %s"
                                     % describe_url(url))
        method = (params.get("method") or "GET").strip().upper()
        if method not in METHODS:
            raise ExecuteActionError("param 'method' must be one of %s"
                                     % ", ".join(m.lower() for m in METHODS))
        auth_username = params.get("auth_username") or None
        auth_mode = (params.get("auth_mode") or "basic").strip().lower()
        if auth_mode != "basic":
            raise ExecuteActionError("param 'auth_mode' must be basic")
        body = params.get("body")
        if body is None and method in BODY_METHODS:
            body = ""
        headers: Dict[str, str] = {}
        for name, value in params.items():
            if name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX):
                headers[name[len(HEADER_PREFIX):]] = value
        headers["X-FORSUN-TIMESTAMP"] = str(self.ts)
        return HTTPRequest(
            url, method=method, headers=headers, body=body,
            auth_username=auth_username,
            auth_password=params.get("auth_password", "") if auth_username else None,
            auth_mode=auth_mode if auth_username else None,
            user_agent=(params.get("user_agent") or config.get("ACTION_HTTP_USER_AGENT")
                        or "forsun/%s" % version),
            connect_timeout=seconds(params, "connect_timeout",
                                    float(config.get("ACTION_HTTP_CONNECT_TIMEOUT"))),
            request_timeout=min(seconds(params, "request_timeout", DEFAULT_REQUEST_TIMEOUT),
                                float(config.get("ACTION_HTTP_REQUEST_TIMEOUT"))),
            allow_nonstandard_methods=body is not None and method not in BODY_METHODS)

    @classmethod
    async def uninit(cls) -> None:
        global _client
        if _client is not None:
            _client.close()
            _client = None
