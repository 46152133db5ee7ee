"""The admin API's reads of the journal folder: synchronous, bounded, run in worker threads.

Every function here reads files only (never the live :class:`Journal` object), so it sees
every chain in the folder -- other workers' and replicas' too -- and bounds its own work:

- :func:`newest` reads each chain backwards from its end and stops at ``limit`` matches,
  at ``since`` (a chain's times never go back, see ``timeline``) or after its share of
  ``budget`` lines; what it keeps is at most ``limit`` lines per chain.
- :func:`in_window` reads only the segments whose events can fall in ``[since, until)``
  and raises :class:`TooManyEvents` past ``budget`` events in the window.
- :func:`find` reads, per event asked for, at most the one segment its seq falls in.
- :func:`chain_ends` reads each chain's newest lines and its checkpoint file's last line.

:class:`ReadPool` runs them on threads of its own, not asyncio's default executor: the
journal's fsync rounds run there, and a long read must never make a request wait for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson

from keyledger.proxy.audit.checkpoints import Checkpoint
from keyledger.proxy.audit.segments import JournalFiles, Segment, discover, lines_backwards

__all__ = [
    "Busy",
    "ChainEnd",
    "Found",
    "ReadPool",
    "TooManyEvents",
    "chain_ends",
    "find",
    "in_window",
    "newest",
]

Record = dict[str, Any]
Match = Callable[[Record], bool]
P = ParamSpec("P")
T = TypeVar("T")

_TIME_KEY = b'"time":"'
_TIME_LEN = len("2026-11-23T21:55:01.123456Z")
_END_LINES = 64  # lines read back from a chain's end for its last event (past torn bytes)


class Busy(RuntimeError):
    """Too many admin reads are waiting already; the caller should retry later."""


class TooManyEvents(ValueError):
    """The window holds more events than one answer may read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """Matching journal lines, newest first, each with its parsed record."""

    events: tuple[tuple[Record, bytes], ...]
    scanned: int  # lines read
    complete: bool  # False: some chain's share of the budget ran out before its start


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainEnd:
    """Where one chain stands on disk."""

    chain: str
    segments: int
    bytes: int
    first_seq: int  # of its oldest segment left (retention may have pruned earlier ones)
    last_seq: int | None  # None: no complete event read at its end
    last_time: str | None
    checkpoint: Checkpoint | None  # the newest record of its checkpoint file


class ReadPool:
    """The admin API's worker threads, with a bound on how many reads may wait for one."""

    def __init__(self, *, workers: int = 2, max_waiting: int = 16) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="keyledger-admin")
        self._max = workers + max_waiting
        self._in_flight = 0

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._in_flight >= self._max:
            raise Busy(f"{self._in_flight} admin reads are running or waiting; retry shortly")
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _files(directory: Path) -> JournalFiles:
    return discover(directory) if directory.is_dir() else JournalFiles()


def _parse(line: bytes) -> Record | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _line_time(line: bytes) -> str | None:
    """An event's time without parsing it: keyledger writes ``time`` near the start."""
    at = line.find(_TIME_KEY, 0, 128)
    if at < 0:
        return None
    start = at + len(_TIME_KEY)
    found = line[start : start + _TIME_LEN]
    return found.decode("ascii", "replace") if found.endswith(b"Z") else None


def _time(record: Mapping[str, Any]) -> str:
    time = record.get("time")
    return time if isinstance(time, str) else ""


# -- newest first -------------------------------------------------------------------------


