"""The local journal: append-only JSON lines, hash-chained, fsynced with group commit.

The event loop is the single writer: it seals each request's events onto the chain and
appends them with ``write(2)``, which only copies into the page cache. Durability is the
slow part, so ``fsync`` runs in a worker thread, and every request sealed while one fsync
is in flight waits on the *next* one: under load many requests share one fsync, one future
and (with fsync on) one write, made as their round starts; the loop never waits on the
disk.

Signed checkpoints ride along: when enough events have passed, the checkpoint is sealed
into the same write as the request that crossed the line, so it costs no extra fsync; a
timer seals a quiet chain, and closing seals the end. Once durable, each checkpoint is also
appended to the chain's checkpoint file.

Segments rotate by size and age. Rotation waits until everything written is durable,
writes a checkpoint at the end of the old file, and opens the new one with a
``segment_start`` event that names the old file and its last hash.

Fail closed: a failed write or fsync fails every request not yet durable, cuts the file
back to its last durable length and rewinds the chain to match, so the next request starts
cleanly once the disk recovers.

The file must stay the one readers see: after every fsync round, on rotation and every
``watch_s`` seconds the open descriptor is compared with the segment's path (see
``filewatch``). A file replaced, removed, moved, truncated or appended to under the journal
is written no more: requests whose events went into it since the last check are refused,
and the chain goes on in a fresh segment whose first event records what was found. Until
that segment exists, every append is refused.

``Journal`` composes the parts and owns where the chain stands (written, durable), which
each step moves: ``lock`` (one writer per chain), ``segment_file`` (the open file, new
segments), ``groupcommit`` (shared fsync rounds, durability waiters), ``sealing``
(checkpoints made and filed), ``rotation`` (when a segment is due), ``lostfile`` (a file
changed under it) and ``timeline`` (times that never go back).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from keyledger.proxy.audit.chain import ChainState, seal
from keyledger.proxy.audit.checkpoints import Checkpoint
from keyledger.proxy.audit.clock import StepWatch
from keyledger.proxy.audit.events import AuditEvent, EventType
from keyledger.proxy.audit.filewatch import FileChange, judge, look, sync_and_look
from keyledger.proxy.audit.groupcommit import GroupCommit, Round, Waiters
from keyledger.proxy.audit.lock import ChainLock, ChainLocked
from keyledger.proxy.audit.lostfile import LostFile, unacknowledged
from keyledger.proxy.audit.recovery import CorruptJournal
from keyledger.proxy.audit.rotation import Rotation, RotationPolicy, segment_start
from keyledger.proxy.audit.sealing import Checkpointing, Sealer
from keyledger.proxy.audit.segment_file import SegmentFile, create_segment, open_newest
from keyledger.proxy.audit.segments import Segment, segment_path, validate_chain_id
from keyledger.proxy.audit.timeline import Timeline

# Checkpointing and Rotation are the journal's settings: they stay importable from here.
__all__ = ["Checkpointing", "Journal", "JournalStats", "JournalUnavailable", "Rotation"]

log = structlog.get_logger("keyledger.journal")


class JournalUnavailable(RuntimeError):
    """The event could not be made durable; the request must be refused."""


@dataclass(slots=True)
class JournalStats:
    events: int = 0
    fsyncs: int = 0
    failures: int = 0
    checkpoints: int = 0
    rotations: int = 0
    files_lost: int = 0  # segment files replaced, removed, moved, truncated or appended to

    @property
    def events_per_fsync(self) -> float:
        return self.events / self.fsyncs if self.fsyncs else 0.0


@dataclass(slots=True)
class _Mark:
    """Where the chain stands: written (page cache) or durable (fsynced)."""

    state: ChainState
    size: int  # of the current segment
    checkpoint: Checkpoint | None  # the newest checkpoint at or before ``state``


class Journal:
    """Durable, chained, checkpointed audit journal for one chain (one replica / worker)."""

    def __init__(
        self,
        *,
        directory: Path,
        chain_id: str,
        fsync: bool = True,
        rotation: Rotation | None = None,
        checkpoints: Checkpointing | None = None,
        on_durable: Callable[[Sequence[bytes]], None] | None = None,
        minimise: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        on_fsync: Callable[[float, int], None] | None = None,
        watch_s: float = 1.0,
        clock_step_s: float = 1.0,  # a wall-clock step beyond this is a clock_step event
        steps: StepWatch | None = None,  # the watch itself (tests give one a fake clock)
    ) -> None:
        self.directory = directory
        self.chain_id = validate_chain_id(chain_id)
        self.stats = JournalStats()
        self.healthy = True
        self._fsync = fsync
        self._rotation = RotationPolicy(rotation or Rotation())
        self._sealer = (
            None
            if checkpoints is None
            else Sealer(checkpoints, directory=directory, chain_id=self.chain_id, fsync=fsync)
        )
        # Told each batch of lines once durable (the live audit stream); must not block.
        self._on_durable = on_durable
        # Drops or masks personal fields before an event is sealed (audit.minimise).
        self._minimise = minimise
        # Told each fsync's duration (seconds) and how many events it made durable.
        self._on_fsync = on_fsync
        self._lock = ChainLock(directory, self.chain_id)
        first = Segment(chain_id, 1, segment_path(directory, chain_id, 1))
        self._file = SegmentFile(-1, first, time.time())  # opened by start
        self._running = False
        self._written = _Mark(ChainState(chain_id), 0, None)
        self._durable = _Mark(ChainState(chain_id), 0, None)
        # No event goes before the latest time written, whatever the wall clock says.
        self._timeline = Timeline(steps or StepWatch(clock_step_s))
        # With fsync, the lines of the next round's requests, written in one go when it
        # starts (one write a round, not one a request).
        self._unwritten: list[bytes] = []
        # Requests written while an fsync runs share the next one.
        self._commit = GroupCommit(
            self._sync_round, keep_lines=on_durable is not None, name="keyledger-journal-fsync"
        )
        # Bumped by every rewind: an fsync in flight across one proves nothing.
        self._rewinds = 0
        self._broken = False  # a rewind failed: refuse everything until a restart
        self._probe: asyncio.Task[None] | None = None
        self._rotating: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        # The segment file changed under the journal: nothing more goes into it, and every
        # append waits for (or, while it cannot be made, is refused) a fresh segment.
        self._watch_s = watch_s
        self._watcher: asyncio.Task[None] | None = None
        self._lost: LostFile | None = None
        self._recovered: dict[str, Any] = {}
        # Shippers waiting for more durable events (wait_durable).
        self._waiters = Waiters()

    @property
    def state(self) -> ChainState:
        """The last event written (durable once its append returned)."""
        return self._written.state

    @property
    def path(self) -> Path:
        """The segment being written."""
        return self._file.path

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return self._durable.checkpoint

    @property
    def running(self) -> bool:
        """Started and not yet closing: appends are accepted."""
        return self._running

    @property
    def pending_events(self) -> int:
        """Events written and waiting for their fsync: the audit queue."""
        return self._written.state.seq - self._durable.state.seq

    @property
    def durable_seq(self) -> int:
        """The last event that is durable: what may leave the box (see sinks/shipper)."""
        return self._durable.state.seq

    async def wait_durable(self, beyond: int) -> None:
        """Return once an event after seq ``beyond`` is durable (callers bound the wait)."""
        while self._durable.state.seq <= beyond:
            await self._waiters.wait()

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self._running = True
        if not self._fsync:
            log.warning(
                "journal_fsync_off", path=str(self.path), note="events can be lost on power failure"
            )
        if self._sealer is None:
            log.warning(
                "checkpoints_off",
                note="without signed checkpoints, a rewritten or cut journal can go unnoticed",
            )
        else:
            self._ticker = asyncio.create_task(self._tick(), name="keyledger-checkpoint-timer")
        self._watcher = asyncio.create_task(self._watch(), name="keyledger-journal-watch")
        if self._recovered:
            # What start-up found and mended, recorded on the chain it mended.
            await self.append(
                AuditEvent(
                    type=EventType.LIFECYCLE,
                    detail={"event": "journal_recovered", **self._recovered},
                )
            )

    async def close(self) -> None:
        """Seal the end with a checkpoint, wait until all is durable, close the files."""
        for task in (self._ticker, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        was_running, self._running = self._running, False  # refuse appends from here on
        if self._rotating is not None:
            # It swaps the file under us: let it finish (it never raises). Appends that
            # waited for it are refused once it is done (not running).
            await asyncio.shield(self._rotating)
        if was_running:
            # A file replaced while the journal was quiet gets no seal: a fresh one does.
            await self._check_file()
            await self._settle_rotation()
        if (
            was_running
            and self._sealer is not None
            and self._unsealed()
            and self._lost is None
            and not self._broken  # a seal written after torn bytes would bury them
        ):
            try:
                await self._write((), checkpoint=True)
            except JournalUnavailable as exc:
                log.error("final_checkpoint_failed", error=str(exc))
        await self._drain()
        await self._settle_rotation()  # the seal's own fsync round may have found a change
        await self._file_checkpoints()
        if self._file.is_open:
            self._file.close()
            self._lock.release()
            log.info(
                "journal_closed",
                path=str(self.path),
                seq=self.state.seq,
                events=self.stats.events,
                fsyncs=self.stats.fsyncs,
                events_per_fsync=round(self.stats.events_per_fsync, 2),
            )

    async def ensure_writable(self) -> None:
        """Return if the journal is writing; after a failure, probe it with a lifecycle event.

        Raises :class:`JournalUnavailable` while it still cannot be written, so callers can
        refuse a request before it has any effect on the store.
        """
        if self.healthy:
            return
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._write_probe(), name="keyledger-journal-probe")
        # One probe at a time; everyone who asks meanwhile shares its verdict.
        await asyncio.shield(self._probe)

    async def _write_probe(self) -> None:
        await self.append(
            AuditEvent(
                type=EventType.LIFECYCLE,
                detail={"event": "journal_writable", "failed_writes": self.stats.failures},
            )
        )
        log.warning("journal_writable_again", path=str(self.path))

    # -- appending ---------------------------------------------------------------------

    async def append(self, event: AuditEvent) -> None:
        """Return once ``event`` is durable; raise :class:`JournalUnavailable` if it is not."""
        await self.append_many((event,))

    async def append_many(self, events: Sequence[AuditEvent]) -> None:
        """Return once all ``events`` are durable, consecutive and in order."""
        await self._ready_to_write()
        await self._write(events, checkpoint=False)

    async def checkpoint(self) -> None:
        """Seal everything written so far with a signed checkpoint (if any is unsealed)."""
        if self._sealer is None:
            return
        # Sealing never starts a rotation: a new file would hold only its header and the
        # checkpoint sealing it.
        await self._ready_to_write(rotate=False)
        if self._unsealed():
            await self._write((), checkpoint=True)

    async def _ready_to_write(self, *, rotate: bool = True) -> None:
        while True:
            # Checked again after every wait: the journal may have closed meanwhile.
            if not self._running:
                raise JournalUnavailable("the audit journal is not running")
            if self._broken:
                raise JournalUnavailable(
                    "the audit journal could not be rewound after a failed write; restart "
                    "keyledger (start-up sets a torn tail aside)"
                )
            if self._rotating is not None:
                await asyncio.shield(self._rotating)
            elif self._lost is not None:
                if (refused := self._lost.refusal(self.directory)) is not None:
                    raise JournalUnavailable(refused)
                self._start_rotation()
            elif rotate and self._rotation_reason() is not None:
                self._start_rotation()
            else:
                return

    def _start_rotation(self) -> None:
        self._rotating = asyncio.create_task(self._rotate(), name="keyledger-rotate")

    async def _settle_rotation(self) -> None:
        if self._rotating is not None:
            await asyncio.shield(self._rotating)

    def _unsealed(self) -> int:
        """Events written after the newest checkpoint."""
        checkpoint = self._written.checkpoint
        # A checkpoint event directly follows the event it seals.
        return self.state.seq - (checkpoint.seq + 1 if checkpoint else 0)

    async def _write(self, events: Sequence[AuditEvent], *, checkpoint: bool) -> None:
        mark = self._written
        state, newest = mark.state, mark.checkpoint
        lines = []
        try:
            if (step := self._timeline.step()) is not None:
                line, state = seal(self._timeline.in_order(step), state)
                lines.append(line)
            for event in events:
                record = event.to_record(chained=True)
                if self._minimise is not None:
                    record = self._minimise(record)
                line, state = seal(self._timeline.in_order(record), state)
                lines.append(line)
            sealer = self._sealer
            if sealer is not None:
                since = state.seq - (newest.seq + 1 if newest else 0)
                if since > 0 and (checkpoint or since >= sealer.every_events):
                    newest, line, state = sealer.seal(state, newest, self._timeline)
                    lines.append(line)
        except (TypeError, ValueError) as exc:  # orjson: not serialisable
            log.error("audit_event_unserialisable", error=str(exc))
            raise JournalUnavailable("an audit event could not be serialised") from exc
        data = b"".join(lines)
        if self._fsync:
            # Into the file when the round this request joins starts, before its fsync.
            self._unwritten.append(data)
            self._written = _Mark(state, mark.size + len(data), newest)
            # Shielded: one caller going away must not cancel the fsync everyone shares.
            await asyncio.shield(self._commit.join(len(lines), lines))
            return
        try:
            self._file.append(data)
        except OSError as exc:
            self._fail(exc)
            raise JournalUnavailable(
                f"the audit journal could not be written: {exc.strerror}"
            ) from exc
        self._written = _Mark(state, mark.size + len(data), newest)
        # Without fsync, "durable" means handed to the kernel.
        self._mark_durable(self._written, len(lines), lines)
        await self._file_checkpoints()

    def _flush(self) -> None:
        """Write the lines of the requests waiting for the next round (raises OSError).

        Only ever on the event loop, so lines reach the file in the order they were sealed;
        everything unwritten belongs to the round not yet started, which a failure refuses.
        """
        if self._unwritten:
            data = b"".join(self._unwritten)
            self._unwritten.clear()
            self._file.append(data)

    def _mark_durable(self, mark: _Mark, events: int, lines: Sequence[bytes]) -> None:
        """Everything up to ``mark`` is now safe: ``events`` more, whose ``lines`` are kept
        only while someone listens (the live stream)."""
        before = self._durable.checkpoint
        self._durable = mark
        self.healthy = not self._broken
        self.stats.events += events
        if self._on_durable is not None and lines:
            try:
                self._on_durable(lines)
            except Exception:
                # A reader's problem never touches the journal.
                log.exception("audit_stream_publish_failed")
        if self._fsync:
            self.stats.fsyncs += 1
        self._waiters.wake()  # shippers
        if mark.checkpoint is not None and mark.checkpoint is not before:
            assert self._sealer is not None
            self._sealer.durable(mark.checkpoint)
            self.stats.checkpoints += 1

    async def _sync_round(self, batch: Round) -> None:
        """One fsync, covering everything written before it (see ``groupcommit``)."""
        mark, rewinds = self._written, self._rewinds
        file = self._file
        started = time.perf_counter()
        try:
            self._flush()
        except OSError as exc:
            failed = JournalUnavailable(f"the audit journal could not be written: {exc.strerror}")
            batch.done.set_exception(failed)
            self._fail(exc)
            return
        try:
            sighting = await asyncio.to_thread(sync_and_look, file.fd, file.path)
        except OSError as exc:
            failed = JournalUnavailable(f"the audit journal could not be synced: {exc.strerror}")
            batch.done.set_exception(failed)
            self._fail(exc)
            return
        if rewinds != self._rewinds:
            # A failed write rewound the file under this fsync: its lines are gone.
            batch.done.set_exception(JournalUnavailable("the audit journal could not be written"))
            return
        if self._lost is not None:
            change: FileChange | None = self._lost.change
        else:
            change = judge(sighting, file.path, low=mark.size, high=self._written.size)
        if change is not None:
            # Synced, but into a file nobody reads at the journal's path: not durable.
            batch.done.set_exception(JournalUnavailable(unacknowledged(change)))
            self._file_lost(change)
            return
        self._mark_durable(mark, batch.events, batch.lines)
        batch.done.set_result(None)
        if self._on_fsync is not None:
            self._on_fsync(time.perf_counter() - started, batch.events)
        await self._file_checkpoints()

    async def _file_checkpoints(self) -> None:
        if self._sealer is not None and self._sealer.unfiled:
            await self._sealer.file_durable()

    async def _drain(self) -> None:
        """Wait for the fsync rounds to finish (nothing is written meanwhile)."""
        await self._commit.drain()

    def _fail(self, exc: OSError) -> None:
        """Rewind file and chain to the last durable event; fail whoever waits beyond it."""
        self.healthy = False
        self.stats.failures += 1
        self._rewinds += 1
        log.error("journal_write_failed", path=str(self.path), error=exc.strerror)
        if not self._file.cut_to(self._durable.size):
            # Torn bytes past the durable end: writing more would bury them mid-file.
            # Refuse until a restart sets them aside, or the file is replaced and a new
            # segment begins.
            self._broken = True
            log.critical("journal_rewind_failed", path=str(self.path))
        self._written = self._durable
        self._unwritten.clear()
        # Written on top of what was just lost: not durable, and now not even written.
        self._commit.refuse(JournalUnavailable("the audit journal could not be written"))

    def _file_lost(self, change: FileChange) -> None:
        """Write no more into the changed file; refuse what waits on it; start a new one.

        The chain is not rewound: events written into the lost file keep their seqs, so no
        seq ever names two events. The new segment's first event lists them.
        """
        if self._lost is not None:
            return
        self._lost = LostFile(change)
        self.healthy = False
        self.stats.files_lost += 1
        log.critical(
            "journal_file_changed",
            problem=change.describe(),
            path=str(change.path),
            durable_seq=self._durable.state.seq,
            written_seq=self._written.state.seq,
        )
        self._unwritten.clear()  # the next segment starts after what was refused
        self._commit.refuse(JournalUnavailable(unacknowledged(change)))
        if self._rotating is None:
            self._start_rotation()

    async def _check_file(self, *, rotating: bool = False) -> None:
        """Compare the segment's path with the open file; on a change, move to a new one.

        Only a rotation checks while it runs (``rotating``): anyone else leaves the file to it.
        """
        if self._lost is not None or not self._file.is_open or (self._rotating and not rotating):
            return
        try:
            self._flush()  # the size to expect is what was written
        except OSError as exc:
            self._fail(exc)
            return
        file = self._file
        low, rewinds = self._written.size, self._rewinds
        try:
            sighting = await asyncio.to_thread(look, file.fd, file.path)
        except OSError as exc:
            log.error("journal_check_failed", path=str(file.path), error=exc.strerror)
            return
        if file is not self._file or rewinds != self._rewinds:
            return  # rotated or rewound meanwhile: the next look sees the file as it is now
        change = judge(sighting, file.path, low=low, high=self._written.size)
        if change is not None:
            self._file_lost(change)

    async def _watch(self) -> None:
        """Notice a changed file while the journal is quiet, before a request goes into it."""
        while True:
            await asyncio.sleep(self._watch_s)
            await self._check_file()

    async def _tick(self) -> None:
        """Seal a quiet chain: a checkpoint at least every ``every_s`` while events arrive."""
        assert self._sealer is not None
        while True:
            await asyncio.sleep(self._sealer.settings.every_s)
            try:
                await self.checkpoint()
            except JournalUnavailable as exc:
                log.error("checkpoint_failed", error=str(exc))

    # -- rotation ----------------------------------------------------------------------

    def _rotation_reason(self) -> str | None:
        if not self.healthy or self.state.seq <= self._file.segment.first_seq:
            return None  # never leave a segment holding only its first event
        return self._rotation.due(size=self._written.size, born=self._file.born)

    async def _rotate(self) -> None:
        """Start a new segment: by size or age, sealing the old one first; or because the
        old one changed under the journal (``_lost``), which then gets nothing more."""
        reason = self._rotation_reason()
        try:
            if self._lost is None:
                if self._sealer is not None and self._unsealed():
                    # Seal the end of the old file, so each segment verifies on its own.
                    try:
                        await self._write((), checkpoint=True)
                    except JournalUnavailable:
                        if self._lost is None:
                            raise
                await self._drain()
                await self._check_file(rotating=True)
            else:
                await self._drain()
            lost, old = self._lost, self._file.segment
            # After the drain, everything written is durable, unless the file was lost.
            previous = self._written.state
            if lost is None:
                detail = segment_start(reason, old.path, previous)
            else:
                after = lost.detail(self._durable.state.seq, previous.seq)
                detail = segment_start(f"file_{lost.change.found}", old.path, previous, **after)
            header = AuditEvent(type=EventType.LIFECYCLE, detail=detail).to_record()
            line, state = seal(self._timeline.in_order(header), previous)
            new = Segment(
                self.chain_id, state.seq, segment_path(self.directory, self.chain_id, state.seq)
            )
            fd = await asyncio.to_thread(self._create_segment, new.path, line, lost is not None)
        except Exception as exc:
            if self._lost is not None:
                # Nothing may go into the lost file: appends are refused until this works.
                error = self._lost.new_segment_failed(exc)
                log.error("journal_new_segment_failed", directory=str(self.directory), error=error)
            else:
                # Never a reason to refuse a request: keep writing the current file, retry later.
                self._rotation.failed()
                log.error("journal_rotation_failed", path=str(self.path), error=repr(exc))
            return
        finally:
            self._rotating = None
        self._file.close()
        self._file = SegmentFile(fd, new, time.time())
        self._lost = None
        # Torn bytes, if any, stay in the old file, which gets nothing more.
        self._broken = False
        self._written = _Mark(state, len(line), self._written.checkpoint)
        self._mark_durable(self._written, 1, [line])
        if lost is None:
            self.stats.rotations += 1
            log.info("journal_rotated", path=str(new.path), reason=reason, first_seq=new.first_seq)
        else:
            log.warning(
                "journal_new_segment",
                path=str(new.path),
                first_seq=new.first_seq,
                after=lost.change.describe(),
            )

    def _create_segment(self, path: Path, first_line: bytes, relocating: bool) -> int:
        """Blocking: the new segment's file; after a lost file, its folder and lock too."""
        if relocating:
            # `rm -rf` of the journal folder takes the lock file with it: another writer
            # could lock a new one. Take the lock again before writing on.
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._lock.reacquire()
        return create_segment(path, first_line, self._fsync)

    # -- start-up ----------------------------------------------------------------------

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        try:
            self._lock.acquire()
        except ChainLocked as exc:
            raise JournalUnavailable(str(exc)) from None
        try:
            opened = open_newest(self.directory, self.chain_id)
            try:
                if opened.torn_moved_to is not None:
                    self._recovered.update(
                        torn_bytes=len(opened.tail.torn), moved_to=opened.torn_moved_to
                    )
                checkpoint = (
                    None
                    if self._sealer is None
                    else self._sealer.open(
                        self.directory, opened.segments, opened.tail.state, self._recovered
                    )
                )
            except BaseException as exc:
                opened.file.close()
                if isinstance(exc, CorruptJournal) and not opened.segments:
                    opened.file.path.unlink()  # made just now: a refused start leaves nothing
                raise
        except CorruptJournal as exc:
            self._lock.release()
            raise JournalUnavailable(str(exc)) from exc
        except BaseException:
            self._lock.release()
            raise
        tail = opened.tail
        self._file = opened.file
        self._written = self._durable = _Mark(tail.state, tail.size, checkpoint)
        self._timeline.resume_after(tail.last_time)
