"""Extensions: third-party code that registers actions and stores (SPEC section 8).

    class MyExtension(Extension):
        name = "mine"
        def register(self):
            self.register_action("mine", MyAction)

``forsund --extension-path DIR --extension module.Class`` (repeatable; or ``[extension]``
``path`` / ``extensions`` in the conf file) imports ``Class`` from ``module`` with DIR first
on ``sys.path`` and calls ``register()`` at start, before the store is chosen, so a store an
extension registers can be the ``--driver``. ``init()`` runs once the IOLoop runs and the
store is loaded, ``uninit()`` at a clean stop; both may be coroutines.

Unlike 0.1.x, which logged a broken extension and started without it (so its plans failed
later, one by one), an extension that cannot be imported, is missing, or raises in
``register()`` or ``init()`` stops forsund at start with one line naming it and the reason.
See docs/extensions.md for writing one.
"""

import importlib
import logging
import os
import sys
from typing import Any, List, Optional, Tuple

from . import config
from .action import register_action as _register_action
from .error import ConfigError
from .store import register_store as _register_store
from .utils import maybe_await

log = logging.getLogger("forsun")


class Extension:
    """Subclass, set ``name`` and register actions and stores in :meth:`register`."""

    #: Shown in ``info`` (``extensions``); the class name when empty.
    name = ""

    def register_store(self, name: str, cls: type) -> bool:
        """Makes ``--driver NAME`` use ``cls`` (a :class:`forsun.store.store.Store` subclass).

        Returns False, as 0.1.x did, when ``cls`` is not a Store; the error is logged so the
        mistake shows at start rather than as an unknown driver.
        """
        registered = _register_store(name, cls)
        if not registered:
            log.error("extension %s: store %s not registered: %r is not a subclass of "
                      "forsun.store.store.Store", _display_name(self), name, cls)
        return registered

    def register_action(self, name: str, cls: type) -> bool:
        """Makes plans with action ``name`` run ``cls`` (a :class:`forsun.action.Action`).

        Returns False, as 0.1.x did, when ``cls`` is not an Action, and logs why.
        """
        registered = _register_action(name, cls)
        if not registered:
            log.error("extension %s: action %s not registered: %r is not a subclass of "
                      "forsun.action.action.Action", _display_name(self), name, cls)
        return registered

    def register(self) -> None:
        """Called once at start, before the IOLoop runs: register actions and stores here.

        Start no threads and open no connections here: a detaching forsund forks after it.
        """

    def init(self) -> Any:
        """Called once the IOLoop runs (may be a coroutine): open connections here."""

    def uninit(self) -> Any:
        """Called at a clean stop (may be a coroutine): close what ``init`` opened."""


class ExtensionManager:
    """Loads the configured extensions and runs their life cycle.

    The daemon makes one, calls :meth:`load` before building the service, and the service
    awaits :meth:`init` after the store is loaded and :meth:`uninit` at stop.
    """

    def __init__(self) -> None:
        self._loaded: List[Tuple[str, Extension]] = []

    @property
    def extensions(self) -> List[Extension]:
        return [extension for _, extension in self._loaded]

    @property
    def names(self) -> List[str]:
        """What ``info`` lists under ``extensions``: each ``name``, else the class name.

        Read with getattr: as in 0.1.x, an extension class need not subclass Extension.
        """
        return [_display_name(extension) for extension in self.extensions]

    def load(self, path: str, names: List[str]) -> None:
        """Imports each ``module.Class`` (``path`` first on sys.path) and runs register().

        Raises ConfigError naming the extension and the reason, so forsund stops at start.
        """
        if path:
            path = os.path.abspath(os.path.expanduser(path))
            if not os.path.isdir(path):
                raise ConfigError("extension path %s is not a directory" % path)
            if path not in sys.path:
                sys.path.insert(0, path)
            log.info("register extension path %s", path)
        for spec in names:
            if any(spec == loaded for loaded, _ in self._loaded):
                continue
            cls = _import(spec, path)
            # Settings the extension defined at import read the same sources as the rest.
            config.current().adopt_new_definitions()
            log.info("load extension %s %s", spec, cls)  # before register(), as 0.1.x
            try:
                extension = cls()
                extension.register()
            except Exception as e:
                raise ConfigError("extension %s failed to register: %s"
                                  % (spec, _describe(e))) from e
            self._loaded.append((spec, extension))

    async def init(self) -> None:
        """Runs each extension's init() in load order; a failure stops the start."""
        for spec, extension in self._loaded:
            try:
                await maybe_await(extension.init())
            except Exception as e:
                raise ConfigError("extension %s failed to init: %s"
                                  % (spec, _describe(e))) from e

    async def uninit(self) -> None:
        """Runs each uninit() in reverse order; a failure is logged so the others still run."""
        for spec, extension in reversed(self._loaded):
            try:
                await maybe_await(extension.uninit())
            except Exception as e:
                log.error("extension %s uninit failed: %s", spec, _describe(e))


def _import(spec: str, path: str) -> type:
    """The class ``spec`` names; ConfigError saying which part is wrong."""
    module_name, _, class_name = spec.rpartition(".")
    if not module_name or not class_name:
        raise ConfigError("extension %r is not of the form module.Class" % spec)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        where = "extension path %s" % path if path else "no --extension-path given"
        raise ConfigError("extension %s cannot be imported (%s): %s"
                          % (spec, where, _describe(e))) from e
    cls: Optional[Any] = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError("extension %s: module %s (%s) has no class %s"
                          % (spec, module_name, getattr(module, "__file__", "?"), class_name))
    if not isinstance(cls, type):
        raise ConfigError("extension %s: %s.%s is not a class" % (spec, module_name, class_name))
    return cls


def _display_name(extension: Any) -> str:
    return getattr(extension, "name", "") or type(extension).__name__


def _describe(error: BaseException) -> str:
    text = str(error)
    return "%s: %s" % (type(error).__name__, text) if text else type(error).__name__