def newest(
    directory: Path, match: Match, limit: int, *, since: str | None = None, budget: int
) -> Found:
    """The newest ``limit`` events that ``match``, newest first, across every chain.

    ``since`` (a journal time string) ends each chain's backwards read there.
    """
    files = _files(directory)
    share = max(budget // max(len(files.segments), 1), 1)
    per_chain: list[list[tuple[Record, bytes]]] = []
    scanned, complete = 0, True
    for segments in files.segments.values():
        found: list[tuple[Record, bytes]] = []
        read = 0
        for line in _backwards(segments):
            if read >= share:
                complete = False
                break
            read += 1
            quick = _line_time(line)
            if since is not None and quick is not None and quick < since:
                break
            record = _parse(line)
            if record is None:
                continue  # a torn or half-written line
            if since is not None and _time(record) < since:
                break
            if match(record):
                found.append((record, line))
                if len(found) == limit:
                    break
        scanned += read
        per_chain.append(found)
    # Each chain's list is newest first; merged by time, ties in chain order.
    merged = heapq.merge(*per_chain, key=lambda pair: _time(pair[0]), reverse=True)
    events = tuple(pair for _, pair in zip(range(limit), merged, strict=False))
    return Found(events=events, scanned=scanned, complete=complete)


def _backwards(segments: list[Segment]) -> Iterator[bytes]:
    for segment in reversed(segments):
        yield from lines_backwards(segment.path)


# -- a time window, oldest first ----------------------------------------------------------


def in_window(
    directory: Path, match: Match, *, since: str, until: str, budget: int
) -> Iterator[Record]:
    """Every event in ``[since, until)`` that ``match``, chain by chain in seq order; a
    generator, so a caller that aggregates holds only its totals.

    Raises :class:`TooManyEvents` once more than ``budget`` events of the window were read.
    """
    files = _files(directory)
    read = 0
    for segments in files.segments.values():
        for path in _segments_in(segments, since, until):
            with _lines(path) as handle:
                for line in handle:
                    quick = _line_time(line)
                    if quick is not None and quick < since:
                        continue  # before the window: not parsed, not counted
                    if quick is not None and quick >= until:
                        break
                    record = _parse(line)
                    if record is None:
                        continue
                    moment = _time(record)
                    if moment < since:
                        continue
                    if moment >= until:
                        break
                    read += 1
                    if read > budget:
                        raise TooManyEvents(
                            f"the window holds more than {budget:,} events: narrow since/until "
                            "or the filters, or use `keyledger audit report` on the journal"
                        )
                    if match(record):
                        yield record


def _segments_in(segments: list[Segment], since: str, until: str) -> list[Path]:
    """The segments that may hold events in the window, judged by each one's first time."""
    firsts = [_first_time(s.path) for s in segments]
    chosen = []
    for i, segment in enumerate(segments):
        first, after = firsts[i], firsts[i + 1] if i + 1 < len(segments) else None
        if after is not None and after < since:
            continue  # the next segment starts before the window: this one ends before it
        if first is not None and first >= until:
            break
        chosen.append(segment.path)
    return chosen


def _first_time(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            first = handle.readline()
    except OSError:
        return None
    record = _parse(first)
    return (_time(record) or None) if record is not None else None


@contextlib.contextmanager
def _lines(path: Path) -> Iterator[Iterator[bytes]]:
    """A segment's lines, or none if retention removed it since it was found."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        yield iter(())
        return
    with handle:
        yield iter(handle)


# -- events by place ----------------------------------------------------------------------


def find(directory: Path, wanted: Mapping[str, set[int]]) -> dict[tuple[str, int], bytes]:
    """The journal lines of the events asked for (chain id -> seqs), by (chain, seq).

    A segment's lines run from its first seq up, so each event is looked for at its line;
    if a segment was edited (lines removed or added) every line of it is looked at.
    """
    files = _files(directory)
    out: dict[tuple[str, int], bytes] = {}
    for chain, seqs in wanted.items():
        segments = files.segments.get(chain, [])
        for i, segment in enumerate(segments):
            end = segments[i + 1].first_seq if i + 1 < len(segments) else None
            here = {s for s in seqs if s >= segment.first_seq and (end is None or s < end)}
            if here:
                out.update(_find_in(segment, chain, here))
    return out


def _find_in(segment: Segment, chain: str, seqs: set[int]) -> dict[tuple[str, int], bytes]:
    found: dict[tuple[str, int], bytes] = {}
    for exact in (True, False):
        with _lines(segment.path) as lines:
            for number, line in enumerate(lines):
                if exact and segment.first_seq + number not in seqs:
                    continue
                record = _parse(line)
                link = record.get("chain") if record is not None else None
                if not isinstance(link, dict) or link.get("id") != chain:
                    continue
                seq = link.get("seq")
                if type(seq) is int and seq in seqs:
                    found[(chain, seq)] = line.rstrip(b"\n")
        if len(found) == len(seqs):
            break
    return found


# -- where each chain stands --------------------------------------------------------------


def chain_ends(directory: Path) -> list[ChainEnd]:
    files = _files(directory)
    ends = []
    for chain in files.chains:
        segments = files.segments.get(chain, [])
        last: Record | None = None
        if segments:
            for line in _take(lines_backwards(segments[-1].path), _END_LINES):
                last = _parse(line)
                if last is not None:
                    break
        link = last.get("chain") if last is not None else None
        seq = link.get("seq") if isinstance(link, dict) else None
        ends.append(
            ChainEnd(
                chain=chain,
                segments=len(segments),
                bytes=sum(_size(s.path) for s in segments),
                first_seq=segments[0].first_seq if segments else 0,
                last_seq=seq if type(seq) is int else None,
                last_time=(_time(last) or None) if last is not None else None,
                checkpoint=_newest_checkpoint(files.checkpoints.get(chain, [])),
            )
        )
    return ends


def _take(lines: Iterator[bytes], n: int) -> Iterator[bytes]:
    for _, line in zip(range(n), lines, strict=False):
        yield line


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _newest_checkpoint(paths: list[Path]) -> Checkpoint | None:
    for path in reversed(paths):
        for line in _take(lines_backwards(path), _END_LINES):
            try:
                return Checkpoint.from_line(line + b"\n")
            except ValueError:
                continue  # a torn last record
    return None
