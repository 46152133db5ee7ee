"""Where a chain lives on disk: a run of segment files, and one checkpoint file.

A chain's events are split into segments named by the seq of their first event::

    replica-a.000000000001.jsonl     seq 1 .. 48213
    replica-a.000000048214.jsonl     seq 48214 .. (the one being written)
    replica-a.checkpoints.jsonl      signed checkpoints again, once durable in the journal

Segments are never renamed or rewritten once closed; the chain runs on from one file into
the next (the first event of a segment names the previous file's last hash in
``chain.prev``). A journal written before rotation existed is a single ``<chain>.jsonl``:
it counts as the chain's first segment, and the chain continues from it.

Readers (verify, tail, export) do not trust names: they read each file's first line for its
chain and first seq, so files can be renamed, copied from S3 or gathered in one folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

__all__ = [
    "CHECKPOINT_SUFFIX",
    "JournalFiles",
    "Segment",
    "chain_segments",
    "checkpoint_file",
    "discover",
    "keep_aside",
    "lines_backwards",
    "segment_path",
    "validate_chain_id",
]

CHECKPOINT_SUFFIX = ".checkpoints.jsonl"
_SEQ_DIGITS = 12
_CHAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A last part of digits or "checkpoints" would make file names ambiguous.
_RESERVED_TAIL = re.compile(r"\.(\d+|checkpoints)$")


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    """One file of a chain; ordered by chain, then first seq."""

    chain: str
    first_seq: int
    path: Path = field(compare=False)


def validate_chain_id(chain_id: str) -> str:
    if not _CHAIN_ID.match(chain_id) or _RESERVED_TAIL.search(chain_id):
        raise ValueError(
            f"chain id {chain_id!r} must be 1-128 letters, digits, '.', '_' or '-', and "
            "must not end in '.<digits>' or '.checkpoints'"
        )
    return chain_id


def segment_path(directory: Path, chain_id: str, first_seq: int) -> Path:
    return directory / f"{chain_id}.{first_seq:0{_SEQ_DIGITS}d}.jsonl"


def checkpoint_file(directory: Path, chain_id: str) -> Path:
    return directory / f"{chain_id}{CHECKPOINT_SUFFIX}"


def chain_segments(directory: Path, chain_id: str) -> list[Segment]:
    """The writer's view of its own chain in ``directory``, oldest first, by file name.

    The legacy single file (``<chain>.jsonl``) sorts first: it can only have been written
    before any numbered segment.
    """
    pattern = re.compile(rf"^{re.escape(chain_id)}(?:\.(\d{{{_SEQ_DIGITS}}}))?\.jsonl$")
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = pattern.match(path.name)
            if match and path.is_file():
                first = int(match[1]) if match[1] else 0
                found.append(Segment(chain_id, first, path))
    return sorted(found)


@dataclass(slots=True)
class JournalFiles:
    """Everything found under a SOURCE: segments per chain (in seq order) and checkpoints."""

    segments: dict[str, list[Segment]] = field(default_factory=dict)
    checkpoints: dict[str, list[Path]] = field(default_factory=dict)
    empty: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def chains(self) -> list[str]:
        return sorted(self.segments.keys() | self.checkpoints.keys())

    def all_segments(self) -> list[Segment]:
        return sorted(s for chain in self.segments.values() for s in chain)


def discover(source: Path) -> JournalFiles:
    """Classify a journal file, or every ``*.jsonl`` under a folder, by its content."""
    paths: Iterable[Path]
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*.jsonl") if p.is_file())
    else:
        paths = [source]
    found = JournalFiles()
    for path in paths:
        if path.name.endswith(CHECKPOINT_SUFFIX):
            chain = path.name[: -len(CHECKPOINT_SUFFIX)]
            found.checkpoints.setdefault(chain, []).append(path)
            continue
        try:
            with path.open("rb") as handle:
                first = handle.readline()
        except OSError as exc:
            found.unreadable.append((path, f"cannot read: {exc.strerror}"))
            continue
        if not first:
            found.empty.append(path)
            continue
        try:
            chain_field = orjson.loads(first)["chain"]
            segment = Segment(str(chain_field["id"]), int(chain_field["seq"]), path)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            found.unreadable.append((path, "line 1 is not a keyledger audit event"))
            continue
        found.segments.setdefault(segment.chain, []).append(segment)
    for run in found.segments.values():
        run.sort()
    return found


def keep_aside(path: Path, offset: int, data: bytes) -> str:
    """Write ``data`` to a new ``<name>.torn-<offset>[.N]`` beside ``path``, durably."""
    for attempt in range(1000):
        aside = path.with_name(f"{path.name}.torn-{offset}" + (f".{attempt}" if attempt else ""))
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return aside.name
    raise OSError(f"no free name for the torn tail of {path.name}")


def lines_backwards(path: Path, block: int = 1 << 16) -> Iterator[bytes]:
    """The lines of ``path``, last first, read in blocks from the end."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        rest = b""  # the start of a line whose beginning lies in an earlier block
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            data = handle.read(position - start) + rest
            position = start
            lines = data.split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if rest:
            yield rest
