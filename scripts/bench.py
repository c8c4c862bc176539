#!/usr/bin/env python3
"""forsun benchmark: memory, create speed, firing, precision, loop lag and restart.

Starts real ``forsund`` processes on free ports with temporary stores (and a private
redis-server for the redis action), measures, prints each figure with the machine's core
count next to its target, and stops everything. Clients run in separate processes.

    python3 scripts/bench.py                  # everything, default sizes (< 10 minutes)
    python3 scripts/bench.py --only thrift,http
    python3 scripts/bench.py --memory-plans 200000 --big-plans 2000000   # smaller, faster

Phases (``--only``): memory, thrift, http, bulk, fire, precision, big.

How each figure is measured:

- memory: RSS of a fresh forsund before and after loading ``--memory-plans`` plans through
  bulk HTTP bodies (16-character keys, http action, 30-character url); bytes/plan is the
  difference divided by the plan count.
- thrift / http: four client processes create plans as fast as they can for
  ``--seconds`` (Thrift: ``ThriftClient.create_timeout``; HTTP: keep-alive ``PUT /v1/plan``
  with a JSON body). Server CPU per create is forsund's user+system CPU over the run
  divided by the plans created.
- bulk: ``--bulk-clients`` processes (a connection each) send ``application/crontab``
  bodies of ``--bulk-lines`` lines, ``--bulk-plans`` in all. Answers are checked without
  decoding them (errcode 0, one plan per line, first and last keys), then ``plan_count``.
- fire: N one-shot plans due in the same second T with the redis action, whose command
  (an EVAL) records Redis' own clock when it runs: first/last execution minus T.
- precision: 1,000 plans firing every second while two processes create plans; a bench
  extension action records ``time.time()`` when it starts, minus the due second: the target
  figure with an action that takes fires in lists (``execute_batch``, as the redis action),
  then with a per-fire ``execute``; then the redis action itself, by Redis' clock when the
  command ran (1,000 EVALs take Redis itself about 12 ms to run here).
- loop lag: forsund's IOLoop lag probe (``IOLOOP_LAG_PROBE_SECONDS=0.005``), the largest
  lateness it saw (``loop_lag_max_ms`` in ``info``) in each phase.
- big: a dump file with ``--big-plans`` plans in the format forsund writes; time from
  starting forsund to a served ``get``, RSS, then a full snapshot with creates going on
  (loop lag while persisting).
"""

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import logging  # noqa: E402

import msgpack  # noqa: E402
import psutil  # noqa: E402

logging.getLogger("thrift").setLevel(logging.CRITICAL)  # connection attempts while starting

URL = "http://127.0.0.1:8080/cb/%05d"  # 30 characters
FAR_HOURS = 168  # plans that must not fire during the bench are due a week later

TARGETS = {
    "memory_bytes_per_plan": ("<=", 300),
    "rss_big_gb": ("<", 3.5),
    "thrift_creates_per_s": (">=", 15000),
    "thrift_cpu_us": ("<=", 50),
    "http_creates_per_s": (">=", 5000),
    "http_cpu_us": ("<=", 200),
    "bulk_plans_per_s": (">=", 50000),
    "fire_last_s": ("<=", 1.0),
    "fire_first_ms": ("<=", 50),
    "fire_big_last_s": ("<=", 3.0),
    "precision_p99_ms": ("<=", 20),
    "loop_lag_max_ms": ("<=", 50),
    "restart_s": ("<=", 60),
}

results: Dict[str, Any] = {}
lines: List[str] = []


def report(name: str, label: str, value: float, unit: str, fmt: str = "%.1f",
           target: Optional[str] = None) -> None:
    results[name] = value
    check = ""
    if name in TARGETS or target:
        op, limit = TARGETS.get(target or name, ("", 0))
        ok = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
        check = "  (target %s %s: %s)" % (op, limit, "ok" if ok else "MISSED")
    line = "%-52s %12s %s%s" % (label, fmt % value, unit, check)
    lines.append(line)
    print(line, flush=True)


