"""A verification of the journal folder started from the admin API, one at a time.

:class:`Verifier` runs ``audit verify``'s checks (:func:`~.audit.verify.verify_path`) on a
thread of its own, chain by chain, with the checkpoint signatures checked against the
proxy's own key when it signs checkpoints. While it runs, the loop reads its progress
(bytes and chains checked of those found at the start); when it ends, the result is put
on record as a ``lifecycle`` event ``journal_verified`` through the data plane's journal,
so the chain itself shows who checked it, when, and what was found.

The journal is live while it is read: a chain being written can show a half-written last
line, or a checkpoint filed just after its segment list was taken. So a chain that fails
is checked again if the folder changed while it was read (at most :data:`ATTEMPTS` times
in all); what fails on a folder that stood still is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from ulid import ULID

from keyledger.proxy.audit.events import AuditEvent, EventType, format_time
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.audit.segments import discover
from keyledger.proxy.audit.verify import ChainReport, Problem, verify_path

__all__ = ["ATTEMPTS", "AlreadyRunning", "Verifier", "VerifyOutcome", "VerifyRun"]

log = structlog.get_logger("keyledger.admin")

ATTEMPTS = 3  # checks of one failing chain, while the folder keeps changing under it
_RECORD_ATTEMPTS, _RECORD_RETRY_S = 5, 0.2  # waits 0.2, 0.4, 0.6 and 0.8 s between them
_PROBLEMS_KEPT = 20  # problems listed in the answer and the event; all are counted
_CHAINS_KEPT = 100  # chains listed in the event


class AlreadyRunning(RuntimeError):
    """A verification is running; one at a time."""


class _Cancelled(Exception):
    """The admin app is shutting down: the thread stops at its next progress report."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainResult:
    id: str
    events: int
    files: int
    first_seq: int
    last_seq: int
    checkpoints: int
    last_checkpoint_seq: int
    unsealed: int
    problem: str | None
    attempts: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "events": self.events,
            "files": self.files,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "checkpoints": self.checkpoints,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "unsealed": self.unsealed,
            "problem": self.problem,
            "attempts": self.attempts,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyOutcome:
    ok: bool
    events: int
    chains: tuple[ChainResult, ...]
    problems: tuple[str, ...]  # the first _PROBLEMS_KEPT
    problems_total: int
    signatures_checked: bool
    error: str | None = None  # the check itself could not run to its end

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "chains": [c.as_json() for c in self.chains],
            "problems": list(self.problems),
            "problems_total": self.problems_total,
            "signatures_checked": self.signatures_checked,
            "error": self.error,
        }


@dataclass(slots=True)
class _Progress:
    """Written by the verifying thread, read by the loop: plain ints, one writer."""

    bytes_checked: int = 0
    bytes_total: int = 0
    chains_checked: int = 0
    chains_total: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "bytes_checked": min(self.bytes_checked, self.bytes_total),
            "bytes_total": self.bytes_total,
            "chains_checked": self.chains_checked,
            "chains_total": self.chains_total,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyRun:
    id: str
    started: datetime
    requested_from: str | None
    progress: _Progress = field(compare=False)
    requested_by: str = "admin-api"  # or "console session <handle>"
    finished: datetime | None = None
    outcome: VerifyOutcome | None = None
    recorded: str | None = None  # the id of its journal_verified event
    record_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started": format_time(self.started),
            "finished": format_time(self.finished) if self.finished else None,
            "requested_by": self.requested_by,
            "requested_from": self.requested_from,
            "progress": self.progress.as_json(),
            **(self.outcome.as_json() if self.outcome else {}),
            "recorded_event": self.recorded,
            "record_error": self.record_error,
        }


class Verifier:
    """One verification at a time of ``directory``; its result recorded in ``journal``."""

    def __init__(
        self,
        *,
        directory: Path,
        journal: Journal | None,
        public_keys: Mapping[str, Ed25519PublicKey] | None,
    ) -> None:
        self._directory = directory
        self._journal = journal
        self._keys = public_keys
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="keyledger-verify")
        self._cancel = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._current: VerifyRun | None = None
        self._previous: VerifyRun | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def state_json(self) -> dict[str, Any]:
        run = self._current
        if run is None:
            return {"state": "idle", "run": None, "previous": None}
        return {
            "state": "running" if run.finished is None else "done",
            "run": run.as_json(),
            "previous": self._previous.as_json() if self._previous else None,
        }

    def start(self, *, requested_from: str | None, requested_by: str = "admin-api") -> VerifyRun:
        if self.running:
            assert self._current is not None
            raise AlreadyRunning(
                "a verification is already running (started "
                f"{format_time(self._current.started)}): see GET /v1/verify"
            )
        if self._current is not None:
            self._previous = self._current
        run = VerifyRun(
            id=str(ULID()),
            started=datetime.now(UTC),
            requested_from=requested_from,
            requested_by=requested_by,
            progress=_Progress(),
        )
        self._current = run
        self._task = asyncio.create_task(self._run(run), name="keyledger-admin-verify")
        return run

    async def close(self) -> None:
        self._cancel.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, _Cancelled):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, run: VerifyRun) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                self._executor, _verify_all, self._directory, self._keys, run.progress, self._cancel
            )
        except _Cancelled:
            return
        except Exception as exc:  # an unreadable folder, a file gone mid-read: on record too
            log.exception("admin_verify_failed")
            outcome = VerifyOutcome(
                ok=False,
                events=0,
                chains=(),
                problems=(),
                problems_total=0,
                signatures_checked=self._keys is not None,
                error=f"the verification stopped: {exc}",
            )
        done = replace(run, finished=datetime.now(UTC), outcome=outcome)
        try:
            done = await self._record(done)
        except Exception as exc:  # the run must end either way, or none could start again
            log.exception("admin_verify_unrecorded")
            done = replace(done, record_error=f"the result was not recorded: {exc}")
        # "done" only once on record: a reader that sees the result finds its event.
        self._current = done

    async def _record(self, run: VerifyRun) -> VerifyRun:
        if self._journal is None:
            return replace(run, record_error="this admin API has no journal to record in")
        for attempt in range(1, _RECORD_ATTEMPTS + 1):
            # A new event each time: one refused may lie in a file the journal left.
            event = AuditEvent(type=EventType.LIFECYCLE, detail=_detail(run))
            try:
                await self._journal.append(event)
                break
            except JournalUnavailable as exc:
                if attempt == _RECORD_ATTEMPTS:
                    log.error("admin_verify_unrecorded", error=str(exc))
                    return replace(run, record_error=str(exc))
                # The journal refuses appends while it replaces a file changed under it
                # (what a verification that fails may well have found): moments, usually.
                await asyncio.sleep(_RECORD_RETRY_S * attempt)
        log.info("journal_verified", ok=run.outcome.ok if run.outcome else None, event_id=event.id)
        return replace(run, recorded=event.id)


