"""Who may talk to forsund: the address allow-list and connection limit checked at accept
(both servers), and the HTTP API's bearer token.

- ``ALLOW_IPS``: CIDRs (``127.0.0.1/32;10.0.0.0/8;::1``), ``;``-separated; empty = any
  address. A connection from another address is closed as soon as it is accepted, before a
  byte is read, by the Thrift and the HTTP server alike.
- ``AUTH_TOKEN``: when set, every HTTP request needs ``Authorization: Bearer <token>``;
  without it (or with another token) the answer is HTTP 401 with the JSON envelope. The
  comparison is constant-time. The Thrift protocol has no place for a token: protect the
  Thrift port with ``BIND_ADDRESS`` and ``ALLOW_IPS``.

:class:`ConnectionGate` also enforces each server's maximum number of open connections, so
both refusals are logged and counted (``forsun_connections_refused_total``) the same way.
"""

import hashlib
import hmac
import ipaddress
import logging
import time
from typing import Any, Dict, Iterable, List, Optional, Union

from .. import config
from ..error import ConfigError

log = logging.getLogger("forsun")

AUTH_TOKEN = config.define(
    "AUTH_TOKEN", "",
    "shared secret of the HTTP API: requests need 'Authorization: Bearer <token>'; "
    "empty = no token needed")
ALLOW_IPS = config.define(
    "ALLOW_IPS", [],
    "CIDRs allowed to connect to the Thrift and HTTP servers, ';'-separated; empty = any")

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# A refused connection is logged at most once per this many seconds per (server, reason),
# with the number refused meanwhile: a scan or a flood does not flood the log.
REFUSAL_LOG_SECONDS = 10.0


def parse_networks(entries: Iterable[str]) -> List[Network]:
    """``ALLOW_IPS`` entries as networks; a bare address is a /32 (or /128)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as e:
            raise ConfigError("invalid ALLOW_IPS entry %r: %s (use CIDRs like 127.0.0.1/32 "
                              "or 10.0.0.0/8, ';'-separated)" % (entry, e)) from None
    return networks


def peer_ip(address: Any) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    """The IP of an accepted connection's address; IPv4-mapped IPv6 as IPv4; None for a
    Unix socket."""
    if not isinstance(address, tuple) or not address:
        return None
    try:
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ConnectionGate:
    """Decides at accept whether a connection of ``server`` ("thrift", "http") may stay."""

    def __init__(self, server: str, status: Any, networks: Iterable[Network] = (),
                 max_connections: int = 0):
        self.server = server
        self.status = status
        self.networks = list(networks)
        self.max_connections = max(0, int(max_connections))
        self._refused: Dict[str, int] = {}
        self._logged_at: Dict[str, float] = {}

    def allows_address(self, address: Any) -> bool:
        if not self.networks:
            return True
        ip = peer_ip(address)
        if ip is None:
            return True  # a Unix socket: guarded by its file permissions
        return any(ip.version == network.version and ip in network for network in self.networks)

    def admit(self, address: Any, open_now: int) -> bool:
        """True if the connection may be served; otherwise logs, counts, and the caller
        closes it. ``open_now``: connections the server has open, this one not counted."""
        if not self.allows_address(address):
            self._refuse("address", "%s connection from %s refused: not in ALLOW_IPS"
                         % (self.server, _format(address)))
            return False
        if self.max_connections and open_now >= self.max_connections:
            self._refuse("max_connections", "%s connection from %s refused: %d connections "
                         "open, the limit (%s_MAX_CONNECTIONS)"
                         % (self.server, _format(address), open_now, self.server.upper()))
            return False
        return True

    def _refuse(self, reason: str, message: str) -> None:
        if self.status is not None:
            self.status.connection_refused(self.server, reason)
        self._refused[reason] = self._refused.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
            count = self._refused.pop(reason)
            self._logged_at[reason] = now
            log.warning("%s%s", message,
                        " (%d refused in the last %.0f s)" % (count, REFUSAL_LOG_SECONDS)
                        if count > 1 else "")


class BearerToken:
    """The HTTP API's ``AUTH_TOKEN`` check; an empty token lets every request through."""

    def __init__(self, token: str):
        self.enabled = bool(token)
        self._digest = hashlib.sha256(token.encode("utf-8")).digest()

    def problem(self, authorization: Optional[str]) -> Optional[str]:
        """None if ``authorization`` (the header's value) carries the token; else what is
        wrong, for the 401 answer. Both sides are hashed first, so the constant-time
        comparison does not even reveal the token's length."""
        if not self.enabled:
            return None
        if not authorization:
            return "authentication required: send the header 'Authorization: Bearer <token>'"
        scheme, _, given = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "authentication required: the Authorization header must be " \
                   "'Bearer <token>'"
        digest = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
        if not hmac.compare_digest(digest, self._digest):
            return "the bearer token is not valid"
        return None


def _format(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return "%s:%s" % address[:2]
    return str(address) or "unix socket"
