"""Audit events and sealed chains for tests, made as the proxy and its journal make them.

``access_event``, ``auth_failure_event`` and ``lifecycle_event`` build events with every
field a keyword, so a test names only what it is about; ``sealed`` seals events into a
chain in memory, and ``SealedChain`` appends them to a chain's segment files.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from ulid import ULID

from keyledger.proxy.audit.chain import ChainState, seal
from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    ResourceInfo,
    Status,
)
from keyledger.proxy.audit.segments import segment_path

Record = dict[str, Any]
CHAIN = "node-1"


def _request(
    request: str | None,
    protocol: str,
    operation: str,
    source_ip: str | None,
    user_agent: str | None,
) -> RequestInfo | None:
    if request is None:
        return None
    return RequestInfo(
        id=request,
        protocol=protocol,
        operation=operation,
        source_ip=source_ip,
        user_agent=user_agent,
    )


def access_event(
    *,
    at: datetime | None = None,
    event_id: str | None = None,
    request: str | None = "req-1",
    protocol: str = "aws-json",
    operation: str = "GetSecretValue",
    backend: str = "aws",
    source_ip: str | None = "10.0.0.7",
    user_agent: str | None = "Boto3/1.34",
    principal: str | None = "svc-payments",
    groups: tuple[str, ...] = (),
    attributes: Mapping[str, str] | None = None,
    action: str = "read",
    secret: str | None = "prod/db/password",
    version: str | None = None,
    effect: str | None = "allow",
    rule: str | None = "app-read",
    policy_hash: str | None = "h",
    reason: str = "",
    status: Status | None = None,
    code: str | None = None,
    latency_ms: float | None = None,
    version_id: str | None = None,
    value_fingerprint: str | None = None,
) -> AuditEvent:
    """An access event: by default svc-payments (sigv4) reading aws prod/db/password, allowed.

    ``at`` and ``event_id`` default to now and a new ULID, as the proxy stamps its events;
    ``request`` is the request id, None for no request at all; ``effect`` None leaves the
    decision out; ``status`` None is success where the effect is allow, else denied.
    """
    if status is None:
        status = Status.SUCCESS if effect == "allow" else Status.DENIED
    return AuditEvent(
        type=EventType.ACCESS,
        time=at or datetime.now(UTC),
        id=event_id or str(ULID()),
        request=_request(request, protocol, operation, source_ip, user_agent),
        principal=PrincipalInfo(
            id=principal, auth_method="sigv4", groups=groups, attributes=attributes or {}
        ),
        action=action,
        resource=ResourceInfo(backend=backend, secret=secret, version=version),
        decision=None
        if effect is None
        else DecisionInfo(effect=effect, rule=rule, policy_hash=policy_hash, reason=reason),
        outcome=Outcome(
            status=status,
            code=code,
            latency_ms=latency_ms,
            version_id=version_id,
            value_fingerprint=value_fingerprint,
        ),
    )


def auth_failure_event(
    *,
    at: datetime | None = None,
    request: str | None = None,
    protocol: str = "aws-json",
    operation: str = "GetSecretValue",
    source_ip: str | None = "10.0.0.7",
    user_agent: str | None = "Boto3/1.34",
    principal: str | None = "AKIAEXAMPLE",
    secret: str | None = None,
    code: str = "InvalidSignature",
    latency_ms: float | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """A failed sign-in (sigv4), denied with ``code``: by default no request, no resource
    and no detail; ``reason`` is the detail's reason, ``secret`` an aws resource."""
    return AuditEvent(
        type=EventType.AUTH_FAILURE,
        time=at or datetime.now(UTC),
        request=_request(request, protocol, operation, source_ip, user_agent),
        principal=PrincipalInfo(id=principal, auth_method="sigv4"),
        resource=None if secret is None else ResourceInfo(backend="aws", secret=secret),
        outcome=Outcome(status=Status.DENIED, code=code, latency_ms=latency_ms),
        detail=None if reason is None else {"reason": reason},
    )


def lifecycle_event(at: datetime | None = None) -> AuditEvent:
    """The proxy starting."""
    return AuditEvent(
        type=EventType.LIFECYCLE, time=at or datetime.now(UTC), detail={"event": "start"}
    )


def _seal_all(events: tuple[AuditEvent, ...], state: ChainState) -> tuple[list[bytes], ChainState]:
    lines = []
    for event in events:
        line, state = seal(event.to_record(), state)
        lines.append(line)
    return lines, state


def sealed(*events: AuditEvent, chain_id: str = CHAIN) -> list[Record]:
    """The records as the journal holds them: sealed into a new chain, in the order given."""
    lines, _ = _seal_all(events, ChainState(chain_id))
    return [orjson.loads(line) for line in lines]


class SealedChain:
    """A chain written the way the journal writes it: sealed lines appended to numbered
    segments, the first of them ``segment_path(directory, chain_id, 1)``."""

    def __init__(self, directory: Path, chain_id: str = CHAIN) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.state = ChainState(chain_id)
        self.path = segment_path(directory, chain_id, 1)  # the segment being written
        self.records: list[Record] = []  # every record added, as written

    def seal(self, *events: AuditEvent) -> list[bytes]:
        """The events' lines, sealed onto the chain but not written anywhere."""
        lines, self.state = _seal_all(events, self.state)
        return lines

    def add(self, *events: AuditEvent) -> list[bytes]:
        """Seal the events onto the chain and append their lines to the current segment."""
        lines = self.seal(*events)
        with self.path.open("ab") as handle:
            handle.write(b"".join(lines))
        self.records += [orjson.loads(line) for line in lines]
        return lines

    def rotate(self) -> Path:
        """Start a new segment named by the next seq, empty for now."""
        self.path = segment_path(self.directory, self.state.id, self.state.seq + 1)
        self.path.touch()
        return self.path
