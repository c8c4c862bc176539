"""The Python clients against an in-process ThriftServer: lazy connect, reconnect, timeouts
and the Tornado client's stream pool. Wire behaviour is covered by test_thrift_server.py."""

import asyncio
import socket
from typing import Any, Callable

import pytest
from thrift.transport.TTransport import TTransportException
from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.locks import Condition, Event
from tornado.netutil import bind_sockets

from forsun.clients import ForsunPlan, ForsunPlanError, ThriftClient, TorThriftClient
from forsun.error import NotFoundPlanError
from forsun.servers.thrift import ThriftServer


class WatchedStatus:
    """Server counters a test can await, instead of polling them."""

    def __init__(self):
        self.changed = Condition()
        self.connecting_count = self.connected_count = 0
        self.requesting_count = self.requested_count = self.requested_error_count = 0

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name != "changed":
            self.changed.notify_all()

    async def wait_until(self, predicate: Callable[["WatchedStatus"], bool]) -> None:
        deadline = IOLoop.current().time() + 3
        while not predicate(self):
            if not await self.changed.wait(deadline):
                raise AssertionError("status never matched: %r" % vars(self))


class Handler:
    """Answers ping and get; "slow" answers late, "hang" only once ``release`` is set."""

    def __init__(self):
        self.in_flight = self.max_in_flight = 0
        self.release = Event()

    async def ping(self) -> int:
        return 0

    async def get(self, key: str):
        if key == "missing":
            raise NotFoundPlanError()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if key == "slow":
                await gen.sleep(0.02)
            if key == "hang":
                await self.release.wait()
        finally:
            self.in_flight -= 1
        return ForsunPlan(is_time_out=False, key=key, second=1, next_time=1)


@pytest.fixture
def handler():
    handler = Handler()
    yield handler
    handler.release.set()


@pytest.fixture
def status() -> WatchedStatus:
    return WatchedStatus()


@pytest.fixture
def make_server(io_loop, handler, status):
    servers = []

    def make(**options: Any) -> int:
        server = ThriftServer(handler, status, **options)
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        servers.append(server)
        return sockets[0].getsockname()[1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_blocking(function: Callable[[], Any]) -> Any:
    return await IOLoop.current().run_in_executor(None, function)


@pytest.mark.gen_test
async def test_blocking_client_connects_lazily(closed_port):
    client = ThriftClient(closed_port, timeout=1)
    with pytest.raises(TTransportException):
        await run_blocking(client.ping)


@pytest.mark.gen_test
async def test_blocking_client_reconnects_after_the_server_dropped_it(make_server, status):
    port = make_server(idle_timeout=0.1)
    client = ThriftClient(port, timeout=2)
    assert await run_blocking(client.ping) == 0
    await status.wait_until(lambda s: s.connected_count == 1 and s.connecting_count == 0)
    with pytest.raises(TTransportException):
        await run_blocking(client.ping)
    assert await run_blocking(client.ping) == 0
    assert status.connected_count == 2
    client.close()


@pytest.mark.gen_test
async def test_blocking_client_timeout_drops_the_connection(make_server, handler, status):
    port = make_server()
    with ThriftClient(port, timeout=0.2) as client:
        with pytest.raises(TTransportException):
            await run_blocking(lambda: client.get("hang"))
        assert await run_blocking(client.ping) == 0
    assert status.connected_count == 2
    # The server sees the dropped connection once the hanging call returns.
    handler.release.set()
    await status.wait_until(lambda s: s.connecting_count == 0)


@pytest.mark.gen_test
async def test_blocking_client_keeps_the_connection_after_a_plan_error(make_server, status):
    port = make_server()
    with ThriftClient(port) as client:
        with pytest.raises(ForsunPlanError):
            await run_blocking(lambda: client.get("missing"))
        assert await run_blocking(client.ping) == 0
    assert status.connected_count == 1


@pytest.mark.gen_test
async def test_tornado_client_pool_opens_at_most_max_stream(make_server, handler, status):
    port = make_server()
    client = TorThriftClient(port, max_stream=3)
    plans = await gen.multi([client.get("slow") for _ in range(20)])
    assert [plan.key for plan in plans] == ["slow"] * 20
    assert (status.connected_count, handler.max_in_flight) == (3, 3)
    client.close()
    await status.wait_until(lambda s: s.connecting_count == 0)


@pytest.mark.gen_test
async def test_tornado_client_replaces_streams_the_server_closed(make_server, status):
    port = make_server(idle_timeout=0.1)
    client = TorThriftClient(port, max_stream=1)
    assert await client.ping() == 0
    await status.wait_until(lambda s: s.connected_count == 1 and s.connecting_count == 0)
    assert await client.ping() == 0
    assert status.connected_count == 2
    client.close()


@pytest.mark.gen_test
async def test_tornado_client_cancelled_call_frees_its_stream(make_server, status):
    port = make_server()
    client = TorThriftClient(port, max_stream=1)
    hanging = asyncio.ensure_future(client.get("hang"))
    await status.wait_until(lambda s: s.requesting_count == 1)
    hanging.cancel()
    assert await client.ping() == 0
    assert status.connected_count == 2
    client.close()


@pytest.mark.gen_test
async def test_tornado_client_connection_refused(closed_port):
    with pytest.raises((StreamClosedError, ConnectionRefusedError)):
        await TorThriftClient(closed_port).ping()
