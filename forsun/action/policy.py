"""``ALLOWED_ACTIONS``: which actions plans may use on this server.

A deployment that must not run shell commands or SQL lists the actions it allows
(``allowed_actions = http;redis``). Creating a plan with another action is refused with
error 1006 (:meth:`forsun.forsun.Forsun.check_plan`, used by Thrift and HTTP alike); a plan
stored before its action was disallowed fails when it fires, with a log line saying why
(the runner checks again at every fire). Empty (the default) or ``*`` allows every
registered action.
"""

import logging
from typing import Any, FrozenSet, Optional

from .. import config
from ..error import UnknownActionError

log = logging.getLogger("forsun")

ALLOWED_ACTIONS = config.define(
    "ALLOWED_ACTIONS", [],
    "actions plans may use, ';'-separated (e.g. http;redis); empty or * = every action")


class ActionNotAllowed(Exception):
    """A stored plan's action is not (or no longer) in ALLOWED_ACTIONS; the fire fails."""


class ActionPolicy:
    def __init__(self, allowed: Optional[FrozenSet[str]] = None):
        self.allowed = allowed  # None: every action

    @classmethod
    def from_settings(cls, settings: Any) -> "ActionPolicy":
        names = settings.get(ALLOWED_ACTIONS.name) if settings is not None else None
        if isinstance(names, str):
            names = [part.strip() for part in names.split(";") if part.strip()]
        if not names or "*" in names:
            return cls(None)
        return cls(frozenset(names))

    def allows(self, action: str) -> bool:
        return self.allowed is None or action in self.allowed

    def describe(self) -> str:
        return "; ".join(sorted(self.allowed)) if self.allowed is not None else "*"

    def check(self, action: str) -> None:
        """For a plan about to be stored: error 1006 if its action is not allowed."""
        if not self.allows(action):
            raise UnknownActionError("action %r is not allowed on this server; allowed "
                                     "actions: %s (ALLOWED_ACTIONS)" % (action, self.describe()))

    def check_fire(self, action: str) -> None:
        """For a stored plan about to fire: it may predate the setting."""
        if not self.allows(action):
            raise ActionNotAllowed("action %r is not allowed on this server (ALLOWED_ACTIONS "
                                   "= %s); the plan was stored before it was disallowed: "
                                   "remove it or allow the action"
                                   % (action, self.describe()))