def note(text: str) -> None:
    print("   " + text, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- processes we start ------------------------------------------------------------------

def read_probe_fires(path: str) -> List[Tuple[int, float]]:
    """(due second, start time) of every probe fire forsund has written out so far."""
    samples = array("d")
    if os.path.exists(path):
        with open(path, "rb") as fp:
            data = fp.read()
        samples.frombytes(data[:len(data) - len(data) % 16])  # a pair at a time
    return [(int(ts), t) for ts, t in zip(samples[0::2], samples[1::2])]


EXTENSION = '''
"""Bench extension: an action that records when its execute() starts."""
import os
import time
from array import array

from tornado.ioloop import PeriodicCallback

from forsun.action.action import Action
from forsun.extension import Extension

# (due second, start time) pairs as doubles: written out as they are, so the probe costs
# forsund's IOLoop (whose lag the bench measures) next to nothing
_samples = array("d")


class ProbeAction(Action):
    async def execute(self, *args, **kwargs):
        _samples.extend((self.ts, time.time()))


class BatchProbeAction(ProbeAction):
    """The same, for an action that takes a second's fires in lists (execute_batch, as the
    redis action does): a fire starts when its list is handed over."""

    @classmethod
    async def execute_batch(cls, fires):
        now = time.time()
        for fire in fires:
            _samples.extend((fire.ts, now))
        return [None] * len(fires)


def _flush():
    if _samples:
        with open(os.environ["FORSUN_BENCH_FIRES"], "ab") as fp:
            fp.write(_samples.tobytes())
        del _samples[:]


class BenchExtension(Extension):
    name = "bench"

    def register(self):
        self.register_action("benchprobe", ProbeAction)
        self.register_action("benchbatchprobe", BatchProbeAction)

    def init(self):
        self._flusher = PeriodicCallback(_flush, 250)
        self._flusher.start()

    def uninit(self):
        self._flusher.stop()
        _flush()
'''


class Daemon:
    """A forsund on free ports with its own store directory, logging to a file."""

    def __init__(self, workdir: str, env: Optional[Dict[str, str]] = None, http: bool = True):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.http_port = free_port() if http else 0
        self.store_file = os.path.join(workdir, "forsun.dump")
        self.log_file = os.path.join(workdir, "forsund.log")
        self.fires_file = os.path.join(workdir, "fires.bin")
        ext_dir = os.path.join(workdir, "ext")
        os.makedirs(ext_dir, exist_ok=True)
        with open(os.path.join(ext_dir, "forsun_bench_ext.py"), "w") as fp:
            fp.write(EXTENSION)
        self.env = dict(os.environ)
        self.env.update({"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                         "FORSUN_BENCH_FIRES": self.fires_file,
                         "IOLOOP_LAG_PROBE_SECONDS": "0.005",
                         "LOG_LEVEL": "INFO"})
        self.env.update(env or {})
        self.command = [sys.executable, "-m", "forsun.daemon", "--nodemon", "--log",
                        self.log_file, "--port", str(self.port), "--driver-mem-store-file",
                        self.store_file, "--extension-path", ext_dir, "--extension",
                        "forsun_bench_ext.BenchExtension"]
        if http:
            self.command += ["--http", "127.0.0.1:%d" % self.http_port]
        self.process: Optional[subprocess.Popen] = None
        self.ps: Optional[psutil.Process] = None

    def start(self, timeout: float = 120) -> float:
        """Starts forsund; returns seconds until it answered a Thrift call."""
        started = time.monotonic()
        self.process = subprocess.Popen(self.command, cwd=self.workdir, env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.ps = psutil.Process(self.process.pid)
        from forsun.clients import ThriftClient
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("forsund exited at start:\n" + self.log_tail())
            if time.monotonic() - started > timeout:
                raise RuntimeError("forsund did not answer within %ss:\n%s"
                                   % (timeout, self.log_tail()))
            try:
                client = ThriftClient(port=self.port, timeout=5)
                client.ping()
                client.close()
                return time.monotonic() - started
            except Exception:
                time.sleep(0.05)

    def client(self):
        from forsun.clients import ThriftClient
        return ThriftClient(port=self.port, timeout=60)

    def info(self) -> Dict[str, str]:
        client = self.client()
        try:
            return client.info()
        finally:
            client.close()

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def loop_lag_ms(self) -> float:
        return float(self.info().get("loop_lag_max_ms", "nan"))

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_file) as fp:
                return "".join(fp.readlines()[-lines:])
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float, start: int = 0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.log_file) as fp:
                    if text in fp.read()[start:]:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_file)
        except OSError:
            return 0

    def stop(self, timeout: float = 600) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Redis:
    def __init__(self, workdir: str):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        import redis
        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except Exception:
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


# -- client processes --------------------------------------------------------------------

def _thrift_creator(port: int, prefix: str, start_at: float, end_at: float,
                    results_queue: Any, rate: float = 0) -> None:
    """Blocking ThriftClient creates, as fast as it can or at ``rate`` per second."""
    from forsun.clients import ThriftClient
    client = ThriftClient(port=port, timeout=60)
    client.ping()
    _wait_until(start_at)
    n = 0
    create = client.create_timeout
    step = 10 if rate else 50
    while time.time() < end_at:
        for _ in range(step):
            create("%s%010d" % (prefix, n), n % 3600, -1, FAR_HOURS, count=1, action="http",
                   params={"url": URL % (n % 100000)})
            n += 1
        if rate:
            time.sleep(max(0.0, start_at + n / rate - time.time()))
    results_queue.put(n)


def _thrift_rate_creator(port: int, prefix: str, start_at: float, end_at: float, rate: float,
                         results_queue: Any) -> None:
    _thrift_creator(port, prefix, start_at, end_at, results_queue, rate)


def _thrift_pipelined_creator(port: int, prefix: str, start_at: float, end_at: float,
                              depth: int, results_queue: Any) -> None:
    """createTimeout calls on one connection, ``depth`` sent before their replies are read
    (a Thrift client may send its next call before the last reply: forsund answers in
    order)."""
    from forsun.thriftapi import Forsun
    pipe = _ThriftPipe(port)
    _wait_until(start_at)
    n = errors = 0
    while time.time() < end_at:
        replies = pipe.call([_create_timeout_call(prefix, n + i) for i in range(depth)],
                            Forsun.createTimeout_result)
        errors += sum(1 for reply in replies if reply.success is None)
        n += depth
    pipe.close()
    results_queue.put((n, errors))


def _thrift_count_creator(port: int, prefix: str, first: int, count: int, depth: int,
                          results_queue: Any) -> None:
    """``count`` createTimeout calls on one connection, pipelined ``depth`` deep."""
    from forsun.thriftapi import Forsun
    errors = 0
    for start in range(first, first + count, 20000):
        messages = [_create_timeout_call(prefix, n)
                    for n in range(start, min(first + count, start + 20000))]
        errors += _pipelined(port, messages, Forsun.createTimeout_result, depth)
    results_queue.put(errors)


