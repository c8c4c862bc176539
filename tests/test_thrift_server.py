"""ThriftServer against a fake handler: every method through both clients, framing, pipelining,
concurrency, hostile input, limits and counters. Client-only behaviour is in test_clients.py.

The fake handler echoes its arguments into plans, so these tests check the wire and the
dispatcher, not the forsun core. Every server test runs twice: with each call in a task of
its own, and with calls run inline (as for the mem store). The tests at the end put the real
handler, core and mem store behind the server, for pipelined runs of creates answered
together (``ForsunHandler.call_many``).
"""

import asyncio
import logging
import struct
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from thrift.Thrift import TApplicationException, TMessageType
from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.locks import Condition, Event
from tornado.netutil import bind_sockets
from tornado.tcpclient import TCPClient

from forsun.clients import ThriftClient, TorThriftClient
from forsun.error import ForsunError, NotFoundPlanError
from forsun.servers.thrift import ThriftServer
from forsun.servers.thrift import wire
from forsun.servers.thrift.wire import MessageScanner, decoding_protocol, encode_message
from forsun.thriftapi import Forsun, ttypes

LIMIT = 256 * 1024
NEXT_TIME = 1700000000


def plan(key: str, second: int = 1, minute: int = -1, hour: int = -1, day: int = -1,
         month: int = -1, week: int = -1, action: str = "shell",
         params: Optional[Dict[str, str]] = None, **fields: Any) -> ttypes.ForsunPlan:
    return ttypes.ForsunPlan(is_time_out=fields.pop("is_time_out", False), key=key,
                             second=second, minute=minute, hour=hour, day=day, month=month,
                             week=week, next_time=fields.pop("next_time", NEXT_TIME),
                             action=action, params=params or {}, **fields)


class FakeHandler:
    """Echoes arguments back. Keys with a meaning: "missing" raises a plan error, "boom" a
    plain exception, "slow" answers late, "hold" waits until the test sets ``release``."""

    def __init__(self):
        self.calls: List[Tuple[str, tuple]] = []
        self.hold_until = 1
        self.held = 0
        self.all_held = Event()
        self.release = Event()

    @staticmethod
    def _check(key: str) -> None:
        if key == "missing":
            raise NotFoundPlanError("no plan %s" % key)
        if key == "boom":
            raise RuntimeError("boom")

    async def ping(self) -> int:
        return 0

    async def create(self, key, second, minute, hour, day, month, week, action, params):
        self._check(key)
        return plan(key, second, minute, hour, day, month, week, action, params)

    async def createTimeout(self, key, second, minute, hour, day, month, week, count, action,
                            params):
        self._check(key)
        return plan(key, second, minute, hour, day, month, week, action, params,
                    is_time_out=True, count=count)

    async def remove(self, key):
        self._check(key)
        return plan(key)

    async def get(self, key):
        self._check(key)
        if key == "slow":
            await gen.sleep(0.05)
        if key in ("cancel", "cancel-caught"):  # cancels its own task once it has one
            await asyncio.sleep(0)
            asyncio.current_task().cancel()
            try:
                await gen.sleep(1)
            except asyncio.CancelledError:
                if key == "cancel":
                    raise
        if key == "hold":
            self.held += 1
            if self.held >= self.hold_until:
                self.all_held.set()
            await self.release.wait()
        return plan(key)

    async def getCurrent(self):
        return [plan("current1"), plan("current2")]

    async def getTime(self, timestamp):
        return [plan("at", next_time=timestamp)]

    async def getKeys(self, prefix):
        if prefix == "forsun-error":
            raise ForsunError("no keys today", 1001)
        return [prefix + "1", prefix + "2"]

    async def forsun_call(self, key, ts, params):
        self.calls.append(("forsun_call", (key, ts, params)))

    async def info(self):
        return {"name": "fake"}


