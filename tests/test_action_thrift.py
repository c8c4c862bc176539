"""The thrift action against a Forsun sink built on the thrift library's own socket transport
and generated Processor (unframed strict binary, like a 0.1.x server), not on our code."""

import asyncio
import socket
import threading
import time
from typing import Dict, List, Tuple

import pytest
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport

from conftest import free_port
from forsun.action.action import ExecuteActionError
from forsun.action.drivers import thrift as thrift_driver
from forsun.action.drivers.thrift import ThriftAction
from forsun.error import ActionExecuteRetry
from forsun.thriftapi import Forsun
from test_action_helpers import (action_pools, action_settings, black_hole,  # noqa: F401
                                 make_runner, plan, until)


class ThriftLibSink:
    """Serves Forsun.forsun_call, one thread per connection; records calls and wakes the
    test's loop on each. ``fail = True`` makes the handler raise."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.calls: List[Tuple[str, int, Dict[str, str]]] = []
        self.arrived = asyncio.Event()
        self.fail = False
        self.connections = 0
        self._clients: List[socket.socket] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = TSocket()
        transport.setHandle(conn)
        protocol = TBinaryProtocol(TBufferedTransport(transport))
        processor = Forsun.Processor(self)
        try:
            while True:
                processor.process(protocol, protocol)
        except Exception:
            conn.close()  # the client went away (or we closed it)

    def forsun_call(self, key: str, ts: int, params: Dict[str, str]) -> None:
        if self.fail:
            raise RuntimeError("sink refuses")
        self.calls.append((key, ts, params))
        self.loop.call_soon_threadsafe(self.arrived.set)

    async def wait(self, count: int, timeout: float = 10) -> List[Tuple[str, int, Dict]]:
        while len(self.calls) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), timeout)
        return self.calls

    def drop_clients(self) -> None:
        """Closes every client connection from the server side, as a restart would."""
        for conn in self._clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._clients = []

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.drop_clients()


@pytest.fixture
def thrift_sink(io_loop):
    async def make() -> ThriftLibSink:
        return ThriftLibSink()
    sink = io_loop.run_sync(make)
    yield sink
    sink.close()


def thrift(server_port: int, key: str = "plan:thrift", ts: int = 1700000000,
           **params: str) -> ThriftAction:
    params = dict(params, port=str(server_port))
    return ThriftAction(ts, plan(key, action="thrift", **params), "thrift", params)


async def test_sink_receives_key_ts_and_params_over_one_reused_connection(thrift_sink,
                                                                          action_settings,
                                                                          action_pools):
    await thrift(thrift_sink.port, key="k1", ts=1700000001, extra="a;b", unicode="é").execute()
    await thrift(thrift_sink.port, key="k2", ts=1700000002).execute()
    calls = await thrift_sink.wait(2)
    assert calls[0] == ("k1", 1700000001, {"extra": "a;b", "unicode": "é",
                                            "port": str(thrift_sink.port)})
    assert calls[1][:2] == ("k2", 1700000002)
    assert thrift_sink.connections == 1


async def test_dropped_connection_is_replaced_without_a_failed_fire(thrift_sink,
                                                                   action_settings,
                                                                   action_pools):
    action_settings.set("ACTION_IDLE_SECONDS", 0.3)
    await thrift(thrift_sink.port, key="before").execute()
    thrift_sink.drop_clients()
    pool = next(iter(thrift_driver._targets._targets.values()))
    await until(lambda: all(stream.closed() for stream, _ in pool._idle))
    await thrift(thrift_sink.port, key="after").execute()
    assert [call[0] for call in await thrift_sink.wait(2)] == ["before", "after"]
    assert thrift_sink.connections == 2
    await until(lambda: len(thrift_driver._targets) == 0)  # closed once idle


async def test_remote_exception_is_final_and_connection_failures_retry(thrift_sink,
                                                                       action_settings,
                                                                       action_pools,
                                                                       black_hole):
    thrift_sink.fail = True
    with pytest.raises(ExecuteActionError, match="remote exception"):
        await thrift(thrift_sink.port).execute()
    with pytest.raises(ActionExecuteRetry, match="refused|Connect"):
        await thrift(free_port()).execute()
    started = time.monotonic()
    with pytest.raises(ActionExecuteRetry, match="no answer in 0.3 s"):
        await thrift(black_hole.port, timeout="0.3").execute()
    assert time.monotonic() - started < 2
    thrift_sink.fail = False
    await thrift(thrift_sink.port, key="recovered").execute()
    assert (await thrift_sink.wait(1))[0][0] == "recovered"


async def test_max_connections_bounds_concurrent_calls(thrift_sink, action_settings,
                                                       action_pools):
    await asyncio.gather(*[thrift(thrift_sink.port, key="c%d" % i,
                                  max_connections="2").execute() for i in range(10)])
    assert sorted(call[0] for call in await thrift_sink.wait(10)) == sorted(
        "c%d" % i for i in range(10))
    assert thrift_sink.connections <= 2
