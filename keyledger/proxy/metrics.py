"""Prometheus metrics for the admin API's ``/metrics``.

Two kinds, all in a registry owned by the data-plane app (no module-level metric objects,
so two apps in one process never mix):

- :class:`ProxyMetrics` counts what happens as it happens: each answered request (the
  pipeline's :class:`~keyledger.proxy.pipeline.RequestObserver`) and each journal fsync.
- Collectors read, at scrape time, numbers that other objects keep anyway: the journal's
  queue, the policy in force and its reloads, the remote sinks' lag.

Label values come from small fixed sets (operations the frontend knows, error kinds);
never from what a caller typed, so a caller cannot blow up the number of series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from keyledger.alerts.model import Alert
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.retention import Retention
from keyledger.proxy.audit.sinks import Shipper
from keyledger.proxy.cache import SecretCache
from keyledger.proxy.connections import ConnectionGuard
from keyledger.proxy.logging import LogWriter
from keyledger.proxy.pipeline import PolicyHolder, RequestTrace

__all__ = [
    "AlertMetrics",
    "CacheCollector",
    "ConnectionCollector",
    "JournalCollector",
    "LogCollector",
    "PolicyCollector",
    "ProxyMetrics",
    "RetentionCollector",
    "SinkCollector",
]

# Seconds: from a cached local answer (sub-millisecond) to a store timing out.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class AlertMetrics:
    """What the alert rules fired and what their destinations did with it (an
    AlertObserver and a DeliveryObserver)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.fired = Counter(
            "keyledger_alerts",
            "Alerts fired, by rule and severity",
            ["rule", "severity"],
            registry=registry,
        )
        self.suppressed = Counter(
            "keyledger_alerts_suppressed",
            "Repeats of an alert held back within its rule's suppress period, by rule",
            ["rule"],
            registry=registry,
        )
        self.dropped = Counter(
            "keyledger_alert_events_dropped",
            "Audit events the alert rules never saw because detection fell behind",
            registry=registry,
        )
        self.deliveries = Counter(
            "keyledger_alert_deliveries",
            "Alerts a destination took",
            ["destination"],
            registry=registry,
        )
        self.failures = Counter(
            "keyledger_alert_delivery_failures",
            "Failed attempts to deliver an alert (retried until attempts run out), by reason",
            ["destination", "reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "keyledger_alert_dead_letters",
            "Alerts a destination never took, by reason (queue_full, rejected, "
            "attempts_exhausted, shutdown, ...)",
            ["destination", "reason"],
            registry=registry,
        )
        self._suppressed: dict[str, Counter] = {}
        self.queue = Gauge(
            "keyledger_alert_queue_depth",
            "Alerts waiting for a destination",
            ["destination"],
            registry=registry,
        )

    # AlertObserver
    def alert_fired(self, alert: Alert) -> None:
        self.fired.labels(alert.rule, alert.severity.value).inc()

    def alert_suppressed(self, rule: str) -> None:
        # Told of every repeat held back, on the detection loop: the child once per rule.
        child = self._suppressed.get(rule)
        if child is None:
            child = self._suppressed[rule] = self.suppressed.labels(rule)
        child.inc()

    def alert_events_dropped(self, count: int) -> None:
        self.dropped.inc(count)

    # DeliveryObserver
    def delivered(self, destination: str) -> None:
        self.deliveries.labels(destination).inc()

    def failed(self, destination: str, reason: str) -> None:
        self.failures.labels(destination, reason).inc()

    def dead_letter(self, destination: str, reason: str) -> None:
        self.dead_letters.labels(destination, reason).inc()

    def queue_depth(self, destination: str, depth: int) -> None:
        self.queue.labels(destination).set(depth)


class ProxyMetrics:
    """Counters and histograms fed by the request path and the journal."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "keyledger_requests",
            "Requests answered, by wire protocol, operation, policy effect (allow, deny, or "
            "none when no policy decided) and status (success, denied, error, challenged)",
            ["protocol", "operation", "effect", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "keyledger_request_duration_seconds",
            "Time from a request's arrival (body read) to its answer",
            ["protocol", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.backend_latency = Histogram(
            "keyledger_backend_duration_seconds",
            "Time a request that called the secret store spent waiting on it (alias lookups "
            "included)",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.audit_wait = Histogram(
            "keyledger_audit_wait_seconds",
            "Time a request spent waiting for its audit events to be durable",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.auth_failures = Counter(
            "keyledger_auth_failures",
            "Requests refused because authentication failed, by reason",
            ["protocol", "reason"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "keyledger_backend_errors",
            "Calls the secret store failed, by error kind (not_found, invalid_request, "
            "conflict, unavailable, error)",
            ["backend", "kind"],
            registry=registry,
        )
        self.fsync_latency = Histogram(
            "keyledger_journal_fsync_duration_seconds",
            "Duration of each audit journal fsync",
            buckets=_FSYNC_BUCKETS,
            registry=registry,
        )
        self.events_per_fsync = Histogram(
            "keyledger_journal_events_per_fsync",
            "Audit events made durable by one fsync (group commit)",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        # Few keys (operations x effects x statuses), so the cache stays small.
        self._children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}

    def observe(self, trace: RequestTrace) -> None:
        """One answered request (the pipeline's observer)."""
        key = (trace.protocol, trace.operation, trace.effect, trace.status)
        children = self._children.get(key)
        if children is None:  # labels() validates every time: look each series up once
            children = self._children[key] = (
                self.requests.labels(*key),
                self.latency.labels(trace.protocol, trace.operation),
            )
        requests, latency = children
        requests.inc()
        latency.observe(trace.total_s)
        if trace.store_called:
            self.backend_latency.labels(trace.backend).observe(trace.backend_s)
        self.audit_wait.observe(trace.audit_s)
        if trace.auth_failure is not None:
            self.auth_failures.labels(trace.protocol, trace.auth_failure).inc()
        if trace.backend_error is not None:
            self.backend_errors.labels(trace.backend, trace.backend_error).inc()

    def fsync(self, seconds: float, events: int) -> None:
        """One journal fsync (the journal's ``on_fsync``)."""
        self.fsync_latency.observe(seconds)
        self.events_per_fsync.observe(events)


class LogCollector(Collector):
    """What the operational log could not write (its queue was full: stderr not read), and
    the malformed requests it counts instead of logging each."""

    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "keyledger_log_lines_dropped",
            "Operational log lines dropped because stderr was not taking them (never audit "
            "events: those are in the journal)",
            value=self._writer.dropped,
        )
        yield CounterMetricFamily(
            "keyledger_malformed_http_requests",
            "Requests that were not HTTP keyledger could parse (answered 400 by the HTTP "
            "server before reaching keyledger: no call, so no audit event)",
            value=self._writer.malformed,
        )


class CacheCollector(Collector):
    """The audited secret cache: how reads were answered, and what it holds."""

    def __init__(self, cache: SecretCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats
        for name, value, help_text in (
            ("hits", stats.hits, "Reads answered from the cache (each recorded as any read)"),
            ("misses", stats.misses, "Cacheable reads the store answered (bypasses included)"),
            ("refreshes", stats.refreshes, "Entries refreshed in the background before expiry"),
            ("evictions", stats.evictions, "Entries dropped to stay within max_entries/bytes"),
            ("stale", stats.stale, "Reads answered past their TTL while the store was down"),
            ("invalidations", stats.invalidations, "Entries dropped by a change through us"),
        ):
            yield CounterMetricFamily(f"keyledger_cache_{name}", help_text, value=value)
        yield GaugeMetricFamily(
            "keyledger_cache_entries", "Answers held in memory", value=len(self._cache)
        )
        yield GaugeMetricFamily(
            "keyledger_cache_bytes",
            f"Bytes held, about (limit cache.max_bytes: {self._cache.max_bytes})",
            value=stats.bytes,
        )


class ConnectionCollector(Collector):
    """The data plane's connections: open now, and those the guard closed, by reason."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "keyledger_connections_open",
            f"Data-plane connections open (limits.max_connections: {self._guard.max_connections})",
            value=self._guard.open,
        )
        closed = CounterMetricFamily(
            "keyledger_connections_closed",
            "Connections keyledger closed before they carried a request: past "
            "max_connections (limit), a request head too slow (header_timeout), idle too "
            "long (idle_timeout)",
            labels=["reason"],
        )
        for reason in ("limit", "header_timeout", "idle_timeout"):
            closed.add_metric([reason], self._guard.closed[reason])
        yield closed


class JournalCollector(Collector):
    """The audit journal's queue and totals."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def collect(self) -> Iterator[Metric]:
        journal, stats = self._journal, self._journal.stats
        yield GaugeMetricFamily(
            "keyledger_audit_queue_depth",
            "Audit events written and waiting for their fsync; their requests wait too",
            value=journal.pending_events,
        )
        yield GaugeMetricFamily(
            "keyledger_journal_seq",
            "The last durable seq of this replica's chain",
            value=journal.durable_seq,
        )
        yield GaugeMetricFamily(
            "keyledger_journal_writable",
            "1 while the journal's last write and fsync succeeded; 0 means requests that "
            "need it are refused",
            value=int(journal.healthy),
        )
        yield CounterMetricFamily(
            "keyledger_journal_events",
            "Audit events made durable since start",
            value=stats.events,
        )
        yield CounterMetricFamily(
            "keyledger_journal_failures",
            "Failed journal writes or fsyncs since start",
            value=stats.failures,
        )
        yield CounterMetricFamily(
            "keyledger_journal_files_lost",
            "Segment files replaced, removed, moved, truncated or appended to under the "
            "journal since start; each is recorded where the chain goes on",
            value=stats.files_lost,
        )


class RetentionCollector(Collector):
    """What retention (audit.retention) pruned, and whether a sink holds it back."""

    def __init__(self, retention: Retention) -> None:
        self._retention = retention

    def collect(self) -> Iterator[Metric]:
        stats = self._retention.stats
        yield CounterMetricFamily(
            "keyledger_retention_segments_pruned",
            "Journal segments deleted by retention, each after every sink acknowledged it",
            value=stats.segments,
        )
        yield CounterMetricFamily(
            "keyledger_retention_bytes_pruned", "Bytes of journal deleted", value=stats.bytes
        )
        yield GaugeMetricFamily(
            "keyledger_retention_pruned_seq",
            "The last seq pruned (0: none yet); verify starts after it",
            value=stats.pruned_seq,
        )
        yield CounterMetricFamily(
            "keyledger_retention_failures", "Retention passes that failed", value=stats.failures
        )
        yield GaugeMetricFamily(
            "keyledger_retention_waiting_for_sinks",
            "1 while a segment old enough to prune is kept because a sink has not shipped it",
            value=int(stats.waiting_for is not None),
        )


class PolicyCollector(Collector):
    """The policy in force and how its reloads went."""

    def __init__(self, holder: PolicyHolder, reloads: Callable[[], tuple[int, int]]) -> None:
        self._holder = holder
        self._reloads = reloads  # (put in force, rejected) since start

    def collect(self) -> Iterator[Metric]:
        engine = self._holder.engine
        info = InfoMetricFamily(
            "keyledger_policy", "The policy set in force: its hash, as in audit events"
        )
        info.add_metric([], {"hash": engine.hash, "rules": str(len(engine.policy.rules))})
        yield info
        applied, rejected = self._reloads()
        reloads = CounterMetricFamily(
            "keyledger_policy_reloads",
            "Policy reloads since start: applied (a new set in force) or rejected (the "
            "last good set stayed)",
            labels=["result"],
        )
        reloads.add_metric(["applied"], applied)
        reloads.add_metric(["rejected"], rejected)
        yield reloads


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
