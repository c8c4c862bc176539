"""The action registry: action names (``shell``, ``http``, ...) to Action classes.

Built-in actions are registered on first use; extensions add theirs with
``Extension.register_action`` (which calls :func:`register_action`).
"""

import importlib
import logging
from typing import Dict, List, Type

from .action import Action

# name -> "module:Class" of the built-in actions, imported when first needed.
BUILTIN_ACTIONS = {
    "shell": "forsun.action.drivers.shell:ShellAction",
    "http": "forsun.action.drivers.http:HttpAction",
    "redis": "forsun.action.drivers.redis:RedisAction",
    "thrift": "forsun.action.drivers.thrift:ThriftAction",
    "beanstalk": "forsun.action.drivers.beanstalk:BeanstalkAction",
    "mysql": "forsun.action.drivers.mysql:MysqlAction",
}

_actions: Dict[str, Type[Action]] = {}
_builtins_loaded = False


def register_action(name: str, cls: Type[Action]) -> bool:
    """Makes plans with action ``name`` run ``cls``; False if ``cls`` is not an Action."""
    if not (isinstance(cls, type) and issubclass(cls, Action)):
        return False
    _actions[name] = cls
    logging.info("action register %s %s", name, cls)
    return True


def load_builtin_actions() -> None:
    """Imports and registers the built-in actions; a missing library is a start error."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for name, target in BUILTIN_ACTIONS.items():
        if name in _actions:
            continue
        module_name, class_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        register_action(name, cls)
        cls.init()


def get_action_class(name: str) -> Type[Action]:
    """The class for an action name; KeyError if none is registered."""
    load_builtin_actions()
    return _actions[name]


def has_action(name: str) -> bool:
    load_builtin_actions()
    return name in _actions


def get_action_names() -> List[str]:
    load_builtin_actions()
    return list(_actions)


def registered_classes() -> List[Type[Action]]:
    return list(dict.fromkeys(_actions.values()))


__all__ = ["Action", "register_action", "get_action_class", "has_action", "get_action_names",
           "load_builtin_actions"]
