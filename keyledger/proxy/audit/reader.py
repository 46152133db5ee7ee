"""Reading a journal back: every event, the last few, or new ones as they are written.

A SOURCE is a journal file or a folder of them (see :mod:`segments`). Each chain is read
in seq order, segment after segment; chains are merged by event time, so the output of
several replicas reads as one timeline. Readers never stop on a bad line: a line that is not
a JSON object -- typically the torn last line of a journal whose writer crashed -- is skipped.

Given a :class:`ReadCheck`, readers also check what they read, as cheaply as they can: each
event's hash, seq and ``prev`` link to the event read next to it (filtered out or not), and
the checkpoint file's newest seal against the journal's end. What does not hold is kept, the
first problem per chain, for the caller to warn about; ``audit verify`` does the full check.

- :func:`iter_records` streams everything that matches, oldest first.
- :func:`last_records` reads only the end of each chain, backwards, for ``tail -n``.
- :func:`follow` polls file sizes and yields events as they are appended, across
  rotation into new segments and new chains appearing in a folder.
"""

from __future__ import annotations

import asyncio
import heapq
import os
from collections.abc import AsyncGenerator, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from keyledger.proxy.audit.checkpoints import Checkpoint
from keyledger.proxy.audit.filters import EventFilter
from keyledger.proxy.audit.segments import (
    CHECKPOINT_SUFFIX,
    JournalFiles,
    chain_segments,
    discover,
    lines_backwards,
)
from keyledger.proxy.audit.verify import NOT_AN_EVENT, ChainLinks, Problem, cut_reason

__all__ = ["Follower", "ReadCheck", "follow", "iter_records", "last_records"]

Record = dict[str, Any]

_BLOCK = 1 << 16  # the unit follow() reads in
_FOLLOW_BUDGET = 1 << 22  # bytes one poll reads per file before yielding to the loop
_EVERYTHING = EventFilter()


def _require(source: Path) -> None:
    if not source.exists():
        raise FileNotFoundError(f"no journal file or folder at {source}")


