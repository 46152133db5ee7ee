"""The local journal: append-only JSON lines, hash-chained, fsynced with group commit.

The event loop is the single writer: it seals each request's events onto the chain and
appends them with one ``write(2)``, which only copies into the page cache. Durability is
the slow part, so ``fsync`` runs in a worker thread, and every request written while one
fsync is in flight waits on the *next* one: under load many requests share one fsync and
one future, and the loop never waits on the disk.

Fail closed: a failed write or fsync fails every request not yet durable, cuts the file
back to its last durable length and rewinds the chain to match, so the next request starts
cleanly once the disk recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from keyledger.proxy.audit.chain import ChainState, seal
from keyledger.proxy.audit.events import AuditEvent, EventType

__all__ = ["Journal", "JournalStats", "JournalUnavailable", "journal_file"]

log = structlog.get_logger("keyledger.journal")

_CHAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class JournalUnavailable(RuntimeError):
    """The event could not be made durable; the request must be refused."""


@dataclass(slots=True)
class JournalStats:
    events: int = 0
    fsyncs: int = 0
    failures: int = 0

    @property
    def events_per_fsync(self) -> float:
        return self.events / self.fsyncs if self.fsyncs else 0.0


def journal_file(directory: Path, chain_id: str) -> Path:
    return directory / f"{chain_id}.jsonl"


class Journal:
    """Durable, chained audit journal for one chain (one replica / worker)."""

    def __init__(self, *, directory: Path, chain_id: str, fsync: bool = True) -> None:
        if not _CHAIN_ID.match(chain_id):
            raise ValueError(
                f"chain id {chain_id!r} must be 1-128 letters, digits, '.', '_' or '-'"
            )
        self.path = journal_file(directory, chain_id)
        self.chain_id = chain_id
        self.stats = JournalStats()
        self.healthy = True
        self._fsync = fsync
        self._fd = -1
        self._running = False
        # Written (in the page cache) vs durable (fsynced): where the chain and file stand.
        self._state = ChainState(chain_id)
        self._size = 0
        self._durable_state = self._state
        self._durable_size = 0
        # Requests written since the fsync in flight started wait on this future.
        self._next_sync: asyncio.Future[None] | None = None
        self._next_sync_events = 0
        self._syncer: asyncio.Task[None] | None = None
        # Bumped by every rewind: an fsync in flight across one proves nothing.
        self._rewinds = 0
        self._broken = False  # a rewind failed: refuse everything until a restart
        self._probe: asyncio.Task[None] | None = None
        self._recovered: dict[str, Any] | None = None

    @property
    def state(self) -> ChainState:
        """The last event written (durable once its append returned)."""
        return self._state

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self._running = True
        if not self._fsync:
            log.warning(
                "journal_fsync_off", path=str(self.path), note="events can be lost on power failure"
            )
        if self._recovered is not None:
            await self.append(
                AuditEvent(
                    type=EventType.LIFECYCLE,
                    detail={"event": "journal_recovered", **self._recovered},
                )
            )

    async def close(self) -> None:
        """Wait until everything written is durable, then close the file."""
        self._running = False
        if self._syncer is not None:
            with contextlib.suppress(Exception):
                await self._syncer
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            log.info(
                "journal_closed",
                path=str(self.path),
                seq=self._state.seq,
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

    async def append(self, event: AuditEvent) -> None:
        """Return once ``event`` is durable; raise :class:`JournalUnavailable` if it is not."""
        await self.append_many((event,))

    async def append_many(self, events: Sequence[AuditEvent]) -> None:
        """Return once all ``events`` are durable, consecutive and in order."""
        if not self._running:
            raise JournalUnavailable("the audit journal is not running")
        if self._broken:
            raise JournalUnavailable(
                "the audit journal could not be rewound after a failed write; restart "
                "keyledger (start-up sets a torn tail aside)"
            )
        state = self._state
        lines = []
        try:
            for event in events:
                line, state = seal(event.to_record(), state)
                lines.append(line)
        except (TypeError, ValueError) as exc:  # orjson: not serialisable
            log.error("audit_event_unserialisable", error=str(exc))
            raise JournalUnavailable("an audit event could not be serialised") from exc
        data = b"".join(lines)
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self._fail(exc)
            raise JournalUnavailable(
                f"the audit journal could not be written: {exc.strerror}"
            ) from exc
        self._state, self._size = state, self._size + len(data)
        if not self._fsync:
            # Without fsync, "durable" means handed to the kernel.
            self._mark_durable(self._state, self._size, len(lines))
            return
        if self._next_sync is None:
            self._next_sync = asyncio.get_running_loop().create_future()
        self._next_sync_events += len(lines)
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.create_task(self._sync_loop(), name="keyledger-journal-fsync")
        # Shielded: one caller going away must not cancel the fsync everyone shares.
        await asyncio.shield(self._next_sync)

    def _mark_durable(self, state: ChainState, size: int, events: int) -> None:
        """Everything up to ``state`` (the file up to ``size``) is now safe."""
        self._durable_state, self._durable_size = state, size
        self.healthy = True
        self.stats.events += events
        if self._fsync:
            self.stats.fsyncs += 1

    async def _sync_loop(self) -> None:
        """fsync until nobody is waiting; each round covers everything written before it."""
        while self._next_sync is not None:
            waiting, events = self._next_sync, self._next_sync_events
            self._next_sync, self._next_sync_events = None, 0
            state, size, rewinds = self._state, self._size, self._rewinds
            try:
                await asyncio.to_thread(os.fsync, self._fd)
            except OSError as exc:
                failed = JournalUnavailable(
                    f"the audit journal could not be synced: {exc.strerror}"
                )
                waiting.set_exception(failed)
                self._fail(exc)
                continue
            if rewinds != self._rewinds:
                # A failed write rewound the file under this fsync: its lines are gone.
                waiting.set_exception(JournalUnavailable("the audit journal could not be written"))
                continue
            self._mark_durable(state, size, events)
            waiting.set_result(None)

    def _fail(self, exc: OSError) -> None:
        """Rewind file and chain to the last durable event; fail whoever waits beyond it."""
        self.healthy = False
        self.stats.failures += 1
        self._rewinds += 1
        log.error("journal_write_failed", path=str(self.path), error=exc.strerror)
        try:
            os.ftruncate(self._fd, self._durable_size)
        except OSError:
            # Torn bytes stay behind: writing more would bury them mid-file. Refuse until a
            # restart sets them aside.
            self._broken = True
            log.critical("journal_rewind_failed", path=str(self.path))
        self._state, self._size = self._durable_state, self._durable_size
        if self._next_sync is not None:
            # Written on top of what was just lost: not durable, and now not even written.
            self._next_sync.set_exception(
                JournalUnavailable("the audit journal could not be written")
            )
            self._next_sync, self._next_sync_events = None, 0

    # -- start-up ----------------------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            size = os.fstat(fd).st_size
            state, good_size, torn = _read_tail(fd, size, self.chain_id)
            if torn:
                # A crash mid-write left a partial last line: keep it aside for inspection
                # and continue the chain from the last complete event.
                aside = self.path.with_name(self.path.name + f".torn-{good_size}")
                aside.write_bytes(torn)
                os.ftruncate(fd, good_size)
                os.fsync(fd)
                self._recovered = {"torn_bytes": len(torn), "moved_to": aside.name}
                log.warning("journal_torn_tail", path=str(self.path), bytes=len(torn))
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._size, self._state = fd, good_size, state
        self._durable_size, self._durable_state = good_size, state


def _write_all(fd: int, data: bytes) -> None:
    """One append into the page cache: microseconds, so it runs on the loop."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_tail(fd: int, size: int, chain_id: str) -> tuple[ChainState, int, bytes]:
    """The chain state after the last complete line, that line's end, and any torn tail."""
    if size == 0:
        return ChainState(chain_id), 0, b""
    window = 1 << 16
    while True:
        start = max(0, size - window)
        data = os.pread(fd, size - start, start)
        end = data.rfind(b"\n")  # end of the last complete line
        torn = data[end + 1 :]
        body = data[: end + 1]
        prev_end = body.rfind(b"\n", 0, len(body) - 1)
        if end >= 0 and (prev_end >= 0 or start == 0):
            last = body[prev_end + 1 :]
            break
        if start == 0:
            # No complete line at all: everything is torn.
            return ChainState(chain_id), 0, data
        window *= 4
    try:
        record = orjson.loads(last)
        chain = record["chain"]
        state = ChainState(chain_id, int(chain["seq"]), str(chain["hash"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise JournalUnavailable(
            f"the last line of {chain_id}.jsonl is not a keyledger event; run "
            "`keyledger audit verify` on it and move the file aside"
        ) from exc
    if chain.get("id") != chain_id:
        raise JournalUnavailable(
            f"the journal for chain {chain_id} holds chain {chain.get('id')!r}"
        )
    return state, start + end + 1, torn
