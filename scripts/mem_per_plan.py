#!/usr/bin/env python3
"""Prints how much RSS the mem store takes per plan, to keep the memory budget in sight.

The plans look like the benchmark's: a 16-character key, an http action with a
30-character url, delay plans spread over an hour of seconds. The store runs on an IOLoop
through its public API (put_plan), as the core would fill it; nothing is written to disk.

    python scripts/mem_per_plan.py [N]     # N defaults to 1,000,000
"""

import gc
import os
import sys
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tornado.ioloop import IOLoop  # noqa: E402

from forsun.config import Settings  # noqa: E402
from forsun.plan import Plan  # noqa: E402
from forsun.store.drivers.mem import MemStore  # noqa: E402

SPREAD_SECONDS = 3600


def make_plan(i: int, now: int) -> Plan:
    key = "plan-%011d" % i
    url = "http://127.0.0.1:8080/cb/%05d" % (i % 100000)
    assert len(key) == 16 and len(url) == 30
    return Plan.build(key, True, second=1 + i % SPREAD_SECONDS, action="http",
                      params={"url": url}, now=now)


async def fill(store: MemStore, n: int) -> None:
    now = int(time.time())
    for i in range(n):
        await store.put_plan(make_plan(i, now))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    process = psutil.Process()
    store = MemStore(Settings({"STORE_MEM_STORE_FILE": os.devnull}))
    gc.collect()
    before = process.memory_info().rss
    started = time.monotonic()
    IOLoop.current().run_sync(lambda: fill(store, n))
    gc.collect()
    delta = process.memory_info().rss - before
    print("%d plans in %.1fs: RSS +%.1f MB, %.1f bytes/plan"
          % (n, time.monotonic() - started, delta / 1e6, delta / n))


if __name__ == "__main__":
    main()
