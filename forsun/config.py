"""Settings: one table of every setting, resolved once as defaults < environment < conf file
< command-line flags.

Each setting has one upper-case name (``STORE_DRIVER``, ``ACTION_RETRY_MAX_COUNT``): it is the
environment variable, the key for :func:`get`, and maps to a conf-file key (global keys have
no section; ``STORE_*`` keys live in ``[store]``, ``ACTION_*`` in ``[action]``,
``EXTENSION_PATH``/``EXTENSIONS`` in ``[extension]``). ``forsun.config.get(NAME)`` is the
public way extensions read settings, as in forsun 0.1.x.

The daemon builds a :class:`Settings` and installs it with :func:`use`; components get it
passed in, so tests can build several services in one process.
"""

import configparser
import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .error import ConfigError


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected a boolean (true/false), got %r" % (value,))


def _to_list(value: Any) -> List[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(";") if part.strip()]


_CONVERTERS: Dict[type, Callable[[Any], Any]] = {
    int: lambda v: int(str(v).strip()),
    float: lambda v: float(str(v).strip()),
    str: lambda v: str(v),
    bool: _to_bool,
    list: _to_list,
}


_EXPECTED = {int: "a whole number", float: "a number", str: "a string",
             bool: "true or false", list: "a ';'-separated list"}


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str = ""

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def conf_location(self):
        """(section, key) in the conf file; section "" is the global part without a header."""
        if self.name.startswith("STORE_"):
            return "store", self.name[6:].lower()
        if self.name.startswith("ACTION_"):
            return "action", self.name[7:].lower()
        if self.name == "EXTENSION_PATH":
            return "extension", "path"
        if self.name == "EXTENSIONS":
            return "extension", "extensions"
        return "", self.name.lower()

    def convert(self, value: Any, origin: str) -> Any:
        try:
            return _CONVERTERS[self.type](value)
        except (TypeError, ValueError):
            raise ConfigError("invalid value %r for %s (%s): expected %s"
                              % (value, self.name, origin, _EXPECTED[self.type])) from None


SETTINGS: Dict[str, Setting] = {}


def define(name: str, default: Any, help: str = "") -> Setting:
    """Adds a setting to the table; modules define the settings they read, once."""
    setting = SETTINGS[name] = Setting(name, default, help)
    return setting


# The settings of SPEC section 5, with the 0.1.x defaults unless noted.
define("BIND_ADDRESS", "127.0.0.1", "address the Thrift server listens on")
define("PORT", 6458, "Thrift port")
define("HTTP_BIND", "", "HOST:PORT of the HTTP API; empty = off")
define("SERVER_MODE", "TIMER", "TIMER serves and fires; AGENT serves only")
define("DAEMON", True, "detach into the background (--nodemon turns it off)")
define("LOG_FILE", "", "log file; '-' = stderr; empty = stderr in the foreground, ~/.forsun.log when detached")
define("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING, ERROR")
define("LOG_FORMAT", "%(asctime)s %(process)d %(levelname)s %(message)s", "logging format")
define("LOG_ROTATE", "", "DAY for daily rotation, or a size like 100M; empty = no rotation")
define("LOG_BACKUP_COUNT", 7, "rotated log files kept")
define("TIMEZONE", "UTC", "IANA timezone in which fixed-time plans are read (beyond 0.1.x)")

define("STORE_DRIVER", "mem", "mem, redis, or a store an extension registers")
define("STORE_STATUS_EXPRIED", 0, "kept for 0.1.x conf files; statuses live with the plan")
define("STORE_MEM_STORE_FILE", "~/.forsun.dump", "mem store dump file")
define("STORE_MEM_TIME_RATE", 1, "kept for 0.1.x conf files")
define("STORE_REDIS_HOST", "127.0.0.1")
define("STORE_REDIS_PORT", 6379)
define("STORE_REDIS_DB", 0)
define("STORE_REDIS_PASSWORD", "")
define("STORE_REDIS_PREFIX", "forsun")
define("STORE_REDIS_SERVER_ID", 0)
define("STORE_REDIS_MAX_CONNECTIONS", 8)
define("STORE_REDIS_CLIENT_TIMEOUT", 7200)
define("STORE_REDIS_BULK_SIZE", 5)
define("STORE_REDIS_CURRENTTIME_EXPRIED", 2592000)
define("STORE_REDIS_PLAN_EXPRIED", 604800)
define("STORE_REDIS_PLANTIME_EXPRIED", 604800)

define("ACTION_RETRY_DELAY_SECONDS", 3.0, "first retry delay")
define("ACTION_RETRY_DELAY_RATE", 1.0, "delay grows by this rate per retry")
define("ACTION_RETRY_MAX_COUNT", 3, "retries after the first attempt")
define("ACTION_TIMEOUT", 120.0, "seconds an action may run before it counts as failed")
define("ACTION_SHELL_CWD", "/tmp")
define("ACTION_SHELL_TIMEOUT", 3600.0,
       "seconds a shell command may run before it is killed (never past ACTION_TIMEOUT)")
define("ACTION_SHELL_PASS_ENV", "",
       "names of forsund's environment variables passed to shell commands, ';'-separated")
