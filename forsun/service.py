"""One forsun service: store, core, action runner, timer and servers wired together.

The daemon builds one per process; tests can build several in one process. Start order
matters: the store loads before any server accepts a request, and the timer starts last.
"""

import ipaddress
import logging
import socket
from typing import Any, Dict, List, Optional

from . import action as actions
from .error import ConfigError
from .extension import ExtensionManager
from .forsun import Forsun
from .limits import THRIFT_IDLE_TIMEOUT, THRIFT_MAX_CONNECTIONS, THRIFT_MAX_MESSAGE_BYTES
from .metrics import LOOP_LAG_PROBE, LoopLagProbe, make_registry
from .history import HISTORY_SIZE
from .servers.access import ALLOW_IPS, AUTH_TOKEN, BearerToken, ConnectionGate, parse_networks
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
        self.store.status = status  # stores report the persistence failures they handle
        self.forsun = Forsun(settings, self.store, status)
        # Operating safely (docs/operations.md): access, metrics, execution history.
        self.allow_ips = parse_networks(_setting(settings, ALLOW_IPS))
        self.auth = BearerToken(str(_setting(settings, AUTH_TOKEN) or ""))
        status.history.resize(int(_setting(settings, HISTORY_SIZE)))
        self.metrics = make_registry(self)
        self.loop_lag_probe = LoopLagProbe(status, float(_setting(settings, LOOP_LAG_PROBE)))
        unknown = sorted(name for name in self.forsun.action_policy.allowed or ()
                         if not actions.has_action(name))
        if unknown:
            log.warning("ALLOWED_ACTIONS lists actions that are not registered: %s",
                        ", ".join(unknown))
        self.timer: Optional[Timer] = None
        self.thrift_server: Any = None
        self.http_server: Any = None
        self.bind_port = ""
        self.http_bind_port = ""

    async def start(self, thrift_sockets: List[socket.socket],
                    http_sockets: Optional[List[socket.socket]] = None) -> None:
        from .servers.thrift.gate import GatedThriftServer
        from .servers.thrift.handler import ForsunHandler

        await self.store.init()
        self.status.plan_count = await self.forsun.count_plans()
        await self.extensions.init()
        max_connections = int(_setting(self.settings, THRIFT_MAX_CONNECTIONS))
        self.thrift_server = GatedThriftServer(
            ForsunHandler(self.forsun, self.info), self.status,
            ConnectionGate("thrift", self.status, self.allow_ips, max_connections),
            max_message_bytes=int(_setting(self.settings, THRIFT_MAX_MESSAGE_BYTES)),
            max_connections=max_connections,
            idle_timeout=float(_setting(self.settings, THRIFT_IDLE_TIMEOUT)))
        self.thrift_server.add_sockets(thrift_sockets)
        self.bind_port = _describe_sockets(thrift_sockets)
        if http_sockets:
            from .servers.http import make_http_server
            self.http_server = make_http_server(self)
            self.http_server.add_sockets(http_sockets)
            self.http_bind_port = _describe_sockets(http_sockets)
        self.loop_lag_probe.start()
        self._warn_if_exposed(thrift_sockets, http_sockets)
        if self.mode == "TIMER":
            self.timer = Timer(self._fire_second, self.store, self.status)
            self.timer.start()
        log.info("forsun serving thrift on %s%s, store %s, mode %s", self.bind_port,
                 ", http on %s" % self.http_bind_port if self.http_bind_port else "",
                 self.settings.get("STORE_DRIVER"), self.mode)

    async def stop(self) -> None:
        """Stops accepting, lets the second in hand finish, flushes the store."""
        for server in (self.thrift_server, self.http_server):
            if server is not None:
                server.stop()
        self.loop_lag_probe.stop()
        if self.timer is not None:
            await self.timer.stop()
        self.forsun.stop_preparing()
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

    async def _fire_second(self, ts: int, redo_fired: bool = False) -> int:
        """The timer's view of the core: measures lateness and counts failed seconds."""
        self.status.observe_lateness(self.forsun.clock() - ts)
        try:
            return await self.forsun.fire_second(ts, redo_fired=redo_fired)
        except Exception:
            self.status.store_error("fire")
            raise

    def _warn_if_exposed(self, thrift_sockets: List[socket.socket],
                         http_sockets: Optional[List[socket.socket]]) -> None:
        """Says so at start when a server listens beyond loopback without protection."""
        if not self.allow_ips and not _loopback_only(thrift_sockets):
            log.warning("thrift on %s accepts connections from other hosts and has no "
                        "ALLOW_IPS: anyone who reaches it can run actions", self.bind_port)
        if http_sockets and not _loopback_only(http_sockets) and not self.allow_ips \
                and not self.auth.enabled:
            log.warning("http on %s accepts connections from other hosts without AUTH_TOKEN "
                        "or ALLOW_IPS", self.http_bind_port)

    async def info(self) -> Dict[str, str]:
        self.status.plan_count = await self.forsun.count_plans()
        info = self.status.info(
            stores=get_store_names(), current_store=self.settings.get("STORE_DRIVER"),
            actions=actions.get_action_names(), bind_port=self.bind_port,
            http_bind_port=self.http_bind_port, extensions=self.extensions.names)
        info["role"] = self.role
        return info

    @property
    def role(self) -> str:
        """agent (serves only), leader or follower (several TIMER nodes), or timer."""
        if self.mode == "AGENT":
            return "agent"
        leadership = getattr(self.store, "leadership", None)
        return leadership.role if leadership is not None else "timer"


def _setting(settings: Any, setting: Any) -> Any:
    value = settings.get(setting.name)
    return setting.default if value is None else value


def _loopback_only(sockets: List[socket.socket]) -> bool:
    for sock in sockets:
        host = sock.getsockname()[0]
        try:
            if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
                return False
        except ValueError:
            continue  # a Unix socket
    return True


def _describe_sockets(sockets: List[socket.socket]) -> str:
    host, port = sockets[0].getsockname()[:2]
    return "%s:%s" % (host, port)