def _http_pipelined_creator(port: int, prefix: str, start_at: float, end_at: float,
                            depth: int, results_queue: Any) -> None:
    """PUT /v1/plan on one keep-alive connection, ``depth`` requests sent before their
    answers are read (HTTP/1.1 pipelining)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _wait_until(start_at)
    n = errors = 0
    buffer = b""
    while time.time() < end_at:
        requests = []
        for _ in range(depth):
            body = ('{"key": "%s%010d", "seconds": %d, "hour": %d, "count": 1, "action": '
                    '"http", "params": {"url": "%s"}}'
                    % (prefix, n, n % 3600, FAR_HOURS, URL % (n % 100000))).encode()
            requests.append(b"PUT /v1/plan HTTP/1.1\r\nHost: bench\r\nContent-Type: "
                            b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                            % (len(body), body))
            n += 1
        sock.sendall(b"".join(requests))
        answers = 0
        while answers < depth:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = buffer[:end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0
                                  else len(head)])
                if len(buffer) >= end + 4 + length:
                    if not buffer[end + 4:end + 4 + length].startswith(b'{"errcode": 0'):
                        errors += 1
                    buffer = buffer[end + 4 + length:]
                    answers += 1
                    continue
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("forsund closed the connection")
            buffer += chunk
    results_queue.put((n, errors))


def _http_creator(port: int, prefix: str, start_at: float, end_at: float,
                  results_queue: Any) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    _wait_until(start_at)
    n = errors = 0
    while time.time() < end_at:
        for _ in range(20):
            body = ('{"key": "%s%010d", "seconds": %d, "hour": %d, "count": 1, "action": '
                    '"http", "params": {"url": "%s"}}'
                    % (prefix, n, n % 3600, FAR_HOURS, URL % (n % 100000)))
            connection.request("PUT", "/v1/plan", body, headers)
            answer = connection.getresponse().read()
            if not answer.startswith(b'{"errcode": 0'):
                errors += 1
            n += 1
    results_queue.put((n, errors))


def _pipelined(port: int, messages: List[bytes], result_cls: Any, depth: int = 32) -> int:
    """Sends encoded Thrift calls on one connection, ``depth`` at a time before reading
    their replies; returns how many replies carried an error."""
    pipe = _ThriftPipe(port)
    errors = 0
    for start in range(0, len(messages), depth):
        replies = pipe.call(messages[start:start + depth], result_cls)
        errors += sum(1 for reply in replies if getattr(reply, "err", None) is not None)
    pipe.close()
    return errors


class _ThriftPipe:
    """One Thrift connection on which calls are sent in batches, each batch's replies read
    before the next is sent."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def call(self, messages: List[bytes], result_cls: Any) -> List[Any]:
        """Sends the encoded calls at once; returns their replies, read as ``result_cls``."""
        from thrift.transport.TTransport import TMemoryBuffer
        from forsun.servers.thrift.wire import binary_protocol
        self.sock.sendall(b"".join(messages))
        replies: List[Any] = []
        while len(replies) < len(messages):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("forsund closed the connection")
            self.pending += chunk
            while self.pending:
                transport = TMemoryBuffer(self.pending)
                protocol = binary_protocol(transport, 1 << 24)
                try:
                    protocol.readMessageBegin()
                    result = result_cls()
                    result.read(protocol)
                except Exception:
                    break  # the rest of this reply is still on its way
                self.pending = self.pending[transport._buffer.tell():]
                replies.append(result)
        return replies

    def close(self) -> None:
        self.sock.close()


def _create_timeout_call(prefix: str, n: int) -> bytes:
    """The encoded createTimeout call the create benchmarks send: plan ``prefix + n``, a
    16-character key, the http action and a 30-character url."""
    from thrift.Thrift import TMessageType
    from forsun.servers.thrift.wire import encode_message
    from forsun.thriftapi import Forsun
    return encode_message("createTimeout", TMessageType.CALL, n, Forsun.createTimeout_args(
        "%s%010d" % (prefix, n), n % 3600, -1, FAR_HOURS, -1, -1, -1, 1, "http",
        {"url": URL % (n % 100000)}))


def _wait_until(moment: float) -> None:
    """Client processes start together: each waits for the same wall-clock moment."""
    while time.time() < moment:
        time.sleep(0.001)


def _redis_fire_creator(port: int, keys: List[str], fields: Tuple[int, ...], redis_port: int,
                        results_queue: Any) -> None:
    """One-shot plans at the UTC time ``fields`` whose redis action records when it runs
    (``redis_port`` 0: the bench extension's probe action instead)."""
    from thrift.Thrift import TMessageType
    from forsun.servers.thrift.wire import encode_message
    from forsun.thriftapi import Forsun
    second, minute, hour, day, month = fields
    messages = [encode_message("create", TMessageType.CALL, n, Forsun.create_args(
        key, second, minute, hour, day, month, -1, "redis" if redis_port else "benchprobe",
        redis_params(redis_port, key) if redis_port else {}))
        for n, key in enumerate(keys)]
    results_queue.put(_pipelined(port, messages, Forsun.create_result))


def _repeating_creator(port: int, keys: List[str], action: str, redis_port: int,
                       results_queue: Any) -> None:
    """Plans firing every second with ``action`` (redis: against ``redis_port``)."""
    from thrift.Thrift import TMessageType
    from forsun.servers.thrift.wire import encode_message
    from forsun.thriftapi import Forsun
    messages = [encode_message("createTimeout", TMessageType.CALL, n, Forsun.createTimeout_args(
        key, 1, -1, -1, -1, -1, -1, 0, action,
        redis_params(redis_port, key) if redis_port else {})) for n, key in enumerate(keys)]
    results_queue.put(_pipelined(port, messages, Forsun.createTimeout_result))


