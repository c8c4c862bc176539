"""``GET /metrics``: the Prometheus text format, built from the service's ForsunStatus.

Nothing here counts: :class:`ForsunCollector` reads the counters and histograms of
:class:`forsun.status.ForsunStatus` when scraped. Each service gets its own
``CollectorRegistry`` (never prometheus_client's global one), so tests can build several
services in one process. :class:`LoopLagProbe` measures how late the IOLoop runs a callback
(``IOLOOP_LAG_PROBE_SECONDS``) into the status' loop-lag histogram.

The metrics (docs/operations.md lists them with their meaning):

    forsun_info{version}                       1
    forsun_start_time_seconds                  Unix time forsund started
    forsun_plans                               plans held by the store
    forsun_plans_created_total{kind}           kind = delay | fixed
    forsun_plans_removed_total
    forsun_fires_total{action,outcome}         outcome = succeeded | failed (final)
    forsun_action_retries_total{action}        attempts that failed and were retried
    forsun_actions_running                     attempts running now
    forsun_action_duration_seconds{action}     histogram, every attempt
    forsun_timer_lateness_seconds              histogram, second boundary -> its handling starts
    forsun_timer_seconds_handled_total
    forsun_timer_errors_total                  seconds whose handling failed (retried)
    forsun_ioloop_lag_seconds                  histogram of the probe's lateness
    forsun_ioloop_lag_last_seconds             the probe's last lateness
    forsun_store_errors_total{operation}
    forsun_connections_open{server}            server = thrift | http
    forsun_connections_total{server}
    forsun_connections_refused_total{server,reason}   reason = address | max_connections
    forsun_requests_total{server}
    forsun_request_errors_total{server}
    forsun_requests_in_flight{server}
    forsun_extension_counter{name}             counters extensions add with status.inc()
    forsun_executions_kept                     entries in the execution history
    process_*                                  CPU, memory, open fds (prometheus_client)
"""

import logging
from typing import Any, Iterator, Optional

from prometheus_client import CollectorRegistry, ProcessCollector, exposition
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector
from tornado.ioloop import IOLoop

from . import config
from .status import Histogram
from .version import version

log = logging.getLogger("forsun")

LOOP_LAG_PROBE = config.define(
    "IOLOOP_LAG_PROBE_SECONDS", 0.5,
    "interval of the IOLoop lag probe behind forsun_ioloop_lag_seconds; 0 = off")

# The classic text format (0.0.4), which every Prometheus version reads.
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

SERVERS = (("thrift", ""), ("http", "http_"))


