"""The audit event, schema ``keyledger.audit/v1`` (see DESIGN.md).

Events carry references and fingerprints, never secret values. The chain fields are added
by the journal's single writer, which alone knows the previous hash.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keyledger.ids import event_id
from keyledger.model import Principal

__all__ = [
    "SCHEMA",
    "AuditEvent",
    "DecisionInfo",
    "EventType",
    "Fingerprinter",
    "GeoInfo",
    "Outcome",
    "PrincipalInfo",
    "RequestInfo",
    "ResourceInfo",
    "Status",
    "format_time",
    "parse_time",
]

SCHEMA = "keyledger.audit/v1"


class EventType(enum.StrEnum):
    ACCESS = "access"
    AUTH_FAILURE = "auth_failure"
    POLICY_RELOAD = "policy_reload"
    CHECKPOINT = "checkpoint"
    ALERT = "alert"
    LIFECYCLE = "lifecycle"


class Status(enum.StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"
    # Written before a change (write, rotate, delete) is sent to the store; its outcome
    # follows. A pending event with no outcome means the change may have happened.
    PENDING = "pending"


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, microseconds: ``2026-11-23T21:55:01.123456Z``."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat is C and half strftime's cost; with UTC it ends in "+00:00".
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def parse_time(value: object) -> datetime | None:
    """An event's ``time`` as an aware UTC datetime; None if it is not a time at all."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class GeoInfo:
    """Where a caller's address is, by the operator's GeoIP databases: its country (ISO
    3166-1 alpha-2, ``DE``) and the network owner (autonomous system number and name)."""

    country: str | None = None
    asn: int | None = None
    as_org: str | None = None

    def as_json(self) -> dict[str, Any]:
        """``request.geo``: only what the databases knew."""
        found: dict[str, Any] = {}
        if self.country is not None:
            found["country"] = self.country
        if self.asn is not None:
            found["asn"] = self.asn
        if self.as_org is not None:
            found["as_org"] = self.as_org
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestInfo:
    id: str
    protocol: str
    operation: str
    source_ip: str | None
    user_agent: str | None
    # Only with a GeoIP database configured, and only for an address it knows: events
    # without one have no ``request.geo`` at all.
    geo: GeoInfo | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrincipalInfo:
    id: str | None
    auth_method: str
    groups: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, principal: Principal) -> PrincipalInfo:
        """An authenticated caller, as its events name it."""
        return cls(
            id=principal.id,
            auth_method=principal.auth_method,
            groups=principal.groups,
            attributes=principal.attributes,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceInfo:
    backend: str
    secret: str | None
    version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionInfo:
    effect: str
    rule: str | None
    policy_hash: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    status: Status
    code: str | None = None
    latency_ms: float | None = None
    version_id: str | None = None
    value_fingerprint: str | None = None
    cache: str | None = None  # hit | miss | refresh | stale, where the cache may answer


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    type: EventType
    time: datetime = field(default_factory=functools.partial(datetime.now, UTC))
    id: str = field(default_factory=event_id)
    request: RequestInfo | None = None
    principal: PrincipalInfo | None = None
    action: str | None = None
    resource: ResourceInfo | None = None
    decision: DecisionInfo | None = None
    outcome: Outcome | None = None
    # Free-form facts for lifecycle / policy_reload events; never secret material.
    detail: Mapping[str, Any] | None = None

    def to_record(self, *, chained: bool = False) -> dict[str, Any]:
        """The JSON object for the journal, without the ``chain`` field, or (``chained``)
        with it as None, in its place for :func:`~.chain.seal` to fill."""
        record: dict[str, Any] = {
            "schema": SCHEMA,
            "id": self.id,
            "time": format_time(self.time),
            "type": self.type.value,
        }
        if chained:
            record["chain"] = None
        if self.request is not None:
            r = self.request
            record["request"] = {
                "id": r.id,
                "protocol": r.protocol,
                "operation": r.operation,
                "source_ip": r.source_ip,
                "user_agent": r.user_agent,
            }
            if r.geo is not None:
                record["request"]["geo"] = r.geo.as_json()
        if self.principal is not None:
            p = self.principal
            record["principal"] = {
                "id": p.id,
                "auth_method": p.auth_method,
                "groups": list(p.groups),
                "attributes": dict(p.attributes),
            }
        if self.action is not None:
            record["action"] = self.action
        if self.resource is not None:
            res = self.resource
            record["resource"] = {
                "backend": res.backend,
                "secret": res.secret,
                "version": res.version,
            }
        if self.decision is not None:
            d = self.decision
            record["decision"] = {
                "effect": d.effect,
                "rule": d.rule,
                "policy_hash": d.policy_hash,
                "reason": d.reason,
            }
        if self.outcome is not None:
            o = self.outcome
            record["outcome"] = {
                "status": o.status.value,
                "code": o.code,
                "latency_ms": o.latency_ms,
                "version_id": o.version_id,
                "value_fingerprint": o.value_fingerprint,
            }
            if o.cache is not None:
                record["outcome"]["cache"] = o.cache
        if self.detail is not None:
            record["detail"] = dict(self.detail)
        return record


class Fingerprinter:
    """HMAC-SHA256 of a served value under a key only the proxy holds.

    Two events with the same fingerprint served the same value; the value itself cannot be
    recovered or brute-forced without the key.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the fingerprint key must be at least 16 bytes")
        self._key = key

    def __call__(self, value: bytes | None) -> str | None:
        if value is None:
            return None
        return "hmac-sha256:" + hmac.new(self._key, value, hashlib.sha256).hexdigest()