def run_processes(target: Callable, argument_lists: List[tuple]) -> List[Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=target, args=args + (queue,), daemon=True)
                 for args in argument_lists]
    for process in processes:
        process.start()
    answers = [queue.get(timeout=900) for _ in processes]
    for process in processes:
        process.join(30)
    return answers


REDIS_SCRIPT = ("local t=redis.call('TIME') "
                "redis.call('RPUSH',KEYS[1],ARGV[1]..' '..t[1]..'.'..string.format('%06d',t[2]))")


def redis_params(redis_port: int, key: str) -> Dict[str, str]:
    """The redis action's params: an EVAL that pushes the key and Redis' own clock."""
    return {"host": "127.0.0.1", "port": str(redis_port),
            "command": 'EVAL "%s" 1 fired %s' % (REDIS_SCRIPT, key)}


def utc_fields(ts: int) -> Tuple[int, ...]:
    t = time.gmtime(ts)
    return (t.tm_sec, t.tm_min, t.tm_hour, t.tm_mday, t.tm_mon)


# -- phases ------------------------------------------------------------------------------

def crontab_body(prefix: str, start: int, count: int) -> bytes:
    """An application/crontab body of ``count`` delay plans (keys ``prefix`` + number from
    ``start``), due at least a week later so none fires during the bench."""
    return "".join("%s%010d */%d * */%d * * * http %s\n"
                   % (prefix, n, 1 + n % 3600, FAR_HOURS, URL % (n % 100000))
                   for n in range(start, start + count)).encode()


# What every successful create answer starts with (forsun.servers.http.base), and what
# starts each plan object in its data: inside JSON strings a quote is escaped, so this
# text cannot occur there and counting it counts the plans.
OK_ANSWER = b'{"errcode": 0, "errmsg": "", "data": '
PLAN_START = b'{"key": '


