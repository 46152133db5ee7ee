"""Floods of bad callers cost little: repeated sign-in failures from one source, for one
reason, are folded into one ``auth_failure`` event per window instead of one durable event
(and an fsync's share) each.

The first ``individual`` failures of a (source, reason) within ``window_s`` are recorded
one by one, as ever: a mistyped key or an expired token keeps its full event. Past that,
failures are only counted; when the window closes, one aggregate event records how many
there were, when the first and the last came, their first and last request ids and up to a
few identities they claimed. Calls throttled by a rate limit (``limits.rate``) are folded
the same way, as ``access`` events with the code ``throttled``. A refused caller never
gets anything but its error, so no secret ever depends on these events; they are written
within a second of the window's end (and at shutdown), and a failure to write one is
retried at the next look.

Past those first few, the refusals are also answered late (``delay_s``, 1 s by default):
costing a flood nothing would leave it free to take the event loop's every turn from good
callers, 250 connections' worth against their 30.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

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

__all__ = ["FailureFold"]

log = structlog.get_logger("keyledger.auth")

_CLAIMS_KEPT = 5  # identities a flood claimed, named in its aggregate (the rest counted)


@dataclass(slots=True)
class _Fold:
    started: float  # monotonic: when the window opened
    type: EventType
    seen: int = 0  # failures in the window, those recorded one by one included
    count: int = 0  # those folded into the aggregate
    first: datetime | None = None
    last: datetime | None = None
    first_request: str = ""
    last_request: str = ""
    protocols: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)
    claimed: set[str] = field(default_factory=set)


class FailureFold:
    def __init__(
        self,
        journal: Journal,
        *,
        window_s: float = 60.0,
        individual: int = 10,
        delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``delay_s``: how long the answer to a refusal counted into an aggregate waits."""
        self._journal = journal
        self._window = window_s
        self._individual = individual
        self.delay_s = delay_s
        self._clock = clock
        self._open: dict[tuple[str, str], _Fold] = {}
        self._closed: list[AuditEvent] = []  # aggregates not yet written
        self.folded = 0  # failures recorded only in aggregate, since start

    def admit(
        self,
        *,
        source: str | None,
        reason: str,
        request: RequestInfo,
        principal: PrincipalInfo,
        type: EventType = EventType.AUTH_FAILURE,
    ) -> bool:
        """True: record this refusal as an event of its own. False: it is counted into its
        (source, reason)'s aggregate, an event of ``type``."""
        key = (source or "(unknown)", reason)
        now = self._clock()
        fold = self._open.get(key)
        if fold is None or now - fold.started >= self._window:
            if fold is not None:
                self._close(key, fold)
            fold = self._open[key] = _Fold(started=now, type=type)
        fold.seen += 1
        if fold.seen <= self._individual:
            return True
        at = datetime.now(UTC)
        fold.count += 1
        fold.first = fold.first or at
        fold.last = at
        fold.first_request = fold.first_request or request.id
        fold.last_request = request.id
        fold.protocols.add(request.protocol)
        fold.methods.add(principal.auth_method)
        claim = principal.id or next(iter(principal.attributes.values()), None)
        if claim is not None and len(fold.claimed) < _CLAIMS_KEPT:
            fold.claimed.add(str(claim)[:200])
        self.folded += 1
        return False

    async def hold(self) -> None:
        """Wait before answering one of a flood. A waiting answer costs a sleeping task and
        no CPU, and a flooder with N connections then makes at most N / delay_s calls a
        second, however fast it sends: the event loop stays free for good callers."""
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)

    def _close(self, key: tuple[str, str], fold: _Fold) -> None:
        if fold.count == 0:
            return
        source, reason = key
        detail = {
            "aggregate": True,
            "count": fold.count,
            "first": format_time(fold.first) if fold.first else None,
            "last": format_time(fold.last) if fold.last else None,
            "first_request_id": fold.first_request,
            "last_request_id": fold.last_request,
            "claimed": sorted(fold.claimed),
            "recorded_one_by_one": self._individual,
            "window_s": self._window,
        }
        self._closed.append(
            AuditEvent(
                type=fold.type,
                request=RequestInfo(
                    id=fold.last_request,
                    protocol=",".join(sorted(fold.protocols)),
                    operation="(aggregate)",
                    source_ip=None if source == "(unknown)" else source,
                    user_agent=None,
                ),
                principal=PrincipalInfo(id=None, auth_method=",".join(sorted(fold.methods))),
                outcome=Outcome(status=Status.DENIED, code=reason),
                detail=detail,
            )
        )

    async def flush(self, *, everything: bool = False) -> int:
        """Write the aggregates of windows that closed (all of them: ``everything``)."""
        now = self._clock()
        for key, fold in list(self._open.items()):
            if everything or now - fold.started >= self._window:
                del self._open[key]
                self._close(key, fold)
        if not self._closed:
            return 0
        events, self._closed = self._closed, []
        try:
            await self._journal.append_many(events)
        except JournalUnavailable as exc:
            self._closed = events + self._closed  # kept, and tried again at the next look
            log.error("auth_failure_aggregate_unrecorded", error=str(exc), pending=len(events))
            return 0
        return len(events)

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("auth_failure_fold_failed")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush(everything=True)
