"""Rules applied to the audit stream: each call's event goes through every rule's filter
and detector; what fires becomes an :class:`~keyledger.alerts.model.Alert`, unless the same
rule fired for the same key within its ``suppress`` period (then it is counted, and the
count rides on the next alert that goes out).

The engine is a pure function of the events it is fed, in order, and of their times, so
the same journal gives the same alerts live, at a restart and in ``keyledger alerts run``.

A restart rebuilds it from the journal (:meth:`AlertEngine.restore`): the events of the
longest window or learning period refill windows and baselines, and the ``alert`` events
already written say what was flagged, so nothing is flagged twice; a firing the journal has
no alert for (the proxy stopped between the two) is handed back to be sent then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyledger.alerts.detectors import Firing, Watcher, watcher_for
from keyledger.alerts.model import Alert, EventRef, Severity
from keyledger.alerts.rules import AlertRules, BulkRead, Counting, FirstSeen, Rule
from keyledger.proxy.audit.events import parse_time
from keyledger.proxy.audit.filters import EventFilter

__all__ = ["AlertEngine", "alert_from_record", "history_needed"]

_ZERO = timedelta()


@dataclass(slots=True)
class _Armed:
    rule: Rule
    watcher: Watcher
    # The filter's test, or None for a rule that looks at every call (most do not filter).
    accepts: Callable[[Mapping[str, Any]], bool] | None = None

    @classmethod
    def of(cls, rule: Rule, watcher: Watcher | None = None) -> _Armed:
        accepts = None if rule.filter == EventFilter() else rule.filter.matches
        return cls(rule, watcher or watcher_for(rule.detector), accepts)


class AlertEngine:
    def __init__(
        self, rules: AlertRules, *, on_suppressed: Callable[[str], None] | None = None
    ) -> None:
        """``on_suppressed(rule_id)``: told of each repeat held back (for a metric)."""
        self.rules = rules
        self._on_suppressed = on_suppressed
        self._armed = [_Armed.of(rule) for rule in rules]
        self._last: dict[tuple[str, str], datetime] = {}  # (rule, key) -> last alert sent
        self._held: dict[tuple[str, str], int] = {}  # repeats suppressed since

    def replace_rules(self, rules: AlertRules) -> None:
        """New rules (a reload); a rule whose text did not change keeps its state."""
        self.rules = rules
        kept = {armed.rule.digest: armed for armed in self._armed}
        self._armed = [
            _Armed.of(rule, kept[rule.digest].watcher if rule.digest in kept else None)
            for rule in rules
        ]

    def feed(self, record: Mapping[str, Any]) -> list[Alert]:
        """The alerts one event raises (none, mostly)."""
        if record.get("type") not in ("access", "auth_failure"):
            return []
        at = parse_time(record.get("time"))
        if at is None:
            return []
        alerts = []
        for armed in self._armed:
            if armed.accepts is not None and not armed.accepts(record):
                continue
            firing = armed.watcher.observe(record, at)
            if firing is not None and (alert := self._let_through(armed.rule, firing, at)):
                alerts.append(alert)
        return alerts

    def _let_through(self, rule: Rule, firing: Firing, at: datetime) -> Alert | None:
        slot = (rule.id, firing.key)
        last = self._last.get(slot)
        if last is not None and _ZERO <= at - last < rule.suppress:
            self._held[slot] = self._held.get(slot, 0) + 1
            if self._on_suppressed is not None:
                self._on_suppressed(rule.id)
            return None
        self._last[slot] = at
        explained = firing.explain()
        return Alert(
            rule=rule.id,
            severity=rule.severity,
            detector=rule.detector.kind,
            key=firing.key,
            summary=explained.summary,
            time=at,
            events=explained.events,
            suppressed=self._held.pop(slot, 0),
            detail=explained.detail,
        )

    def restore(self, records: Iterable[Mapping[str, Any]]) -> list[Alert]:
        """Rebuild from the journal's recent events (oldest first): the alerts they raise
        that the journal holds no ``alert`` event for, to be sent now."""
        pending: dict[tuple[str, str, str], Alert] = {}
        for record in records:
            if record.get("type") == "alert":
                recorded = alert_from_record(record)
                if recorded is not None:
                    slot = (recorded.rule, recorded.key)
                    self._last[slot] = max(recorded.time, self._last.get(slot, recorded.time))
                    self._held.pop(slot, None)
                    pending.pop((recorded.rule, recorded.key, _last_id(recorded)), None)
                continue
            for alert in self.feed(record):
                pending[(alert.rule, alert.key, _last_id(alert))] = alert
        return list(pending.values())


def _last_id(alert: Alert) -> str:
    return alert.events[-1].id if alert.events else ""


def alert_from_record(record: Mapping[str, Any]) -> Alert | None:
    """The alert an ``alert`` event in the journal records."""
    detail = record.get("detail")
    if not isinstance(detail, Mapping):
        return None
    at = parse_time(detail.get("time")) or parse_time(record.get("time"))
    if at is None:
        return None
    try:
        return Alert(
            rule=str(detail["rule"]),
            severity=Severity(detail["severity"]),
            detector=str(detail.get("detector", "")),
            key=str(detail["key"]),
            summary=str(detail.get("summary", "")),
            time=at,
            events=tuple(
                EventRef(str(e["id"]), e.get("chain"), e.get("seq"))
                for e in detail.get("events", ())
                if isinstance(e, Mapping)
            ),
            suppressed=int(detail.get("suppressed", 0)),
            detail=facts if isinstance(facts := detail.get("detail"), Mapping) else {},
        )
    except (KeyError, ValueError, TypeError):
        return None


def history_needed(rules: AlertRules) -> timedelta:
    """How far back a restart must read to rebuild every window, baseline and suppression."""
    longest = timedelta()
    for rule in rules:
        d = rule.detector
        if isinstance(d, Counting | BulkRead):
            longest = max(longest, d.window)
        elif isinstance(d, FirstSeen):
            longest = max(longest, d.learning * 2)  # a baseline, and its learning before
        longest = max(longest, rule.suppress)
    return longest
