"""The store registry: built-in stores and those extensions register, by driver name."""

import logging
from typing import Dict, List, Type

from .store import Store

_stores: Dict[str, Type[Store]] = {}


def register_store(name: str, cls: Type[Store]) -> bool:
    """Makes ``--driver NAME`` use ``cls``; returns False if ``cls`` is not a Store."""
    if not (isinstance(cls, type) and issubclass(cls, Store)):
        return False
    _stores[name] = cls
    logging.info("store register %s %s", name, cls)
    return True


def _register_builtins() -> None:
    from .drivers.mem import MemStore
    _stores.setdefault("mem", MemStore)
    try:
        from .drivers.redis import RedisStore
    except ImportError:  # the redis store arrives in its own module
        return
    _stores.setdefault("redis", RedisStore)


def get_store_class(name: str) -> Type[Store]:
    """The class for a driver name; KeyError if nothing registered it."""
    if not _stores or "mem" not in _stores:
        _register_builtins()
    return _stores[name]


def get_store_names() -> List[str]:
    if "mem" not in _stores:
        _register_builtins()
    return list(_stores)


__all__ = ["Store", "register_store", "get_store_class", "get_store_names"]
