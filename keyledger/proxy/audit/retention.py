"""Delete old journal segments without losing proof: only what every sink has, only when old.

A closed segment may go when

- every configured sink has acknowledged all of it: its shipper's cursor (``sinks/cursor``,
  saved only after an acknowledgement) is at or past the segment's last seq, and
- its newest event is older than ``max_age``.

Segments go oldest first and only as a run from the oldest: a segment that must stay keeps
every later one too, so the chain on disk never has a hole in the middle. The open segment
is never deleted. Each segment's last event must be the one the next segment's first event
(its ``segment_start``) links to, or nothing goes: verify has something to say first.

Before the files are removed, a ``lifecycle`` event ``segment_pruned`` is appended through
the journal: which files, their seq range, and the hash the next segment links to. With it,
``audit verify`` starts at the earliest segment left, anchored on that link, and says why.
The event comes first so that a crash in between leaves files that are still there (and are
pruned again next time), never files gone without a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from keyledger.proxy.audit.events import AuditEvent, EventType, parse_time
from keyledger.proxy.audit.segments import Segment, chain_segments, lines_backwards
from keyledger.proxy.audit.sinks.cursor import CursorStore

__all__ = ["PrunableJournal", "Pruned", "Retention", "RetentionStats"]

log = structlog.get_logger("keyledger.retention")

# One event names at most this many files; a backlog is pruned in several events.
_MAX_SEGMENTS = 500


class PrunableJournal(Protocol):
    """What retention needs of the journal: where it is, its open file, and appending."""

    @property
    def directory(self) -> Path: ...

    @property
    def chain_id(self) -> str: ...

    @property
    def path(self) -> Path:
        """The segment being written."""

    async def append(self, event: AuditEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pruning removed: the files, their seqs, and the hash the chain goes on from."""

    segments: tuple[str, ...]
    first_seq: int
    last_seq: int
    last_hash: str
    bytes: int
    acknowledged: dict[str, int] = field(hash=False)  # sink -> the seq its cursor is at
    more: bool = False  # more segments were due than one event names

    def detail(self, max_age_s: float) -> dict[str, Any]:
        """The ``segment_pruned`` event's detail."""
        return {
            "event": "segment_pruned",
            "segments": list(self.segments),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "bytes": self.bytes,
            "max_age_s": max_age_s,
            "acknowledged_by": self.acknowledged,
        }


@dataclass(slots=True)
class RetentionStats:
    """For metrics: what was pruned, and what holds the oldest segment back."""

    prunings: int = 0
    segments: int = 0
    bytes: int = 0
    pruned_seq: int = 0  # the last seq pruned (0: none yet)
    failures: int = 0
    waiting_for: str | None = None  # why the oldest closed segment stays, when old enough


@dataclass(frozen=True, slots=True)
class _End:
    """The seq, hash and time of a segment's last event, or the link of its first."""

    seq: int
    hash: str
    prev: str
    time: datetime | None


