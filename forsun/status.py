"""The one object that counts: every component increments counters here, nobody keeps its own.

``forsun_status`` is module-level so 0.1.x extensions that did
``from forsun.status import forsun_status; forsun_status.inc("my_count")`` keep working.
"""

import os
import platform
import time
from bisect import bisect_left
from typing import Any, Dict, List, Optional, Sequence, Tuple

import psutil

from .history import Execution, ExecutionHistory
from .version import version

# The counters of SPEC section 6, in the order ``info`` lists them.
COUNTERS = (
    "connecting_count", "connected_count", "requesting_count", "requested_count",
    "requested_error_count", "http_connecting_count", "http_connected_count",
    "http_requesting_count", "http_requested_count", "http_requested_error_count",
    "created_count", "create_timeouted_count", "removed_count", "plan_count",
    "timeout_handling_count", "timeout_handled_count", "action_executing_count",
    "action_executed_count", "action_executed_error_count", "action_retried_count",
    "timer_loop_count", "timer_loop_ready_error_count",
)


# Histogram bucket bounds (seconds) of the /metrics histograms.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0, 900.0, 3600.0)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
                    60.0, 300.0)
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Observations counted per bucket, as Prometheus histograms count them (``le``)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        index = bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += times
        self.sum += value * times
        self.count += times

    def cumulative(self) -> List[Tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (+inf, count)."""
        total, buckets = 0, []
        for bound, count in zip(self.bounds, self.counts):
            total += count
            buckets.append((bound, total))
        buckets.append((float("inf"), self.count))
        return buckets


class ForsunStatus:
    def __init__(self) -> None:
        self.start_time = time.time()
        self.customs: Dict[str, int] = {}
        self.history = ExecutionHistory()
        self.reset()

    def reset(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.customs.clear()
        # Beyond 0.1.x, for /metrics (forsun/metrics.py) and /v1/executions:
        self.fires: Dict[Tuple[str, str], int] = {}          # (action, outcome) -> fires
        self.action_retries: Dict[str, int] = {}             # action -> retried attempts
        self.action_durations: Dict[str, Histogram] = {}     # action -> attempt durations
        self.timer_lateness = Histogram(LATENESS_BUCKETS)    # due second -> firing starts
        self.loop_lag = Histogram(LOOP_LAG_BUCKETS)          # IOLoop callbacks running late
        self.loop_lag_last = 0.0
        self.loop_lag_max = 0.0                              # the largest lateness seen
        self.store_errors: Dict[str, int] = {}               # operation -> failures
        self.connections_refused: Dict[Tuple[str, str], int] = {}  # (server, reason) -> count
        self.history.clear()

    # -- beyond 0.1.x: what /metrics and /v1/executions show -----------------------------

    def action_finished(self, ts: int, plan: Any, attempt: int, outcome: int,
                        duration: float, error: Optional[str] = None) -> None:
        """One attempt of a fire ended (the runner calls this for every attempt).

        ``outcome``: 1 succeeded, -1 failed for good, 0 failed and will be retried.
        ``attempt`` counts retries (0 = first attempt). Final outcomes enter the history.
        """
        self.actions_finished(((ts, plan, attempt, outcome, duration, error),))

    def actions_finished(self, attempts: Sequence[Tuple[int, Any, int, int, float,
                                                        Optional[str]]]) -> None:
        """:meth:`action_finished` for many attempts ``(ts, plan, attempt, outcome,
        duration, error)`` at once, as the runner reports them: a busy second ends tens of
        thousands (the fires of one batch with one duration), of which the history keeps
        only the last ones."""
        fires = self.fires
        retries = self.action_retries
        history = self.history
        keep_from = len(attempts) - history.size if history.size else len(attempts)
        now = time.time()
        same = 0  # attempts in a row of one action and duration, observed together
        last: Tuple[Any, ...] = ()
        for index, (ts, plan, attempt, outcome, duration, error) in enumerate(attempts):
            action = plan.action
            if (action, duration) != last:
                if same:
                    self._observe_duration(last[0], last[1], same)
                last, same = (action, duration), 0
            same += 1
            if outcome == 0:
                retries[action] = retries.get(action, 0) + 1
                continue
            label = (action, "succeeded" if outcome > 0 else "failed")
            fires[label] = fires.get(label, 0) + 1
            if index >= keep_from:
                history.append(Execution(plan.key, ts, action, 1 if outcome > 0 else -1,
                                         attempt + 1, now - duration, duration, error))
        if same:
            self._observe_duration(last[0], last[1], same)

    def _observe_duration(self, action: str, duration: float, times: int) -> None:
        histogram = self.action_durations.get(action)
        if histogram is None:
            histogram = self.action_durations[action] = Histogram(DURATION_BUCKETS)
        histogram.observe(duration, times)

    def observe_lateness(self, seconds: float) -> None:
        """How long after its second boundary the handling of a second started."""
        self.timer_lateness.observe(max(0.0, seconds))

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag_last = seconds
        self.loop_lag.observe(seconds)
        if seconds > self.loop_lag_max:
            self.loop_lag_max = seconds

    def store_error(self, operation: str) -> None:
        """A store call failed: create, remove, read, fire, set_status, snapshot, ..."""
        self.store_errors[operation] = self.store_errors.get(operation, 0) + 1

    def connection_refused(self, server: str, reason: str) -> None:
        """A connection was closed at accept: reason "address" (ALLOW_IPS) or
        "max_connections"."""
        label = (server, reason)
        self.connections_refused[label] = self.connections_refused.get(label, 0) + 1

    def inc(self, key: str, value: int = 1) -> None:
        """Adds to a counter; unknown names become extension counters listed in ``info``."""
        if key in COUNTERS:
            setattr(self, key, getattr(self, key) + value)
        else:
            self.customs[key] = self.customs.get(key, 0) + value

    def info(self, stores: List[str], current_store: str, actions: List[str], bind_port: str,
             http_bind_port: str, extensions: List[str]) -> Dict[str, str]:
        """The ``info`` map of SPEC section 6: every value a string, lists ';'-joined."""
        process = psutil.Process(os.getpid())
        cpu = process.cpu_times()
        memory = process.memory_info()
        info = {
            "python_version": platform.python_version(),
            "forsun_version": version,
            "start_time": str(int(self.start_time)),
            "cpu_user": "%.3f" % cpu.user,
            "cpu_system": "%.3f" % cpu.system,
            "mem_rss": str(memory.rss),
            "mem_vms": str(memory.vms),
            "current_time": str(int(time.time())),
            "stores": ";".join(stores),
            "current_store": current_store,
            "actions": ";".join(actions),
            "bind_port": bind_port,
            "http_bind_port": http_bind_port,
            "extensions": ";".join(extensions),
        }
        for name in COUNTERS:
            info[name] = str(getattr(self, name))
        info["loop_lag_max_ms"] = "%.1f" % (self.loop_lag_max * 1000)  # beyond 0.1.x
        for name, value in self.customs.items():
            info[name] = str(value)
        return info


forsun_status = ForsunStatus()
