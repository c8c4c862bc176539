"""``forsund``: the daemon's command line, start-up checks, detaching and signals.

Everything that can be wrong with the settings (bad port, port in use, unknown driver,
unreadable conf file, broken extension, corrupt dump file) stops forsund at start with one
line on stderr and exit status 1. When detaching, the parent waits until the child has
started (or failed) and reports it, so a detached start never fails silently.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Dict, List, Optional, Tuple

from tornado.netutil import bind_sockets

from . import config
from . import log as forsun_log
from .error import ConfigError
from .extension import ExtensionManager
from .version import version

logger = logging.getLogger("forsun")

# flag -> setting name (SPEC section 5).
FLAG_SETTINGS = {
    "bind": "BIND_ADDRESS", "port": "PORT", "http": "HTTP_BIND", "log": "LOG_FILE",
    "log_level": "LOG_LEVEL", "driver": "STORE_DRIVER",
    "driver_mem_store_file": "STORE_MEM_STORE_FILE",
    "driver_redis_host": "STORE_REDIS_HOST", "driver_redis_port": "STORE_REDIS_PORT",
    "driver_redis_db": "STORE_REDIS_DB", "driver_redis_password": "STORE_REDIS_PASSWORD",
    "driver_redis_prefix": "STORE_REDIS_PREFIX",
    "driver_redis_server_id": "STORE_REDIS_SERVER_ID",
    "extension_path": "EXTENSION_PATH", "timezone": "TIMEZONE", "server_mode": "SERVER_MODE",
}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="forsund", description="forsun timed-task server")
    parser.add_argument("--version", action="version", version="forsund %s" % version)
    parser.add_argument("--conf", help="conf file (see conf/forsun.conf)")
    parser.add_argument("--bind", help="Thrift bind address (127.0.0.1)")
    parser.add_argument("--port", help="Thrift port (6458)")
    parser.add_argument("--http", help="HOST:PORT of the HTTP API (off)")
    parser.add_argument("--demon", dest="daemon", action="store_const", const=True,
                        help="detach into the background (the default)")
    parser.add_argument("--nodemon", dest="daemon", action="store_const", const=False,
                        help="run in the foreground")
    parser.add_argument("--log", help="log file, '-' for stderr")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--driver", help="store: mem, redis or an extension's")
    parser.add_argument("--driver-mem-store-file", help="mem store dump file (~/.forsun.dump)")
    parser.add_argument("--driver-redis-host")
    parser.add_argument("--driver-redis-port")
    parser.add_argument("--driver-redis-db")
    parser.add_argument("--driver-redis-password")
    parser.add_argument("--driver-redis-prefix")
    parser.add_argument("--driver-redis-server-id")
    parser.add_argument("--extension-path", help="directory extensions are imported from")
    parser.add_argument("--extension", action="append", default=[],
                        help="module.Class of an extension (repeatable)")
    parser.add_argument("--timezone", help="timezone of fixed-time plans (UTC)")
    parser.add_argument("--server-mode", help="TIMER (serves and fires) or AGENT (serves)")
    return parser.parse_args(argv)


def load_settings(args: argparse.Namespace, environ: Optional[Dict[str, str]] = None
                  ) -> config.Settings:
    flags: Dict[str, Any] = {name: getattr(args, attr) for attr, name in FLAG_SETTINGS.items()
                             if getattr(args, attr) is not None}
    if args.extension:
        flags["EXTENSIONS"] = args.extension
    if args.daemon is not None:
        flags["DAEMON"] = args.daemon
    return config.Settings.load(flags, args.conf, environ)


def parse_host_port(text: str, name: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    return host or "127.0.0.1", check_port(port, name)


def check_port(value: Any, name: str) -> int:
    try:
        port = int(str(value))
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError("invalid %s %r: a port is a number from 0 to 65535" % (name, value))
    return port


def bind(host: str, port: int, name: str) -> List[Any]:
    try:
        return bind_sockets(port, host, reuse_port=False)
    except OSError as e:
        raise ConfigError("cannot listen on %s:%s (%s): %s" % (host, port, name,
                                                              e.strerror or e)) from e


def prepare(settings: config.Settings):
    """Checks settings, loads extensions, binds the ports; raises ConfigError."""
    from .crontime import resolve_timezone
    from .service import ForsunService

    config.use(settings)
    port = check_port(settings.get("PORT"), "PORT")
    resolve_timezone(settings.get("TIMEZONE"))
    extensions = ExtensionManager()
    extensions.load(settings.get("EXTENSION_PATH"), settings.get("EXTENSIONS"))
    service = ForsunService(settings, extensions)
    thrift_sockets = bind(settings.get("BIND_ADDRESS"), port, "thrift")
    http_sockets = None
    if settings.get("HTTP_BIND"):
        host, http_port = parse_host_port(settings.get("HTTP_BIND"), "HTTP_BIND")
        http_sockets = bind(host, http_port, "http")
    return service, thrift_sockets, http_sockets


async def serve(service: Any, thrift_sockets: List[Any], http_sockets: Optional[List[Any]],
                on_ready: Any) -> None:
    loop = asyncio.get_running_loop()
    stopping = loop.create_future()

    def request_stop(signum: int) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        if not stopping.done():
            stopping.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, request_stop, signum)
    await service.start(thrift_sockets, http_sockets)
    on_ready(None)
    logger.info("forsund %s ready, pid %d", version, os.getpid())
    await stopping
    await service.stop()


def detach() -> Tuple[bool, int]:
    """Double fork; returns (is_daemon, write end of the readiness pipe) in the daemon.

    The original process never returns from here: it waits on the pipe, prints the
    daemon's pid or the start error, and exits 0 or 1.
    """
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        chunks = []
        while True:
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        message = b"".join(chunks).decode("utf-8", "replace").strip()
        if message.startswith("ok "):
            print(message[3:])
            os._exit(0)
        print("forsund: %s" % (message or "the daemon exited during start"), file=sys.stderr)
        os._exit(1)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    return True, write_fd


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args)
        foreground = not settings.get("DAEMON")
        forsun_log.setup(settings, foreground)
        service, thrift_sockets, http_sockets = prepare(settings)
    except ConfigError as e:
        print("forsund: %s" % e, file=sys.stderr)
        return 1
    ready_fds = []
    if not foreground:
        ready_fds.append(detach()[1])

    def on_ready(error: Optional[str]) -> None:
        """Tells the waiting parent (if detached) that the start succeeded or why not."""
        while ready_fds:
            fd = ready_fds.pop()
            os.write(fd, (("error: " + error) if error else "ok %d" % os.getpid()).encode())
            os.close(fd)

    try:
        asyncio.run(serve(service, thrift_sockets, http_sockets, on_ready))
    except Exception as e:
        message = str(e) if isinstance(e, ConfigError) else "%s: %s" % (type(e).__name__, e)
        logger.error("forsund stopped: %s", message, exc_info=not isinstance(e, ConfigError))
        if ready_fds:
            on_ready(message)
        elif foreground:
            print("forsund: %s" % message, file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
