"""The HTTP/JSON API of SPEC section 3 (``forsund --http HOST:PORT``).

``server`` builds the tornado server, ``base`` holds what every route shares (the envelope,
the body limit, counters), ``handlers`` the routes, ``bodies`` the translation of request
bodies and query strings, ``openapi`` the API's OpenAPI document.
"""

from .server import make_http_server

__all__ = ["make_http_server"]
