"""The one object that counts: every component increments counters here, nobody keeps its own.

``forsun_status`` is module-level so 0.1.x extensions that did
``from forsun.status import forsun_status; forsun_status.inc("my_count")`` keep working.
"""

import os
import platform
import time
from typing import Dict, List

import psutil

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


class ForsunStatus:
    def __init__(self) -> None:
        self.start_time = time.time()
        self.customs: Dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.customs.clear()

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
        for name, value in self.customs.items():
            info[name] = str(value)
        return info


forsun_status = ForsunStatus()
