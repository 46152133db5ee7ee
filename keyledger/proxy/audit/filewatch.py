"""Is the journal still writing the file that everyone else sees at its path?

The journal appends through an open descriptor. If the segment file is replaced under it
(``sed -i``, an editor that saves a copy, ``mv other file``), removed, moved away,
truncated or appended to by another program, writing on would put acknowledged events
where no reader, shipper or ``audit verify`` looks, or bury foreign bytes mid-file. So the
journal compares the descriptor with the path after every fsync round, on rotation and on a
short timer, and moves to a fresh segment when they part (see ``Journal``).

:func:`look` does the blocking part (in a worker thread); :func:`judge` decides on the loop,
where the journal knows how many bytes it has written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

__all__ = ["FileChange", "Found", "Sighting", "judge", "look", "sync_and_look"]


class Found(StrEnum):
    """What happened to the segment file the journal writes."""

    REMOVED = "removed"  # unlinked; nothing at the path
    MOVED = "moved"  # still linked elsewhere; nothing at the path
    REPLACED = "replaced"  # another file at the path (sed -i, an editor's save, mv over it)
    TRUNCATED = "truncated"  # the same file, shorter than what was written to it
    APPENDED = "appended"  # the same file, with bytes the journal did not write


@dataclass(frozen=True, slots=True)
class Sighting:
    """The open file and what its path names now, read together."""

    open_file: os.stat_result
    at_path: os.stat_result | None  # None: nothing at the path


@dataclass(frozen=True, slots=True)
class FileChange:
    """A segment file that is no longer what the journal wrote."""

    found: Found
    path: Path
    written_bytes: int  # what the journal had written to it
    found_bytes: int | None  # what is at the path now (None: nothing)

    def describe(self) -> str:
        name = self.path.name
        if self.found is Found.REMOVED:
            return f"{name} was removed"
        if self.found is Found.MOVED:
            return f"{name} was moved away"
        if self.found is Found.REPLACED:
            return f"{name} was replaced by another file ({self.found_bytes} bytes)"
        if self.found is Found.TRUNCATED:
            return f"{name} was cut to {self.found_bytes} of the {self.written_bytes} bytes written"
        return (
            f"{name} grew to {self.found_bytes} bytes, but keyledger wrote "
            f"{self.written_bytes}: another program appended to it"
        )


def look(fd: int, path: Path) -> Sighting:
    """Blocking: stat the open descriptor and the path."""
    try:
        at_path: os.stat_result | None = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # a file where its folder was
        at_path = None
    return Sighting(os.fstat(fd), at_path)


def sync_and_look(fd: int, path: Path) -> Sighting:
    """Blocking: fsync ``fd``, then :func:`look` (one trip to a worker thread for both)."""
    os.fsync(fd)
    return look(fd, path)


def judge(sighting: Sighting, path: Path, *, low: int, high: int) -> FileChange | None:
    """None if ``path`` is still the open file and its size lies in ``[low, high]``.

    The journal may append while :func:`look` runs in its thread, so the size it saw lies
    between what was written before the look (``low``) and after it (``high``).
    """
    open_file, at_path = sighting.open_file, sighting.at_path
    found: Found | None = None
    if at_path is None:
        found = Found.MOVED if open_file.st_nlink else Found.REMOVED
    elif (at_path.st_dev, at_path.st_ino) != (open_file.st_dev, open_file.st_ino):
        found = Found.REPLACED
    elif open_file.st_size < low:
        found = Found.TRUNCATED
    elif open_file.st_size > high:
        found = Found.APPENDED
    if found is None:
        return None
    return FileChange(
        found=found,
        path=path,
        written_bytes=high,
        found_bytes=None if at_path is None else at_path.st_size,
    )
