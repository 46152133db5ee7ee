"""How far each sink got: a small file per sink and chain, replaced whole on every move.

A cursor names the segment file, the byte offset just after the last line the sink
acknowledged, and that line's seq. It only ever moves after an acknowledgement, so after a
crash or restart the shipper resumes at the first event the sink may not have: the worst
case is sending one batch twice, which readers deduplicate. For the same reason the folder
is not fsynced after the rename: a rename lost to a power cut leaves an older cursor.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = ["Cursor", "CursorStore"]

_SCHEMA = "keyledger.cursor/v1"


@dataclass(frozen=True, slots=True)
class Cursor:
    segment: str  # file name, in the journal folder; "" before the first event
    offset: int  # bytes of ``segment`` already shipped
    seq: int  # the last seq shipped (0: nothing yet)


START = Cursor("", 0, 0)


class CursorStore:
    """Cursors under ``<journal>/.cursors/``: hidden, so journal readers pass them by."""

    def __init__(self, journal_dir: Path) -> None:
        self.directory = journal_dir / ".cursors"

    def path(self, sink: str, chain: str) -> Path:
        return self.directory / f"{sink}.{chain}.json"

    def load(self, sink: str, chain: str) -> Cursor:
        """The saved cursor, or the start of the chain when there is none (or it is junk)."""
        try:
            data = orjson.loads(self.path(sink, chain).read_bytes())
            if not isinstance(data, dict) or data.get("schema") != _SCHEMA:
                return START
            cursor = Cursor(str(data["segment"]), int(data["offset"]), int(data["seq"]))
        except FileNotFoundError:
            return START
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # Shipping from the start again only costs duplicates; nothing is skipped.
            return START
        return cursor if cursor.offset >= 0 and cursor.seq >= 0 else START

    def save(self, sink: str, chain: str, cursor: Cursor) -> None:
        """Replace the cursor atomically and durably (write, fsync, rename)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        path = self.path(sink, chain)
        partial = path.with_name(path.name + ".partial")
        data = orjson.dumps(
            {
                "schema": _SCHEMA,
                "segment": cursor.segment,
                "offset": cursor.offset,
                "seq": cursor.seq,
            }
        )
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(partial, path)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
