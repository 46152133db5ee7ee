"""What an alert is, and where it goes: the types every part of alerting shares.

An :class:`Alert` is a rule's verdict on the audit stream: which rule, how severe, about
what (its ``key``: a principal, a source, a principal and secret), and the events that
tripped it, each named by its id and its place in the chain, so that the journal proves
what was flagged. It carries no secret value, as the events do not.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from keyledger.proxy.audit.events import AuditEvent, EventType, format_time

__all__ = ["Alert", "Destination", "EventRef", "Severity"]


class Severity(enum.StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class EventRef:
    """One triggering event: its id, and its chain and position there when it has one."""

    id: str
    chain: str | None = None
    seq: int | None = None

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> EventRef:
        chain = record.get("chain")
        chain = chain if type(chain) is dict or isinstance(chain, Mapping) else {}
        name, seq = chain.get("id"), chain.get("seq")
        return cls(
            id=str(record.get("id", "")),
            chain=name if type(name) is str else None,
            seq=seq if type(seq) is int else None,
        )

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "chain": self.chain, "seq": self.seq}


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """A rule that fired."""

    rule: str
    severity: Severity
    detector: str  # deny_burst, first_seen, ...
    key: str  # what it is about, as the detector keys it ("principal demo-app")
    summary: str  # one line for a human
    time: datetime  # the triggering (last) event's time
    events: tuple[EventRef, ...]
    # Repeats of this rule and key held back since the last alert that went out.
    suppressed: int = 0
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "detector": self.detector,
            "key": self.key,
            "summary": self.summary,
            "time": format_time(self.time),
            "events": [e.as_json() for e in self.events],
            "suppressed": self.suppressed,
            "detail": dict(self.detail),
        }

    def as_event(self) -> AuditEvent:
        """The ``alert`` event the journal keeps: the chain proves what was flagged, when."""
        return AuditEvent(type=EventType.ALERT, detail=self.as_json())


class Destination(Protocol):
    """Where alerts are delivered (a webhook, Slack, Alertmanager, stdout).

    ``offer`` never blocks and never raises: the detector must not wait on a receiver.
    What cannot be queued or, after retries, delivered, is counted as dead letters.
    """

    name: str

    def offer(self, alert: Alert) -> bool:
        """Queue ``alert``; False when the queue is full (counted as a dead letter)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Deliver what is queued, within a bound, then stop."""
        ...