define("ACTION_HTTP_MAX_CLIENTS", 64)
define("ACTION_HTTP_CONNECT_TIMEOUT", 5.0)
define("ACTION_HTTP_REQUEST_TIMEOUT", 120.0)
define("ACTION_HTTP_USER_AGENT", "")
define("ACTION_REDIS_MAX_CONNECTIONS", 8)
define("ACTION_THRIFT_MAX_CONNECTIONS", 64)
define("ACTION_MYSQL_USER", "root")
define("ACTION_MYSQL_PASSWD", "")
define("ACTION_MYSQL_MAX_CONNECTIONS", 8)
define("ACTION_MYSQL_WAIT_CONNECTION_TIMEOUT", 7200)
define("ACTION_MYSQL_IDLE_SECONDS", 120)
define("ACTION_CONNECT_TIMEOUT", 5.0,
       "seconds the redis, mysql, beanstalk and thrift actions wait to connect")
define("ACTION_IDLE_SECONDS", 120.0,
       "seconds an unused connection of the redis, thrift and beanstalk actions stays open "
       "(mysql: ACTION_MYSQL_IDLE_SECONDS)")
define("ACTION_BEANSTALK_MAX_CONNECTIONS", 8,
       "connections (and threads) of the beanstalk action per beanstalkd")

define("EXTENSION_PATH", "")
define("EXTENSIONS", [], "module.Class entries, ';'-separated in files and the environment")


# Modules that define settings of their own, next to the code that reads them. They are
# imported before settings are resolved, so the environment and conf files can set them.
SETTING_MODULES = (
    "forsun.store.drivers.mem",
    "forsun.store.drivers.redis",
    "forsun.servers.http.server",
    "forsun.limits", "forsun.servers.access", "forsun.action.policy", "forsun.history",
    "forsun.metrics",
)


def load_definitions() -> None:
    for name in SETTING_MODULES:
        importlib.import_module(name)


class Settings:
    """The resolved value of every setting; build with :meth:`load`."""

    def __init__(self, values: Optional[Mapping[str, Any]] = None):
        self.values: Dict[str, Any] = {name: s.default for name, s in SETTINGS.items()}
        # (environment, conf file, flags) this was resolved from; see adopt_new_definitions.
        self._sources: Tuple[Mapping[str, str], Optional[str], Mapping[str, Any]] = ({}, None, {})
        if values:
            self.update(values)

    def get(self, name: str, default: Any = None) -> Any:
        """The value; a setting defined after this object was built reads as its default."""
        if name in self.values:
            return self.values[name]
        setting = SETTINGS.get(name)
        return setting.default if setting is not None else default

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def set(self, name: str, value: Any, origin: str = "code") -> Any:
        """Sets a value, converted to the setting's type; returns the old value."""
        setting = SETTINGS.get(name)
        old = self.values.get(name)
        self.values[name] = setting.convert(value, origin) if setting else value
        return old

    def update(self, values: Mapping[str, Any], origin: str = "code") -> None:
        for name, value in values.items():
            self.set(name, value, origin)

    def load_environ(self, environ: Mapping[str, str],
                     names: Optional[Iterable[str]] = None) -> None:
        for name in (SETTINGS if names is None else names):
            if name in environ:
                self.set(name, environ[name], "environment variable %s" % name)

    def load_conf(self, filename: str, names: Optional[Iterable[str]] = None) -> None:
        """Reads an INI file whose global keys come before any section header."""
        try:
            with open(os.path.expanduser(filename), "r", encoding="utf-8") as fp:
                text = fp.read()
        except OSError as e:
            raise ConfigError("cannot read conf file %s: %s" % (filename, e.strerror or e))
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string("[__global__]\n" + text, source=filename)
        except configparser.Error as e:
            raise ConfigError("cannot parse conf file %s: %s" % (filename, e))
        for name in (SETTINGS if names is None else names):
            section, key = SETTINGS[name].conf_location
            section = section or "__global__"
            if parser.has_option(section, key):
                value = parser.get(section, key)
                if value is None or value.strip() == "":
                    continue
                self.set(name, value.strip(), "%s [%s] %s" % (filename, section, key))

    @classmethod
    def load(cls, flags: Optional[Mapping[str, Any]] = None, conf_file: Optional[str] = None,
             environ: Optional[Mapping[str, str]] = None) -> "Settings":
        """defaults < environment < conf file < flags (SPEC section 5)."""
        load_definitions()
        settings = cls()
        settings._sources = (dict(os.environ if environ is None else environ), conf_file,
                             dict(flags or {}))
        settings._resolve(list(SETTINGS))
        return settings

    def _resolve(self, names: List[str]) -> None:
        environ, conf_file, flags = self._sources
        self.load_environ(environ, names)
        if conf_file:
            self.load_conf(conf_file, names)
        self.update({name: flags[name] for name in names if name in flags}, "command line")

    def adopt_new_definitions(self) -> None:
        """Resolves settings defined after :meth:`load` (by an extension, at its import)
        from the same environment, conf file and flags, with the same precedence."""
        new = [name for name in SETTINGS if name not in self.values]
        for name in new:
            self.values[name] = SETTINGS[name].default
        self._resolve(new)


_current = Settings()


def use(settings: Settings) -> Settings:
    """Installs the settings that :func:`get` reads (the daemon does this once at start)."""
    global _current
    _current = settings
    return settings


def current() -> Settings:
    return _current


def get(name: str, default: Any = None) -> Any:
    """The value of a setting, for extensions and modules without a Settings at hand."""
    return _current.get(name, default)


def set(name: str, value: Any) -> Any:  # noqa: A001 - the 0.1.x public name
    return _current.set(name, value)


def update(values: Mapping[str, Any]) -> None:
    _current.update(values)


def names() -> Iterable[str]:
    return SETTINGS.keys()
