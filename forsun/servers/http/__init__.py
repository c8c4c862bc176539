"""The HTTP/JSON API of SPEC section 3 (``forsund --http HOST:PORT``).

``server`` builds the tornado server, ``base`` holds what every route shares (the envelope,
the body limit, counters), ``handlers`` the routes, ``bodies`` the translation of request
bodies and query strings, ``creates`` the creating of a ``/v1/plan`` body's plans (bulk
crontab bodies a chunk at a time), ``fastpath`` the light path plain creates take before
tornado's stack, ``openapi`` the API's OpenAPI document.
"""

from .server import make_http_server

__all__ = ["make_http_server"]