def send_bodies(port: int, bodies: List[bytes]) -> int:
    """Sends crontab bodies one after another on one keep-alive connection; returns the
    plans created. Each answer is checked without decoding its megabytes of JSON (that
    cost the client more CPU than the server spent creating the plans): errcode 0, the
    data a list of as many plans as the body has lines, and the body's first and last
    keys among them."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    created = 0
    try:
        for body in bodies:
            connection.request("PUT", "/v1/plan", body, {"Content-Type": "application/crontab"})
            created += check_bulk_answer(body, connection.getresponse().read())
    finally:
        connection.close()
    return created


def check_bulk_answer(body: bytes, answer: bytes) -> int:
    """Plans created by a crontab body (see :func:`send_bodies`); raises when the answer is
    not that of every line created."""
    if not answer.startswith(OK_ANSWER):
        raise RuntimeError("bulk body refused: %s" % json.loads(answer).get("errmsg"))
    lines = body.count(b"\n") + (not body.endswith(b"\n"))
    plans = answer.count(PLAN_START)
    first_key = body.split(None, 1)[0]
    last_key = body.rstrip(b"\n").rsplit(b"\n", 1)[-1].split(None, 1)[0]
    is_list = answer[len(OK_ANSWER):len(OK_ANSWER) + 1] == b"["
    if plans != lines or is_list != (lines > 1) or not answer.endswith(b"}]}" if is_list
                                                                      else b"}}"):
        raise RuntimeError("bulk answer holds %d plans for %d lines" % (plans, lines))
    for key in (first_key, last_key):
        if PLAN_START + json.dumps(key.decode()).encode() not in answer:
            raise RuntimeError("bulk answer lacks the plan of key %r" % key)
    return plans


def _bulk_sender(port: int, bodies: List[Tuple[str, int, int]], barrier: Any,
                 results_queue: Any) -> None:
    """A bulk client process: makes its bodies (prefix, first number, lines), waits for
    every client, sends them; answers (plans created, time.time() when done, error)."""
    try:
        made = [crontab_body(*spec) for spec in bodies]
        barrier.wait(120)
        created = send_bodies(port, made)
        results_queue.put((created, time.time(), ""))
    except Exception as e:  # answered, so the bench stops at once instead of waiting
        barrier.abort()
        results_queue.put((0, time.time(), "%s: %s" % (type(e).__name__, e)))


def send_bodies_concurrently(port: int, bodies: List[Tuple[str, int, int]], clients: int,
                             started: Callable[[], None]) -> Tuple[int, float]:
    """Sends the bodies (specs for :func:`crontab_body`) from ``clients`` processes, each
    on its own connection, spread evenly; calls ``started`` once every client has made
    its bodies, right before they send. Returns (plans created, seconds from then until the
    last answer)."""
    clients = max(1, min(clients, len(bodies)))
    barrier = multiprocessing.get_context("spawn").Barrier(clients + 1)
    start = {}

    def release() -> None:
        try:
            barrier.wait(120)
        except threading.BrokenBarrierError:  # a client failed: its answer says why
            return
        start["at"] = time.time()
        started()

    releaser = threading.Thread(target=release)
    releaser.start()
    answers = run_processes(_bulk_sender, [(port, bodies[i::clients], barrier)
                                           for i in range(clients)])
    releaser.join()
    errors = [error for _, _, error in answers if error]
    if errors:
        raise RuntimeError("bulk client failed: %s" % errors[0])
    return (sum(created for created, _, _ in answers),
            max(end for _, end, _ in answers) - start["at"])


def phase_memory(args: argparse.Namespace, base: str) -> None:
    daemon = Daemon(os.path.join(base, "memory"), http=False)
    daemon.start()
    try:
        run_processes(_thrift_count_creator, [(daemon.port, "warm00", 0, 1000, 16)])
        time.sleep(0.5)
        before = daemon.rss()
        n = args.memory_plans
        per = n // args.clients
        started = time.monotonic()
        errors = sum(run_processes(_thrift_count_creator, [
            (daemon.port, "m%05d" % i, 0, per if i else n - per * (args.clients - 1),
             args.pipeline) for i in range(args.clients)]))
        took = time.monotonic() - started
        created = int(daemon.info()["plan_count"]) - 1000
        if errors or created != n:
            raise RuntimeError("%d of %d creates failed" % (n - created, n))
        time.sleep(1)
        after = daemon.rss()
        report("memory_bytes_per_plan", "memory: RSS per plan at %s plans" % f"{created:,}",
               (after - before) / created, "bytes")
        note("RSS %.0f MB before, %.0f MB after; created in %.1f s (pipelined Thrift, %d "
             "processes)" % (before / 1e6, after / 1e6, took, args.clients))
        report("loop_lag_memory", "loop lag max while creating them", daemon.loop_lag_ms(), "ms",
               target="loop_lag_max_ms")
    finally:
        daemon.stop()


def measure_creates(daemon: Daemon, target: Callable, arguments: Callable[[int], tuple],
                    clients: int, seconds: float) -> Tuple[int, int, float]:
    """Runs ``clients`` creator processes for ``seconds``; returns (plans created, errors,
    forsund CPU seconds over the run)."""
    start_at = time.time() + 2.0
    end_at = start_at + seconds
    cpu = {}

    def sample() -> None:
        time.sleep(max(0, start_at - time.time()))
        cpu["start"] = daemon.cpu()
        time.sleep(max(0, end_at - time.time()))
        cpu["end"] = daemon.cpu()

    sampler = threading.Thread(target=sample)
    sampler.start()
    answers = run_processes(target, [(daemon.port if target.__name__.startswith("_thrift")
                                      else daemon.http_port, "c%02d%03d-" % (i, clients))
                                     + (start_at, end_at) + arguments(i) for i in range(clients)])
    sampler.join()
    total = sum(a if isinstance(a, int) else a[0] for a in answers)
    errors = sum(0 if isinstance(a, int) else a[1] for a in answers)
    return total, errors, cpu["end"] - cpu["start"]


def phase_thrift(args: argparse.Namespace, base: str) -> None:
    daemon = Daemon(os.path.join(base, "thrift"), http=False)
    daemon.start()
    try:
        total, errors, cpu = measure_creates(daemon, _thrift_pipelined_creator,
                                             lambda i: (args.pipeline,), args.clients,
                                             args.seconds)
        report("thrift_creates_per_s", "thrift: creates/s, %d client processes pipelining %d"
               % (args.clients, args.pipeline), total / args.seconds, "/s", "%.0f")
        report("thrift_cpu_us", "thrift: server CPU per create (pipelined)",
               cpu / total * 1e6, "us")
        if errors:
            note("%d creates answered with an error" % errors)
        total, errors, cpu = measure_creates(daemon, _thrift_creator, lambda i: (),
                                             args.clients, args.seconds)
        report("thrift_sequential_per_s", "thrift: creates/s, %d processes, blocking "
               "ThriftClient" % args.clients, total / args.seconds, "/s", "%.0f")
        report("thrift_sequential_cpu_us", "thrift: server CPU per create (blocking clients)",
               cpu / total * 1e6, "us")
        info = daemon.info()
        note("%s plans held" % info["plan_count"])
        report("loop_lag_thrift", "loop lag max during thrift creates", daemon.loop_lag_ms(),
               "ms", target="loop_lag_max_ms")
    finally:
        daemon.stop()


def phase_http(args: argparse.Namespace, base: str) -> None:
    daemon = Daemon(os.path.join(base, "http"))
    daemon.start()
    try:
        total, errors, cpu = measure_creates(daemon, _http_pipelined_creator,
                                             lambda i: (args.pipeline,), args.clients,
                                             args.seconds)
        report("http_creates_per_s", "http: creates/s, %d client processes pipelining %d"
               % (args.clients, args.pipeline), total / args.seconds, "/s", "%.0f")
        report("http_cpu_us", "http: server CPU per create (pipelined)", cpu / total * 1e6,
               "us")
        if errors:
            note("%d creates answered with an error" % errors)
        total, errors, cpu = measure_creates(daemon, _http_creator, lambda i: (),
                                             args.clients, args.seconds)
        report("http_sequential_per_s", "http: creates/s, %d processes, one request at a time"
               % args.clients, total / args.seconds, "/s", "%.0f")
        report("http_sequential_cpu_us", "http: server CPU per create (one at a time)",
               cpu / total * 1e6, "us")
        if errors:
            note("%d creates answered with an error" % errors)
        report("loop_lag_http", "loop lag max during http creates", daemon.loop_lag_ms(), "ms",
               target="loop_lag_max_ms")
    finally:
        daemon.stop()


def phase_bulk(args: argparse.Namespace, base: str) -> None:
    daemon = Daemon(os.path.join(base, "bulk"))
    daemon.start()
    try:
        warm = send_bodies(daemon.http_port, [crontab_body("warmup", 0, 1000)])
        n, per_body = args.bulk_plans, args.bulk_lines
        bodies = [("bulk", start, min(per_body, n - start)) for start in range(0, n, per_body)]
        cpu = {}
        created, took = send_bodies_concurrently(
            daemon.http_port, bodies, args.bulk_clients,
            lambda: cpu.setdefault("start", daemon.cpu()))
        cpu = daemon.cpu() - cpu["start"]
        held = int(daemon.info()["plan_count"])
        if created != n or held != warm + n:
            raise RuntimeError("bulk: %d plans answered and %d held, %d sent"
                               % (created, held - warm, n))
        report("bulk_plans_per_s", "bulk: plans/s (HTTP application/crontab, %d lines a body)"
               % per_body, created / took, "/s", "%.0f")
        note("%s plans in %.2f s from %d client processes, server CPU %.1f us a plan; "
             "plan_count checked" % (f"{created:,}", took, min(args.bulk_clients, len(bodies)),
                                     cpu / created * 1e6))
        report("loop_lag_bulk", "loop lag max during bulk bodies", daemon.loop_lag_ms(), "ms",
               target="loop_lag_max_ms")
    finally:
        daemon.stop()


def fire_burst(daemon: Daemon, redis: Optional[Redis], count: int, label: str,
               last_target: str, first_target: Optional[str] = None) -> None:
    """``count`` one-shot plans due in the same second; reports when the first and the last
    executed after the second's start. With ``redis``: the redis action (Redis' clock, from
    an EVAL); without: the bench extension's probe action (when execute() started)."""
    if redis is not None:
        redis.client.delete("fired")
    create_rate = 5000.0
    due = int(time.time() + count / create_rate + 4)
    keys = ["%s%010d" % (label[:6], n) for n in range(count)]
    parts = [keys[i::4] for i in range(4)]
    started = time.monotonic()
    errors = sum(run_processes(_redis_fire_creator, [
        (daemon.port, part, utc_fields(due), redis.port if redis else 0) for part in parts]))
    if errors:
        raise RuntimeError("%d creates failed" % errors)
    created_in = time.monotonic() - started
    if time.time() > due - 0.5:
        raise RuntimeError("creating %d plans took %.1f s, past their due second; lower the "
                           "size" % (count, created_in))
    deadline = due + 40
    times: List[float] = []
    while time.time() < deadline:
        time.sleep(0.25)
        if redis is not None:
            done = redis.client.llen("fired") >= count
        else:
            times = [t for ts, t in read_probe_fires(daemon.fires_file) if ts == due]
            done = len(times) >= count
        if done:
            break
    if redis is not None:
        times = [float(entry.split()[1]) for entry in redis.client.lrange("fired", 0, -1)]
    times.sort()
    what = "redis action" if redis is not None else "probe action"
    if len(times) < count:
        note("only %d of %d executed within 40 s" % (len(times), count))
    report((first_target or last_target + "_first") + ("" if redis else "_probe"),
           "%s: %s due at once (%s), first ran after" % (label, f"{count:,}", what),
           (times[0] - due) * 1000, "ms", target=first_target)
    report(last_target if redis is not None else last_target + "_probe",
           "%s: %s due at once (%s), last ran after" % (label, f"{count:,}", what),
           times[-1] - due if len(times) >= count else float("inf"), "s", "%.3f",
           target=last_target)
    note("created in %.1f s; %d executed" % (created_in, len(times)))


