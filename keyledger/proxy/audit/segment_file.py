"""The segment the journal writes, as an open file: appends, rewinds, and new segments.

An append is one ``write(2)`` into the page cache, microseconds, so it runs on the event
loop; durability (``fsync``) is the caller's, in a worker thread. A failed write is cut
back to the last durable length. A new segment appears whole (written, synced, renamed),
so an empty or half-made segment is never a file readers find. Opening reads back where
the newest segment ends and sets a crash's torn tail aside (see ``recovery``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from keyledger.proxy.audit.recovery import CorruptJournal, Tail, read_tail, set_torn_tail_aside
from keyledger.proxy.audit.segments import Segment, chain_segments, segment_path

__all__ = ["Opened", "SegmentFile", "create_segment", "open_newest", "write_all"]

log = structlog.get_logger("keyledger.journal")


class SegmentFile:
    """An open segment: its descriptor, which segment it is, and when it began (epoch s)."""

    __slots__ = ("born", "fd", "segment")

    def __init__(self, fd: int, segment: Segment, born: float) -> None:
        self.fd = fd
        self.segment = segment
        self.born = born

    @property
    def path(self) -> Path:
        return self.segment.path

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def append(self, data: bytes) -> None:
        write_all(self.fd, data)

    def cut_to(self, size: int) -> bool:
        """Truncate back to ``size``; False if the file refused and holds bytes past it."""
        try:
            os.ftruncate(self.fd, size)
        except OSError:
            # A file that refuses even this (read-only now) but holds nothing past ``size``
            # has nothing to rewind: only bytes left past it matter.
            return self.size() == size
        return True

    def size(self) -> int | None:
        """The open file's size (None if even fstat fails)."""
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True, slots=True)
class Opened:
    """The newest segment, opened for appending, and what was read back from it."""

    file: SegmentFile
    tail: Tail  # where the chain stands at its end
    segments: list[Segment]  # the chain's segments found, oldest first (empty: made now)
    torn_moved_to: str | None  # where a torn tail was set aside


def open_newest(directory: Path, chain_id: str) -> Opened:
    """Blocking: open the chain's newest segment in ``directory`` (a first one if there is
    none) and read where it ends; raises :class:`CorruptJournal` if it is not this chain's."""
    segments = chain_segments(directory, chain_id)
    while len(segments) > 1 and segments[-1].path.stat().st_size == 0:
        # Rotation creates segments whole (rename), so an empty one was made by hand.
        log.warning("journal_empty_segment_removed", path=str(segments[-1].path))
        segments.pop().path.unlink()
    segment = (
        segments[-1] if segments else Segment(chain_id, 1, segment_path(directory, chain_id, 1))
    )
    fd = os.open(segment.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    moved_to = None
    try:
        tail = read_tail(fd, os.fstat(fd).st_size, segment.path, chain_id)
        if tail.torn:
            moved_to = set_torn_tail_aside(segment.path, fd, tail.size, tail.torn)
            log.warning("journal_torn_tail", path=str(segment.path), bytes=len(tail.torn))
    except CorruptJournal:
        os.close(fd)
        if not segments:
            segment.path.unlink()  # made just now: a refused start leaves nothing behind
        raise
    except BaseException:
        os.close(fd)
        raise
    # A segment's age counts from its first event; an empty one is born now.
    born = time.time() if tail.first_time is None else _epoch(tail.first_time)
    return Opened(SegmentFile(fd, segment, born), tail, segments, moved_to)


def create_segment(path: Path, first_line: bytes, fsync: bool) -> int:
    """Blocking: a new segment holding ``first_line``, appearing whole (write, fsync,
    rename); returns its descriptor, open for appending."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o640)
    try:
        write_all(fd, first_line)
        if fsync:
            os.fsync(fd)
        os.rename(partial, path)
        if fsync:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """One append into the page cache: microseconds, so it runs on the loop."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _epoch(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
