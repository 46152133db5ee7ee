"""Alert delivery: queues that never wait, retries, dead letters, and each receiver's format.

Receivers are real aiohttp servers on loopback; the destinations talk to them over sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiohttp import web

from keyledger.alerts.delivery import (
    SIGNATURE_HEADER,
    AlertmanagerSettings,
    DeliverySettings,
    HttpRequest,
    HttpSender,
    QueuedDestination,
    SlackSettings,
    StdoutSender,
    StdoutSettings,
    WebhookSettings,
    alert_document,
    alert_id,
    alertmanager_request,
    build_destinations,
    verify_signature,
    webhook_request,
)
from keyledger.alerts.model import Alert, Destination, EventRef, Severity

SECRET = b"whsec-0123456789abcdef"
ALERT = Alert(
    rule="deny-burst",
    severity=Severity.HIGH,
    detector="deny_burst",
    key="principal demo-app",
    summary="12 denials in 60s",
    time=datetime(2026, 11, 23, 21, 55, 1, 123456, tzinfo=UTC),
    events=(
        EventRef("01JDQ0000000000000000000AA", "replica-a", 41),
        EventRef("01JDQ0000000000000000000AB", "replica-a", 42),
    ),
    suppressed=2,
    detail={"denied": 12, "window_s": 60},
)
# Retries a test can wait for: tens of milliseconds, not the production half second.
FAST: dict[str, Any] = {"retry_min_s": 0.01, "retry_max_s": 0.05, "timeout_s": 2.0, "drain_s": 2.0}


def another(n: int) -> Alert:
    return dataclasses.replace(ALERT, key=f"principal app-{n}")


def webhook(url: str, **overrides: Any) -> WebhookSettings:
    return WebhookSettings(name="hook", url=url, secret=SECRET, **{**FAST, **overrides})


def json_of(data: bytes) -> Any:
    return orjson.loads(data)


# -- a receiver and an observer -------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A loopback HTTP server that records every POST and answers with the next status in
    ``answers`` (200 once they run out), or never answers at all when ``silent``."""

    def __init__(self, answers: Iterable[int] = (), *, silent: bool = False, port: int = 0):
        self.requests: list[Received] = []
        self.port = port
        self._answers = list(answers)
        self._silent = silent
        self._arrived = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        self._arrived.set()
        if self._silent:
            await self._release.wait()
        status = self._answers.pop(0) if self._answers else 200
        return web.Response(status=status, text="ok" if status == 200 else "not now")


@dataclass
class Recorder:
    """A DeliveryObserver that keeps every call, and lets a test wait for one."""

    deliveries: list[str] = field(default_factory=list)  # destination names
    failures: list[str] = field(default_factory=list)  # reasons
    dead: list[str] = field(default_factory=list)  # reasons
    depths: list[int] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def delivered(self, destination: str) -> None:
        self.deliveries.append(destination)
        self._changed.set()

    def failed(self, destination: str, reason: str) -> None:
        self.failures.append(reason)
        self._changed.set()

    def dead_letter(self, destination: str, reason: str) -> None:
        self.dead.append(reason)
        self._changed.set()

    def queue_depth(self, destination: str, depth: int) -> None:
        self.depths.append(depth)

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Any]]:
    """Start receivers on demand; every one is closed after the test."""
    started: list[Receiver] = []

    async def start(answers: Iterable[int] = (), **kwargs: Any) -> Receiver:
        receiver = await Receiver(answers, **kwargs).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@contextlib.asynccontextmanager
async def running(destination: Destination) -> AsyncIterator[Destination]:
    await destination.start()
    try:
        yield destination
    finally:
        await destination.close()


def only(destinations: list[Destination]) -> QueuedDestination:
    (destination,) = destinations
    assert isinstance(destination, QueuedDestination)
    return destination


# -- webhook --------------------------------------------------------------------------------


