"""Alerts end to end: real boto3 calls through a running keyledger trip its rules; a local
webhook receiver authenticates the alert by its signature and gets it within a second; an
Alertmanager-compatible receiver (its v2 API) gets it too; with the receiver down the
calls are not slowed and the alert arrives once it is back. Every alert is also in the
journal, naming the calls that tripped it."""

from __future__ import annotations

import statistics
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from keyledger.alerts.delivery import verify_signature
from keyledger.backends._loop_thread import LoopThread
from tests.conftest import RunningProxy, running_proxy

SECRET = b"0123456789abcdef0123456789abcdef"
RULES = """
    version: 1
    rules:
      - id: stranger-denied
        severity: high
        deny_burst: {count: 3, window: 1m}
      - id: decoy
        severity: critical
        suppress: 0s
        canary: {secrets: ["aws:app/decoy"]}
"""


@dataclass
class Receiver:
    """A webhook receiver and an Alertmanager, on loopback, from a thread of their own."""

    port: int = 0
    webhooks: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    alertmanager: list[Any] = field(default_factory=list)
    refused: int = 0  # bodies whose signature did not verify
    _thread: LoopThread = field(default_factory=lambda: LoopThread("receiver", timeout=10))
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start(self._serve)

    def stop(self) -> None:
        self._thread.stop(self._close)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/api/v2/alerts", self._alertmanager)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("X-Keyledger-Signature", "")
        if not verify_signature(SECRET, header, body, now=time.time()):
            self.refused += 1
            return web.Response(status=401)
        self.webhooks.append((time.monotonic(), orjson.loads(body)))
        return web.Response(status=204)

    async def _alertmanager(self, request: web.Request) -> web.Response:
        self.alertmanager.extend(await request.json())
        return web.json_response({})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    yield running
    running.stop()


def alerting(tmp_path: Path, receiver_url: str) -> dict[str, Any]:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(textwrap.dedent(RULES))
    (tmp_path / "webhook.key").write_bytes(SECRET)
    return {
        "rules": [str(rules)],
        "destinations": [
            {
                "type": "webhook",
                "name": "soc",
                "url": f"{receiver_url}/hook",
                "secret_file": "webhook.key",
            },
            {"type": "alertmanager", "url": receiver_url},
        ],
    }


def wait(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


def denied_read(proxy: RunningProxy) -> float:
    """One read keyledger's policy refuses (stranger may read nothing); when it ended."""
    with pytest.raises(ClientError) as refused:
        proxy.client("stranger").get_secret_value(SecretId="app/db/password")
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    return time.monotonic()


def payload(alert: Any) -> dict[str, Any]:
    return dict(alert["alert"]) if "alert" in alert else dict(alert)


def test_a_deny_burst_reaches_the_webhook_and_alertmanager_within_a_second(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None, receiver: Receiver
) -> None:
    """Three denied reads by stranger: the signed webhook arrives within a second of the
    third, Alertmanager gets the same alert in its v2 shape, and the journal's alert event
    names the three access events by their chain positions."""
    store.create_secret(Name="app/db/password", SecretString="guarded")
    with running_proxy(
        tmp_path, moto_url, extra={"alerts": alerting(tmp_path, receiver.url)}
    ) as proxy:
        ended = [denied_read(proxy) for _ in range(3)]
        wait(lambda: receiver.webhooks and receiver.alertmanager, within=2)
        events = proxy.events("access", "alert")

    arrived, body = receiver.webhooks[0]
    assert arrived - ended[-1] < 1.0
    assert receiver.refused == 0
    alert = payload(body)
    assert (alert["rule"], alert["severity"], alert["key"]) == (
        "stranger-denied",
        "high",
        "principal stranger",
    )
    accesses = [e for e in events if e["type"] == "access"]
    (recorded,) = [e for e in events if e["type"] == "alert"]
    assert recorded["detail"]["events"] == [
        {"id": e["id"], "chain": e["chain"]["id"], "seq": e["chain"]["seq"]} for e in accesses
    ]
    assert recorded["detail"]["rule"] == alert["rule"]
    (manager,) = receiver.alertmanager
    assert manager["labels"]["alertname"] == "stranger-denied"
    assert manager["labels"]["severity"] == "high"
    assert "startsAt" in manager


def test_a_receiver_down_slows_nothing_and_gets_the_alert_when_back(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> None:
    """The receiver is down: reads of the decoy (each one an alert) take no longer than
    reads without alerts, measured in one run; once the receiver listens on its port the
    alerts arrive, none lost."""
    store.create_secret(Name="app/db/password", SecretString="guarded")
    store.create_secret(Name="app/decoy", SecretString="honey")
    receiver = Receiver()
    receiver.start()
    port = receiver.port
    receiver.stop()  # nothing listens there now
    with running_proxy(
        tmp_path, moto_url, extra={"alerts": alerting(tmp_path, f"http://127.0.0.1:{port}")}
    ) as proxy:
        client = proxy.client("app")
        client.get_secret_value(SecretId="app/db/password")  # connections warmed

        def timed(secret: str) -> float:
            started = time.perf_counter()
            client.get_secret_value(SecretId=secret)
            return time.perf_counter() - started

        plain = [timed("app/db/password") for _ in range(15)]
        tripping = [timed("app/decoy") for _ in range(15)]
        back = Receiver(port=port)
        back.start()
        try:
            wait(lambda: len(back.webhooks) == 15, within=20)
        finally:
            back.stop()

    # The receiver's absence costs the caller nothing it can see (median within 5 ms).
    assert statistics.median(tripping) < statistics.median(plain) + 0.005
    assert {payload(body)["rule"] for _, body in back.webhooks} == {"decoy"}
