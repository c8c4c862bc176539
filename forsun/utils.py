"""Small helpers shared across the package."""

import inspect
from typing import Any


async def maybe_await(value: Any) -> Any:
    """Awaits ``value`` if it is awaitable (coroutine, Future, gen.coroutine result).

    Extensions may implement store and action methods as ``async def``, as Tornado
    ``gen.coroutine`` or as plain functions; the core calls them all through this.
    """
    if inspect.isawaitable(value):
        return await value
    return value