def _histogram(name: str, documentation: str, histograms: Any,
               label: Optional[str] = None) -> HistogramMetricFamily:
    """``histograms``: one Histogram, or a dict label value -> Histogram."""
    family = HistogramMetricFamily(name, documentation, labels=[label] if label else None)
    items = histograms.items() if label else [(None, histograms)]
    for value, histogram in sorted(items, key=lambda item: item[0] or ""):
        assert isinstance(histogram, Histogram)
        buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
        family.add_metric([value] if label else [], buckets, histogram.sum)
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class ForsunCollector(Collector):
    """Turns one service's status into metric families at every scrape."""

    def __init__(self, service: Any):
        self.service = service

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are fixed above; nothing to check against other collectors

    def collect(self) -> Iterator[Metric]:
        status = self.service.status
        info = GaugeMetricFamily("forsun_info", "forsun version", labels=["version"])
        info.add_metric([version], 1)
        yield info
        yield GaugeMetricFamily("forsun_start_time_seconds", "Unix time forsund started",
                                value=status.start_time)
        yield GaugeMetricFamily("forsun_plans", "plans held by the store",
                                value=status.plan_count)

        created = CounterMetricFamily("forsun_plans_created", "plans created or replaced",
                                      labels=["kind"])
        created.add_metric(["delay"], status.create_timeouted_count)
        created.add_metric(["fixed"], status.created_count)
        yield created
        yield CounterMetricFamily("forsun_plans_removed", "plans removed by a request",
                                  value=status.removed_count)

        fires = CounterMetricFamily("forsun_fires", "fires by action and final outcome",
                                    labels=["action", "outcome"])
        for (action, outcome), count in sorted(status.fires.items()):
            fires.add_metric([action, outcome], count)
        yield fires
        retries = CounterMetricFamily("forsun_action_retries",
                                      "attempts that failed and were retried",
                                      labels=["action"])
        for action, count in sorted(status.action_retries.items()):
            retries.add_metric([action], count)
        yield retries
        yield GaugeMetricFamily("forsun_actions_running", "action attempts running now",
                                value=status.action_executing_count)
        yield _histogram("forsun_action_duration_seconds", "seconds an action attempt ran",
                         status.action_durations, "action")

        yield _histogram("forsun_timer_lateness_seconds",
                         "seconds from a second's boundary to the start of its handling",
                         status.timer_lateness)
        yield CounterMetricFamily("forsun_timer_seconds_handled", "seconds handled by the timer",
                                  value=status.timeout_handled_count)
        yield CounterMetricFamily("forsun_timer_errors",
                                  "seconds whose handling failed (they are retried)",
                                  value=status.timer_loop_ready_error_count)
        yield _histogram("forsun_ioloop_lag_seconds",
                         "seconds the IOLoop ran the lag probe's callback late", status.loop_lag)
        yield GaugeMetricFamily("forsun_ioloop_lag_last_seconds",
                                "the lag probe's last measurement", value=status.loop_lag_last)

        store_errors = CounterMetricFamily("forsun_store_errors", "failed store calls",
                                           labels=["operation"])
        for operation, count in sorted(status.store_errors.items()):
            store_errors.add_metric([operation], count)
        yield store_errors

        families = {
            "open": GaugeMetricFamily("forsun_connections_open", "connections open now",
                                      labels=["server"]),
            "total": CounterMetricFamily("forsun_connections", "connections accepted",
                                         labels=["server"]),
            "requests": CounterMetricFamily("forsun_requests", "requests answered",
                                            labels=["server"]),
            "errors": CounterMetricFamily("forsun_request_errors",
                                          "requests answered with an error",
                                          labels=["server"]),
            "in_flight": GaugeMetricFamily("forsun_requests_in_flight",
                                           "requests being handled now", labels=["server"]),
        }
        for server, prefix in SERVERS:
            families["open"].add_metric([server], getattr(status, prefix + "connecting_count"))
            families["total"].add_metric([server], getattr(status, prefix + "connected_count"))
            families["requests"].add_metric([server],
                                            getattr(status, prefix + "requested_count"))
            families["errors"].add_metric([server],
                                          getattr(status, prefix + "requested_error_count"))
            families["in_flight"].add_metric([server],
                                             getattr(status, prefix + "requesting_count"))
        yield from families.values()
        refused = CounterMetricFamily("forsun_connections_refused",
                                      "connections closed at accept",
                                      labels=["server", "reason"])
        for (server, reason), count in sorted(status.connections_refused.items()):
            refused.add_metric([server, reason], count)
        yield refused

        customs = GaugeMetricFamily("forsun_extension_counter",
                                    "counters extensions add with forsun_status.inc()",
                                    labels=["name"])
        for name, value in sorted(status.customs.items()):
            customs.add_metric([name], value)
        yield customs
        yield GaugeMetricFamily("forsun_executions_kept", "entries in the execution history",
                                value=len(status.history))


def make_registry(service: Any) -> CollectorRegistry:
    """A registry of the service's own: its collector and this process's process_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ForsunCollector(service))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return exposition.generate_latest(registry)


class LoopLagProbe:
    """Schedules a callback every ``interval`` seconds and records how late it runs: the
    time the IOLoop was busy with something else (a long synchronous step, a big batch)."""

    def __init__(self, status: Any, interval: float):
        self.status = status
        self.interval = float(interval)
        self._handle: Any = None
        self._expected = 0.0

    def start(self) -> None:
        if self.interval > 0:
            self._schedule()

    def _schedule(self) -> None:
        loop = IOLoop.current()
        self._expected = loop.time() + self.interval
        self._handle = loop.call_at(self._expected, self._tick)

    def _tick(self) -> None:
        self.status.observe_loop_lag(max(0.0, IOLoop.current().time() - self._expected))
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            IOLoop.current().remove_timeout(self._handle)
            self._handle = None
