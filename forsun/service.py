"""One forsun service: store, core, action runner, timer and servers wired together.

The daemon builds one per process; tests can build several in one process. Start order
matters: the store loads before any server accepts a request, and the timer starts last.
"""

import logging
import socket
from typing import Any, Dict, List, Optional

from . import action as actions
from .error import ConfigError
from .extension import ExtensionManager
from .forsun import Forsun
from .status import ForsunStatus, forsun_status
from .store import get_store_class, get_store_names
from .timer import Timer

log = logging.getLogger("forsun")

SERVER_MODES = ("TIMER", "AGENT")


class ForsunService:
    def __init__(self, settings: Any, extensions: Optional[ExtensionManager] = None,
                 status: ForsunStatus = forsun_status):
        self.settings = settings
        self.status = status
        self.extensions = extensions or ExtensionManager()
        self.mode = str(settings.get("SERVER_MODE")).upper()
        if self.mode not in SERVER_MODES:
            raise ConfigError("invalid SERVER_MODE %r: use TIMER or AGENT"
                              % settings.get("SERVER_MODE"))
        driver = settings.get("STORE_DRIVER")
        try:
            store_cls = get_store_class(driver)
        except KeyError:
            raise ConfigError("unknown store driver %r; known drivers: %s"
                              % (driver, ", ".join(get_store_names()))) from None
        actions.load_builtin_actions()
        self.store = store_cls(settings)
        self.forsun = Forsun(settings, self.store, status)
        self.timer: Optional[Timer] = None
        self.thrift_server: Any = None
        self.http_server: Any = None
        self.bind_port = ""
        self.http_bind_port = ""

    async def start(self, thrift_sockets: List[socket.socket],
                    http_sockets: Optional[List[socket.socket]] = None) -> None:
        from .servers.thrift.handler import ForsunHandler
        from .servers.thrift.server import ThriftServer

        await self.store.init()
        self.status.plan_count = await self.forsun.count_plans()
        await self.extensions.init()
        self.thrift_server = ThriftServer(ForsunHandler(self.forsun, self.info), self.status)
        self.thrift_server.add_sockets(thrift_sockets)
        self.bind_port = _describe_sockets(thrift_sockets)
        if http_sockets:
            from .servers.http import make_http_server
            self.http_server = make_http_server(self)
            self.http_server.add_sockets(http_sockets)
            self.http_bind_port = _describe_sockets(http_sockets)
        if self.mode == "TIMER":
            self.timer = Timer(self.forsun.fire_second, self.store, self.status)
            self.timer.start()
        log.info("forsun serving thrift on %s%s, store %s, mode %s", self.bind_port,
                 ", http on %s" % self.http_bind_port if self.http_bind_port else "",
                 self.settings.get("STORE_DRIVER"), self.mode)

    async def stop(self) -> None:
        """Stops accepting, lets the second in hand finish, flushes the store."""
        for server in (self.thrift_server, self.http_server):
            if server is not None:
                server.stop()
        if self.timer is not None:
            await self.timer.stop()
        await self.forsun.runner.stop()
        try:
            await self.store.uninit()
        finally:
            await self.extensions.uninit()
            for cls in actions.registered_classes():
                try:
                    result = cls.uninit()
                    if result is not None and hasattr(result, "__await__"):
                        await result
                except Exception as e:
                    log.error("action %s uninit failed: %s", cls.__name__, e)
        log.info("forsun stopped at second %s", self.timer.current if self.timer else "-")

    async def info(self) -> Dict[str, str]:
        self.status.plan_count = await self.forsun.count_plans()
        return self.status.info(
            stores=get_store_names(), current_store=self.settings.get("STORE_DRIVER"),
            actions=actions.get_action_names(), bind_port=self.bind_port,
            http_bind_port=self.http_bind_port, extensions=self.extensions.names)


def _describe_sockets(sockets: List[socket.socket]) -> str:
    host, port = sockets[0].getsockname()[:2]
    return "%s:%s" % (host, port)
