"""Keep the policy in force in step with its files: watched, reloaded on SIGHUP, audited.

A reload builds a whole new engine off the event loop, records a ``policy_reload`` event
(durably), and only then puts the engine in force, in one assignment: a request uses
either the old set or the new one, never part of each, and the journal shows the reload
before any decision made under the new hash. A set that fails to load is rejected whole;
the last good one stays in force, and the failure is logged and audited once per change.

Files are read only after they have stopped changing (an editor saving, ``git pull``
touching three files, Kubernetes swapping a ConfigMap's symlink), and a load that raced a
further change is thrown away and done again.

A rejection's event names files as users wrote them, relative to the config file's folder
(``policies/prod.yaml:14:7: ...``), not by where this replica happens to mount them; a file
outside that folder keeps the path configured for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from keyledger.policies import PolicyEngine, PolicyError, load_policy_set
from keyledger.policies.lint import Finding, lint
from keyledger.policies.loader import resolve_all_paths
from keyledger.proxy.audit.events import AuditEvent, EventType, Outcome, Status
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.pipeline import PolicyHolder

__all__ = ["LoadedPolicy", "PolicyReloader", "load_policy"]

log = structlog.get_logger("keyledger.policy")

# (path, mtime_ns, size, inode) of each policy file, and the set of files itself.
Fingerprint = tuple[tuple[str, int, int, int], ...]

_MAX_LISTED = 20  # problems and warnings kept in an event; the log has them all


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    engine: PolicyEngine
    warnings: tuple[Finding, ...]  # what `policy check` would fail on
    files: Fingerprint  # taken before reading: a later edit shows as a change


def load_policy(
    patterns: Sequence[Path | str], backends: Collection[str], *, lower_case: Collection[str] = ()
) -> LoadedPolicy:
    """Read, check and index a policy set (blocking: run it in a thread when serving).
    ``lower_case``: the backends whose names reach policy in lower case (Key Vault's).

    Raises :class:`PolicyError`.
    """
    files = fingerprint(patterns)
    policy = load_policy_set(patterns)
    warnings = lint(policy, backends=backends, lower_case=lower_case)
    return LoadedPolicy(PolicyEngine(policy), tuple(warnings), files)


def fingerprint(patterns: Sequence[Path | str]) -> Fingerprint:
    found = []
    # Test files too: one that starts holding policy must be noticed (and refused).
    for path in resolve_all_paths(patterns):
        try:
            st = os.stat(path)  # follows symlinks: a swapped ConfigMap shows as a change
        except OSError:
            found.append((str(path), -1, -1, -1))
        else:
            found.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(found)


class PolicyReloader:
    """Watches the policy files and reloads them; :meth:`request` asks for a reload now."""

    def __init__(
        self,
        *,
        patterns: Sequence[Path | str],
        backends: Collection[str],
        lower_case: Collection[str] = (),
        holder: PolicyHolder,
        journal: Journal,
        loaded_from: Fingerprint,
        interval_s: float = 1.0,
        watch: bool = True,
        base: Path | None = None,
    ) -> None:
        """``base``: the config file's folder, which rejection events name files from."""
        self._patterns = tuple(patterns)
        # A whole path starting there, with its separator: not /etc/kl-other, not /mnt/etc/kl.
        self._base = (
            None
            if base is None
            else re.compile(r"(?<![\w./~-])" + re.escape(os.path.join(base, "")))
        )
        self._backends = tuple(backends)
        self._lower_case = tuple(lower_case)
        self._holder = holder
        self._journal = journal
        self._interval = interval_s
        self._watch = watch
        self._settle = min(0.25, interval_s)
        self._wake = asyncio.Event()
        self._cause = "signal"
        self._seen = loaded_from  # what the policy in force was read from
        self._failed: Fingerprint | None = None  # a rejected set, recorded once
        self._retry = False  # a change could not be recorded: look again after interval
        self.reloads = 0  # sets put in force since start
        self.failures = 0  # sets rejected since start

    def request(self, cause: str = "signal") -> None:
        """Reload at once (the SIGHUP handler); safe to call from a signal handler."""
        self._cause = cause
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: reload when asked, or when the files changed."""
        while True:
            with contextlib.suppress(TimeoutError):
                timeout = self._interval if self._watch or self._retry else None
                await asyncio.wait_for(self._wake.wait(), timeout)
            forced = self._wake.is_set() or self._retry
            self._wake.clear()
            try:
                await self.reload_if_changed(force=forced)
            except Exception:
                # The watcher must outlive any one bad reload; the old set stays in force.
                log.exception("policy_reload_crashed")

    async def reload_if_changed(self, *, force: bool = False) -> bool:
        """Reload if the files changed since the set in force was read (or if ``force``).

        True when a new set was put in force.
        """
        current = await self._settled()
        if current == self._seen and not force:
            return False
        if current == self._failed and not force:
            return False  # already rejected and recorded; wait for the next edit
        cause = self._cause if force else "file change"
        self._cause, self._retry = "signal", False
        try:
            loaded = await asyncio.to_thread(
                functools.partial(
                    load_policy, self._patterns, self._backends, lower_case=self._lower_case
                )
            )
        except PolicyError as exc:
            await self._rejected(current, cause, exc)
            return False
        except Exception as exc:
            # A loader bug must reject the set like any bad file, not kill the watcher.
            log.exception("policy_load_crashed")
            await self._rejected(current, cause, PolicyError([f"cannot load: {exc!r}"]))
            return False
        if await asyncio.to_thread(fingerprint, self._patterns) != current:
            # Edited again while we read it: this set may mix old and new files.
            self.request(cause)
            return False
        return await self._put_in_force(loaded, current, cause)

    async def _settled(self) -> Fingerprint:
        """The files' fingerprint once two looks, ``settle`` apart, agree (bounded)."""
        current = await asyncio.to_thread(fingerprint, self._patterns)
        for _ in range(20):
            if current == self._seen:
                return current
            await asyncio.sleep(self._settle)
            again = await asyncio.to_thread(fingerprint, self._patterns)
            if again == current:
                return current
            current = again
        return current

    async def _put_in_force(self, loaded: LoadedPolicy, files: Fingerprint, cause: str) -> bool:
        old = self._holder.engine
        new = loaded.engine
        if new.hash == old.hash:
            self._seen = files  # touched, not changed
            self._failed = None
            return False
        for warning in loaded.warnings:
            log.warning("policy_warning", problem=str(warning))
        event = AuditEvent(
            type=EventType.POLICY_RELOAD,
            outcome=Outcome(status=Status.SUCCESS),
            detail={
                "cause": cause,
                "old_hash": old.hash,
                "new_hash": new.hash,
                "files": [Path(f).name for f in new.policy.files],
                "rules": len(new.policy.rules),
                "warnings": [str(w) for w in loaded.warnings[:_MAX_LISTED]],
            },
        )
        try:
            await self._journal.append(event)
        except JournalUnavailable as exc:
            # Unrecorded, a policy change must not happen: keep the old set, retry later.
            log.error("policy_reload_unaudited", error=str(exc), new_hash=new.hash)
            self._cause, self._retry = cause, True
            return False
        self._holder.engine = new
        self._seen, self._failed = files, None
        self.reloads += 1
        log.info("policy_reloaded", cause=cause, old_hash=old.hash, new_hash=new.hash)
        return True

    async def _rejected(self, files: Fingerprint, cause: str, exc: PolicyError) -> None:
        in_force = self._holder.engine.hash
        log.error(
            "policy_reload_rejected", cause=cause, kept_hash=in_force, problems=list(exc.problems)
        )
        self.failures += 1
        event = AuditEvent(
            type=EventType.POLICY_RELOAD,
            outcome=Outcome(status=Status.ERROR, code="PolicyError"),
            detail={
                "cause": cause,
                "old_hash": in_force,
                "new_hash": None,
                "kept_hash": in_force,
                "problems": [self._as_written(p) for p in exc.problems[:_MAX_LISTED]],
            },
        )
        try:
            await self._journal.append(event)
        except JournalUnavailable as err:
            log.error("policy_reload_unaudited", error=str(err))
            self._cause, self._retry = cause, True  # not recorded: try again after interval
            return
        self._failed = files

    def _as_written(self, problem: str) -> str:
        """``problem`` with the paths under the config's folder relative to it."""
        return problem if self._base is None else self._base.sub("", problem)
