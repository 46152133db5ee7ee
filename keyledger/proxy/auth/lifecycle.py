"""Who could call, and since when, on record: every credential keyledger issued or revoked
(`keyledger identity create|revoke|rotate`, `--token` too) becomes a ``lifecycle`` event in
the journal, so an auditor reads access rights changing in the same chain as the accesses.

The CLI edits the identity store; the running proxy notices the change (within a second,
as its authenticators do), compares the store with what it last recorded, and writes one
event per credential issued (``identity_issued``), revoked (``identity_revoked``) or removed
(``identity_removed``): the identity, the credential's kind and id, groups and expiry;
never a secret. What was recorded is kept in the journal's folder
(``.identities.recorded.json``), so a change made while keyledger was stopped is recorded
when it starts, and each change once: ``--workers`` processes take turns under a lock on
that file, and only the first to see a change records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from keyledger.proxy.audit.events import AuditEvent, EventType, PrincipalInfo
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.auth.identities import IdentityStore

__all__ = ["RECORD_FILE", "IdentityRecorder"]

log = structlog.get_logger("keyledger.identities")

RECORD_FILE = ".identities.recorded.json"


@dataclass(frozen=True, slots=True)
class _Seen:
    """One credential (or session cutoff) as recorded: what a change is measured against."""

    identity: str  # for a session cutoff, the principal pattern
    kind: str  # sigv4 | token | sessions
    revoked: bool
    groups: tuple[str, ...]
    expires: str | None
    created_by: str = ""
    created: str = ""  # when it was issued: one identity's changes read in that order
    revoked_at: str = ""
    revoked_by: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "identity": self.identity,
            "kind": self.kind,
            "revoked": self.revoked,
            "groups": list(self.groups),
            "expires": self.expires,
            "created_by": self.created_by,
            "created": self.created,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> _Seen:
        return cls(
            identity=str(value["identity"]),
            kind=str(value["kind"]),
            revoked=bool(value["revoked"]),
            groups=tuple(value.get("groups", ())),
            expires=value.get("expires"),
            created_by=str(value.get("created_by", "")),
            created=str(value.get("created", "")),
            revoked_at=str(value.get("revoked_at", "")),
            revoked_by=str(value.get("revoked_by", "")),
        )


_SESSIONS = "sessions:"  # a session cutoff's key in the record, before its pattern


def _current(store: IdentityStore) -> dict[str, _Seen]:
    seen: dict[str, _Seen] = {}
    for credential in (*store, *store.tokens()):
        seen[credential.credential_id] = _Seen(
            identity=credential.name,
            kind=credential.kind,
            revoked=credential.revoked,
            groups=tuple(credential.groups),
            expires=credential.expires.isoformat() if credential.expires else None,
            created_by=credential.created_by,
            created=credential.created,
            revoked_at=credential.revoked_at,
            revoked_by=credential.revoked_by,
        )
    for cutoff in store.session_cutoffs():
        seen[_SESSIONS + cutoff.pattern] = _Seen(
            identity=cutoff.pattern,
            kind="sessions",
            revoked=True,
            groups=(),
            expires=None,
            revoked_at=cutoff.before.isoformat(),
            revoked_by=cutoff.by,
        )
    return seen


class IdentityRecorder:
    """Records identity store changes as lifecycle events; :meth:`check` looks once."""

    def __init__(self, *, store: IdentityStore, journal: Journal, folder: Path) -> None:
        self._store = store
        self._journal = journal
        self._path = folder / RECORD_FILE
        self._settled: int | None = None  # the store generation last found on record

    async def check(self) -> int:
        """Record what changed since the last record; the number of events written."""
        with contextlib.suppress(OSError, ValueError):  # a half-written store: next time
            await self._store.reload_in_thread()  # off the loop: the proxy serves meanwhile
        generation = self._store.generation
        if generation == self._settled:
            return 0  # nothing changed since everything was on record
        current = _current(self._store)
        with self._locked() as mine:
            if not mine:
                return 0  # another worker is recording: it sees the same change
            recorded = self._recorded()
            events = list(_changes(recorded, current))
            if not events:
                self._settled = generation
                return 0
            try:
                await self._journal.append_many(events)
            except JournalUnavailable:
                return 0  # recorded once the journal takes it: the state is not moved on
            self._save(current)
        self._settled = generation
        log.info("identity_changes_recorded", events=len(events))
        return len(events)

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("identity_recording_failed")
            await asyncio.sleep(interval_s)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """The record's lock, if no other process holds it (never waited for on the loop)."""
        fd = os.open(self._path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _recorded(self) -> dict[str, _Seen] | None:
        """What was last recorded; None when nothing ever was (a first start)."""
        try:
            data = orjson.loads(self._path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError):
            return {}
        return {key: _Seen.from_json(value) for key, value in data.items()}

    def _save(self, current: Mapping[str, _Seen]) -> None:
        """Durably, as the events it stands for are: after a power cut an empty record
        would have every credential recorded again as newly issued."""
        temporary = self._path.with_name(f".{self._path.name}.tmp")
        with temporary.open("wb") as handle:
            handle.write(orjson.dumps({k: v.as_json() for k, v in current.items()}))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)
        folder = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself
        finally:
            os.close(folder)