def phase_fire(args: argparse.Namespace, base: str) -> None:
    # the firing engine alone: an action that does nothing but note when it started
    daemon = Daemon(os.path.join(base, "fire"), http=False)
    daemon.start()
    try:
        fire_burst(daemon, None, args.burst, "burst", "fire_last_s", "fire_first_ms")
        fire_burst(daemon, None, args.big_burst, "bigburst", "fire_big_last_s")
        report("loop_lag_fire", "loop lag max during the probe bursts", daemon.loop_lag_ms(),
               "ms", target="loop_lag_max_ms")
    finally:
        daemon.stop()
    # the same with the redis action against a local Redis
    redis = Redis(os.path.join(base, "redis"))
    daemon = Daemon(os.path.join(base, "fire-redis"), http=False)
    daemon.start()
    try:
        fire_burst(daemon, redis, args.burst, "burst", "fire_last_s", "fire_first_ms")
        fire_burst(daemon, redis, args.big_burst, "bigburst", "fire_big_last_s")
        report("loop_lag_fire_redis", "loop lag max during the redis-action bursts",
               daemon.loop_lag_ms(), "ms", target="loop_lag_max_ms")
        info = daemon.info()
        note("redis actions executed %s, errors %s" % (info["action_executed_count"],
                                                        info["action_executed_error_count"]))
    finally:
        daemon.stop()
        redis.stop()


def phase_precision(args: argparse.Namespace, base: str) -> None:
    """Every-second plans of an action that takes fires in lists (execute_batch, like the
    redis action; the target figure), of a per-fire action, and of the redis action itself
    (when Redis ran each command, by its own clock)."""
    precision_run(args, base, "benchbatchprobe", None, "precision_p99_ms",
                  "action started (execute_batch)")
    precision_run(args, base, "benchprobe", None, "precision_p99_ms_single",
                  "action started (per-fire execute)")
    redis = Redis(os.path.join(base, "redis-precision"))
    try:
        precision_run(args, base, "redis", redis, "precision_p99_ms_redis",
                      "redis action ran in Redis")
    finally:
        redis.stop()


