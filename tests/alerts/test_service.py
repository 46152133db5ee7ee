"""The alert rules inside the proxy: fed by the journal's durable lines, writing each alert
to the chain it judged, rebuilt from that chain at a restart, reloaded as files change."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from keyledger.alerts.model import Alert
from keyledger.alerts.service import AlertService, load_rules
from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    PrincipalInfo,
    RequestInfo,
    ResourceInfo,
)
from keyledger.proxy.audit.journal import Journal
from tests.conftest import journal_events

RULES = """
    version: 1
    rules:
      - id: burst
        severity: high
        deny_burst: {count: 3, window: 1m}
"""


class Received:
    """A destination that keeps what it is offered (the real ones are tested apart)."""

    name = "kept"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.arrived = asyncio.Event()

    def offer(self, alert: Alert) -> bool:
        self.alerts.append(alert)
        self.arrived.set()
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def denial(principal: str = "svc-a") -> AuditEvent:
    return AuditEvent(
        type=EventType.ACCESS,
        request=RequestInfo(
            id="r",
            protocol="aws-json",
            operation="GetSecretValue",
            source_ip="10.0.0.1",
            user_agent=None,
        ),
        principal=PrincipalInfo(id=principal, auth_method="sigv4"),
        action="read",
        resource=ResourceInfo(backend="aws", secret="prod/db"),
        decision=DecisionInfo(effect="deny", rule=None, policy_hash=None, reason="no rule"),
    )


class Proxy:
    """A journal and the alert service it feeds, as make_app wires them."""

    def __init__(self, folder: Path, rules: Path) -> None:
        self.folder = folder
        self.rules = rules
        self.received = Received()
        self.listeners: list[Callable[[Sequence[bytes]], None]] = []
        self.journal = Journal(
            directory=folder / "audit",
            chain_id="test",
            fsync=False,
            on_durable=self._durable,
        )
        self.service = AlertService(
            paths=[rules],
            rules=load_rules([rules]),
            journal=self.journal,
            destinations=[self.received],
            reload_interval_s=0.05,
        )
        self.listeners.append(self.service.on_durable)

    def _durable(self, lines: Sequence[bytes]) -> None:
        for listen in self.listeners:
            listen(lines)

    async def __aenter__(self) -> Proxy:
        await self.journal.start()
        await self.service.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.service.close()
        await self.journal.close()

    def events(self, *types: str) -> list[dict[str, Any]]:
        return journal_events(self.folder / "audit", *types)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent(RULES))
    return path


async def until(check: Callable[[], bool]) -> None:
    """Return once ``check()`` holds; fail after 2 s."""
    async with asyncio.timeout(2):
        # Polling is the point: what the service did shows in the journal's files.
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
async def proxy(tmp_path: Path, rules: Path) -> AsyncIterator[Proxy]:
    async with Proxy(tmp_path, rules) as running:
        yield running


async def test_an_alert_is_recorded_in_the_chain_it_judged_and_delivered(proxy: Proxy) -> None:
    """Three denials: one alert, delivered, and an alert event in the journal naming the
    three access events by id and chain position."""
    for _ in range(3):
        await proxy.journal.append(denial())

    await asyncio.wait_for(proxy.received.arrived.wait(), 2)
    await until(lambda: bool(proxy.events("alert")))

    (alert,) = proxy.received.alerts
    accesses = proxy.events("access")
    (recorded,) = proxy.events("alert")
    assert recorded["detail"]["rule"] == "burst"
    assert recorded["detail"]["events"] == [
        {"id": e["id"], "chain": "test", "seq": e["chain"]["seq"]} for e in accesses
    ]
    assert recorded["detail"] == alert.as_json()


async def test_a_restart_mid_burst_and_after_it(tmp_path: Path, rules: Path) -> None:
    """Two denials, a restart, a third: one alert. Another restart: not repeated."""
    async with Proxy(tmp_path, rules) as first:
        await first.journal.append(denial())
        await first.journal.append(denial())
    async with Proxy(tmp_path, rules) as second:
        await asyncio.sleep(0.1)  # restored before the next event arrives
        await second.journal.append(denial())
        await asyncio.wait_for(second.received.arrived.wait(), 2)
        await until(lambda: bool(second.events("alert")))
    async with Proxy(tmp_path, rules) as third:
        await asyncio.sleep(0.2)
        assert third.received.alerts == []
    assert len(third.events("alert")) == 1


async def test_a_burst_whose_alert_was_never_recorded_is_sent_at_start(
    tmp_path: Path, rules: Path
) -> None:
    """A journal holding a whole burst but no alert (the process stopped in between, or
    ran without these rules): the restart sends it, once."""
    journal = Journal(directory=tmp_path / "audit", chain_id="test", fsync=False)
    await journal.start()
    for _ in range(3):
        await journal.append(denial())
    await journal.close()

    async with Proxy(tmp_path, rules) as restarted:
        await asyncio.wait_for(restarted.received.arrived.wait(), 2)
        await until(lambda: bool(restarted.events("alert")))
    assert len(restarted.received.alerts) == 1


async def test_rule_files_reload_on_change_on_record(proxy: Proxy, rules: Path) -> None:
    """A new rule in the file is put in force and recorded; a broken edit is rejected on
    record, once, and the rules in force keep working."""
    rules.write_text(  # noqa: ASYNC240 (a small file, as an editor would save it)
        textwrap.dedent(RULES)
        + "  - id: decoy\n    severity: critical\n    canary: {secrets: ['aws:prod/db']}\n"
    )
    await until(
        lambda: any(e["detail"]["event"] == "alert_rules_reloaded" for e in lifecycle(proxy))
    )
    await proxy.journal.append(denial())
    await until(lambda: any(a.rule == "decoy" for a in proxy.received.alerts))

    rules.write_text("rules:\n  - id: x\n    severity: loud\n")  # noqa: ASYNC240
    await until(
        lambda: any(e["detail"]["event"] == "alert_rules_rejected" for e in lifecycle(proxy))
    )
    await asyncio.sleep(0.2)  # a few more looks at the same broken file
    rejected = [e for e in lifecycle(proxy) if e["detail"]["event"] == "alert_rules_rejected"]
    assert len(rejected) == 1
    assert "unknown severity 'loud'" in rejected[0]["detail"]["problems"][0]
    before = len(proxy.received.alerts)
    await proxy.journal.append(denial("svc-b"))
    await until(lambda: len(proxy.received.alerts) > before)


def lifecycle(proxy: Proxy) -> list[dict[str, Any]]:
    return [e for e in proxy.events("lifecycle") if "event" in (e.get("detail") or {})]


async def test_detection_falling_behind_drops_and_counts_never_blocks(
    tmp_path: Path, rules: Path
) -> None:
    """With room for one batch, a second batch offered before detection runs is dropped
    and counted; offering returns at once."""
    journal = Journal(directory=tmp_path / "audit", chain_id="test", fsync=False)
    service = AlertService(paths=[rules], rules=load_rules([rules]), journal=journal, backlog=1)
    service.on_durable([b"{}"])
    service.on_durable([b"{}", b"{}"])
    assert service.dropped == 2


async def test_sighup_reloads_at_once(tmp_path: Path, rules: Path) -> None:
    """With the files looked at only once a minute, a reload request (SIGHUP) puts an
    edit in force at once."""
    async with Proxy(tmp_path, rules) as running:
        running.service._reload_interval = 60  # as if watching were slow
        await asyncio.sleep(0.1)  # the watcher is waiting out its minute
        rules.write_text(textwrap.dedent(RULES).replace("count: 3", "count: 1"))  # noqa: ASYNC240
        running.service.request_reload()
        await until(
            lambda: any(e["detail"]["event"] == "alert_rules_reloaded" for e in lifecycle(running))
        )
        await running.journal.append(denial())
        await until(lambda: bool(running.received.alerts))