class TestWebhook:
    async def test_the_receiver_authenticates_the_alert_and_gets_it_whole(
        self, receivers: Callable[..., Any], recorder: Recorder
    ) -> None:
        """The receiver verifies the signature header and reads the exact alert JSON."""
        receiver = await receivers()
        destination = only(build_destinations([webhook(f"{receiver.url}/hook")], observer=recorder))

        async with running(destination):
            assert destination.offer(ALERT) is True
            await recorder.until(lambda: bool(recorder.deliveries))

        (request,) = receiver.requests
        assert request.path == "/hook"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"] == "keyledger"
        signature = request.headers[SIGNATURE_HEADER]
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", signature)
        assert verify_signature(SECRET, signature, request.body, now=time.time())
        assert json_of(request.body) == {
            "schema": "keyledger.alert/v1",
            "id": alert_id(ALERT),
            "alert": ALERT.as_json(),
        }

    async def test_every_attempt_is_signed_afresh(self, receivers: Callable[..., Any]) -> None:
        """A retry carries a new timestamp, so a receiver's freshness check still passes."""
        receiver = await receivers([503, 503])
        clock = iter([1_000.0, 1_030.0, 1_060.0])

        def render(alert: Alert) -> HttpRequest:
            return webhook_request(alert, url=receiver.url, secret=SECRET, now=next(clock))

        settings = webhook(receiver.url)
        destination = QueuedDestination(
            HttpSender(render, timeout_s=settings.timeout_s), settings=settings
        )
        async with running(destination):
            destination.offer(ALERT)
            await receiver.wait_for(3)

        headers = [r.headers[SIGNATURE_HEADER] for r in receiver.requests]
        assert [h.split(",")[0] for h in headers] == ["t=1000", "t=1030", "t=1060"]
        for header, request, now in zip(
            headers, receiver.requests, (1000, 1030, 1060), strict=True
        ):
            assert verify_signature(SECRET, header, request.body, now=now, tolerance_s=5)
            assert not verify_signature(SECRET, header, request.body, now=now + 60, tolerance_s=5)

    def test_the_id_is_the_same_for_the_same_alert(self) -> None:
        """Retries and destinations share the id; another alert has another."""
        assert alert_id(ALERT) == alert_id(dataclasses.replace(ALERT))
        assert alert_id(ALERT) != alert_id(another(1))
        assert alert_document(ALERT)["id"] == alert_id(ALERT)


class TestVerifySignature:
    @staticmethod
    def signed() -> tuple[str, bytes]:
        """A webhook request's signature header and body, signed at 1_700_000_000."""
        request = webhook_request(ALERT, url="http://x", secret=SECRET, now=1_700_000_000)
        return request.headers[SIGNATURE_HEADER], request.body

    def test_a_genuine_request_verifies(self) -> None:
        """The header made for a body verifies against that body, secret and time."""
        header, body = self.signed()
        assert verify_signature(SECRET, header, body, now=1_700_000_000)

    def test_a_tampered_body_fails(self) -> None:
        """Changing one byte of the body breaks the signature."""
        header, body = self.signed()
        tampered = body.replace(b"deny-burst", b"deny-bursT")
        assert tampered != body
        assert not verify_signature(SECRET, header, tampered, now=1_700_000_000)

    def test_another_secret_fails(self) -> None:
        """Only the shared secret verifies."""
        header, body = self.signed()
        assert not verify_signature(b"another-secret-0123456", header, body, now=1_700_000_000)

    @pytest.mark.parametrize(
        ("offset", "ok"), [(300, True), (301, False), (-300, True), (-301, False)]
    )
    def test_the_timestamp_must_be_recent(self, offset: float, ok: bool) -> None:
        """Older or further in the future than the tolerance is refused (a replay)."""
        header, body = self.signed()
        assert verify_signature(SECRET, header, body, now=1_700_000_000 + offset) is ok

    def test_a_timestamp_cannot_be_moved(self) -> None:
        """The timestamp is signed too: a replay with a fresh t fails."""
        header, body = self.signed()
        replayed = header.replace("t=1700000000", "t=1700000900")
        assert not verify_signature(SECRET, replayed, body, now=1_700_000_900)

    def test_any_of_several_signatures_may_match(self) -> None:
        """A v1 under an old secret beside the current one still verifies (rotation)."""
        header, body = self.signed()
        t, v1 = header.split(",")
        assert verify_signature(SECRET, f"{t},v1={'0' * 64},{v1}", body, now=1_700_000_000)

    @pytest.mark.parametrize(
        "template",
        [
            "",
            "v1={v1}",
            "t={t}",
            "t=abc,v1={v1}",
            "t={t},t={t},v1={v1}",
            "t={wide_t},v1={v1}",
            "t={t};v1={v1}",
            "t={t},{v1}",
            "t={t},v1=\u00e9",
        ],
    )
    def test_a_malformed_header_fails(self, template: str) -> None:
        """Anything but one ASCII t= and a v1= is refused (never an exception), even when
        the genuine signature is in it."""
        header, body = self.signed()
        t, v1 = (part.split("=", 1)[1] for part in header.split(","))
        wide_t = "".join(chr(0xFF10 + int(digit)) for digit in t)  # fullwidth digits
        malformed = template.format(t=t, v1=v1, wide_t=wide_t)
        assert verify_signature(SECRET, malformed, body, now=1_700_000_000) is False