class Retention:
    """Prunes one chain's old, shipped segments; ``run`` does it every ``interval_s``."""

    def __init__(
        self,
        *,
        journal: PrunableJournal,
        sinks: Sequence[str],
        max_age_s: float,
        cursors: CursorStore | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._journal = journal
        self._sinks = tuple(sinks)
        self._max_age = timedelta(seconds=max_age_s)
        self._max_age_s = max_age_s
        self._cursors = cursors or CursorStore(journal.directory)
        self._now = now
        self.stats = RetentionStats()

    async def run(self, interval_s: float) -> None:
        """Prune now and every ``interval_s`` until cancelled; a failure waits for the next."""
        while True:
            try:
                while (pruned := await self.prune_once()) is not None and pruned.more:
                    pass
            except Exception:
                # Keeping files longer is always safe: never let retention take the proxy down.
                self.stats.failures += 1
                log.exception("retention_failed", directory=str(self._journal.directory))
            await asyncio.sleep(interval_s)

    async def prune_once(self) -> Pruned | None:
        """Delete the oldest segments that are due, recorded first; None if none are."""
        due = await asyncio.to_thread(self._due)
        if due is None:
            return None
        await self._journal.append(
            AuditEvent(type=EventType.LIFECYCLE, detail=due.detail(self._max_age_s))
        )
        await asyncio.to_thread(self._remove, due.segments)
        stats = self.stats
        stats.prunings += 1
        stats.segments += len(due.segments)
        stats.bytes += due.bytes
        stats.pruned_seq = due.last_seq
        log.info(
            "segments_pruned",
            segments=len(due.segments),
            first_seq=due.first_seq,
            last_seq=due.last_seq,
            bytes=due.bytes,
        )
        return due

    # -- deciding (blocking: runs in a thread) -------------------------------------------

    def _due(self) -> Pruned | None:
        journal = self._journal
        segments = chain_segments(journal.directory, journal.chain_id)
        acknowledged = {
            sink: self._cursors.load(sink, journal.chain_id).seq for sink in self._sinks
        }
        shipped = min(acknowledged.values(), default=None)
        cutoff = self._now() - self._max_age
        chosen: list[tuple[Segment, _End]] = []
        waiting = None
        for segment, following in itertools.pairwise(segments):
            if segment.path == journal.path:
                break  # the open segment (always the newest, unless files were renamed)
            last, link = _last_event(segment.path), _first_event(following.path)
            if last is None or link is None or link.seq != last.seq + 1 or link.prev != last.hash:
                log.error(
                    "retention_held",
                    segment=segment.path.name,
                    reason=f"it does not end where {following.path.name} begins; run "
                    "`keyledger audit verify` on the journal",
                )
                break
            if last.time is None or last.time >= cutoff:
                break
            if shipped is not None and shipped < last.seq:
                behind = {s: seq for s, seq in acknowledged.items() if seq < last.seq}
                waiting = f"{segment.path.name} (seq up to {last.seq}) not yet acknowledged by " + (
                    ", ".join(f"{s} (at seq {seq})" for s, seq in sorted(behind.items()))
                )
                break
            chosen.append((segment, last))
            if len(chosen) == _MAX_SEGMENTS:
                break
        self._note_waiting(waiting)
        if not chosen:
            return None
        first = _first_event(chosen[0][0].path)
        last = chosen[-1][1]
        return Pruned(
            segments=tuple(s.path.name for s, _ in chosen),
            first_seq=first.seq if first is not None else 1,
            last_seq=last.seq,
            last_hash=last.hash,
            bytes=sum(_size(s.path) for s, _ in chosen),
            acknowledged=acknowledged,
            more=len(chosen) == _MAX_SEGMENTS,
        )

    def _note_waiting(self, waiting: str | None) -> None:
        """Say once when a sink holds an old segment back, and once when it no longer does."""
        if waiting != self.stats.waiting_for:
            if waiting is not None:
                log.warning("retention_waiting_for_sinks", held=waiting)
            self.stats.waiting_for = waiting

    def _remove(self, names: Sequence[str]) -> None:
        directory = self._journal.directory
        for name in names:
            # Gone already (a pruning cut short, then repeated): nothing more to do.
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # the removal itself durable, as the event recording it is
        finally:
            os.close(fd)


def _end(line: bytes) -> _End | None:
    try:
        record = orjson.loads(line)
        chain = record["chain"]
        seq, claimed, prev = chain["seq"], chain["hash"], chain["prev"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(seq, int) or not isinstance(claimed, str) or not isinstance(prev, str):
        return None
    return _End(seq, claimed, prev, parse_time(record.get("time")))


def _last_event(path: Path) -> _End | None:
    """A closed segment's last event; None if its last line is not one (torn, junk)."""
    for line in lines_backwards(path):
        return _end(line)
    return None


def _first_event(path: Path) -> _End | None:
    try:
        with path.open("rb") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return None
    return _end(first) if first.endswith(b"\n") else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