def _changes(
    recorded: Mapping[str, _Seen] | None, current: Mapping[str, _Seen]
) -> Iterator[AuditEvent]:
    # A first start records every credential there is, as the state keyledger found.
    before = recorded or {}
    # By identity, then when issued (an old key retiring before its successor appears),
    # then kind: a change reads the same whatever order the store keeps.
    ordered = sorted(
        current.items(),
        key=lambda item: (item[1].identity, item[1].created, item[1].kind, item[0]),
    )
    for key, now in ordered:
        was = before.get(key)
        if now.kind == "sessions":
            if was is None or was.revoked_at != now.revoked_at:
                yield _sessions_event(now)
            continue
        if was is None:
            yield _event("identity_issued", key, now, first=recorded is None)
            if now.revoked:
                yield _event("identity_revoked", key, now)
        elif now.revoked and not was.revoked:
            yield _event("identity_revoked", key, now)
        elif not now.revoked and now.expires != was.expires:
            # Rotated with an overlap: it keeps working until then.
            yield _event("identity_retiring", key, now)
    for key, was in before.items():
        if key not in current and was.kind != "sessions":
            yield _event("identity_removed", key, was)


def _event(kind: str, credential_id: str, seen: _Seen, *, first: bool = False) -> AuditEvent:
    detail: dict[str, object] = {
        "event": kind,
        "credential": "access_key" if seen.kind == "sigv4" else "token",
        "credential_id": credential_id,
        "groups": list(seen.groups),
    }
    if seen.expires is not None:
        detail["expires"] = seen.expires
    # Who ran the command, as `keyledger identity` saw it: the OS account, not a proof.
    by = seen.revoked_by if kind == "identity_revoked" else seen.created_by
    if by and kind != "identity_removed":
        detail["by"] = by
    if kind == "identity_revoked" and seen.revoked_at:
        detail["at"] = seen.revoked_at
    if first:
        detail["found_at_start"] = True  # issued before keyledger first recorded
    return AuditEvent(
        type=EventType.LIFECYCLE,
        principal=PrincipalInfo(
            id=seen.identity, auth_method="token" if seen.kind == "token" else "sigv4"
        ),
        detail=detail,
    )


def _sessions_event(seen: _Seen) -> AuditEvent:
    """Sessions and workload tokens of the principals a pattern matches, issued before a
    time, refused from now on."""
    detail: dict[str, object] = {
        "event": "sessions_revoked",
        "principals": seen.identity,
        "issued_before": seen.revoked_at,
    }
    if seen.revoked_by:
        detail["by"] = seen.revoked_by
    return AuditEvent(
        type=EventType.LIFECYCLE,
        principal=PrincipalInfo(id=seen.identity, auth_method="oidc"),
        detail=detail,
    )
