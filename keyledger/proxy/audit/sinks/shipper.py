"""Ship the local journal to one remote sink: from a persisted cursor, in batches, retrying.

One :class:`Shipper` task per sink reads the chain's segment files -- never the journal's
memory, so a slow or dead sink cannot hold up a request -- up to the last *durable* event:
a line still waiting for its fsync may yet be rewound, and must not exist remotely before
it exists locally. A batch goes out when it is full or its oldest event has waited
``max_wait``; the cursor moves only after the sink acknowledged it. Failures are retried
with exponential backoff and full jitter, forever: the journal keeps everything meanwhile,
and the lag (events and seconds behind) is there for metrics and an alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from keyledger.proxy.audit.segments import Segment, chain_segments
from keyledger.proxy.audit.sinks.base import Batch, BatchLimits, Line, Sink, SinkMisconfigured
from keyledger.proxy.audit.sinks.base import parse_line as _parse_line
from keyledger.proxy.audit.sinks.cursor import Cursor, CursorStore

__all__ = ["DurableJournal", "Read", "Shipper", "ShipperStatus", "ShippingSettings", "read_batch"]

log = structlog.get_logger("keyledger.shipping")

_IDLE_POLL_S = 5.0


class DurableJournal(Protocol):
    """What a shipper needs of the journal: where it is and how far it is durable."""

    @property
    def directory(self) -> Path: ...

    @property
    def chain_id(self) -> str: ...

    @property
    def durable_seq(self) -> int: ...

    async def wait_durable(self, beyond: int) -> None:
        """Return once an event after seq ``beyond`` is durable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShippingSettings:
    max_wait_s: float = 5.0  # a partial batch waits this long for more events
    retry_min_s: float = 0.5
    retry_max_s: float = 60.0
    lag_alarm_events: int = 100_000
    lag_alarm_s: float = 300.0
    drain_s: float = 10.0  # at shutdown: time to ship what is left


@dataclass(slots=True)
class ShipperStatus:
    """What metrics and the admin API show of one sink."""

    sink: str
    shipped_seq: int = 0
    shipped_events: int = 0
    batches: int = 0
    failures: int = 0
    prepared: bool = False
    last_error: str | None = None
    pending_since_ms: int | None = None  # the time of the oldest event not yet shipped
    alarm: bool = False

    def lag_seconds(self, now: float | None = None) -> float:
        if self.pending_since_ms is None:
            return 0.0
        return max(0.0, (now if now is not None else time.time()) - self.pending_since_ms / 1000)


# -- reading the journal ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    lines: tuple[Line, ...]
    cursor: Cursor  # just after the last line read (or skipped)
    missing: tuple[int, int] | None = None  # seqs the journal no longer holds
    full: bool = False  # a limit stopped it: more events follow at once


def read_batch(
    directory: Path, chain: str, cursor: Cursor, *, up_to: int, limits: BatchLimits
) -> Read:
    """The events after ``cursor``, durable (seq <= ``up_to``) and within ``limits``.

    Follows the chain from one segment into the next. A cursor whose file is gone (removed
    by retention, or a journal started over) resumes at the segment holding the next seq.
    """
    segments = chain_segments(directory, chain)
    if not segments:
        return Read((), cursor)
    index, offset = _position(segments, cursor)
    lines: list[Line] = []
    size = 0
    seq = cursor.seq
    missing: tuple[int, int] | None = None
    while True:
        segment = segments[index]
        for raw, end in _lines_from(segment.path, offset):
            try:
                line = _parse_line(raw[:-1])
            except ValueError:
                log.error("journal_line_unshippable", path=str(segment.path), offset=offset)
                offset = end
                continue
            if line.seq <= seq:
                offset = end  # shipped before: resuming at the start of a segment
                continue
            if line.seq > up_to:
                return Read(tuple(lines), Cursor(segment.path.name, offset, seq), missing)
            if lines and (len(lines) >= limits.max_events or size + len(raw) > limits.max_bytes):
                return Read(tuple(lines), Cursor(segment.path.name, offset, seq), missing, True)
            if line.seq != seq + 1 and missing is None:
                missing = (seq + 1, line.seq - 1)
            lines.append(line)
            size += len(raw)
            offset, seq = end, line.seq
            if len(lines) >= limits.max_events:
                return Read(tuple(lines), Cursor(segment.path.name, offset, seq), missing, True)
        if index + 1 == len(segments):
            return Read(tuple(lines), Cursor(segment.path.name, offset, seq), missing)
        index, offset = index + 1, 0  # a closed segment, read to its end