# (client method, arguments, expected result): every IDL method, with and without defaults.
CALLS = [
    ("ping", (), 0),
    ("create", ("c", 1, 2, 3, 4, 5, 6, "http", {"url": "u"}),
     plan("c", 1, 2, 3, 4, 5, 6, "http", {"url": "u"})),
    ("create", ("d", 5), plan("d", 5)),
    ("create_timeout", ("t", 1, 2, 3, 4, 5, 6, 3, "redis", {"k": "v"}),
     plan("t", 1, 2, 3, 4, 5, 6, "redis", {"k": "v"}, is_time_out=True, count=3)),
    ("create_timeout", ("u", 9), plan("u", 9, is_time_out=True, count=1)),
    ("remove", ("r",), plan("r")),
    ("get", ("g",), plan("g")),
    ("get_current", (), [plan("current1"), plan("current2")]),
    ("get_time", (NEXT_TIME + 5,), [plan("at", next_time=NEXT_TIME + 5)]),
    ("get_keys", ("pre",), ["pre1", "pre2"]),
    ("forsun_call", ("f", NEXT_TIME, {"a": "b"}), None),
    ("info", (), {"name": "fake"}),
]


class LogWatch(logging.Handler):
    """Collects the server's log records and lets a test await one instead of sleeping."""

    def __init__(self):
        super().__init__()
        self.records: List[logging.LogRecord] = []
        self.changed = Condition()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.changed.notify_all()

    def matching(self, text: str, level: int = logging.WARNING) -> List[logging.LogRecord]:
        return [r for r in self.records if r.levelno == level and text in r.getMessage()]

    async def wait_for(self, text: str, level: int = logging.WARNING,
                       timeout: float = 3) -> logging.LogRecord:
        deadline = IOLoop.current().time() + timeout
        while not self.matching(text, level):
            if not await self.changed.wait(deadline):
                raise AssertionError("no log record containing %r" % text)
        return self.matching(text, level)[0]


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@pytest.fixture
def status() -> SimpleNamespace:
    return SimpleNamespace(connecting_count=0, connected_count=0, requesting_count=0,
                           requested_count=0, requested_error_count=0)


