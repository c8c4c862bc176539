"""The Thrift API (SPEC section 2): ``ThriftServer`` serves any handler with the IDL methods."""

from .server import ThriftServer

__all__ = ["ThriftServer"]