def _detail(run: VerifyRun) -> dict[str, Any]:
    outcome = run.outcome
    assert outcome is not None
    assert run.finished is not None
    return {
        "event": "journal_verified",
        "run": run.id,
        "requested_by": run.requested_by,
        "requested_from": run.requested_from,
        "started": format_time(run.started),
        "finished": format_time(run.finished),
        "ok": outcome.ok,
        "events": outcome.events,
        "signatures_checked": outcome.signatures_checked,
        "chains": [
            {
                "id": c.id,
                "last_seq": c.last_seq,
                "unsealed": c.unsealed,
                "problem": c.problem,
            }
            for c in outcome.chains[:_CHAINS_KEPT]
        ],
        "problems": list(outcome.problems),
        "problems_total": outcome.problems_total,
        "error": outcome.error,
    }


# -- on the verifying thread --------------------------------------------------------------


def _sizes(directory: Path) -> dict[Path, int]:
    sizes = {}
    for path in directory.rglob("*.jsonl"):
        with contextlib.suppress(OSError):
            sizes[path] = path.stat().st_size
    return sizes


def _verify_all(
    directory: Path,
    keys: Mapping[str, Ed25519PublicKey] | None,
    progress: _Progress,
    cancel: threading.Event,
) -> VerifyOutcome:
    if not directory.is_dir():
        raise FileNotFoundError(f"no journal folder at {directory}")
    found = discover(directory)
    progress.chains_total = len(found.chains)
    progress.bytes_total = sum(
        size
        for chain in found.segments.values()
        for s in chain
        if (size := _sizes_of(s.path)) is not None
    )
    problems = [f"{_within(directory, path)}:1: {reason}" for path, reason in found.unreadable]
    unreadable = {str(path) for path, _ in found.unreadable}
    results: list[ChainResult] = []
    events = 0

    for chain_id in found.chains:
        for attempt in range(1, ATTEMPTS + 1):
            before, checked = _sizes(directory), progress.bytes_checked

            def report(n: int) -> None:
                if cancel.is_set():
                    raise _Cancelled
                progress.bytes_checked += n

            verified = verify_path(directory, public_keys=keys, progress=report, chains=[chain_id])
            own = [p for p in verified.problems if p.file not in unreadable]
            if not own or attempt == ATTEMPTS or _sizes(directory) == before:
                break
            progress.bytes_checked = checked  # read again from its start
        chain = verified.chains.get(chain_id) or ChainReport(chain_id)
        problems.extend(_named(p, directory) for p in own)
        events += chain.events
        results.append(_chain_result(chain, attempt, directory))
        progress.chains_checked += 1
    ok = not problems and bool(results)
    return VerifyOutcome(
        ok=ok,
        events=events,
        chains=tuple(results),
        problems=tuple(problems[:_PROBLEMS_KEPT]),
        problems_total=len(problems),
        signatures_checked=keys is not None,
        error=None if results or problems else f"no audit events found in {directory}",
    )


def _sizes_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _within(directory: Path, file: str | Path) -> str:
    """A journal file named within the journal folder: the answer is about that folder,
    and where it lies on the server is nothing the console needs."""
    try:
        return str(Path(file).relative_to(directory))
    except ValueError:
        return str(file)


def _named(problem: Problem, directory: Path) -> str:
    return str(replace(problem, file=_within(directory, problem.file)))


def _chain_result(chain: ChainReport, attempts: int, directory: Path) -> ChainResult:
    return ChainResult(
        id=chain.id,
        events=chain.events,
        files=chain.files,
        first_seq=chain.first_seq,
        last_seq=chain.last_seq,
        checkpoints=chain.checkpoints,
        last_checkpoint_seq=chain.last_checkpoint_seq,
        unsealed=max(chain.unsealed, 0),
        problem=_named(chain.problem, directory) if chain.problem else None,
        attempts=attempts,
    )