def precision_run(args: argparse.Namespace, base: str, action: str, redis: Optional[Redis],
                  name: str, what: str) -> None:
    daemon = Daemon(os.path.join(base, "precision-" + action), http=False)
    daemon.start()
    try:
        keys = ["probe%011d" % n for n in range(args.precision_plans)]
        run_processes(_repeating_creator, [
            (daemon.port, keys[i::2], action, redis.port if redis else 0) for i in range(2)])
        time.sleep(2.5)  # every probe plan is firing every second now
        start_at = int(time.time()) + 1
        end_at = start_at + int(args.precision_seconds)
        counts = run_processes(_thrift_rate_creator, [
            (daemon.port, "pc%03d-" % i, start_at, end_at, args.precision_create_rate / 2)
            for i in range(2)]) if args.precision_create_rate else [0]
        time.sleep(max(0.0, end_at - time.time()) + 1.0)
        if redis:
            # each entry is "key seconds.micros", Redis' clock; the due second is the whole
            # second it ran in (a fire a whole second late would show in the per-second
            # counts below)
            times = [float(entry.split()[1]) for entry in redis.client.lrange("fired", 0, -1)]
            fires = [(int(t), t) for t in times]
        else:
            fires = read_probe_fires(daemon.fires_file)
        lags = sorted(t - ts for ts, t in fires if start_at <= ts < end_at)
        per_second = {}
        for ts, _ in fires:
            if start_at <= ts < end_at:
                per_second[ts] = per_second.get(ts, 0) + 1
        if not lags:
            raise RuntimeError("no probe fired")
        p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000  # noqa: E731
        report(name, "precision: due second -> %s, p99" % what, p(0.99), "ms",
               target="precision_p99_ms" if name == "precision_p99_ms" else None)
        note("p50 %.1f ms, p90 %.1f ms, max %.1f ms over %s fires (%d plans every second; "
             "fires per second %d-%d) while %s plans were created at %.0f/s"
             % (p(0.5), p(0.9), lags[-1] * 1000, f"{len(lags):,}", args.precision_plans,
                min(per_second.values()), max(per_second.values()), f"{sum(counts):,}",
                sum(counts) / args.precision_seconds))
        report("loop_lag_" + name, "loop lag max during precision",
               daemon.loop_lag_ms(), "ms", target="loop_lag_max_ms")
    finally:
        daemon.stop()


def make_big_dump(path: str, n: int) -> None:
    """A dump as forsund writes it (fixed-shape plan maps, time_plans, the fast-load
    section): n delay plans due a week from now. Plans differ only in their key, second,
    next_time and url, so each map is a template with those bytes patched in (plain
    DumpWriter.add would take minutes for ten million)."""
    import struct
    from forsun.store.drivers import mem_dump
    now = int(time.time())
    packer = msgpack.Packer(use_bin_type=True)

    def packed(i: int) -> bytes:
        second = i % 3600
        return packer.pack([True, second, -1, FAR_HOURS, -1, -1, -1, 0, 1, 0,
                            now + second + FAR_HOURS * 3600, 0, float(now), "http",
                            {"url": URL % (i % 100000)}])

    def blob(i: int) -> bytes:
        return mem_dump.plan_blob("big%013d" % i, msgpack.unpackb(packed(i)))

    template = blob(0)
    # where the varying values sit in the fixed-shape map (found by changing each one)
    other = blob(1234567 * 3601 + 1)
    assert len(other) == len(template)
    differ = [k for k in range(len(template)) if template[k] != other[k]]
    second_at = differ[0]  # int16 big endian
    key_at = template.index(b"big%013d" % 0)
    url_at = template.index((URL % 0).encode())
    next_at = second_at + 2 + sum(len(mem_dump._name(f)) + 3 for f in mem_dump._I16_FIELDS[1:]) \
        + len(mem_dump._name("next_time")) + 1
    assert struct.unpack_from(">q", template, next_at)[0] == now + FAR_HOURS * 3600
    header = packer.pack(template)[:-len(template)]  # the bin header of a map that size
    i16, i64 = struct.Struct(">h"), struct.Struct(">q")
    time_plans: Dict[int, List[str]] = {}
    tmp = path + ".tmp"
    with open(tmp, "wb", buffering=1 << 22) as fp, tempfile.TemporaryFile() as chunks:
        fp.write(b"\x84" + packer.pack("plans") + packer.pack_array_header(n))
        start = fp.tell()
        buffer = bytearray(template)
        chunk_count = 0
        urls = [(URL % u).encode() for u in range(100000)]
        # the packed forms differ in second, next_time and url: one per second, url patched
        packed_templates = [packed(second) for second in
                            range(3600)]
        url_in_packed = [len(t) - 30 for t in packed_templates]  # params (the url) come last
        for base in range(0, n, mem_dump.FAST_CHUNK):
            keys, packs, next_times, out = [], [], [], []
            for i in range(base, min(n, base + mem_dump.FAST_CHUNK)):
                key = "big%013d" % i
                second = i % 3600
                next_time = now + second + FAR_HOURS * 3600
                url = urls[i % 100000]
                buffer[key_at:key_at + 16] = key.encode()
                i16.pack_into(buffer, second_at, second)
                i64.pack_into(buffer, next_at, next_time)
                buffer[url_at:url_at + 30] = url
                out.append(header)
                out.append(bytes(buffer))
                keys.append(key)
                at = url_in_packed[second]
                template_packed = packed_templates[second]
                packs.append(template_packed[:at] + url + template_packed[at + 30:])
                next_times.append(next_time)
                bucket = time_plans.get(next_time)
                if bucket is None:
                    time_plans[next_time] = [key]
                else:
                    bucket.append(key)
            fp.write(b"".join(out))
            chunks.write(packer.pack(packer.pack((keys, packs, next_times))))
            chunk_count += 1
        plans_bytes = fp.tell() - start
        fp.write(packer.pack("time_plans") + packer.pack_map_header(len(time_plans)))
        for ts, keys in time_plans.items():
            fp.write(packer.pack(ts) + packer.pack(keys))
        fp.write(packer.pack("current_time") + packer.pack(now - 1))
        fp.write(packer.pack(mem_dump.FAST_SECTION) + b"\x93" + packer.pack(n)
                 + packer.pack(plans_bytes) + packer.pack_array_header(chunk_count))
        chunks.seek(0)
        shutil.copyfileobj(chunks, fp, 1 << 22)
    os.replace(tmp, path)


