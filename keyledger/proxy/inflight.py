"""The data plane's requests in flight, so that shutdown lets them finish and records
those it had to cut off."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import structlog

from keyledger.proxy.audit.events import AuditEvent, EventType
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.wire import caller_text

__all__ = ["Arrived", "InFlight"]

log = structlog.get_logger("keyledger")

_CUT_OFF_NAMED = 100  # requests a cut_off event names one by one; the rest are counted


@dataclass(frozen=True, slots=True)
class Arrived:
    """A request as it arrived, for the record should shutdown cut it off unanswered."""

    request_id: str
    method: str
    path: str
    source_ip: str | None
    user_agent: str | None
    started: float = field(default_factory=time.monotonic)

    def described(self, now: float) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": caller_text(self.path, limit=200),
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "ran_ms": round((now - self.started) * 1000),
        }


class InFlight:
    """The data plane's requests being handled, so that shutdown can let them finish.

    aiohttp's own graceful shutdown stops reading every open connection at once, so a
    request whose body was still arriving hangs until the bound, and it waits the bound
    twice before cancelling. Instead, ``keyledger serve`` stops listening, waits here for
    the requests it took up (their bodies still read), and only then cleans up.
    """

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[object], Arrived] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    def track(self, arrived: Arrived) -> _Tracked:
        """``with inflight.track(arrived):`` around handling the request."""
        task = asyncio.current_task()
        assert task is not None
        return _Tracked(self, task, arrived)

    def _arrive(self, task: asyncio.Task[object], arrived: Arrived) -> None:
        self._tasks[task] = arrived
        self._idle.clear()

    def _leave(self, task: asyncio.Task[object]) -> None:
        self._tasks.pop(task, None)
        if not self._tasks:
            self._idle.set()

    async def drain(self, timeout_s: float) -> list[Arrived]:
        """Wait up to ``timeout_s`` for the requests in flight; cut off the rest and
        return them."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        left = dict(self._tasks)
        for task in left:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*left, return_exceptions=True)
        return list(left.values())

    async def finish(self, journal: Journal, timeout_s: float) -> int:
        """Let the requests in flight finish within ``timeout_s``; cut off the rest,
        recording them in one ``cut_off`` event (their callers got no answer), and return
        how many."""
        cut = await self.drain(timeout_s)
        if not cut:
            return 0
        now = time.monotonic()
        detail = {
            "event": "cut_off",
            "count": len(cut),
            "shutdown_timeout_s": timeout_s,
            "requests": [arrived.described(now) for arrived in cut[:_CUT_OFF_NAMED]],
        }
        try:
            await journal.append(AuditEvent(type=EventType.LIFECYCLE, detail=detail))
        except JournalUnavailable as exc:
            log.error("cut_off_unrecorded", count=len(cut), error=str(exc))
        return len(cut)


class _Tracked:
    """One request's time in flight (a class, not a generator: it runs on every request)."""

    __slots__ = ("_arrived", "_inflight", "_task")

    def __init__(self, inflight: InFlight, task: asyncio.Task[object], arrived: Arrived) -> None:
        self._inflight, self._task, self._arrived = inflight, task, arrived

    def __enter__(self) -> None:
        self._inflight._arrive(self._task, self._arrived)

    def __exit__(self, *exc_info: object) -> None:
        self._inflight._leave(self._task)
