"""Extensions: third-party code that registers actions and stores (SPEC section 8).

    class MyExtension(Extension):
        name = "mine"
        def register(self):
            self.register_action("mine", MyAction)

``register()`` runs at start (before the store is chosen, so a registered store can be
the ``--driver``), ``init()`` once the IOLoop runs, ``uninit()`` at a clean stop; the last
two may be coroutines. An extension that cannot be loaded stops forsund at start.
"""

import importlib
import logging
import os
import sys
from typing import List, Optional, Type

from .action import register_action as _register_action
from .error import ConfigError
from .store import register_store as _register_store
from .utils import maybe_await

log = logging.getLogger("forsun")


class Extension:
    name = ""

    def register_store(self, name: str, cls: type) -> bool:
        return _register_store(name, cls)

    def register_action(self, name: str, cls: type) -> bool:
        return _register_action(name, cls)

    def register(self) -> None:
        pass

    def init(self) -> None:
        pass

    def uninit(self) -> None:
        pass


class ExtensionManager:
    """Loads, registers and runs the life cycle of the configured extensions."""

    def __init__(self) -> None:
        self.extensions: List[Extension] = []

    def load(self, path: str, names: List[str]) -> None:
        """Imports each ``module.Class`` (``path`` first on sys.path) and runs register().

        Raises ConfigError naming the extension and the reason, so forsund stops at start.
        """
        if path:
            path = os.path.abspath(os.path.expanduser(path))
            if path not in sys.path:
                sys.path.insert(0, path)
            log.info("register extension path %s", path)
        for name in names:
            cls = self._import(name)
            try:
                extension = cls()
                extension.register()
            except Exception as e:
                raise ConfigError("extension %s failed to register: %s: %s"
                                  % (name, type(e).__name__, e)) from e
            self.extensions.append(extension)
            log.info("load extension %s %s", name, cls)

    @staticmethod
    def _import(name: str) -> Type[Extension]:
        module_name, _, class_name = name.rpartition(".")
        if not module_name or not class_name:
            raise ConfigError("extension %r is not of the form module.Class" % name)
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise ConfigError("extension %s cannot be imported: %s: %s"
                              % (name, type(e).__name__, e)) from e
        cls: Optional[type] = getattr(module, class_name, None)
        if cls is None:
            raise ConfigError("extension %s: module %s has no class %s"
                              % (name, module_name, class_name))
        return cls

    @property
    def names(self) -> List[str]:
        return [ext.name or type(ext).__name__ for ext in self.extensions]

    async def init(self) -> None:
        for extension in self.extensions:
            await maybe_await(extension.init())

    async def uninit(self) -> None:
        for extension in reversed(self.extensions):
            try:
                await maybe_await(extension.uninit())
            except Exception as e:
                log.error("extension %s uninit failed: %s", extension.name, e)
