"""Shared fixtures: free ports, real forsund processes, and required services.

A test that needs a server the machine lacks skips on a laptop but fails in CI (CI=true),
so a missing service can never turn a CI run green.
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items):
    """Runs bare ``async def`` tests on pytest-tornado's loop without a per-test mark."""
    import inspect
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function) \
                and item.get_closest_marker("gen_test") is None:
            item.add_marker(pytest.mark.gen_test)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require(condition: bool, what: str) -> None:
    """Skips (laptop) or fails (CI) a test whose service or tool is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail("required for this test but missing in CI: %s" % what)
    pytest.skip("missing: %s" % what)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, "the %s program" % name)
    return path


class Forsund:
    """A real ``forsund --nodemon`` process on free ports, logging to a pipe we watch."""

    def __init__(self, workdir: str, args: List[str], env: Optional[dict] = None,
                 http: bool = False):
        self.workdir = workdir
        self.port = free_port()
        self.http_port = free_port() if http else None
        self.store_file = os.path.join(workdir, "forsun.dump")
        self.extra_args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        self.process: Optional[subprocess.Popen] = None
        self.lines: List[str] = []
        self._cond = threading.Condition()

    @property
    def command(self) -> List[str]:
        command = [sys.executable, "-m", "forsun.daemon", "--nodemon", "--log", "-",
                   "--port", str(self.port), "--driver-mem-store-file", self.store_file]
        if self.http_port:
            command += ["--http", "127.0.0.1:%d" % self.http_port]
        return command + self.extra_args

    def start(self, wait: bool = True) -> "Forsund":
        self.lines = []
        self.process = subprocess.Popen(self.command, cwd=self.workdir, env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_log, args=(self.process,), daemon=True).start()
        if wait:
            self.wait_log("ready", timeout=30)
        return self

    def _read_log(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<exited>")
            self._cond.notify_all()

    def wait_log(self, text: str, timeout: float = 10, start: int = 0) -> str:
        """Waits for a log line containing ``text`` (from line ``start`` on)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if text in line:
                        return line
                if "<exited>" in self.lines[start:] and text != "<exited>":
                    raise AssertionError("forsund exited before logging %r:\n%s"
                                         % (text, self.log))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("forsund did not log %r in %ss:\n%s"
                                         % (text, timeout, self.log))
                self._cond.wait(remaining)

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def client(self):
        from forsun.clients import ThriftClient
        return ThriftClient(port=self.port, host="127.0.0.1", timeout=10)

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.wait_log("<exited>", timeout=5)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def forsund_factory(tmp_path):
    """Makes forsund processes in a temp dir; all are stopped after the test."""
    daemons: List[Forsund] = []

    def make(*args: str, env: Optional[dict] = None, http: bool = False,
             start: bool = True) -> Forsund:
        daemon = Forsund(str(tmp_path), list(args), env, http)
        daemons.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in daemons:
        daemon.kill()


@pytest.fixture
def forsund(forsund_factory):
    """One running forsund on the mem store with a temp dump file."""
    return forsund_factory()


@pytest.fixture
def fifo_sink(tmp_path):
    from sinks import FifoSink
    sink = FifoSink(str(tmp_path / "fires.fifo"))
    yield sink
    sink.close()


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server on a free port, stopped after the test."""
    from services import RedisServer
    server = RedisServer(str(tmp_path / "redis")).start()
    yield server
    server.kill()


@pytest.fixture
def beanstalkd(tmp_path):
    from services import Beanstalkd
    server = Beanstalkd(str(tmp_path / "beanstalkd")).start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory):
    """One throwaway MariaDB for the whole session (it takes a second to initialise)."""
    from services import MariaDB
    server = MariaDB(str(tmp_path_factory.mktemp("mariadb"))).start()
    yield server
    server.stop()
