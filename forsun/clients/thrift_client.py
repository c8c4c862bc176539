"""The blocking client, on thrift's socket transport and the generated ``Forsun.Client``."""

from typing import Any, Dict, List, Optional

from thrift.Thrift import TApplicationException
from thrift.protocol.TBinaryProtocol import TBinaryProtocolAccelerated
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport, TFramedTransport

from forsun.thriftapi import Forsun, ttypes


class ThriftClient:
    """Connects on the first call. A call that fails on the connection itself (timeout, reset,
    garbled reply) drops it and raises; the next call opens a new one. ``timeout`` is in
    seconds; ``framed`` speaks framed transport instead of the old plain stream."""

    def __init__(self, port: int = 6458, host: str = "127.0.0.1",
                 timeout: Optional[float] = None, framed: bool = False):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.framed = framed
        self._transport = None
        self._client: Optional[Forsun.Client] = None

    def _connect(self) -> Forsun.Client:
        socket = TSocket(self.host, self.port)
        if self.timeout is not None:
            socket.setTimeout(self.timeout * 1000)
        transport = TFramedTransport(socket) if self.framed else TBufferedTransport(socket)
        transport.open()
        self._transport = transport
        self._client = Forsun.Client(TBinaryProtocolAccelerated(transport))
        return self._client

    def _call(self, name: str, *args: Any) -> Any:
        client = self._client or self._connect()
        try:
            return getattr(client, name)(*args)
        except (ttypes.ForsunPlanError, TApplicationException):
            raise
        except Exception:
            # The request or reply may be half sent or half read: the stream is out of step.
            self.close()
            raise

    def ping(self) -> int:
        return self._call("ping")

    def create(self, key: str, second: int, minute: int = -1, hour: int = -1, day: int = -1,
               month: int = -1, week: int = -1, action: str = "shell",
               params: Optional[Dict[str, str]] = None) -> ttypes.ForsunPlan:
        return self._call("create", key, second, minute, hour, day, month, week, action,
                          params or {})

    def create_timeout(self, key: str, second: int, minute: int = -1, hour: int = -1,
                       day: int = -1, month: int = -1, week: int = -1, count: int = 1,
                       action: str = "shell",
                       params: Optional[Dict[str, str]] = None) -> ttypes.ForsunPlan:
        return self._call("createTimeout", key, second, minute, hour, day, month, week, count,
                          action, params or {})

    def remove(self, key: str) -> ttypes.ForsunPlan:
        return self._call("remove", key)

    def get(self, key: str) -> ttypes.ForsunPlan:
        return self._call("get", key)

    def get_current(self) -> List[ttypes.ForsunPlan]:
        return self._call("getCurrent")

    def get_time(self, timestamp: int) -> List[ttypes.ForsunPlan]:
        return self._call("getTime", timestamp)

    def get_keys(self, prefix: str = "") -> List[str]:
        return self._call("getKeys", prefix)

    def forsun_call(self, key: str, ts: int, params: Dict[str, str]) -> None:
        return self._call("forsun_call", key, ts, params)

    def info(self) -> Dict[str, str]:
        return self._call("info")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        self._client = None

    def __enter__(self) -> "ThriftClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