# -- retries and dead letters ---------------------------------------------------------------


class TestRetries:
    @pytest.mark.parametrize("answers", [[503, 503], [429, 500]])
    async def test_a_busy_receiver_gets_the_alert_once_after_retries(
        self, receivers: Callable[..., Any], recorder: Recorder, answers: list[int]
    ) -> None:
        """Two 5xx/429 answers, then 200: three attempts, one delivery, no dead letter."""
        receiver = await receivers(answers)
        destination = only(build_destinations([webhook(receiver.url)], observer=recorder))

        async with running(destination):
            destination.offer(ALERT)
            await recorder.until(lambda: bool(recorder.deliveries))

        assert len(receiver.requests) == 3
        assert len({r.body for r in receiver.requests}) == 1  # the same alert each time
        assert recorder.failures == [f"http_{status}" for status in answers]
        assert (destination.status.delivered, destination.status.dead_letters) == (1, 0)

    async def test_a_receiver_that_comes_back_gets_the_alert(
        self, receivers: Callable[..., Any], recorder: Recorder, unused_tcp_port: int
    ) -> None:
        """Nothing listens at first; once the receiver starts on that port, the alert arrives."""
        settings = webhook(f"http://127.0.0.1:{unused_tcp_port}/hook", max_attempts=100)
        destination = only(build_destinations([settings], observer=recorder))

        async with running(destination):
            destination.offer(ALERT)
            await recorder.until(lambda: len(recorder.failures) >= 2)
            assert not recorder.deliveries
            receiver = await receivers(port=unused_tcp_port)
            await recorder.until(lambda: bool(recorder.deliveries))

        assert set(recorder.failures) == {"connection"}
        assert len(receiver.requests) == 1
        assert verify_signature(
            SECRET,
            receiver.requests[0].headers[SIGNATURE_HEADER],
            receiver.requests[0].body,
            now=time.time(),
        )
        assert destination.status.dead_letters == 0

    async def test_a_refusal_is_a_dead_letter_at_once(
        self, receivers: Callable[..., Any], recorder: Recorder
    ) -> None:
        """A 400 is not retried: one attempt, one dead letter, and the next alert goes on."""
        receiver = await receivers([400])
        destination = only(build_destinations([webhook(receiver.url)], observer=recorder))

        async with running(destination):
            destination.offer(ALERT)
            await recorder.until(lambda: bool(recorder.dead))
            destination.offer(another(1))
            await recorder.until(lambda: bool(recorder.deliveries))

        # The second alert got through after the first was given up, so nothing retried it.
        assert [json_of(r.body)["alert"]["key"] for r in receiver.requests] == [
            ALERT.key,
            another(1).key,
        ]
        assert recorder.dead == ["rejected"]
        assert recorder.failures == ["http_400"]
        assert destination.status.dead_letters == 1

    async def test_attempts_are_bounded(
        self, receivers: Callable[..., Any], recorder: Recorder
    ) -> None:
        """A receiver that keeps failing gets max_attempts tries, then a dead letter."""
        receiver = await receivers([503] * 10)
        destination = only(
            build_destinations([webhook(receiver.url, max_attempts=3)], observer=recorder)
        )

        async with running(destination):
            destination.offer(ALERT)
            await recorder.until(lambda: bool(recorder.dead))

        assert len(receiver.requests) == 3
        assert recorder.dead == ["attempts_exhausted"]
        assert destination.status.failures == 3


