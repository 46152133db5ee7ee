"""Sealing a chain with signed checkpoints, and filing them.

The journal decides *when* (every N events, in the same write as the request that crossed
the line; on a timer; at rotation and shutdown). This module makes the checkpoint event
that seals the chain so far, naming the checkpoint before it, and, once the journal has
made it durable, copies it to the chain's checkpoint file (``<chain>.checkpoints.jsonl``),
which shows a journal cut behind its last seal. At start-up it reconciles the two.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from keyledger.proxy.audit.chain import ChainState, seal
from keyledger.proxy.audit.checkpoints import Checkpoint, CheckpointFile, CheckpointSigner, Seal
from keyledger.proxy.audit.events import AuditEvent, EventType, format_time
from keyledger.proxy.audit.recovery import CorruptJournal, last_checkpoint_event
from keyledger.proxy.audit.segments import Segment, checkpoint_file
from keyledger.proxy.audit.timeline import Timeline

__all__ = ["Checkpointing", "Sealer"]

log = structlog.get_logger("keyledger.journal")


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpointing:
    signer: CheckpointSigner = field(repr=False)
    every_events: int = 1000
    every_s: float = 60.0


class Sealer:
    """The checkpoints of one chain: made on the loop, filed from a worker thread."""

    def __init__(
        self, settings: Checkpointing, *, directory: Path, chain_id: str, fsync: bool
    ) -> None:
        self.settings = settings
        self.every_events = settings.every_events
        self.chain_id = chain_id
        self.file = CheckpointFile(checkpoint_file(directory, chain_id), fsync=fsync)
        self._unfiled: list[Checkpoint] = []  # durable in the journal, not yet in the file

    def seal(
        self, state: ChainState, previous: Checkpoint | None, timeline: Timeline
    ) -> tuple[Checkpoint, bytes, ChainState]:
        """The checkpoint of ``state``, its journal line, and the chain state after it."""
        now = datetime.now(UTC)
        signed = self.settings.signer.sign(
            chain=self.chain_id,
            seal=Seal(state.seq, state.hash),
            time=format_time(now),
            previous=previous.seal if previous else None,
        )
        event = AuditEvent(type=EventType.CHECKPOINT, time=now, detail=signed.to_detail())
        line, state = seal(timeline.in_order(event.to_record()), state)
        return signed, line, state

    @property
    def unfiled(self) -> bool:
        return bool(self._unfiled)

    def durable(self, checkpoint: Checkpoint) -> None:
        """``checkpoint`` is durable in the journal: file it next (see :meth:`file_durable`).

        Only the newest of each fsync round comes here: each names the one before it, and
        the file needs the newest to show a cut journal.
        """
        self._unfiled.append(checkpoint)

    async def file_durable(self) -> None:
        """Copy durable checkpoints to the checkpoint file; on failure, retry next time."""
        if not self._unfiled:
            return
        pending, self._unfiled = self._unfiled, []
        try:
            await asyncio.to_thread(self.file.append, pending)
        except OSError as exc:
            self._unfiled[:0] = pending
            log.error("checkpoint_file_write_failed", path=str(self.file.path), error=exc.strerror)

    def open(
        self, directory: Path, segments: list[Segment], state: ChainState, found: dict[str, Any]
    ) -> Checkpoint | None:
        """Blocking: the newest checkpoint of a journal that ends at ``state``; the file gets
        any the journal has and it lacks. What was mended goes into ``found``.

        Raises :class:`CorruptJournal` when the file seals events the journal lacks.
        """
        cp_file = self.file
        cp_file.open()
        if cp_file.torn_moved_to is not None:
            found["checkpoint_file_torn_moved_to"] = cp_file.torn_moved_to
        # The newest checkpoint event is in the last segment, or ends the one before it.
        in_journal = None
        for segment in reversed(segments[-2:]):
            in_journal = last_checkpoint_event(segment.path)
            if in_journal is not None:
                break
        filed = cp_file.last
        if filed is not None and filed.seq >= state.seq:
            # The file seals events the journal no longer holds: it was cut, or a segment
            # removed or replaced. Writing on would give sealed seqs to new events (a fork),
            # and a value served then would be recorded under a seq that verify rejects.
            raise CorruptJournal(
                f"the journal in {directory} ends at seq {state.seq}, but "
                f"{cp_file.path.name} shows it reached seq {filed.seq + 1} (a checkpoint of seq "
                f"{filed.seq}): sealed events are missing (cut off, or a segment removed or "
                "replaced), and writing on would reuse their "
                f"seqs. See what changed with `keyledger audit verify {directory}`, then "
                f"move the evidence aside and start a new journal: `mv {directory} "
                f"{directory}.moved-aside-{datetime.now(UTC):%Y%m%dT%H%M%SZ}`"
            )
        if in_journal is not None and (filed is None or filed.seq < in_journal.seq):
            # A crash came between the journal's fsync and the file's append.
            cp_file.append([in_journal])
            found["checkpoint_filed"] = in_journal.seq
            return in_journal
        return filed