def phase_big(args: argparse.Namespace, base: str) -> None:
    n = args.big_plans
    cache = os.path.join(args.cache_dir, "forsun-bench-%d.dump" % n) if args.cache_dir else ""
    workdir = os.path.join(base, "big")
    daemon = Daemon(workdir, http=False, env={"STORE_MEM_FLUSH_SECONDS": "3"})
    if cache and os.path.exists(cache):
        shutil.copyfile(cache, daemon.store_file)
        note("dump of %s plans from %s" % (f"{n:,}", cache))
    else:
        started = time.monotonic()
        make_big_dump(daemon.store_file, n)
        note("wrote a dump of %s plans (%.1f GB) in %.0f s"
             % (f"{n:,}", os.path.getsize(daemon.store_file) / 1e9, time.monotonic() - started))
        if cache:
            shutil.copyfile(daemon.store_file, cache)
    # the gigabytes just written are still being written back: flushed now, so the kernel's
    # writeback of the bench's own files does not throttle forsund's journal during the run
    os.sync()
    took = daemon.start(timeout=300)
    try:
        client = daemon.client()
        assert client.get("big%013d" % (n - 1)).key == "big%013d" % (n - 1)
        info = client.info()
        assert int(info["plan_count"]) == n, info["plan_count"]
        report("restart_s", "restart: %s plans loaded and serving after" % f"{n:,}", took, "s")
        rss = daemon.rss()
        report("rss_big_gb", "memory: RSS holding %s plans" % f"{n:,}", rss / 1e9, "GB", "%.2f")
        note("%.0f bytes/plan in all" % (rss / n))
        # persisting: a change makes a full snapshot start within STORE_MEM_FLUSH_SECONDS;
        # creates go on meanwhile, and the loop-lag probe watches
        log_start = daemon.log_size()
        cpu = daemon.cpu()
        start_at = time.time() + 0.5
        done = threading.Event()

        def creates() -> None:  # about 1,000 a second while the snapshot is written
            c = daemon.client()
            i = 0
            begun = time.time()
            while not done.is_set():
                c.create_timeout("bignew%010d" % i, 1, -1, FAR_HOURS, action="http",
                                 params={"url": URL % (i % 100000)})
                i += 1
                if i % 10 == 0:
                    time.sleep(max(0.0, begun + i / 1000.0 - time.time()))

        creator = threading.Thread(target=creates)
        creator.start()
        time.sleep(max(0, start_at - time.time()))
        started = time.monotonic()
        wrote = daemon.wait_log("mem store wrote", timeout=900, start=log_start)
        took = time.monotonic() - started
        done.set()
        creator.join()
        if not wrote:
            note("no snapshot finished within 900 s")
        note("a snapshot of %s plans written in %.0f s with creates going on (forsund CPU "
             "%.0f s meanwhile)" % (f"{n:,}", took, daemon.cpu() - cpu))
        report("loop_lag_big", "loop lag max holding %s plans, persisting" % f"{n:,}",
               daemon.loop_lag_ms(), "ms", target="loop_lag_max_ms")
    finally:
        daemon.kill()


PHASES = {"memory": phase_memory, "thrift": phase_thrift, "http": phase_http,
          "bulk": phase_bulk, "fire": phase_fire, "precision": phase_precision,
          "big": phase_big}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PHASES),
                        help="comma-separated phases (default: all): " + ", ".join(PHASES))
    parser.add_argument("--memory-plans", type=int, default=1_000_000)
    parser.add_argument("--big-plans", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=10, help="length of thrift/http runs")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pipeline", type=int, default=16,
                        help="calls each thrift/http client sends before reading replies")
    parser.add_argument("--bulk-plans", type=int, default=100_000)
    parser.add_argument("--bulk-lines", type=int, default=10_000)
    parser.add_argument("--bulk-clients", type=int, default=2,
                        help="bulk client processes sending bodies at once, a connection each")
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--big-burst", type=int, default=100_000)
    parser.add_argument("--precision-plans", type=int, default=1000)
    parser.add_argument("--precision-seconds", type=float, default=10)
    parser.add_argument("--precision-create-rate", type=float, default=2000,
                        help="creates/s going on meanwhile, from two client processes")
    parser.add_argument("--cache-dir", default="",
                        help="keep the big dump here between runs (it takes a while to make)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    phases = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in phases if name not in PHASES]
    if unknown:
        parser.error("unknown phase(s): %s" % ", ".join(unknown))

    base = tempfile.mkdtemp(prefix="forsun-bench-")
    print("forsun bench: %d CPU cores (%s), %.0f GB RAM, Python %s, load average %.1f"
          % (os.cpu_count(), _cpu_name(), psutil.virtual_memory().total / 2**30,
             sys.version.split()[0], os.getloadavg()[0]), flush=True)
    started = time.monotonic()
    try:
        for name in phases:
            print("-- %s" % name, flush=True)
            phase_started = time.monotonic()
            PHASES[name](args, base)
            note("(%s took %.0f s)" % (name, time.monotonic() - phase_started))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("kept %s" % base)
    lags = [value for name, value in results.items() if name.startswith("loop_lag_")]
    if lags:
        report("loop_lag_max_ms", "loop lag max over every phase", max(lags), "ms")
    print("total %.0f s, load average %.1f at the end" % (time.monotonic() - started,
                                                            os.getloadavg()[0]))
    if args.json:
        with open(args.json, "w") as fp:
            json.dump({"cores": os.cpu_count(), "figures": results, "lines": lines}, fp,
                      indent=2)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fp:
            for line in fp:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
