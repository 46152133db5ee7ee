"""What STS and the OAuth token exchange record: each exchange that issues credentials
(``lifecycle`` ``credentials_issued``: who, until when; never the secret or the token)
and each one refused (``auth_failure`` with the reason)."""

from __future__ import annotations

import time

from keyledger.proxy.audit.events import (
    AuditEvent,
    EventType,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    Status,
    format_time,
)
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.auth.sessions import Session

__all__ = ["issued", "record", "refused"]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def issued(request: RequestInfo, session: Session, started: float, **detail: str) -> AuditEvent:
    return AuditEvent(
        type=EventType.LIFECYCLE,
        request=request,
        principal=PrincipalInfo.of(session.principal),
        outcome=Outcome(status=Status.SUCCESS, latency_ms=_ms(started)),
        detail={
            "event": "credentials_issued",
            **detail,
            "expires": format_time(session.expires),
        },
    )


def refused(
    request: RequestInfo, started: float, who: PrincipalInfo, reason: str, message: str
) -> AuditEvent:
    return AuditEvent(
        type=EventType.AUTH_FAILURE,
        request=request,
        principal=who,
        outcome=Outcome(status=Status.DENIED, code=reason, latency_ms=_ms(started)),
        detail={"reason": message[:200]},
    )


async def record(journal: Journal, event: AuditEvent) -> bool:
    """Durable, or False: credentials whose issue is not on record are never handed out."""
    try:
        await journal.append_many([event])
    except JournalUnavailable:
        return False
    return True
