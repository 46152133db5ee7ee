"""The local journal: append-only JSON lines, hash-chained, fsynced with group commit.

One writer thread owns the file and the chain. Request handlers hand it their events and
await one future; while the thread writes and fsyncs one batch, the next collects, so under
load many events share one fsync, and the event loop never waits on the disk. The thread
settles a whole batch's futures with one call back into the loop. A write failure fails
every waiting caller (fail closed), rolls the file back to its last good length and leaves
the chain where it was, so the next batch can try again once the disk recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
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
_MAX_BATCH = 4096


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
        self._fsync = fsync
        self._fd = -1
        self._size = 0
        self._state = ChainState(chain_id)
        # Each item: one request's records and the future its handler waits on.
        self._pending: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._wakeup = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recovered: dict[str, Any] | None = None
        self.healthy = True

    @property
    def state(self) -> ChainState:
        return self._state

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._thread = threading.Thread(
            target=self._write_loop, name=f"keyledger-journal-{self.chain_id}", daemon=True
        )
        self._thread.start()
        if self._recovered is not None:
            await self.append(
                AuditEvent(
                    type=EventType.LIFECYCLE,
                    detail={"event": "journal_recovered", **self._recovered},
                )
            )

    async def close(self) -> None:
        """Write everything already handed in, then stop the writer and close the file."""
        if self._thread is not None:
            with self._wakeup:
                self._closing = True
                self._wakeup.notify()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            await asyncio.sleep(0)  # let the last batch's futures settle
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
        """Return once all ``events`` are durable (they are written in one batch, in order)."""
        if self._thread is None or self._closing or self._loop is None:
            raise JournalUnavailable("the audit journal is not running")
        records = [e.to_record() for e in events]
        future: asyncio.Future[None] = self._loop.create_future()
        with self._wakeup:
            self._pending.append((records, future))
            self._wakeup.notify()
        await future

    # -- the single writer (its own thread) --------------------------------------------

    def _write_loop(self) -> None:
        assert self._loop is not None
        while True:
            with self._wakeup:
                while not self._pending and not self._closing:
                    self._wakeup.wait()
                if not self._pending:
                    return  # closing, and nothing left to write
                batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            state = self._state
            lines = []
            for records, _ in batch:
                for record in records:
                    line, state = seal(record, state)
                    lines.append(line)
            try:
                self._write(b"".join(lines))
            except OSError as exc:
                self.healthy = False
                self.stats.failures += 1
                error: JournalUnavailable | None = JournalUnavailable(
                    f"the audit journal could not be written: {exc.strerror}"
                )
                log.error("journal_write_failed", path=str(self.path), error=exc.strerror)
            else:
                error = None
                self.healthy = True
                self._state = state
                self.stats.events += len(lines)
                self.stats.fsyncs += 1
            futures = [future for _, future in batch]
            try:
                self._loop.call_soon_threadsafe(_settle, futures, error)
            except RuntimeError:
                return  # the loop is gone: nobody is waiting any more

    def _write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self._fsync:
                os.fsync(self._fd)
        except OSError:
            # Leave no partial line behind: the chain continues from the last good event.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

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


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """Runs on the event loop: wake every handler of one written (or failed) batch."""
    for future in futures:
        if future.done():
            continue  # its handler was cancelled (client went away)
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


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
