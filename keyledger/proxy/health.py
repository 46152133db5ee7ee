"""Readiness: may this replica take traffic? Answered by ``/readyz`` on the admin API.

A replica is ready when everything a request needs works: the config and policy are
loaded, the audit journal can make events durable, and the secret store answers. A load
balancer that stops sending traffic to an unready replica sends it to one that can audit.

Each check is cheap enough for a probe every few seconds. The journal's writes and syncs
one byte beside the journal (a read-only or failing disk shows at once) and looks at the
free space; after a failed journal write it also tries the same probe event a request
would. Each store is asked at most once per ``backend_ttl_s``, however many probes arrive;
the ``backend`` check passes when every configured backend answers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from keyledger.backends import Backend, BackendError
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.pipeline import PolicyHolder

__all__ = ["Check", "Readiness", "ReadinessProbe"]

log = structlog.get_logger("keyledger")

# Below this much free space the next rotation or burst may fail: stop taking traffic
# before requests start being refused.
MIN_FREE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


class ReadinessProbe(Protocol):
    async def checks(self) -> tuple[Check, ...]:
        """Every check, passed or not; ready when all passed."""
        ...


class Readiness:
    """The data plane's readiness: config, policy, journal, backend."""

    def __init__(
        self,
        *,
        config_source: str,
        policies: PolicyHolder,
        journal: Journal,
        backends: Mapping[str, Backend],
        backend_ttl_s: float = 2.0,
        backend_timeout_s: float = 3.0,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        self._config_source = config_source
        self._policies = policies
        self._journal = journal
        self._backends = _StoreProbe.each(
            backends, ttl_s=backend_ttl_s, timeout_s=backend_timeout_s
        )
        self._timeout = backend_timeout_s
        self._min_free = min_free_bytes
        self._was_ready: bool | None = None

    async def checks(self) -> tuple[Check, ...]:
        journal, backend = await asyncio.gather(self._check_journal(), self._check_backend())
        engine = self._policies.engine
        checks = (
            Check("config", True, f"loaded from {self._config_source}"),
            Check("policy", True, f"{engine.hash} ({len(engine.policy.rules)} rules)"),
            journal,
            backend,
        )
        ready = all(check.ok for check in checks)
        if ready != self._was_ready:  # logged on changes, not on every probe
            failed = {check.name: check.detail for check in checks if not check.ok}
            if ready:
                log.info("ready")
            else:
                log.warning("not_ready", failed=failed)
            self._was_ready = ready
        return checks

    async def _check_journal(self) -> Check:
        journal = self._journal
        if not journal.running:
            return Check("journal", False, "the journal is closed (shutting down)")
        if not journal.healthy:
            try:
                async with asyncio.timeout(self._timeout):
                    await journal.ensure_writable()
            except (JournalUnavailable, TimeoutError) as exc:
                return Check("journal", False, f"cannot write {journal.path}: {exc or 'timeout'}")
        try:
            free = await asyncio.to_thread(_probe_folder, journal.directory)
        except OSError as exc:
            return Check("journal", False, f"cannot write in {journal.directory}: {exc.strerror}")
        if free < self._min_free:
            return Check(
                "journal",
                False,
                f"{free >> 20} MiB free in {journal.directory}, under {self._min_free >> 20} MiB",
            )
        return Check("journal", True, f"writing {journal.path.name}, seq {journal.durable_seq}")

    async def _check_backend(self) -> Check:
        answers = await asyncio.gather(*(probe.check() for probe in self._backends))
        details = "; ".join(detail for _, detail in answers)
        return Check("backend", all(ok for ok, _ in answers), details)


class _StoreProbe:
    """One backend's readiness, asked at most once per ``ttl_s``; probes arriving together
    share one call to the store."""

    def __init__(self, backend: Backend, *, ttl_s: float, timeout_s: float) -> None:
        self._backend = backend
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._checked: tuple[float, tuple[bool, str]] | None = None
        self._probe: asyncio.Task[tuple[bool, str]] | None = None

    @classmethod
    def each(
        cls, backends: Mapping[str, Backend], *, ttl_s: float, timeout_s: float
    ) -> tuple[_StoreProbe, ...]:
        return tuple(cls(b, ttl_s=ttl_s, timeout_s=timeout_s) for b in backends.values())

    async def check(self) -> tuple[bool, str]:
        cached = self._checked
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._ask())
        return await asyncio.shield(self._probe)

    async def _ask(self) -> tuple[bool, str]:
        name = self._backend.name
        try:
            async with asyncio.timeout(self._timeout):
                await self._backend.check()
        except TimeoutError:
            answer = (False, f"{name}: no answer within {self._timeout:g} s")
        except BackendError as exc:
            answer = (False, f"{name}: {exc.message[:200]}")
        else:
            answer = (True, f"{name} answers")
        self._checked = (time.monotonic(), answer)
        return answer


def _probe_folder(directory: Path) -> int:
    """Write and sync a byte in ``directory`` (a read-only or failing disk raises OSError);
    return the bytes free there."""
    probe = directory / ".ready-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"1")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)  # nothing of the probe's is left among the evidence
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize
