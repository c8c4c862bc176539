"""The Action base class that built-in actions and extensions subclass (SPEC section 8).

One Action object is made for each fire of a plan: ``Action(ts, plan, action, params)``,
then ``execute()`` is awaited by the runner, which owns timeouts, retries, status and
counters, so an action only talks to its target.
"""

from typing import Any, Awaitable, Callable, Dict, List, Optional

from ..error import ActionExecuteRetry

class ExecuteActionError(Exception):
    """A final failure of an action (kept from 0.1.x; any exception but a retry is final)."""


class Action:
    """Subclass and implement ``execute``.

    ``execute`` may be ``async def``, a Tornado ``gen.coroutine`` or a plain function (a
    plain one runs on the IOLoop, so it must not block). Raise
    :class:`forsun.error.ActionExecuteRetry` for failures a later attempt may fix.
    """

    #: The setting holding the seconds one execute may take before the runner fails it.
    timeout_setting = "ACTION_TIMEOUT"

    def __init__(self, ts: int, plan: Any, action: str, params: Dict[str, str]):
        self.ts = ts
        self.plan = plan
        self.action = action
        self.params = params

    @classmethod
    def init(cls) -> None:
        """Called once when the action class is registered; prepare shared resources here."""

    @classmethod
    def uninit(cls) -> None:
        """Called once at a clean stop; close pools here (may be a coroutine)."""

    #: Optional, for actions that gain from handling many fires at once (the redis action
    #: pipelines them): a classmethod ``async execute_batch(cls, fires) -> outcomes`` taking
    #: a list of Action objects of one due second and returning, in the same order, None
    #: for each fire that succeeded or the exception it failed with (ActionExecuteRetry to
    #: have it retried, alone, through ``execute``). The runner then hands over the first
    #: attempts of a busy second's fires in lists instead of one ``execute`` task each.
    execute_batch: Optional[Callable[[List["Action"]], Awaitable[List[Optional[BaseException]]]]]
    execute_batch = None
    #: Optional with ``execute_batch``: a plain classmethod ``prepare_batch(cls, fires)``
    #: called when fires are prepared ahead of their second (up to 0.1 s before it), to get
    #: ready for them without running them, e.g. open a connection. It must not block.
    prepare_batch: Optional[Callable[[List["Action"]], None]]
    prepare_batch = None

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError()


__all__ = ["Action", "ActionExecuteRetry", "ExecuteActionError"]
