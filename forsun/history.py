"""Execution history: the last N fires with their outcome, for ``GET /v1/executions``.

A bounded ring (``EXECUTION_HISTORY_SIZE`` entries, default 1,000; 0 turns it off) of
:class:`Execution` records, appended by :meth:`forsun.status.ForsunStatus.action_finished`
when a fire's outcome is final: after the action succeeded, or failed without a retry left.
Attempts that are retried are not entries of their own; an entry says how many attempts the
fire took. It lives in memory only: a restart starts an empty history.
"""

from collections import deque
from typing import Any, Deque, Dict, List, NamedTuple, Optional

from . import config

HISTORY_SIZE = config.define(
    "EXECUTION_HISTORY_SIZE", 1000,
    "fires kept for GET /v1/executions (the last N, in memory); 0 = keep none")

# An error text is cut to this many characters, so the ring's memory stays bounded.
MAX_ERROR_CHARS = 1000

OUTCOMES = {1: "succeeded", -1: "failed"}


class Execution(NamedTuple):
    key: str
    due: int               # the second the plan was due (its fire timestamp)
    action: str
    status: int            # 1 succeeded, -1 failed (the plan's status after this fire)
    attempts: int          # 1 + retries
    started_time: float    # Unix time the last attempt started
    duration: float        # seconds the last attempt ran
    error: Optional[str]   # why it failed; None when it succeeded

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "due": self.due, "action": self.action,
                "outcome": OUTCOMES.get(self.status, "failed"), "status": self.status,
                "attempts": self.attempts, "started_time": round(self.started_time, 6),
                "duration": round(self.duration, 6), "error": self.error}


class ExecutionHistory:
    def __init__(self, size: int = HISTORY_SIZE.default):
        self.size = max(0, int(size))
        self._ring: Deque[Execution] = deque(maxlen=self.size)

    def resize(self, size: int) -> None:
        """Keeps the newest entries that fit the new size."""
        self.size = max(0, int(size))
        self._ring = deque(self._ring, maxlen=self.size)

    def append(self, execution: Execution) -> None:
        if self.size:
            if execution.error is not None and len(execution.error) > MAX_ERROR_CHARS:
                execution = execution._replace(error=execution.error[:MAX_ERROR_CHARS] + "...")
            self._ring.append(execution)

    def __len__(self) -> int:
        return len(self._ring)

    def clear(self) -> None:
        self._ring.clear()

    def list(self, key: Optional[str] = None, limit: Optional[int] = None) -> List[Execution]:
        """Newest first; only the fires of ``key`` when given; at most ``limit``."""
        found: List[Execution] = []
        for execution in reversed(self._ring):
            if key is None or execution.key == key:
                found.append(execution)
                if limit is not None and len(found) >= limit:
                    break
        return found