# -- the queue and closing ------------------------------------------------------------------


class TestQueue:
    async def test_a_full_queue_refuses_without_waiting(
        self, receivers: Callable[..., Any], recorder: Recorder
    ) -> None:
        """With the receiver hung and the queue full, offer returns False at once and counts
        a dead letter."""
        receiver = await receivers(silent=True)
        settings = webhook(receiver.url, queue_size=2, timeout_s=30, drain_s=0.1)
        destination = only(build_destinations([settings], observer=recorder))

        async with running(destination):
            assert destination.offer(ALERT)
            await receiver.wait_for(1)  # the worker holds it; the queue is empty again
            assert destination.offer(another(1))
            assert destination.offer(another(2))
            started = time.perf_counter()
            refused = [destination.offer(another(n)) for n in range(3, 103)]
            elapsed = time.perf_counter() - started

            assert refused == [False] * 100
            assert elapsed < 0.1, f"100 refused offers took {elapsed:.3f}s"
            assert destination.status.dead_letters == 100
            assert recorder.dead == ["queue_full"] * 100
            assert destination.queued == 2
            assert recorder.depths[-1] == 2

    async def test_close_with_a_silent_receiver_ends_within_its_bound(
        self, receivers: Callable[..., Any], recorder: Recorder
    ) -> None:
        """close() gives up after drain_s, counting the alert in flight and the queued ones."""
        receiver = await receivers(silent=True)
        settings = webhook(receiver.url, timeout_s=30, drain_s=0.3)
        destination = only(build_destinations([settings], observer=recorder))
        await destination.start()
        for n in range(3):
            destination.offer(another(n))
        await receiver.wait_for(1)

        started = time.monotonic()
        await destination.close()
        elapsed = time.monotonic() - started

        assert 0.3 <= elapsed < 1.5
        assert recorder.dead == ["shutdown"] * 3
        assert destination.status.dead_letters == 3
        assert len(receiver.requests) == 1

    async def test_close_delivers_what_is_queued(
        self, receivers: Callable[..., Any], recorder: Recorder
    ) -> None:
        """Alerts still queued when close() is called are delivered before it returns."""
        receiver = await receivers()
        destination = only(build_destinations([webhook(receiver.url)], observer=recorder))
        await destination.start()
        for n in range(5):
            assert destination.offer(another(n))

        await destination.close()

        assert len(receiver.requests) == 5
        assert destination.status.delivered == 5
        assert destination.status.dead_letters == 0

    async def test_an_offer_after_close_is_refused(self, recorder: Recorder) -> None:
        """A closed destination takes nothing more, and counts what it refused."""
        destination = only(build_destinations([StdoutSettings(name="stdout")], observer=recorder))
        await destination.start()
        await destination.close()

        assert destination.offer(ALERT) is False
        assert recorder.dead == ["closed"]


# -- Slack ----------------------------------------------------------------------------------