def _parse(line: bytes) -> Record | None:
    """One journal line as a dict, or None for anything else (a torn line, garbage)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _time_key(record: Record) -> str:
    time = record.get("time")
    return time if isinstance(time, str) else ""


def _merge(streams: list[Iterable[Record]]) -> Iterator[Record]:
    """Chains merged by time; ties keep chain order, so every reader agrees on one order."""
    if len(streams) == 1:
        return iter(streams[0])
    return heapq.merge(*streams, key=_time_key)


# -- checking what is read ----------------------------------------------------------------


class ReadCheck:
    """What the readers found that does not verify: the first problem of each chain."""

    def __init__(self) -> None:
        self.problems: dict[str, Problem] = {}
        self._told: set[str] = set()

    def found(self, chain: str, problem: Problem) -> None:
        self.problems.setdefault(chain, problem)

    def untold(self) -> list[Problem]:
        """Problems not returned by an earlier call: for a follower, to warn once each."""
        new = [p for chain, p in self.problems.items() if chain not in self._told]
        self._told.update(self.problems)
        return new


@dataclass(frozen=True, slots=True)
class _Filed:
    """A chain's newest checkpoint record, read before the journal: a record is filed only
    once its checkpoint event is durable, so the journal read after it must reach it."""

    checkpoint: Checkpoint
    file: str
    line: int

    def beyond(self, end: int) -> Problem | None:
        if self.checkpoint.seq < end:
            return None
        reason = cut_reason("the checkpoint file", self.checkpoint.seq, end)
        return Problem(self.file, self.line, self.checkpoint.seq, reason)


def _newest_filed(files: JournalFiles, chain: str) -> _Filed | None:
    for path in files.checkpoints.get(chain, [])[-1:]:
        try:
            with path.open("rb") as handle:
                count = sum(1 for _ in handle)
            newest = next(lines_backwards(path), None)
            return (
                None if newest is None else _Filed(Checkpoint.from_line(newest), str(path), count)
            )
        except (OSError, ValueError):
            return None  # unreadable: verify says where; the reader has nothing to compare
    return None


def _line_number(path: Path, raw: bytes) -> int:
    """The number of the first line of ``path`` that is ``raw``: found only for a warning."""
    raw = raw.rstrip(b"\n")
    try:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.rstrip(b"\n") == raw:
                    return number
    except OSError:
        pass
    return 0


def _seq_of(record: Record | None) -> int | None:
    chain = record.get("chain") if record is not None else None
    seq = chain.get("seq") if isinstance(chain, dict) else None
    return seq if isinstance(seq, int) else None


# -- everything ---------------------------------------------------------------------------


def iter_records(
    source: Path,
    filt: EventFilter = _EVERYTHING,
    *,
    check: ReadCheck | None = None,
    chains: Collection[str] | None = None,
) -> Iterator[Record]:
    """Every event under ``source`` that ``filt`` matches, oldest first; of every chain, or
    only of ``chains`` (the others are not read at all).

    Raises FileNotFoundError if ``source`` does not exist; files that are not journals
    (and checkpoint files) are left out. With ``check``, every line read is checked.
    """
    _require(source)
    files = discover(source)
    streams: list[Iterable[Record]] = [
        _chain_records(chain, [s.path for s in segments], filt, check, files)
        for chain, segments in files.segments.items()
        if chains is None or chain in chains
    ]
    yield from _merge(streams)


def _chain_records(
    chain: str,
    paths: list[Path],
    filt: EventFilter,
    check: ReadCheck | None,
    files: JournalFiles,
) -> Iterator[Record]:
    matches = filt.matches
    filed = _newest_filed(files, chain) if check is not None else None
    links = ChainLinks()
    for path in paths:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            continue  # removed (e.g. expired) since it was found
        with handle:
            for number, line in enumerate(handle, start=1):
                record = _parse(line)
                if check is not None and chain not in check.problems and line.endswith(b"\n"):
                    # A line without its newline may still be being written: not judged.
                    reason = links.follows(record) if record is not None else NOT_AN_EVENT
                    if reason is not None:
                        check.found(chain, Problem(str(path), number, _seq_of(record), reason))
                if record is not None and matches(record):
                    yield record
    if check is not None and filed is not None and (cut := filed.beyond(links.seq or 0)):
        check.found(chain, cut)


# -- the last few -------------------------------------------------------------------------


def last_records(
    source: Path, n: int, filt: EventFilter = _EVERYTHING, *, check: ReadCheck | None = None
) -> list[Record]:
    """The last ``n`` events that ``filt`` matches, oldest first.

    Reads each chain from its end, backwards in 64 KiB blocks, and stops as soon as that
    chain has given ``n`` matches, so the cost follows ``n`` rather than the journal size
    (unless few events match). The result is the tail of :func:`iter_records`. With
    ``check``, the lines read are checked, and the journal's end against the checkpoint file.
    """
    _require(source)
    if n <= 0:
        return []
    files = discover(source)
    streams: list[Iterable[Record]] = []
    for chain, segments in files.segments.items():
        filed = _newest_filed(files, chain) if check is not None else None
        links = ChainLinks()
        later: tuple[Path, bytes, int | None] | None = None  # the line read just before
        found: list[Record] = []
        for segment in reversed(segments):
            for line in lines_backwards(segment.path):
                record = _parse(line)
                # The newest line may be half-written still (lines_backwards drops newlines).
                judged = record is not None or later is not None
                if check is not None and chain not in check.problems and judged:
                    # The first line read is the newest: the end of the journal.
                    if later is None and filed and (cut := filed.beyond(_seq_of(record) or 0)):
                        check.found(chain, cut)
                    wrong = links.precedes(record) if record is not None else (NOT_AN_EVENT, False)
                    if wrong is not None:
                        reason, at_later = wrong
                        path, raw, seq = (
                            later if at_later and later else (segment.path, line, _seq_of(record))
                        )
                        check.found(chain, Problem(str(path), _line_number(path, raw), seq, reason))
                    later = (segment.path, line, _seq_of(record))
                if record is not None and filt.matches(record):
                    found.append(record)
                    if len(found) == n:
                        break
            if len(found) == n:
                break
        found.reverse()
        streams.append(found)
    merged = list(_merge(streams))
    return merged[-n:]


class Unseen:
    """True for an event past the newest seq already passed on in its chain.

    Joins a replay of the last N events to the live ones that follow: an event in both
    is passed on once.
    """

    def __init__(self) -> None:
        self._newest: dict[str, int] = {}

    def __call__(self, record: Mapping[str, Any]) -> bool:
        chain = record.get("chain") or {}
        chain_id, seq = str(chain.get("id")), chain.get("seq")
        if not isinstance(seq, int):
            return True
        if seq <= self._newest.get(chain_id, 0):
            return False
        self._newest[chain_id] = seq
        return True


# -- following ----------------------------------------------------------------------------


async def follow(
    source: Path,
    filt: EventFilter = _EVERYTHING,
    *,
    poll_s: float = 0.25,
    start_at_end: bool = True,
) -> AsyncGenerator[Record, None]:
    """Yield events matching ``filt`` as they are appended under ``source``, forever.

    Polls file sizes every ``poll_s`` seconds (no inotify). With ``start_at_end`` only
    events written from now on are yielded; otherwise everything already there comes
    first. A line is yielded once its newline is written. When a chain rotates into a new
    segment, the old one is read to its end first; a chain appearing in a folder is read
    from its start; a file cut shorter (a torn tail set aside at start-up) is read on
    from its new end. Events found in one poll are merged by time across chains.

    If ``source`` is a file, its chain's later segments in the same folder are followed
    too. Raises FileNotFoundError if ``source`` does not exist. Files are read in a worker
    thread, at most a few MiB per file at a time.
    """
    _require(source)
    follower = Follower(source, filt)
    await asyncio.to_thread(follower.start, at_end=start_at_end)
    async for record in follower.records(poll_s=poll_s):
        yield record


@dataclass(slots=True)
class _Tail:
    """Where one chain is being read: its segments by first seq, and the current one."""

    paths: dict[int, Path] = field(default_factory=dict)
    current: int = 0  # first seq of the segment being read
    offset: int = 0  # just after the last complete line read from it
    inode: int | None = None  # of the current segment, once read
    links: ChainLinks = field(default_factory=ChainLinks)  # what was read, checked as read


class Follower:
    """What :func:`follow` knows between polls; used by one worker thread at a time.

    For callers that must know where following starts before reading anything else
    (``audit tail -n N -f``): call :meth:`start` (in a thread), then read the last events,
    then iterate :meth:`records`; nothing appended in between is missed.
    """

    def __init__(self, source: Path, filt: EventFilter, *, check: ReadCheck | None = None) -> None:
        self._source = source
        self._filt = filt
        self._check = check
        self._chains: dict[str, _Tail] = {}
        self._known: set[Path] = set()  # files already classified as segments
        # Files that were empty or did not start with an event, by their size then: looked
        # at again only once they change (a first line still being written).
        self._pending: dict[Path, int] = {}

    def start(self, *, at_end: bool) -> None:
        self._discover(at_end=at_end)

    async def records(self, *, poll_s: float = 0.25) -> AsyncGenerator[Record, None]:
        """New matching events as they are appended, forever (after :meth:`start`)."""
        while True:
            records, more = await asyncio.to_thread(self.poll)
            for record in records:
                yield record
            if not more:
                await asyncio.sleep(poll_s)

    def poll(self) -> tuple[list[Record], bool]:
        """New matching events (merged by time) and whether more is waiting to be read."""
        # New files first: a segment appears only once the one before it is complete, so
        # having seen it, the current one can be read to its end and left behind.
        self._discover(at_end=False)
        streams: list[Iterable[Record]] = []
        more = False
        for chain, tail in self._chains.items():
            records, unfinished = self._read_chain(chain, tail)
            streams.append(records)
            more = more or unfinished
        return list(_merge(streams)), more

    # Finding files.

    def _candidates(self) -> list[Path]:
        source = self._source
        if source.is_dir():
            return sorted(
                p for p in source.rglob("*.jsonl") if not p.name.endswith(CHECKPOINT_SUFFIX)
            )
        paths = [source]
        for chain in self._chains:
            # A file's chain goes on in the next segments beside it.
            paths.extend(s.path for s in chain_segments(source.parent, chain))
        return paths

    def _discover(self, *, at_end: bool) -> None:
        """Classify files not seen before; start chains not seen before."""
        new: dict[str, dict[int, Path]] = {}
        for path in self._candidates():
            if path in self._known:
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if self._pending.get(path) == size:
                continue
            found = discover(path)
            if not found.segments:
                self._pending[path] = size
                continue
            self._pending.pop(path, None)
            self._known.add(path)
            for chain, segments in found.segments.items():
                for segment in segments:
                    new.setdefault(chain, {}).setdefault(segment.first_seq, segment.path)
        for chain, paths in new.items():
            tail = self._chains.get(chain)
            if tail is not None:
                # More segments of a chain being read: later ones are read in turn, earlier
                # ones (copies of history) never.
                for first_seq, path in paths.items():
                    tail.paths.setdefault(first_seq, path)
            elif at_end:
                # History: start after the last complete line of the newest segment.
                last = max(paths)
                self._chains[chain] = _Tail(
                    paths, current=last, offset=_end_of_last_line(paths[last])
                )
            else:
                self._chains[chain] = _Tail(paths, current=min(paths))

    # Reading.

    def _read_chain(self, chain: str, tail: _Tail) -> tuple[list[Record], bool]:
        out: list[Record] = []
        matches = self._filt.matches
        check = self._check
        budget = _FOLLOW_BUDGET
        while True:
            later = [seq for seq in tail.paths if seq > tail.current]
            data, budget = self._read_new(tail, budget)
            end = data.rfind(b"\n") + 1
            for line in data[:end].split(b"\n"):
                record = _parse(line) if line else None
                if line and check is not None and chain not in check.problems:
                    reason = tail.links.follows(record) if record is not None else NOT_AN_EVENT
                    if reason is not None:
                        path = tail.paths[tail.current]
                        where = Problem(
                            str(path), _line_number(path, line), _seq_of(record), reason
                        )
                        check.found(chain, where)
                if record is not None and matches(record):
                    out.append(record)
            tail.offset += end
            if budget <= 0:
                return out, True
            if not later:
                return out, False
            # Read to its end (checked after the later one was seen): any bytes left
            # without a newline are torn and will never be completed.
            tail.current, tail.offset, tail.inode = min(later), 0, None

    def _read_new(self, tail: _Tail, budget: int) -> tuple[bytes, int]:
        """The bytes after ``tail.offset`` in the current segment, up to about ``budget``."""
        path = tail.paths[tail.current]
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return b"", budget  # removed: nothing more will come from it
        with handle:
            stat = os.fstat(handle.fileno())
            if tail.inode is None:
                tail.inode = stat.st_ino
            elif stat.st_ino != tail.inode:
                tail.offset, tail.inode = 0, stat.st_ino  # replaced: a new file, read it all
            if stat.st_size < tail.offset:
                # Cut shorter (a torn tail set aside, a failed write rewound): what was read
                # stands; go on after the last complete line that is still there.
                tail.offset = _end_of_last_line(path, stat.st_size)
            if stat.st_size == tail.offset:
                return b"", budget
            handle.seek(tail.offset)
            data = handle.read(min(stat.st_size - tail.offset, budget))
            if len(data) == budget and b"\n" not in data:
                # One line longer than the budget: take it whole, once it is whole.
                data += handle.readline()
                if not data.endswith(b"\n"):
                    return b"", budget
        return data, budget - len(data)


def _end_of_last_line(path: Path, size: int | None = None) -> int:
    """The offset just after the last newline in ``path`` (within its first ``size`` bytes)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return 0
    with handle:
        position = handle.seek(0, os.SEEK_END) if size is None else size
        while position > 0:
            start = max(0, position - _BLOCK)
            handle.seek(start)
            data = handle.read(position - start)
            newline = data.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            position = start
    return 0