def _position(segments: list[Segment], cursor: Cursor) -> tuple[int, int]:
    for index, segment in enumerate(segments):
        if segment.path.name == cursor.segment:
            if segment.path.stat().st_size < cursor.offset:
                return index, 0  # not the file the cursor was made for: reread it
            return index, cursor.offset
    # The newest segment that starts at or before the next seq (a legacy file counts as 1).
    index = 0
    for number, segment in enumerate(segments):
        if max(segment.first_seq, 1) <= cursor.seq + 1:
            index = number
    return index, 0


def _lines_from(path: Path, offset: int) -> Iterator[tuple[bytes, int]]:
    """Complete lines from ``offset`` on, each with the offset just after it."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        handle.seek(offset)
        for raw in handle:
            if not raw.endswith(b"\n"):
                return  # being written right now
            offset += len(raw)
            yield raw, offset


# -- the task -----------------------------------------------------------------------------


class Shipper:
    """Copies one chain of the journal to one sink, forever, from a persisted cursor."""

    def __init__(
        self,
        *,
        sink: Sink,
        journal: DurableJournal,
        cursors: CursorStore,
        settings: ShippingSettings = ShippingSettings(),
    ) -> None:
        self.sink = sink
        self.status = ShipperStatus(sink.name)
        self._journal = journal
        self._cursors = cursors
        self._settings = settings
        self._stopping = asyncio.Event()
        self._drain_deadline = float("inf")
        self._task: asyncio.Task[None] | None = None

    @property
    def lag_events(self) -> int:
        return max(0, self._journal.durable_seq - self.status.shipped_seq)

    async def check(self, within_s: float) -> None:
        """Prepare the sink once at start-up: :class:`SinkMisconfigured` stops keyledger;
        a sink that cannot be reached yet is left to the shipper, which keeps trying."""
        try:
            async with asyncio.timeout(within_s):
                await self.sink.prepare()
        except SinkMisconfigured:
            raise
        except Exception as exc:
            self._failed(
                TimeoutError(f"no answer within {within_s:g}s")
                if isinstance(exc, TimeoutError)
                else exc
            )
        else:
            self.status.prepared = True
            log.info("sink_ready", sink=self.sink.name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"keyledger-ship-{self.sink.name}")

    async def stop(self) -> None:
        """Ship what is durable within ``drain_s``, then stop; the cursor says where."""
        self._drain_deadline = time.monotonic() + self._settings.drain_s
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._settings.drain_s + 1)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.lag_events:
            log.warning(
                "sink_stopped_behind",
                sink=self.sink.name,
                lag_events=self.lag_events,
                note="shipping resumes from the cursor at the next start",
            )
        await self.sink.close()

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                cursor = await asyncio.to_thread(
                    self._cursors.load, self.sink.name, self._journal.chain_id
                )
                self.status.shipped_seq = cursor.seq
                if not await self._prepare(cursor):
                    return
                await self._ship(cursor)
                return
            except Exception:
                # Neither a bug nor a disk error may take the proxy down or stop shipping
                # for good: the journal keeps everything, and shipping starts again from
                # the saved cursor.
                log.exception("shipper_failed", sink=self.sink.name)
                self.status.failures += 1
                self._check_lag()
                attempt += 1
                if not await self._pause(self._backoff(attempt)):
                    return

    async def _prepare(self, cursor: Cursor) -> bool:
        attempt = 0
        while not self.status.prepared:
            try:
                await self.sink.prepare()
            except SinkMisconfigured as exc:
                self._failed(exc, level="critical")
                attempt = max(attempt, 30)  # an operator must act: retry slowly
            except Exception as exc:
                self._failed(exc)
            else:
                self.status.prepared = True
                return True
            attempt += 1
            await self._note_pending(cursor)
            self._check_lag()
            if not await self._pause(self._backoff(attempt)):
                return False
        return True

    async def _note_pending(self, cursor: Cursor) -> None:
        """The time of the oldest unshipped event, for lag_seconds, while nothing ships."""
        if self.status.pending_since_ms is None:
            peek = await self._read(cursor, BatchLimits(max_events=1, max_bytes=1 << 30))
            if peek.lines:
                self.status.pending_since_ms = peek.lines[0].time_ms or None

    async def _ship(self, cursor: Cursor) -> None:
        name, chain = self.sink.name, self._journal.chain_id
        filling_since: float | None = None  # when a partial batch began waiting for more
        ahead: asyncio.Task[Read] | None = None  # the next batch, read while one is sent
        try:
            while True:
                read = await (ahead or self._read(cursor))
                ahead = None
                if not read.lines:
                    self.status.pending_since_ms = None
                    self._check_lag()
                    if read.cursor != cursor:  # skipped lines that cannot be shipped
                        cursor = read.cursor
                        await self._save(cursor)
                    if self._stopping.is_set():
                        if self._journal.durable_seq > cursor.seq:
                            continue  # made durable after this read looked (the closing ones)
                        return
                    # The journal wakes us; the timeout is only a safety net.
                    await self._wait_for_events(cursor.seq, _IDLE_POLL_S)
                    continue
                self.status.pending_since_ms = read.lines[0].time_ms or None
                if filling_since is None:
                    filling_since = time.monotonic()
                waited = time.monotonic() - filling_since
                if not (read.full or self._stopping.is_set()) and (
                    waited < self._settings.max_wait_s
                ):
                    # Let the batch fill up: an object or a call per event would cost dearly.
                    await self._wait_for_events(
                        cursor.seq + self.sink.limits.max_events - 1,
                        self._settings.max_wait_s - waited,
                    )
                    continue
                if read.missing is not None:
                    log.error(
                        "sink_gap",
                        sink=name,
                        missing_from=read.missing[0],
                        missing_to=read.missing[1],
                        note="the journal no longer holds these events; the sink never got them",
                    )
                if read.full:
                    # More is waiting: read it while this batch travels.
                    ahead = asyncio.create_task(self._read(read.cursor))
                if not await self._send(Batch(chain, read.lines)):
                    return
                cursor, filling_since = read.cursor, None
                self.status.pending_since_ms = None  # until the next read says otherwise
                self.status.shipped_seq = cursor.seq
                self.status.shipped_events += len(read.lines)
                self.status.batches += 1
                self._check_lag()
                await self._save(cursor)
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _read(self, cursor: Cursor, limits: BatchLimits | None = None) -> Read:
        return await asyncio.to_thread(
            read_batch,
            self._journal.directory,
            self._journal.chain_id,
            cursor,
            up_to=self._journal.durable_seq,
            limits=limits or self.sink.limits,
        )

    async def _send(self, batch: Batch) -> bool:
        attempt = 0
        while True:
            try:
                await self.sink.send(batch)
            except Exception as exc:
                attempt += 1
                self._failed(exc, batch=batch)
                self._check_lag()
                if not await self._pause(self._backoff(attempt)):
                    return False
            else:
                if attempt:
                    log.info("sink_recovered", sink=self.sink.name, attempts=attempt + 1)
                self.status.last_error = None
                return True

    async def _save(self, cursor: Cursor) -> None:
        try:
            await asyncio.to_thread(
                self._cursors.save, self.sink.name, self._journal.chain_id, cursor
            )
        except OSError as exc:
            # Not fatal: the next save carries it; a restart meanwhile resends a batch.
            log.error("sink_cursor_save_failed", sink=self.sink.name, error=exc.strerror)

    async def _wait_for_events(self, beyond: int, wait_s: float) -> None:
        """Until an event after seq ``beyond`` is durable, ``wait_s`` passed, or stop()."""
        waiter = asyncio.create_task(self._journal.wait_durable(beyond))
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait(
                (waiter, stopping), timeout=max(wait_s, 0.01), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            stopping.cancel()

    async def _pause(self, delay: float) -> bool:
        """Sleep before a retry; False when shutdown's drain time would run out first."""
        if self._stopping.is_set():
            if time.monotonic() + delay > self._drain_deadline:
                return False
            await asyncio.sleep(delay)  # draining: still back off between attempts
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        return not self._stopping.is_set() or time.monotonic() < self._drain_deadline

    def _backoff(self, attempt: int) -> float:
        """Full jitter: anywhere up to an exponentially growing cap."""
        settings = self._settings
        cap = min(settings.retry_max_s, settings.retry_min_s * 2 ** min(attempt, 30))
        return random.uniform(settings.retry_min_s, max(cap, settings.retry_min_s))  # noqa: S311

    def _failed(
        self, exc: Exception, *, level: str = "warning", batch: Batch | None = None
    ) -> None:
        self.status.failures += 1
        self.status.last_error = str(exc) or type(exc).__name__
        seqs = {} if batch is None else {"first_seq": batch.first_seq, "last_seq": batch.last_seq}
        getattr(log, level)(
            "sink_failed", sink=self.sink.name, error=self.status.last_error, **seqs
        )

    def _check_lag(self) -> None:
        settings = self._settings
        lag_events, lag_s = self.lag_events, self.status.lag_seconds()
        behind = lag_events >= settings.lag_alarm_events or lag_s >= settings.lag_alarm_s
        if behind and not self.status.alarm:
            log.error(
                "sink_lagging", sink=self.sink.name, lag_events=lag_events, lag_seconds=round(lag_s)
            )
        elif not behind and self.status.alarm:
            log.info("sink_caught_up", sink=self.sink.name, lag_events=lag_events)
        self.status.alarm = behind