class TestSlack:
    async def test_an_incoming_webhook_message(
        self, receivers: Callable[..., Any], recorder: Recorder
    ) -> None:
        """text for notifications plus two mrkdwn blocks, made only of what the alert says."""
        receiver = await receivers()
        settings = SlackSettings(name="slack", url=f"{receiver.url}/services/T0/B0/x", **FAST)
        destination = only(build_destinations([settings], observer=recorder))
        alert = dataclasses.replace(ALERT, key="principal <!channel> & co")

        async with running(destination):
            destination.offer(alert)
            await recorder.until(lambda: bool(recorder.deliveries))

        (request,) = receiver.requests
        assert request.path == "/services/T0/B0/x"
        assert request.headers["Content-Type"] == "application/json"
        message = json_of(request.body)
        assert set(message) == {"text", "blocks"}
        assert message["text"] == "[HIGH] deny-burst: 12 denials in 60s"
        section, context = message["blocks"]
        assert section == {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "[HIGH] deny-burst: 12 denials in 60s"},
        }
        assert context["type"] == "context"
        (element,) = context["elements"]
        assert element["type"] == "mrkdwn"
        assert "principal &lt;!channel&gt; &amp; co" in element["text"]
        assert "01JDQ0000000000000000000AA (replica-a #41)" in element["text"]
        assert "2 repeats held back" in element["text"]
        assert b"<!channel>" not in request.body


# -- Alertmanager ---------------------------------------------------------------------------

# postableAlerts, transcribed from Alertmanager's API v2 spec (prometheus/alertmanager,
# api/v2/openapi.yaml: definitions postableAlerts, postableAlert, alert and labelSet).
LABEL_SET = {"type": "object", "additionalProperties": {"type": "string"}}
POSTABLE_ALERTS = {
    "type": "array",
    "items": {
        "allOf": [
            {
                "type": "object",
                "properties": {
                    "startsAt": {"type": "string", "format": "date-time"},
                    "endsAt": {"type": "string", "format": "date-time"},
                    "annotations": LABEL_SET,
                },
            },
            {
                "type": "object",
                "properties": {
                    "labels": LABEL_SET,
                    "generatorURL": {"type": "string", "format": "uri"},
                },
                "required": ["labels"],
            },
        ]
    },
}
# A Prometheus label name (Alertmanager validates each posted alert's labels).
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class TestAlertmanager:
    async def test_a_postable_alert_on_the_v2_api(
        self, receivers: Callable[..., Any], recorder: Recorder
    ) -> None:
        """One alert, POSTed to /api/v2/alerts, in the shape the v2 spec defines."""
        receiver = await receivers()
        settings = AlertmanagerSettings(
            name="am",
            url=f"{receiver.url}/",
            generator_url="https://keyledger.example/alerts",
            **FAST,
        )
        destination = only(build_destinations([settings], observer=recorder))

        async with running(destination):
            destination.offer(ALERT)
            await recorder.until(lambda: bool(recorder.deliveries))

        (request,) = receiver.requests
        assert request.path == "/api/v2/alerts"
        assert request.headers["Content-Type"] == "application/json"
        posted = json_of(request.body)
        jsonschema.Draft4Validator(POSTABLE_ALERTS).validate(posted)
        (alert,) = posted
        assert set(alert) == {"labels", "annotations", "startsAt", "generatorURL"}
        assert alert["labels"] == {
            "alertname": "deny-burst",
            "severity": "high",
            "detector": "deny_burst",
            "key": "principal demo-app",
            "service": "keyledger",
        }
        assert all(LABEL_NAME.fullmatch(name) for name in alert["labels"])
        assert alert["annotations"]["summary"] == "12 denials in 60s"
        assert alert["annotations"]["description"] == (
            "2 triggering events: 01JDQ0000000000000000000AA (replica-a #41), "
            "01JDQ0000000000000000000AB (replica-a #42); 2 repeats held back"
        )
        assert datetime.fromisoformat(alert["startsAt"]) == ALERT.time
        assert alert["generatorURL"] == "https://keyledger.example/alerts"

    def test_without_a_generator_url_there_is_none(self) -> None:
        """generatorURL is optional in the spec and left out unless configured."""
        request = alertmanager_request(ALERT, url="http://am:9093", generator_url=None)
        (alert,) = json_of(request.body)
        jsonschema.Draft4Validator(POSTABLE_ALERTS).validate([alert])
        assert "generatorURL" not in alert
        assert request.url == "http://am:9093/api/v2/alerts"


