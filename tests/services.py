"""Real servers for tests: private redis-server, beanstalkd and MariaDB instances.

Each test that needs one starts its own on a free port in a temp dir (so tests can stop and
restart it), and stops it afterwards. Missing binaries skip on a laptop and fail in CI
(see conftest.require).
"""

import os
import shutil
import socket
import subprocess
import time
from typing import List, Optional

from conftest import free_port, require_binary


def wait_port(port: int, timeout: float = 15, host: str = "127.0.0.1") -> None:
    """Waits until something accepts connections on the port (servers print no event)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("nothing listens on %s:%d after %ss" % (host, port, timeout))
            time.sleep(0.02)


class ServerProcess:
    """A server process we own: start, stop (SIGTERM), kill, restart on the same port."""

    def __init__(self, workdir: str, port: Optional[int] = None):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = port or free_port()
        self.process: Optional[subprocess.Popen] = None

    def command(self) -> List[str]:
        raise NotImplementedError

    def ready(self) -> None:
        wait_port(self.port)

    def start(self) -> "ServerProcess":
        log = open(os.path.join(self.workdir, "server.log"), "ab")
        self.process = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.ready()
        return self

    def stop(self, timeout: float = 15) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class RedisServer(ServerProcess):
    """redis-server on a free port; ``persist=True`` keeps an AOF so a restart keeps data."""

    def __init__(self, workdir: str, port: Optional[int] = None, password: str = "",
                 persist: bool = False):
        super().__init__(workdir, port)
        self.binary = require_binary("redis-server")
        self.password = password
        self.persist = persist

    def command(self) -> List[str]:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", self.workdir, "--save", "",
                   "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always"]
        if self.password:
            command += ["--requirepass", self.password]
        return command

    def client(self, db: int = 0):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, db=db,
                           password=self.password or None, socket_timeout=5)


class Beanstalkd(ServerProcess):
    def __init__(self, workdir: str, port: Optional[int] = None):
        super().__init__(workdir, port)
        self.binary = require_binary("beanstalkd")

    def command(self) -> List[str]:
        return [self.binary, "-l", "127.0.0.1", "-p", str(self.port)]


class MariaDB(ServerProcess):
    """A throwaway MariaDB with its own datadir (root, no password) on a free port."""

    def __init__(self, workdir: str, port: Optional[int] = None):
        super().__init__(workdir, port)
        self.binary = require_binary("mariadbd")
        self.install = require_binary("mariadb-install-db")
        self.datadir = os.path.join(workdir, "data")
        self.socket = os.path.join(workdir, "sock")

    def command(self) -> List[str]:
        return [self.binary, "--no-defaults", "--datadir=" + self.datadir,
                "--socket=" + self.socket, "--port=%d" % self.port,
                "--bind-address=127.0.0.1", "--user=root",
                "--pid-file=" + os.path.join(self.workdir, "pid"), "--skip-log-bin",
                "--innodb-buffer-pool-size=64M"]

    def start(self) -> "MariaDB":
        if not os.path.isdir(self.datadir):
            subprocess.run([self.install, "--no-defaults", "--datadir=" + self.datadir,
                            "--user=root", "--auth-root-authentication-method=normal",
                            "--skip-test-db"], check=True, capture_output=True, timeout=120)
        super().start()
        return self

    def connect(self, db: Optional[str] = None):
        import pymysql
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="",
                               database=db, autocommit=True)


def cleanup(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
