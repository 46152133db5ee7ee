"""The fleet-wide detector: one engine fed every chain of a fleet, in time order, live.

Per-process rules see only the calls their process served, so a burst spread over several
replicas or workers can stay under every process's count. :class:`Follower` reads the
shared copy (or every admin stream) instead: first the history (from ``since``, so windows
and baselines are rebuilt), then whatever arrives, for as long as it runs.

Chains arrive out of order: each source has its own delay (an S3 object is written once a
batch is full or has waited ``max_wait``, then found at the next listing), and sources are
polled one after the other. :class:`Reorder` holds events back for a while and hands them
on in time order: an event goes to the engine once it is older than the newest event seen
minus ``lag``, or once it has been held for ``lag`` (so the last event of a quiet spell is
not held for ever). An event older than one already handed on is late: it is fed at once,
out of order, and counted. :class:`Seen` drops what arrives twice -- a copy is written at
least once, an object re-listed, a stream replayed after a reconnect -- by chain and seq.

Alerts raised by the history are shown but never sent: the follower keeps no record of
what it sent before, and a restart must not page anyone again for last week. Nor are its
alerts written to any journal (it has none); the proxies' own rules still write theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from keyledger.alerts.engine import AlertEngine
from keyledger.alerts.model import Alert
from keyledger.alerts.sources import EventSource, SourceError, merge_by_time
from keyledger.proxy.audit.events import parse_time
from keyledger.proxy.audit.filters import EventFilter

__all__ = ["Follower", "LiveSource", "Polled", "Reorder", "Seen"]

Record = dict[str, Any]

_MAX_AHEAD = 100_000  # seqs a chain keeps past a gap before the gap is taken as for good


# -- dropping repeats -------------------------------------------------------------------------


@dataclass(slots=True)
class _Chain:
    upto: int  # every seq up to this one has been seen
    above: set[int] = field(default_factory=set)  # seen, past a gap


class Seen:
    """True the first time an event is offered, False for a repeat (same chain and seq).

    Memory is a number per chain, plus the seqs seen past a gap until the gap fills (or,
    past ``_MAX_AHEAD`` of them, is taken as for good). The first seq seen of a chain is
    where it starts: an earlier one is taken as a repeat. An event with no place in a chain
    (none has one, in practice) is told apart by its id.
    """

    def __init__(self) -> None:
        self._chains: dict[str, _Chain] = {}
        self._ids: set[str] = set()
        self.repeats = 0

    def __call__(self, record: Mapping[str, Any]) -> bool:
        link = record.get("chain")
        if type(link) is not dict and not isinstance(link, Mapping):
            return self._new_id(str(record.get("id", "")))
        chain, seq = link.get("id"), link.get("seq")
        if type(chain) is not str or type(seq) is not int:
            return self._new_id(str(record.get("id", "")))
        state = self._chains.get(chain)
        if state is not None and seq == state.upto + 1 and not state.above:
            state.upto = seq  # the usual case: the next one
            return True
        return self._placed(chain, seq, state)

    def _placed(self, chain: str, seq: int, state: _Chain | None) -> bool:
        if state is None:
            self._chains[chain] = _Chain(seq)
            return True
        if seq <= state.upto or seq in state.above:
            self.repeats += 1
            return False
        if seq != state.upto + 1:
            state.above.add(seq)
            if len(state.above) <= _MAX_AHEAD:
                return True
            seq = min(state.above)  # the gap is not going to fill
        state.upto = seq
        state.above.discard(seq)
        while state.upto + 1 in state.above:
            state.upto += 1
            state.above.discard(state.upto)
        return True

    def _new_id(self, event_id: str) -> bool:
        if event_id in self._ids:
            self.repeats += 1
            return False
        self._ids.add(event_id)
        return True


# -- putting chains in time order -------------------------------------------------------------


class Reorder:
    """Events held back for ``lag`` and handed on in time order (see the module's text)."""

    def __init__(self, lag: timedelta, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lag = lag.total_seconds()
        self._clock = clock
        self._held: list[tuple[float, int, float, Record]] = []  # (time, order, arrived, event)
        self._order = itertools.count()
        self._now: list[Record] = []  # to hand on at once (late, or without a time)
        self._newest = float("-inf")  # the newest event time seen
        self._released = float("-inf")  # the newest event time handed on
        self.late = 0

    def __len__(self) -> int:
        return len(self._held) + len(self._now)

    def push(self, record: Record) -> None:
        at = parse_time(record.get("time"))
        if at is None:
            self._now.append(record)
            return
        moment = at.timestamp()
        if moment < self._released:
            self.late += 1
            self._now.append(record)
            return
        self._newest = max(self._newest, moment)
        heapq.heappush(self._held, (moment, next(self._order), self._clock(), record))

    def due(self) -> list[Record]:
        """What may be handed on now, in time order (late events first, as they came)."""
        out, self._now = self._now, []
        now, horizon = self._clock(), self._newest - self._lag
        held = self._held
        while held and (held[0][0] <= horizon or held[0][2] + self._lag <= now):
            moment, _, _, record = heapq.heappop(held)
            self._released = max(self._released, moment)
            out.append(record)
        return out

    def wait_s(self) -> float | None:
        """Seconds until :meth:`due` may hand on more (None: nothing is held)."""
        if self._now:
            return 0.0
        if not self._held:
            return None
        return max(0.0, self._held[0][2] + self._lag - self._clock())

    def drain(self) -> list[Record]:
        """Everything held, in time order (at the end)."""
        out, self._now = self._now, []
        while self._held:
            moment, _, _, record = heapq.heappop(self._held)
            self._released = max(self._released, moment)
            out.append(record)
        return out


# -- sources, as the follower reads them ------------------------------------------------------


class LiveSource(Protocol):
    """A source the follower reads: its history, then batches of what arrives."""

    name: str

    async def history(self, filt: EventFilter) -> Iterable[Record]:
        """Events from ``filt.since`` on, oldest first (iterated in a worker thread)."""
        ...

    def updates(self) -> AsyncIterator[list[Record]]: ...

    async def close(self) -> None: ...


class Polled:
    """An :class:`EventSource` (a folder, a copy) polled every ``interval_s`` seconds; a
    poll that fails is retried after a pause that doubles up to a minute."""

    def __init__(
        self,
        source: EventSource,
        *,
        interval_s: float,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.name = source.name
        self._source = source
        self._interval = interval_s
        self._warn = warn

    async def history(self, filt: EventFilter) -> Iterable[Record]:
        return await asyncio.to_thread(self._source.history, filt)

    async def updates(self) -> AsyncIterator[list[Record]]:
        failures = 0
        while True:
            try:
                batch = await asyncio.to_thread(self._source.poll)
            except SourceError as exc:
                failures += 1
                pause = min(60.0, self._interval * 2**failures)
                self._warn(f"{exc}; trying again in {pause:.3g}s")
                await asyncio.sleep(pause)
                continue
            failures = 0
            if batch:
                yield batch
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        self._source.close()


# -- the follower -----------------------------------------------------------------------------


class Follower:
    """Feeds one engine the history of every source, then what they bring, in time order.

    ``on_alert(alert, live)``: each alert as it fires; ``live`` is False for alerts the
    history raised (show them, do not send them: they come from a worker thread).
    ``on_following()``: once, when the history is done and following begins.
    """

    def __init__(
        self,
        engine: AlertEngine,
        sources: Sequence[LiveSource],
        *,
        on_alert: Callable[[Alert, bool], None],
        lag: timedelta = timedelta(seconds=10),
        clock: Callable[[], float] = time.monotonic,
        on_following: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.sources = tuple(sources)
        self.seen = Seen()
        self.reorder = Reorder(lag, clock=clock)
        self._on_alert = on_alert
        self._on_following = on_following
        self.events = 0  # events fed to the engine
        self.first: str | None = None  # the time of the first and of the last event fed
        self.last: str | None = None
        self._halted = False  # stopped: a history still being read in its thread stops too

    def _feed(self, records: Iterable[Record], live: bool) -> None:
        feed, on_alert = self.engine.feed, self._on_alert
        for record in records:
            if self._halted:
                return
            self.events += 1
            moment = record.get("time")
            if isinstance(moment, str):
                self.first = self.first or moment
                self.last = moment if self.last is None or moment > self.last else self.last
            for alert in feed(record):
                on_alert(alert, live)

    def _unseen(self, records: Iterable[Record]) -> Iterator[Record]:
        return (r for r in records if self.seen(r))

    async def replay(self, filt: EventFilter) -> None:
        """The history of every source, merged by time, through the engine."""
        histories = await asyncio.gather(*(s.history(filt) for s in self.sources))
        merged = self._unseen(merge_by_time(histories))
        await asyncio.to_thread(self._feed, merged, False)

    async def run(self, filt: EventFilter, *, follow: bool = True) -> None:
        """The history, then (with ``follow``) everything that arrives, until cancelled;
        what is held back when it is cancelled is fed then."""
        following = False
        try:
            await self.replay(filt)
            if follow:
                following = True
                self._on_following()
                await self._follow()
        finally:
            if following:
                self._feed(self.reorder.drain(), True)
            self._halted = True  # a replay cut short stops at its next event
            for source in self.sources:
                with contextlib.suppress(Exception):
                    await source.close()

    async def _follow(self) -> None:
        arrivals: asyncio.Queue[list[Record]] = asyncio.Queue(maxsize=64)

        async def pump(source: LiveSource) -> None:
            async for batch in source.updates():
                await arrivals.put(batch)

        pumps = [asyncio.create_task(pump(s), name=f"follow {s.name}") for s in self.sources]
        try:
            while True:
                for task in pumps:
                    if task.done():
                        task.result()  # a pump only ends by failing: say why
                batch: list[Record] | None = None
                try:
                    async with asyncio.timeout(self._wait()):
                        batch = await arrivals.get()
                except TimeoutError:
                    pass
                if batch:
                    for record in self._unseen(batch):
                        self.reorder.push(record)
                self._feed(self.reorder.due(), True)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    def _wait(self) -> float:
        wait = self.reorder.wait_s()
        return 1.0 if wait is None else min(wait + 0.001, 1.0)