# -- stdout ---------------------------------------------------------------------------------


class TestStdout:
    async def test_one_json_line_per_alert(
        self, recorder: Recorder, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Each alert is one line of JSON on standard output: the webhook's document."""
        destination = only(build_destinations([StdoutSettings(name="stdout")], observer=recorder))

        async with running(destination):
            destination.offer(ALERT)
            destination.offer(another(1))
            await recorder.until(lambda: len(recorder.deliveries) == 2)

        lines = capfd.readouterr().out.splitlines()
        assert [json_of(line.encode()) for line in lines] == [
            json_of(orjson.dumps(alert_document(ALERT))),
            json_of(orjson.dumps(alert_document(another(1)))),
        ]

    async def test_a_closed_stream_is_retried_then_dead(self, recorder: Recorder) -> None:
        """A stream that cannot be written fails each attempt, then counts a dead letter."""
        stream = io.BytesIO()
        stream.close()
        settings = StdoutSettings(name="stdout", max_attempts=2, **FAST)
        destination = QueuedDestination(
            StdoutSender(stream=stream), settings=settings, observer=recorder
        )

        async with running(destination):
            destination.offer(ALERT)
            await recorder.until(lambda: bool(recorder.dead))

        assert recorder.failures == ["write", "write"]
        assert recorder.dead == ["attempts_exhausted"]


# -- settings -------------------------------------------------------------------------------


class TestSettings:
    def test_a_short_webhook_secret_is_refused(self) -> None:
        """The error names the destination and how to make a good secret."""
        with pytest.raises(ValueError, match=r"'hook'.*at least 16 bytes.*openssl rand"):
            WebhookSettings(name="hook", url="https://example.com", secret=b"short")

    @pytest.mark.parametrize("url", ["example.com/hook", "ftp://example.com", "https://"])
    def test_a_url_must_be_http(self, url: str) -> None:
        """Only http:// and https:// URLs with a host are taken."""
        with pytest.raises(ValueError, match=r"'slack': url must be an http"):
            SlackSettings(name="slack", url=url)

    def test_nonsense_numbers_are_refused(self) -> None:
        """Every bad number is named at once."""
        with pytest.raises(ValueError, match=r"queue_size must be at least 1.*max_attempts"):
            StdoutSettings(name="stdout", queue_size=0, max_attempts=0)

    def test_names_are_unique(self) -> None:
        """Two destinations with one name would share metrics: refused."""
        with pytest.raises(ValueError, match=r"two alert destinations are named 'out'"):
            build_destinations([StdoutSettings(name="out"), StdoutSettings(name="out")])

    def test_the_repr_shows_no_credential(self) -> None:
        """A webhook secret and a Slack URL never reach a log through repr()."""
        hook = WebhookSettings(name="hook", url="https://example.com/h", secret=SECRET)
        slack = SlackSettings(name="slack", url="https://hooks.slack.com/services/T/B/sekrit")
        assert "whsec" not in repr(hook)
        assert "sekrit" not in repr(slack)

    def test_the_defaults(self) -> None:
        """Bounded queue, bounded attempts, capped backoff, a short per-attempt timeout."""
        defaults = DeliverySettings(name="x")
        assert (defaults.queue_size, defaults.max_attempts) == (1000, 6)
        assert (defaults.timeout_s, defaults.retry_max_s, defaults.drain_s) == (5.0, 30.0, 5.0)

    async def test_an_unreadable_ca_file_is_named_at_start(self, tmp_path: Path) -> None:
        """A CA file that is not there stops start() with its path in the message."""
        missing = tmp_path / "ca.pem"
        destination = only(build_destinations([webhook("https://example.com")], ca_file=missing))
        with pytest.raises(ValueError, match=re.escape(str(missing))):
            await destination.start()
        await destination.close()
