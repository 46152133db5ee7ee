"""Alert rules running inside the proxy, beside the data plane and never in its way.

The journal hands over each batch of lines once they are durable (:meth:`AlertService.
on_durable`, which only queues them); a task of its own feeds them to the engine, writes
each alert to the journal as an ``alert`` event (so the chain proves what was flagged and
when) and offers it to every destination, whose queues and retries are theirs. A request
never waits for any of it. If detection falls behind by more than ``backlog`` batches,
batches are dropped and counted rather than slowing anything down.

At start the engine is rebuilt from this process's own chain (the longest window or
learning period of it, read off the loop), so a restart neither forgets a burst in
progress nor repeats an alert already on record. The rule files are watched like the
policy files: a change is loaded off the loop and put in force whole, recorded as a
``lifecycle`` event ``alert_rules_reloaded`` (or ``alert_rules_rejected``, once per
change, with the old rules kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from keyledger.alerts.engine import AlertEngine, history_needed
from keyledger.alerts.model import Alert, Destination
from keyledger.alerts.rules import AlertRuleError, AlertRules, load_alert_files, rule_files
from keyledger.proxy.audit.events import AuditEvent, EventType
from keyledger.proxy.audit.filters import EventFilter
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.audit.reader import iter_records

__all__ = ["AlertObserver", "AlertService", "load_rules"]

log = structlog.get_logger("keyledger.alerts")

_MAX_LISTED = 20  # problems kept in a rejection event; the log has them all


class AlertObserver(Protocol):
    def alert_fired(self, alert: Alert) -> None: ...

    def alert_suppressed(self, rule: str) -> None: ...

    def alert_events_dropped(self, count: int) -> None: ...


def load_rules(paths: Sequence[Path]) -> AlertRules:
    """The rules in ``paths`` (files, or folders of them). Raises AlertRuleError."""
    return load_alert_files(rule_files(paths))


def _fingerprint(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    found = []
    for path in rule_files(paths):
        try:
            st = os.stat(path)
        except OSError:
            found.append((str(path), -1, -1))
        else:
            found.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(found)


class AlertService:
    def __init__(
        self,
        *,
        paths: Sequence[Path],
        rules: AlertRules,
        journal: Journal,
        destinations: Sequence[Destination] = (),
        observer: AlertObserver | None = None,
        backlog: int = 10_000,
        reload_interval_s: float = 1.0,
    ) -> None:
        self._paths = tuple(paths)
        self._engine = AlertEngine(
            rules, on_suppressed=observer.alert_suppressed if observer is not None else None
        )
        self._journal = journal
        self._destinations = tuple(destinations)
        self._observer = observer
        self._queue: asyncio.Queue[Sequence[bytes]] = asyncio.Queue(maxsize=backlog)
        self._reload_interval = reload_interval_s
        self._seen = _fingerprint(self._paths)
        self._rejected: tuple[tuple[str, int, int], ...] | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._restored_seq = 0  # the restore fed the chain up to here
        self.dropped = 0  # events detection never saw (it fell behind)
        self.fired = 0

    @property
    def rules(self) -> AlertRules:
        return self._engine.rules

    # -- from the journal ------------------------------------------------------------------

    def on_durable(self, lines: Sequence[bytes]) -> None:
        """Called by the journal with lines that are durable; never blocks."""
        try:
            self._queue.put_nowait(lines)
        except asyncio.QueueFull:
            self.dropped += len(lines)
            if self._observer is not None:
                self._observer.alert_events_dropped(len(lines))

    # -- running -----------------------------------------------------------------------------

    async def start(self) -> None:
        for destination in self._destinations:
            await destination.start()
        self._tasks = [
            asyncio.create_task(self._detect(), name="alert-detector"),
            asyncio.create_task(self._watch(), name="alert-rules-watcher"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for destination in self._destinations:
            await destination.close()

    def request_reload(self) -> None:
        """Look at the rule files now (SIGHUP)."""
        self._wake.set()

    async def _detect(self) -> None:
        await self._restore()
        while True:
            lines = await self._queue.get()
            for line in lines:
                try:
                    record = orjson.loads(line)
                    if _seq(record) <= self._restored_seq:
                        continue  # written while the restore read the chain: seen there
                    alerts = self._engine.feed(record)
                except Exception:
                    log.exception("alert_detection_failed")
                    continue
                for alert in alerts:
                    await self._send(alert)

    async def _restore(self) -> None:
        """Windows, baselines and what was already flagged, from this process's chain."""
        since = datetime.now(UTC) - history_needed(self.rules)
        chain = self._journal.chain_id
        try:
            history = await asyncio.to_thread(_history, self._journal.directory, chain, since)
            missed = self._engine.restore(history)
            self._restored_seq = max((_seq(r) for r in history), default=0)
        except Exception:
            log.exception("alert_restore_failed")  # detection starts afresh, still live
            return
        log.info("alerts_restored", events=len(history), rules=len(self.rules.rules))
        for alert in missed:
            await self._send(alert)

    async def _send(self, alert: Alert) -> None:
        self.fired += 1
        if self._observer is not None:
            self._observer.alert_fired(alert)
        log.warning("alert", rule=alert.rule, severity=alert.severity.value, key=alert.key)
        try:
            await self._journal.append(alert.as_event())
        except JournalUnavailable as exc:
            # Delivered all the same: an alert matters most when something is wrong.
            log.error("alert_unrecorded", rule=alert.rule, error=str(exc))
        for destination in self._destinations:
            destination.offer(alert)

    # -- reloading ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._reload_interval)
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                await self.reload_if_changed(force=forced)
            except Exception:
                log.exception("alert_rules_reload_crashed")

    async def reload_if_changed(self, *, force: bool = False) -> bool:
        """Load the rule files if they changed (or if ``force``); True when new rules
        were put in force."""
        current = await asyncio.to_thread(_fingerprint, self._paths)
        if not force and current in (self._seen, self._rejected):
            return False
        old = self.rules
        try:
            rules = await asyncio.to_thread(load_rules, self._paths)
        except AlertRuleError as exc:
            self._rejected = current
            log.error("alert_rules_rejected", problems=list(exc.problems))
            await self._record(
                {"event": "alert_rules_rejected", "problems": list(exc.problems[:_MAX_LISTED])}
            )
            return False
        self._seen, self._rejected = current, None
        if rules.hash == old.hash:
            return False
        recorded = await self._record(
            {
                "event": "alert_rules_reloaded",
                "old_hash": old.hash,
                "new_hash": rules.hash,
                "rules": [rule.id for rule in rules.rules],
            }
        )
        if not recorded:
            self._seen = ()  # unrecorded, the change waits: look again next time
            return False
        self._engine.replace_rules(rules)
        log.info("alert_rules_reloaded", rules=len(rules.rules), hash=rules.hash)
        return True

    async def _record(self, detail: dict[str, Any]) -> bool:
        try:
            await self._journal.append(AuditEvent(type=EventType.LIFECYCLE, detail=detail))
        except JournalUnavailable as exc:
            log.error("alert_rules_change_unrecorded", error=str(exc))
            return False
        return True


def _seq(record: dict[str, Any]) -> int:
    chain = record.get("chain")
    seq = chain.get("seq") if isinstance(chain, dict) else None
    return seq if type(seq) is int else 0


def _history(directory: Path, chain: str, since: datetime) -> list[dict[str, Any]]:
    return list(_own_chain(directory, chain, since))


def _own_chain(directory: Path, chain: str, since: datetime) -> Iterator[dict[str, Any]]:
    # Other workers' chains are theirs: each process judges the share it served.
    for record in iter_records(directory, EventFilter(since=since)):
        link = record.get("chain")
        if isinstance(link, dict) and link.get("id") == chain:
            yield record
