"""What the journal reads back when it opens: where the chain stands, and what a crash left.

All of it runs once, in a worker thread, before the first request. A crash (``kill -9``,
power loss) can leave at most one partial line at the end of the current segment or of the
checkpoint file: it is set aside in a ``.torn-<offset>`` file for inspection, and the chain
continues from the last complete event, so everything before it still verifies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from keyledger.proxy.audit.chain import ChainState
from keyledger.proxy.audit.checkpoints import Checkpoint
from keyledger.proxy.audit.segments import keep_aside, lines_backwards

__all__ = ["Tail", "last_checkpoint_event", "read_tail", "set_torn_tail_aside"]

_BLOCK = 1 << 16
# How orjson writes the type of a checkpoint event: found without parsing every line.
_CHECKPOINT_MARK = b'"type":"checkpoint"'


class CorruptJournal(RuntimeError):
    """The journal's last complete line is not a keyledger event of this chain."""


@dataclass(frozen=True, slots=True)
class Tail:
    state: ChainState  # after the last complete event
    size: int  # where that event's line ends
    torn: bytes  # anything after it: a write cut short
    first_time: str | None  # the time of the file's first event (segment age)
    last_time: str = ""  # the time of its last complete event: new ones never go before it


def read_tail(fd: int, size: int, path: Path, chain_id: str) -> Tail:
    """The chain state after the last complete line of an open segment, and any torn tail."""
    first_time = _first_time(fd) if size else None
    if size == 0:
        return Tail(ChainState(chain_id), 0, b"", None)
    window = _BLOCK
    while True:
        start = max(0, size - window)
        data = os.pread(fd, size - start, start)
        end = data.rfind(b"\n")  # end of the last complete line
        body = data[: end + 1]
        prev_end = body.rfind(b"\n", 0, len(body) - 1)
        if end >= 0 and (prev_end >= 0 or start == 0):
            last = body[prev_end + 1 :]
            break
        if start == 0:
            # No complete line at all: everything is torn.
            return Tail(ChainState(chain_id), 0, data, None)
        window *= 4
    try:
        record = orjson.loads(last)
        chain = record["chain"]
        state = ChainState(chain_id, int(chain["seq"]), str(chain["hash"]))
        last_time = record.get("time") if isinstance(record.get("time"), str) else ""
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptJournal(
            f"the last line of {path.name} is not a keyledger event; run "
            "`keyledger audit verify` on it and move the file aside"
        ) from exc
    if chain.get("id") != chain_id:
        raise CorruptJournal(f"{path.name} holds chain {chain.get('id')!r}, not {chain_id!r}")
    return Tail(state, start + end + 1, data[end + 1 :], first_time, last_time)


def set_torn_tail_aside(path: Path, fd: int, good_size: int, torn: bytes) -> str:
    """Copy a torn tail next to ``path``, then cut it off the file; return the copy's name.

    The copy is durable before the cut (a power cut between them must not lose the
    evidence), and never overwrites an earlier copy from another crash at the same offset.
    """
    name = keep_aside(path, good_size, torn)
    os.ftruncate(fd, good_size)
    os.fsync(fd)
    return name


def last_checkpoint_event(path: Path) -> Checkpoint | None:
    """The newest checkpoint event in a segment, read backwards from its end."""
    for line in lines_backwards(path):
        if _CHECKPOINT_MARK in line and (found := _checkpoint_of(line)) is not None:
            return found
    return None


def _checkpoint_of(line: bytes) -> Checkpoint | None:
    try:
        record = orjson.loads(line)
        if record.get("type") != "checkpoint":
            return None  # the mark sat inside a string of another event
        return Checkpoint.from_event(record)
    except (orjson.JSONDecodeError, ValueError, AttributeError):
        return None


def _first_time(fd: int) -> str | None:
    head = os.pread(fd, 4096, 0)
    line = head.split(b"\n", 1)[0]
    try:
        value = orjson.loads(line)["time"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None
