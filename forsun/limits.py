"""Limits that keep one client from exhausting forsund, as settings (docs/operations.md).

Defined here, enforced where the data is:

- ``MAX_PLANS`` (core, :meth:`forsun.forsun.Forsun.create_plan`): a plan with a new key is
  refused with error 1004 once the store holds this many; replacing a plan is allowed.
- ``MAX_PARAMS_BYTES`` (plan validation, :mod:`forsun.plan`): the sum of the params' name and
  value lengths; larger params are error 1007.
- ``THRIFT_MAX_CONNECTIONS``, ``THRIFT_MAX_MESSAGE_BYTES``, ``THRIFT_IDLE_TIMEOUT``: the
  Thrift server (:mod:`forsun.servers.thrift.gate`, built by :mod:`forsun.service`).
- The HTTP server's limits live beside it in :mod:`forsun.servers.http.server`.

Each is off when 0, except the message and params sizes, which always apply.
"""

from . import config

MAX_PLANS = config.define(
    "MAX_PLANS", 0,
    "plans the store may hold; creating one more (a new key) is refused with error 1004; "
    "0 = no limit")
MAX_PARAMS_BYTES = config.define(
    "MAX_PARAMS_BYTES", 64 * 1024,
    "largest params of a plan: the sum of the names' and values' lengths (error 1007)")
THRIFT_MAX_CONNECTIONS = config.define(
    "THRIFT_MAX_CONNECTIONS", 1000,
    "Thrift connections open at once; more are closed at accept; 0 = no limit")
THRIFT_MAX_MESSAGE_BYTES = config.define(
    "THRIFT_MAX_MESSAGE_BYTES", 16 * 1024 * 1024,
    "largest Thrift request; a client sending a larger one is disconnected")
THRIFT_IDLE_TIMEOUT = config.define(
    "THRIFT_IDLE_TIMEOUT", 3600.0,
    "seconds a Thrift connection may stay without a complete request (idle or sending "
    "slowly) before it is closed; 0 = never")


def max_params_bytes() -> int:
    """The params limit of the running daemon's settings."""
    return int(config.get(MAX_PARAMS_BYTES.name, MAX_PARAMS_BYTES.default))