@pytest.fixture(params=[False, True], ids=["tasks", "inline"])
def make_server(request, io_loop, handler, status) -> Callable[..., int]:
    """Starts ThriftServers on free ports with the given options; returns the port."""
    servers = []

    def make(**options: Any) -> int:
        options.setdefault("max_message_bytes", LIMIT)
        options.setdefault("inline", request.param)
        server = ThriftServer(handler, status, **options)
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        servers.append(server)
        return sockets[0].getsockname()[1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def port(make_server) -> int:
    return make_server()


@pytest.fixture
def logs() -> LogWatch:
    logger = logging.getLogger("forsun.servers.thrift.server")
    watch = LogWatch()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(old_level)


async def run_blocking(function: Callable[[], Any]) -> Any:
    """Runs a blocking client in a thread so the loop keeps serving it."""
    return await IOLoop.current().run_in_executor(None, function)


async def connect(port: int) -> IOStream:
    return await TCPClient().connect("127.0.0.1", port)


def peer_of(stream: IOStream) -> str:
    return "127.0.0.1:%d" % stream.socket.getsockname()[1]


async def read_messages(stream: IOStream, count: int, framed: bool = False) -> List[bytes]:
    messages: List[bytes] = []
    if framed:
        for _ in range(count):
            size, = struct.unpack("!I", await stream.read_bytes(4))
            messages.append(await stream.read_bytes(size))
        return messages
    buffer = bytearray()
    scanner = MessageScanner(LIMIT)
    while len(messages) < count:
        end = scanner.scan(buffer)
        if end:
            messages.append(bytes(buffer[:end]))
            del buffer[:end]
        else:
            buffer += await stream.read_bytes(65536, partial=True)
    return messages


def decode_reply(message: bytes, result_cls: type) -> Tuple[str, int, Any]:
    """Returns (method name, seqid, result struct or TApplicationException)."""
    protocol = decoding_protocol(message, LIMIT)
    name, mtype, seqid = protocol.readMessageBegin()
    body = TApplicationException() if mtype == TMessageType.EXCEPTION else result_cls()
    body.read(protocol)
    return name, seqid, body


def call_message(name: str, seqid: int, args: Any, framed: bool = False) -> bytes:
    message = encode_message(name, TMessageType.CALL, seqid, args)
    return struct.pack("!I", len(message)) + message if framed else message


async def assert_closed_by_server(stream: IOStream) -> None:
    try:
        assert await stream.read_until_close() == b""
    except StreamClosedError:
        pass


@pytest.mark.gen_test
async def test_every_method_round_trips_through_the_blocking_client(port, handler):
    def calls():
        with ThriftClient(port) as client:
            return [getattr(client, name)(*args) for name, args, _ in CALLS]

    assert await run_blocking(calls) == [expected for _, _, expected in CALLS]
    assert handler.calls == [("forsun_call", ("f", NEXT_TIME, {"a": "b"}))]


@pytest.mark.gen_test
async def test_every_method_round_trips_through_the_tornado_client(port, handler):
    client = TorThriftClient(port)
    results = [await getattr(client, name)(*args) for name, args, _ in CALLS]
    assert results == [expected for _, _, expected in CALLS]
    assert handler.calls == [("forsun_call", ("f", NEXT_TIME, {"a": "b"}))]
    client.close()


@pytest.mark.gen_test
async def test_framed_client_round_trips(port, status):
    def calls():
        with ThriftClient(port, framed=True) as client:
            results = [getattr(client, name)(*args) for name, args, _ in CALLS]
            with pytest.raises(ttypes.ForsunPlanError) as error:
                client.get("missing")
            return results, error.value.code, client.ping()

    results, code, pong = await run_blocking(calls)
    assert results == [expected for _, _, expected in CALLS]
    assert (code, pong) == (1003, 0)
    assert status.connected_count == 1


@pytest.mark.gen_test
async def test_absent_optional_arguments_get_the_idl_defaults(port):
    stream = await connect(port)
    bare = Forsun.create_args(key="d", second=5, minute=None, hour=None, day=None, month=None,
                              week=None, action=None, params=None)
    await stream.write(call_message("create", 1, bare))
    _, _, result = decode_reply((await read_messages(stream, 1))[0], Forsun.create_result)
    assert result.success == plan("d", 5)
    stream.close()


@pytest.mark.gen_test
async def test_plan_error_arrives_with_code_and_message(port, status):
    def blocking():
        with ThriftClient(port) as client:
            with pytest.raises(ttypes.ForsunPlanError) as error:
                client.remove("missing")
            return error.value, client.ping()

    error, pong = await run_blocking(blocking)
    assert (error.code, error.message, pong) == (1003, "no plan missing", 0)

    client = TorThriftClient(port)
    with pytest.raises(ttypes.ForsunPlanError) as error:
        await client.create_timeout("missing", 1)
    assert (error.value.code, error.value.message) == (1003, "no plan missing")
    assert await client.ping() == 0
    assert status.connected_count == 2
    assert status.requested_error_count == 2
    client.close()


@pytest.mark.gen_test
@pytest.mark.parametrize("call, message", [
    (("get_keys", "forsun-error"), "no keys today"),
    (("get", "boom"), "boom"),
])
async def test_other_failures_become_internal_errors_and_keep_the_connection(
        port, status, logs, call, message):
    client = TorThriftClient(port, max_stream=1)
    with pytest.raises(TApplicationException) as error:
        await getattr(client, call[0])(call[1])
    assert (error.value.type, error.value.message) == (TApplicationException.INTERNAL_ERROR,
                                                       message)
    assert await client.ping() == 0
    assert status.connected_count == 1
    [record] = logs.matching("failed", logging.ERROR)
    assert record.exc_info is not None
    client.close()


@pytest.mark.gen_test
async def test_unknown_method_gets_an_application_exception(port):
    stream = await connect(port)
    await stream.write(call_message("nope", 7, Forsun.ping_args())
                       + call_message("ping", 8, Forsun.ping_args()))
    unknown, pong = await read_messages(stream, 2)
    name, seqid, error = decode_reply(unknown, Forsun.ping_result)
    assert (name, seqid, error.type) == ("nope", 7, TApplicationException.UNKNOWN_METHOD)
    assert decode_reply(pong, Forsun.ping_result)[2].success == 0
    stream.close()


@pytest.mark.gen_test
@pytest.mark.parametrize("framed", [False, True])
async def test_pipelined_requests_are_answered_in_order(port, framed):
    stream = await connect(port)
    await stream.write(call_message("get", 1, Forsun.get_args("slow"), framed)
                       + call_message("getKeys", 2, Forsun.getKeys_args("p"), framed)
                       + call_message("get", 3, Forsun.get_args("missing"), framed)
                       + call_message("ping", 4, Forsun.ping_args(), framed))
    replies = await read_messages(stream, 4, framed)
    slow = decode_reply(replies[0], Forsun.get_result)
    keys = decode_reply(replies[1], Forsun.getKeys_result)
    missing = decode_reply(replies[2], Forsun.get_result)
    pong = decode_reply(replies[3], Forsun.ping_result)
    assert [reply[:2] for reply in (slow, keys, missing, pong)] == [
        ("get", 1), ("getKeys", 2), ("get", 3), ("ping", 4)]
    assert slow[2].success.key == "slow"
    assert keys[2].success == ["p1", "p2"]
    assert missing[2].err.code == 1003
    assert pong[2].success == 0
    stream.close()


@pytest.mark.gen_test
async def test_a_cancelled_call_drops_its_connection(port, logs, status):
    stream = await connect(port)
    peer = peer_of(stream)
    await stream.write(call_message("ping", 1, Forsun.ping_args())
                       + call_message("get", 2, Forsun.get_args("cancel"))
                       + call_message("ping", 3, Forsun.ping_args()))
    [pong] = await read_messages(stream, 1)
    assert decode_reply(pong, Forsun.ping_result)[:2] == ("ping", 1)
    await assert_closed_by_server(stream)
    record = await logs.wait_for(peer, logging.INFO)
    assert "call cancelled" in record.getMessage()
    assert status.requesting_count == 0
    assert await TorThriftClient(port).ping() == 0


@pytest.mark.gen_test
async def test_a_call_that_survives_its_cancellation_is_answered(port):
    """The cancellation reaches the handler at its await, inline as in a task of its own."""
    client = TorThriftClient(port, max_stream=1)
    assert (await client.get("cancel-caught")).key == "cancel-caught"
    assert await client.ping() == 0
    client.close()


@pytest.mark.gen_test
@pytest.mark.parametrize("framed", [False, True])
async def test_calls_answered_before_bad_input_get_their_replies(port, logs, framed):
    stream = await connect(port)
    peer = peer_of(stream)
    await stream.write(call_message("ping", 1, Forsun.ping_args(), framed)
                       + call_message("getKeys", 2, Forsun.getKeys_args("p"), framed)
                       + BAD_INPUTS["garbage frame" if framed else "garbage"])
    replies = await read_messages(stream, 2, framed)
    assert decode_reply(replies[0], Forsun.ping_result)[:2] == ("ping", 1)
    assert decode_reply(replies[1], Forsun.getKeys_result)[2].success == ["p1", "p2"]
    await assert_closed_by_server(stream)
    await logs.wait_for(peer)


@pytest.mark.gen_test
async def test_fifty_concurrent_connections_are_served_at_once(port, handler, status):
    handler.hold_until = 50
    client = TorThriftClient(port, max_stream=50)
    calls = gen.multi([client.get("hold") for _ in range(50)])
    await handler.all_held.wait()
    assert (status.connecting_count, status.requesting_count) == (50, 50)
    handler.release.set()
    assert [p.key for p in await calls] == ["hold"] * 50
    assert (status.connected_count, status.requested_count, status.requesting_count) == (50, 50, 0)
    client.close()


@pytest.mark.gen_test
async def test_counters_follow_connections_and_requests(port, handler, status):
    client = TorThriftClient(port, max_stream=1)
    held = asyncio.ensure_future(client.get("hold"))
    await handler.all_held.wait()
    assert vars(status) == dict(connecting_count=1, connected_count=1, requesting_count=1,
                                requested_count=0, requested_error_count=0)
    handler.release.set()
    await held
    with pytest.raises(ttypes.ForsunPlanError):
        await client.get("missing")
    assert vars(status) == dict(connecting_count=1, connected_count=1, requesting_count=0,
                                requested_count=2, requested_error_count=1)
    client.close()


@pytest.mark.gen_test
async def test_large_message_in_many_chunks_round_trips(port):
    client = TorThriftClient(port)
    params = {"big": "x" * (LIMIT - 1024), "small": "y"}
    assert (await client.create("big", 1, params=params)).params == params
    client.close()


def _header(name: str = "create") -> bytes:
    return b"\x80\x01\x00\x01" + struct.pack("!i", len(name)) + name.encode() + b"\x00\x00\x00\x01"


_CREATE = call_message("create", 1, Forsun.create_args("k", 1))

BAD_INPUTS = {
    "garbage": b"GET / HTTP/1.1\r\nHost: forsun\r\n\r\n",
    "2 GB method name": b"\x80\x01\x00\x01" + struct.pack("!i", 0x7FFFFFFF) + b"create",
    "2 GB string field": _header() + b"\x0b\x00\x01" + struct.pack("!i", 0x7FFFFFFF) + b"k",
    "huge list count": _header() + b"\x0f\x00\x63\x08" + struct.pack("!i", 0x7FFFFFFF),
    "huge map count": _header() + b"\x0d\x00\x09\x0b\x0b" + struct.pack("!i", 1 << 30),
    "string over max_message_bytes": call_message(
        "create", 1, Forsun.create_args("k", 1, params={"x": "v" * LIMIT})),
    "small pieces over max_message_bytes": call_message("create", 1, Forsun.create_args(
        "k", 1, params={"%06d" % i: "v" for i in range(LIMIT // 10)})),
    "frame over max_message_bytes": struct.pack("!I", LIMIT + 1) + _CREATE,
    "garbage frame": struct.pack("!I", 10) + b"\x80\x01\xff\xff\xff\xff\xff\xff\xff\xff",
}


@pytest.mark.gen_test
@pytest.mark.parametrize("data", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
async def test_bad_input_drops_only_that_connection(port, logs, data):
    client = TorThriftClient(port, max_stream=1)
    assert await client.ping() == 0
    stream = await connect(port)
    peer = peer_of(stream)
    try:
        await stream.write(data)
    except StreamClosedError:
        pass
    await assert_closed_by_server(stream)
    await logs.wait_for(peer)
    assert len(logs.matching(peer)) == 1
    assert await client.ping() == 0
    assert await TorThriftClient(port).get_keys("a") == ["a1", "a2"]
    client.close()


@pytest.mark.gen_test
async def test_truncated_message_then_close_is_logged(port, logs):
    stream = await connect(port)
    peer = peer_of(stream)
    await stream.write(_CREATE[:len(_CREATE) // 2])
    stream.close()
    record = await logs.wait_for(peer)
    assert "inside a message" in record.getMessage()
    assert await TorThriftClient(port).ping() == 0


@pytest.mark.gen_test
async def test_idle_connections_are_closed(make_server, logs):
    port = make_server(idle_timeout=0.2)
    stream = await connect(port)
    await stream.write(call_message("ping", 1, Forsun.ping_args()))
    await read_messages(stream, 1)
    started = IOLoop.current().time()
    await assert_closed_by_server(stream)
    assert IOLoop.current().time() - started >= 0.15
    await logs.wait_for("without a request", logging.INFO)


@pytest.mark.gen_test
async def test_connections_beyond_max_connections_are_closed(make_server, logs, status):
    port = make_server(max_connections=2)
    client = TorThriftClient(port, max_stream=2)
    await gen.multi([client.get("slow"), client.get("slow")])
    extra = await connect(port)
    peer = peer_of(extra)
    await assert_closed_by_server(extra)
    await logs.wait_for(peer)
    assert await client.ping() == 0
    assert (status.connecting_count, status.connected_count) == (2, 2)
    client.close()


def test_scanner_resumes_at_every_cut_point():
    result = Forsun.getCurrent_result(success=[plan("a", params={"k": "v"}), plan("b")])
    message = encode_message("getCurrent", TMessageType.REPLY, 3, result)
    scanner = MessageScanner(LIMIT)
    buffer = bytearray()
    ends = []
    for byte in message + message:
        buffer.append(byte)
        end = scanner.scan(buffer)
        ends.append(end)
        del buffer[:end]
    assert [i for i, end in enumerate(ends) if end] == [len(message) - 1, 2 * len(message) - 1]
    assert set(ends) == {0, len(message)}


@pytest.mark.parametrize("params", [
    {"one big value": "v" * (1 << 20)},
    {"%06d" % i: "v" for i in range(1 << 16)},
], ids=["big string", "many small entries"])
def test_scanner_walks_a_message_arriving_in_chunks_once(monkeypatch, params):
    walked = []

    class CountingReader(wire._BufferReader):
        def readAll(self, sz: int) -> bytes:
            data = super().readAll(sz)
            walked.append(len(data))
            return data

    monkeypatch.setattr(wire, "_BufferReader", CountingReader)
    message = call_message("create", 1, Forsun.create_args("k", 1, params=params))
    scanner = MessageScanner(2 << 20)
    buffer = bytearray()
    ends = []
    for start in range(0, len(message), 65536):
        buffer += message[start:start + 65536]
        ends.append(scanner.scan(buffer))
    assert ends[-1] == len(message) and not any(ends[:-1])
    # Only the few bytes of a step cut by a chunk boundary are read again.
    assert sum(walked) < len(message) + 1024


# -- the real handler, core and mem store behind the server ---------------------------------


@pytest.fixture
def core_settings() -> Dict[str, Any]:
    return {}


@pytest.fixture
def core_server(io_loop, tmp_path, core_settings):
    """A ThriftServer with ForsunHandler on a Forsun core over a mem store in ``tmp_path``,
    as forsund wires them; yields (port, core)."""
    from forsun import action as actions
    from forsun.config import Settings
    from forsun.forsun import Forsun as Core
    from forsun.servers.thrift.handler import ForsunHandler
    from forsun.status import ForsunStatus
    from forsun.store.drivers.mem import MemStore

    actions.load_builtin_actions()
    settings = Settings(dict({"STORE_MEM_STORE_FILE": str(tmp_path / "forsun.dump"),
                              "STORE_MEM_FLUSH_SECONDS": 0}, **core_settings))
    store = MemStore(settings)
    core_status = ForsunStatus()
    core = Core(settings, store, core_status)
    io_loop.run_sync(store.init)

    async def info():
        return {"plan_count": str(core_status.plan_count)}

    server = ThriftServer(ForsunHandler(core, info), core_status, max_message_bytes=LIMIT)
    assert server.inline and server.batched == {"create", "createTimeout"}
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield sockets[0].getsockname()[1], core
    server.stop()
    io_loop.run_sync(store.uninit)


# One connection, pipelined: runs of creates (answered together) with failures inside them,
# broken up by other calls. (request, result class, expected outcome: a key, an error code,
# or "unknown method").
MIXED = [
    ("createTimeout", Forsun.createTimeout_args("a", 30, action="http", params={"url": "u"}),
     "a"),
    ("createTimeout", Forsun.createTimeout_args("never", 0), 1002),
    ("create", Forsun.create_args("c", 0, 0, 0, action="nope"), 1006),
    ("createTimeout", Forsun.createTimeout_args("a", 40, count=2), "a"),
    ("create", Forsun.create_args("d", 0, 30, 4), "d"),
    ("createTimeout", Forsun.createTimeout_args("k" * 1100, 5), 1007),
    ("get", Forsun.get_args("a"), "a"),
    ("get", Forsun.get_args("missing"), 1003),
    ("nope", Forsun.ping_args(), "unknown method"),
    ("createTimeout", Forsun.createTimeout_args("e", 10), "e"),
    ("ping", Forsun.ping_args(), 0),
    ("createTimeout", Forsun.createTimeout_args("f", 10), "f"),
]


@pytest.mark.gen_test
@pytest.mark.parametrize("framed", [False, True])
async def test_pipelined_creates_with_failures_are_answered_in_order(core_server, framed):
    port, core = core_server
    stream = await connect(port)
    await stream.write(b"".join(call_message(name, seqid, args, framed)
                                for seqid, (name, args, _) in enumerate(MIXED)))
    replies = await read_messages(stream, len(MIXED), framed)
    outcomes = []
    for seqid, (reply, (name, args, _)) in enumerate(zip(replies, MIXED)):
        result_cls = getattr(Forsun, name + "_result", Forsun.ping_result)
        got_name, got_seqid, body = decode_reply(reply, result_cls)
        assert (got_name, got_seqid) == (name, seqid)
        if isinstance(body, TApplicationException):
            assert body.type == TApplicationException.UNKNOWN_METHOD
            outcomes.append("unknown method")
        elif getattr(body, "err", None) is not None:
            outcomes.append(body.err.code)
        elif name == "ping":
            outcomes.append(body.success)
        else:
            outcomes.append(body.success.key)
    assert outcomes == [expected for _, _, expected in MIXED]

    a = decode_reply(replies[6], Forsun.get_result)[2].success  # the replaced plan
    assert (a.second, a.count, a.is_time_out, a.action) == (40, 2, True, "shell")
    created = decode_reply(replies[0], Forsun.createTimeout_result)[2].success
    assert (created.params, created.action, created.count) == ({"url": "u"}, "http", 1)
    assert sorted(await core.get_keys("")) == ["a", "d", "e", "f"]
    assert (core.status.plan_count, core.status.create_timeouted_count,
            core.status.created_count) == (4, 4, 1)
    assert (core.status.requested_count, core.status.requested_error_count,
            core.status.requesting_count) == (len(MIXED), 5, 0)
    stream.close()


@pytest.mark.gen_test
async def test_pipelined_creates_answer_as_one_by_one(core_server):
    """The same calls pipelined on one connection or sent one at a time: the same replies
    (created_time and next_time aside), and the same plans stored."""
    port, core = core_server
    calls = [(name, args) for name, args, _ in MIXED if name in ("create", "createTimeout")]

    def normalized(reply: bytes, name: str) -> Any:
        body = decode_reply(reply, getattr(Forsun, name + "_result"))[2]
        if body.success is not None:
            body.success.key = body.success.key.split("-", 1)[1]
            body.success.next_time = 0
        return body

    async def send(prefix: str, pipelined: bool) -> List[Any]:
        stream = await connect(port)
        messages = []
        for seqid, (name, args) in enumerate(calls):
            args = type(args)(**vars(args))
            args.key = prefix + args.key
            messages.append(call_message(name, seqid, args))
        if pipelined:
            await stream.write(b"".join(messages))
            replies = await read_messages(stream, len(messages))
        else:
            replies = []
            for message in messages:
                await stream.write(message)
                replies += await read_messages(stream, 1)
        stream.close()
        return [normalized(reply, name) for reply, (name, _) in zip(replies, calls)]

    assert await send("pipelined-", True) == await send("single-", False)
    keys = await core.get_keys("")
    assert sorted(k.split("-", 1)[1] for k in keys if k.startswith("pipelined-")) == \
        sorted(k.split("-", 1)[1] for k in keys if k.startswith("single-"))


@pytest.mark.gen_test
@pytest.mark.parametrize("core_settings", [{"MAX_PLANS": 2}])
async def test_pipelined_creates_beyond_max_plans_fail_one_by_one(core_server):
    """Each create of a run is refused or stored on its own, as if sent one at a time: a new
    key beyond MAX_PLANS is refused (1004), a replaced one still works."""
    port, core = core_server
    keys = ["a", "b", "c", "a", "d", "b"]
    stream = await connect(port)
    await stream.write(b"".join(call_message("createTimeout", seqid,
                                             Forsun.createTimeout_args(key, 10 + seqid))
                                for seqid, key in enumerate(keys)))
    replies = [decode_reply(reply, Forsun.createTimeout_result)[2]
               for reply in await read_messages(stream, len(keys))]
    assert [r.err.code if r.err else r.success.key for r in replies] == \
        ["a", "b", 1004, "a", 1004, "b"]
    assert sorted((p.key, p.second) for p in [await core.get_plan(k) for k in ("a", "b")]) == \
        [("a", 13), ("b", 15)]
    assert core.status.plan_count == 2
    stream.close()


@pytest.mark.gen_test
async def test_a_store_failure_in_a_run_of_creates_fails_only_its_own_call(core_server):
    port, core = core_server
    put_plans = core.store.put_plans
    failures = [OSError("disk full")]

    async def flaky_put_plans(plans):
        if failures:
            raise failures.pop()
        return await put_plans(plans)

    core.store.put_plans = flaky_put_plans
    stream = await connect(port)
    await stream.write(b"".join(call_message("createTimeout", seqid,
                                             Forsun.createTimeout_args(key, 10))
                                for seqid, key in enumerate("xyz")))
    replies = [decode_reply(reply, Forsun.createTimeout_result)[2]
               for reply in await read_messages(stream, 3)]
    assert replies[0].err.code == 1004 and "disk full" in replies[0].err.message
    assert [r.success.key for r in replies[1:]] == ["y", "z"]
    assert sorted(await core.get_keys("")) == ["y", "z"]
    assert core.status.plan_count == 2
    stream.close()
