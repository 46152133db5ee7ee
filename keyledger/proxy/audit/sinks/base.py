"""What a remote sink is: something that takes consecutive journal lines and keeps them.

The shipper (:mod:`.shipper`) reads the local journal -- always the first durable write --
and hands each sink a :class:`Batch` of consecutive events of one chain, exactly the bytes
the journal holds, so a remote copy verifies like the journal itself. A sink returns from
:meth:`Sink.send` only once the remote side has acknowledged the whole batch; anything it
raises means "not stored", and the shipper sends the batch again (at-least-once: a copy may
hold an event twice, and readers deduplicate by chain id and seq).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson

from keyledger.proxy.audit.checkpoints import Checkpoint
from keyledger.proxy.audit.events import parse_time

__all__ = [
    "Batch",
    "BatchLimits",
    "Line",
    "Sink",
    "SinkError",
    "SinkMisconfigured",
    "parse_line",
]


class SinkError(Exception):
    """The sink did not store the batch (unreachable, throttled, refused); try again."""


class SinkMisconfigured(SinkError):
    """The sink will not work until an operator changes something (e.g. no Object Lock)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One journal line, as written (without the newline), and what a sink needs of it."""

    seq: int
    time_ms: int  # the event's time, milliseconds since the epoch (0 if unreadable)
    raw: bytes
    checkpoint: Checkpoint | None  # set when the line is a signed checkpoint event


def parse_line(raw: bytes) -> Line:
    """A journal line (without its newline); ValueError if it is not a keyledger event."""
    try:
        record = orjson.loads(raw)
        seq = record["chain"]["seq"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ValueError("not a keyledger audit event") from None
    if not isinstance(seq, int):
        raise ValueError("not a keyledger audit event (seq is not a number)")
    moment = parse_time(record.get("time"))
    time_ms = int(moment.timestamp() * 1000) if moment is not None else 0
    checkpoint = Checkpoint.from_event(record) if record.get("type") == "checkpoint" else None
    return Line(seq, time_ms, raw, checkpoint)


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive events of one chain, oldest first."""

    chain: str
    lines: tuple[Line, ...]

    @property
    def first_seq(self) -> int:
        return self.lines[0].seq

    @property
    def last_seq(self) -> int:
        return self.lines[-1].seq

    @property
    def checkpoints(self) -> tuple[Checkpoint, ...]:
        return tuple(line.checkpoint for line in self.lines if line.checkpoint is not None)

    def jsonl(self) -> bytes:
        """The batch as journal bytes: one event per line, each ending in a newline."""
        return b"".join(line.raw + b"\n" for line in self.lines)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The most one :meth:`Sink.send` takes; the shipper never builds a bigger batch."""

    max_events: int
    max_bytes: int  # of journal lines, newlines included


class Sink(Protocol):
    """A remote copy of the journal. Implementations: s3, cloudwatch, stdout."""

    @property
    def name(self) -> str:
        """Unique among the configured sinks; names the cursor and the metrics."""

    @property
    def limits(self) -> BatchLimits: ...

    async def prepare(self) -> None:
        """Check (and create, where the sink may) what sending needs.

        Raises :class:`SinkMisconfigured` when the sink must not be used as configured,
        :class:`SinkError` when it cannot be reached now. Called until it succeeds.
        """

    async def send(self, batch: Batch) -> None:
        """Store ``batch``; return only once the remote side acknowledged all of it."""

    async def close(self) -> None: ...
