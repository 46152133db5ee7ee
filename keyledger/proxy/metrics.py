"""Prometheus metrics for the admin API's ``/metrics``, read live at scrape time.

Each metric is computed from the objects that already keep the numbers (a shipper's
status, the journal's durable seq) by a collector registered in a registry of the admin
app's own: no module-level metric objects, so two apps in one process never mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keyledger.proxy.audit.sinks import Shipper

__all__ = ["SinkCollector", "make_registry"]


class SinkCollector(Collector):
    """Each remote sink's progress and lag behind the local journal."""

    def __init__(self, shippers: Sequence[Shipper]) -> None:
        self._shippers = shippers

    def collect(self) -> Iterator[Metric]:
        labels = ["sink"]
        lag_events = GaugeMetricFamily(
            "keyledger_sink_lag_events",
            "Durable journal events not yet acknowledged by the sink",
            labels=labels,
        )
        lag_seconds = GaugeMetricFamily(
            "keyledger_sink_lag_seconds",
            "Age of the oldest event not yet acknowledged by the sink (0 when caught up)",
            labels=labels,
        )
        alarm = GaugeMetricFamily(
            "keyledger_sink_lag_alarm",
            "1 while the sink's lag is over audit.shipping.lag_alarm(_events)",
            labels=labels,
        )
        ready = GaugeMetricFamily(
            "keyledger_sink_ready",
            "1 once the sink passed its checks (Object Lock, log group) and is shipping",
            labels=labels,
        )
        shipped = CounterMetricFamily(
            "keyledger_sink_shipped_events",
            "Events the sink acknowledged since start (resent batches count again)",
            labels=labels,
        )
        batches = CounterMetricFamily(
            "keyledger_sink_batches", "Batches the sink acknowledged since start", labels=labels
        )
        failures = CounterMetricFamily(
            "keyledger_sink_failures",
            "Failed attempts to prepare or send to the sink (each is retried)",
            labels=labels,
        )
        for shipper in self._shippers:
            status, name = shipper.status, [shipper.sink.name]
            lag_events.add_metric(name, shipper.lag_events)
            lag_seconds.add_metric(name, status.lag_seconds())
            alarm.add_metric(name, int(status.alarm))
            ready.add_metric(name, int(status.prepared))
            shipped.add_metric(name, status.shipped_events)
            batches.add_metric(name, status.batches)
            failures.add_metric(name, status.failures)
        yield from (lag_events, lag_seconds, alarm, ready, shipped, batches, failures)


def make_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry
