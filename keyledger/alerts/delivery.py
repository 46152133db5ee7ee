"""Delivering alerts: bounded queues, retries with backoff, and a dead-letter count.

Each destination is a :class:`QueuedDestination`: ``offer`` puts the alert on a bounded
queue and returns at once (a full queue is a dead letter, never a wait), and one worker
task hands alerts, in order, to a :class:`Sender` -- the only part that differs per kind:

- **webhook**: ``POST <url>`` with the body (``Content-Type: application/json``)::

      {"schema": "keyledger.alert/v1", "id": "<32 hex>", "alert": <Alert.as_json()>}

  ``id`` is a digest of the alert itself, the same on every retry and every destination,
  so a receiver drops duplicates by it (delivery is at least once). The header
  ``X-Keyledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``
  proves who sent it and when; each attempt is signed afresh. A receiver checks it with
  :func:`verify_signature`, which also refuses a timestamp more than five minutes off.
- **slack**: an incoming webhook's message, ``{"text": ..., "blocks": [...]}``.
- **alertmanager**: ``POST <url>/api/v2/alerts`` with one postable alert (see
  :func:`alertmanager_request`), so Prometheus users route keyledger's alerts as usual.
- **stdout**: the webhook's body, one JSON line per alert, written by a thread of its own.

A failed attempt (no connection, no answer within ``timeout_s``, a 5xx or a 429) is retried
after a pause with exponential backoff and full jitter (``Retry-After`` is honoured, up to
``retry_max_s``), up to ``max_attempts`` in all. Any other answer outside 2xx (a 4xx, a
redirect) will not get better by itself: it is a dead letter at once. ``close`` gives what
is queued ``drain_s`` to go out, then stops; what is left is counted as dead letters.
Nothing here ever logs a URL (a Slack webhook URL is a credential) or a secret.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import hmac
import queue
import random
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from keyledger.alerts.model import Alert, Destination, EventRef
from keyledger.proxy.audit.events import format_time
from keyledger.proxy.config import AlertDestinationConfig, require_key

__all__ = [
    "SCHEMA",
    "SIGNATURE_HEADER",
    "AlertmanagerSettings",
    "DeliveryError",
    "DeliveryObserver",
    "DeliveryRejected",
    "DeliverySettings",
    "DeliveryStatus",
    "DestinationSettings",
    "HttpRequest",
    "HttpSender",
    "QueuedDestination",
    "Sender",
    "SlackSettings",
    "StdoutSender",
    "StdoutSettings",
    "WebhookSettings",
    "alert_document",
    "alert_id",
    "alertmanager_request",
    "build_destinations",
    "settings_for",
    "slack_request",
    "verify_signature",
    "webhook_request",
]

log = structlog.get_logger("keyledger.alerts")

SCHEMA = "keyledger.alert/v1"
SIGNATURE_HEADER = "X-Keyledger-Signature"
_USER_AGENT = "keyledger"
_LISTED_EVENTS = 10  # events named in a Slack message or an Alertmanager description


# -- settings -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """What every destination has: its name and how hard it tries."""

    name: str  # unique among the destinations; names it in logs and metrics
    queue_size: int = 1000
    max_attempts: int = 6  # the first attempt and five retries
    timeout_s: float = 5.0  # per attempt
    retry_min_s: float = 0.5
    retry_max_s: float = 30.0
    drain_s: float = 5.0  # at close: time to deliver what is queued

    def __post_init__(self) -> None:
        problems = [
            f"{what} (got {value!r})"
            for what, value, ok in (
                ("name must not be empty", self.name, bool(self.name)),
                ("queue_size must be at least 1", self.queue_size, self.queue_size >= 1),
                ("max_attempts must be at least 1", self.max_attempts, self.max_attempts >= 1),
                ("timeout_s must be above 0", self.timeout_s, self.timeout_s > 0),
                ("retry_min_s must be above 0", self.retry_min_s, self.retry_min_s > 0),
                (
                    "retry_max_s must be at least retry_min_s",
                    self.retry_max_s,
                    self.retry_max_s >= self.retry_min_s,
                ),
                ("drain_s must not be negative", self.drain_s, self.drain_s >= 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"alert destination {self.name!r}: " + "; ".join(problems))


def _check_url(settings: DeliverySettings, url: str, what: str = "url") -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"alert destination {settings.name!r}: {what} must be an http:// or https:// URL"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings(DeliverySettings):
    url: str = field(repr=False)
    secret: bytes = field(repr=False)  # signs every request; share it with the receiver

    def __post_init__(self) -> None:
        DeliverySettings.__post_init__(self)  # (zero-argument super() fails with slots)
        _check_url(self, self.url)
        if len(self.secret) < 16:
            raise ValueError(
                f"alert destination {self.name!r}: the webhook secret must be at least 16 "
                "bytes (e.g. `openssl rand -hex 32`)"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackSettings(DeliverySettings):
    url: str = field(repr=False)  # the incoming webhook's URL: a credential in itself

    def __post_init__(self) -> None:
        DeliverySettings.__post_init__(self)
        _check_url(self, self.url)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertmanagerSettings(DeliverySettings):
    url: str  # Alertmanager's base URL (http://alertmanager:9093); alerts go to /api/v2/alerts
    generator_url: str | None = None  # the alerts' back-link (e.g. the admin API, a runbook)

    def __post_init__(self) -> None:
        DeliverySettings.__post_init__(self)
        _check_url(self, self.url)
        if self.generator_url is not None:
            _check_url(self, self.generator_url, "generator_url")


@dataclass(frozen=True, slots=True, kw_only=True)
class StdoutSettings(DeliverySettings):
    pass


DestinationSettings = WebhookSettings | SlackSettings | AlertmanagerSettings | StdoutSettings


# -- what a sender is, and what it may raise ----------------------------------------------


class DeliveryError(Exception):
    """This attempt failed and another may succeed (no connection, no answer, 5xx, 429).

    ``reason`` is a short token from a small set (``timeout``, ``connection``, ``write``,
    ``http_<status>``), fit for a metric label; ``detail`` is for the log.
    """

    def __init__(self, reason: str, detail: str = "", *, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class DeliveryRejected(DeliveryError):
    """The receiver refused the alert for good (a 4xx but 429, a redirect): no retry."""


class Sender(Protocol):
    """Sends one alert, once; :class:`QueuedDestination` queues, retries and counts."""

    async def open(self) -> None: ...

    async def send(self, alert: Alert) -> None:
        """Return once the receiver took ``alert``; raise :class:`DeliveryError` if not."""
        ...

    async def close(self) -> None: ...


class DeliveryObserver(Protocol):
    """Told what each destination does, for metrics. Called on the event loop; must not
    block or raise. ``reason`` is always from a small fixed set, fit for a label:
    ``failed``: see :class:`DeliveryError`; ``dead_letter``: ``queue_full``, ``closed``,
    ``rejected``, ``attempts_exhausted``, ``shutdown`` or ``error`` (a bug, logged)."""

    def delivered(self, destination: str) -> None: ...

    def failed(self, destination: str, reason: str) -> None: ...

    def dead_letter(self, destination: str, reason: str) -> None: ...

    def queue_depth(self, destination: str, depth: int) -> None: ...


@dataclass(slots=True)
class DeliveryStatus:
    """What one destination has done since it was made."""

    destination: str
    delivered: int = 0
    failures: int = 0  # failed attempts, retried or not
    dead_letters: int = 0
    last_error: str | None = None


# -- the queue, the worker and the retries: one loop for every kind ------------------------


class QueuedDestination:
    """A :class:`~keyledger.alerts.model.Destination`: a bounded queue in front of a sender."""

    def __init__(
        self,
        sender: Sender,
        *,
        settings: DeliverySettings,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self.name = settings.name
        self.status = DeliveryStatus(settings.name)
        self._sender = sender
        self._settings = settings
        self._observer = observer
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._drain_deadline = float("inf")
        self._overflowing = False  # the queue was full at the last offer (logged once)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def offer(self, alert: Alert) -> bool:
        if self._closing.is_set():
            self._dead(alert, "closed")
            return False
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            if not self._overflowing:
                log.warning(
                    "alert_queue_full", destination=self.name, size=self._settings.queue_size
                )
            self._overflowing = True
            self._dead(alert, "queue_full", quiet=True)
            return False
        self._overflowing = False
        self._depth()
        return True

    async def start(self) -> None:
        if self._task is not None:
            return
        await self._sender.open()
        self._task = asyncio.create_task(self._run(), name=f"keyledger-alerts-{self.name}")

    async def close(self) -> None:
        if self._closing.is_set():
            return
        self._drain_deadline = time.monotonic() + self._settings.drain_s
        self._closing.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), self._settings.drain_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        left = 0
        while not self._queue.empty():
            self._dead(self._queue.get_nowait(), "shutdown", quiet=True)
            left += 1
        if left:
            log.error("alert_dead_letters_at_close", destination=self.name, count=left)
        self._depth()
        await self._sender.close()

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            self._depth()
            try:
                await self._deliver(alert)
            except asyncio.CancelledError:
                self._dead(alert, "shutdown")
                raise
            except Exception:
                # A bug must cost one alert, never the destination.
                log.exception("alert_delivery_bug", destination=self.name)
                self._dead(alert, "error")
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        settings = self._settings
        for attempt in range(1, settings.max_attempts + 1):
            error = await self._attempt(alert)
            if error is None:
                self.status.delivered += 1
                self.status.last_error = None
                if self._observer is not None:
                    self._observer.delivered(self.name)
                if attempt > 1:
                    log.info("alert_delivered", destination=self.name, attempts=attempt)
                return
            self._failed(error, attempt)
            if isinstance(error, DeliveryRejected):
                self._dead(alert, "rejected")
                return
            if attempt == settings.max_attempts:
                break
            delay = _backoff(attempt, settings.retry_min_s, settings.retry_max_s)
            if error.retry_after is not None:
                delay = max(delay, min(error.retry_after, settings.retry_max_s))
            if not await self._pause(delay):
                self._dead(alert, "shutdown")
                return
        self._dead(alert, "attempts_exhausted")

    async def _attempt(self, alert: Alert) -> DeliveryError | None:
        timeout_s = self._settings.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._sender.send(alert)
        except DeliveryError as exc:
            return exc
        except TimeoutError:
            return DeliveryError("timeout", f"no answer within {timeout_s:g}s")
        return None

    async def _pause(self, delay: float) -> bool:
        """Wait before a retry; False when closing, and the drain time would run out first."""
        until = time.monotonic() + delay
        if not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
            if not self._closing.is_set():
                return True
        if until > self._drain_deadline:
            return False
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        return True

    def _failed(self, error: DeliveryError, attempt: int) -> None:
        self.status.failures += 1
        self.status.last_error = str(error)
        if self._observer is not None:
            self._observer.failed(self.name, error.reason)
        log.warning(
            "alert_delivery_failed",
            destination=self.name,
            reason=error.reason,
            detail=error.detail or None,
            attempt=attempt,
            max_attempts=self._settings.max_attempts,
        )

    def _dead(self, alert: Alert, reason: str, *, quiet: bool = False) -> None:
        self.status.dead_letters += 1
        if self._observer is not None:
            self._observer.dead_letter(self.name, reason)
        if not quiet:
            log.error(
                "alert_dead_letter",
                destination=self.name,
                reason=reason,
                rule=alert.rule,
                key=alert.key,
                events=[e.id for e in alert.events],
            )

    def _depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self.name, self._queue.qsize())


def _backoff(attempt: int, retry_min_s: float, retry_max_s: float) -> float:
    """Full jitter: anywhere between the minimum and an exponentially growing cap."""
    cap = min(retry_max_s, retry_min_s * 2 ** min(attempt - 1, 30))
    return random.uniform(retry_min_s, cap)  # noqa: S311 (spreading retries, not secrecy)


# -- HTTP destinations: one sender, and a request per kind ---------------------------------


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One POST, ready to go."""

    url: str
    body: bytes
    headers: Mapping[str, str]


class HttpSender:
    """POSTs what ``render`` makes of an alert (called afresh for each attempt).

    One aiohttp session per destination, opened by ``open``. TLS verifies against the
    system's CAs, and also ``ca_file`` when one is given (a private CA for an in-house
    receiver; Slack keeps working with its public one). Redirects are not followed.
    """

    def __init__(
        self,
        render: Callable[[Alert], HttpRequest],
        *,
        timeout_s: float,
        ca_file: Path | None = None,
    ) -> None:
        self._render = render
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        context = ssl.create_default_context()
        if self._ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self._ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"{self._ca_file}: not a readable CA file ({exc})") from None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=2, ssl=context),
            timeout=self._timeout,
            skip_auto_headers=("User-Agent",),
        )

    async def send(self, alert: Alert) -> None:
        if self._session is None:
            raise DeliveryError("error", "the destination was not started")
        request = self._render(alert)
        try:
            async with self._session.post(
                request.url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return
                said = (await response.content.read(200)).decode("utf-8", "replace")
                retry_after = _seconds(response.headers.get("Retry-After"))
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            raise DeliveryError("timeout", type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError("connection", str(exc) or type(exc).__name__) from None
        detail = f"HTTP {status} {said.strip()}".strip()
        if status >= 500 or status == 429:
            raise DeliveryError(f"http_{status}", detail, retry_after=retry_after)
        raise DeliveryRejected(f"http_{status}", detail)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _seconds(value: str | None) -> float | None:
    """A Retry-After given in seconds (an HTTP date is ignored: backoff applies)."""
    if value is None or not (value.strip().isascii() and value.strip().isdigit()):
        return None
    return float(value.strip())


def _json(value: Any) -> bytes:
    # default=str: a detector's detail value orjson does not know still goes out, as text.
    return orjson.dumps(value, default=str)


def alert_id(alert: Alert) -> str:
    """A digest of the alert: equal for the same alert, on every retry and destination."""
    canonical = orjson.dumps(alert.as_json(), option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()[:32]


def alert_document(alert: Alert) -> dict[str, Any]:
    """The webhook's body and the stdout line, before encoding."""
    return {"schema": SCHEMA, "id": alert_id(alert), "alert": alert.as_json()}


def _signature(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def webhook_request(
    alert: Alert, *, url: str, secret: bytes, now: float | None = None
) -> HttpRequest:
    """The webhook's POST, signed at ``now`` (the current time when None)."""
    body = _json(alert_document(alert))
    timestamp = int(time.time() if now is None else now)
    return HttpRequest(
        url,
        body,
        {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            SIGNATURE_HEADER: f"t={timestamp},v1={_signature(secret, timestamp, body)}",
        },
    )


def verify_signature(
    secret: bytes, header: str, body: bytes, *, now: float, tolerance_s: float = 300
) -> bool:
    """Whether ``header`` (an ``X-Keyledger-Signature``) signs ``body`` with ``secret``, at a
    time within ``tolerance_s`` of ``now`` (either way): the receiver's side of the webhook.

    ``body`` is the request's raw bytes, before any JSON parsing. Several ``v1=`` values
    are accepted (any may match); other schemes are ignored.
    """
    timestamp: int | None = None
    candidates: list[bytes] = []
    for item in header.split(","):
        scheme, equals, value = item.strip().partition("=")
        if not equals:
            return False
        if scheme == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                return False
            if len(value) > 12:
                return False
            timestamp = int(value)
        elif scheme == "v1":
            candidates.append(value.encode())
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance_s:
        return False
    expected = _signature(secret, timestamp, body).encode()
    # Every candidate is compared, so the time taken says nothing about which one matched.
    return sum(hmac.compare_digest(expected, c) for c in candidates) > 0


def _slack_escape(text: str) -> str:
    # Slack reads &, < and > as markup: "<!channel>" in a key would ping a whole channel.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _event_ref(event: EventRef) -> str:
    if event.chain is not None and event.seq is not None:
        return f"{event.id} ({event.chain} #{event.seq})"
    return event.id


def _events_line(alert: Alert) -> str:
    count = len(alert.events)
    named = ", ".join(_event_ref(e) for e in alert.events[:_LISTED_EVENTS])
    line = f"{count} triggering event{'' if count == 1 else 's'}"
    if named:
        line += f": {named}"
    if count > _LISTED_EVENTS:
        line += f" and {count - _LISTED_EVENTS} more"
    if alert.suppressed:
        line += f"; {alert.suppressed} repeat{'' if alert.suppressed == 1 else 's'} held back"
    return line


def slack_request(alert: Alert, *, url: str) -> HttpRequest:
    """An incoming webhook's message: ``text`` (what notifications show) and two blocks."""
    headline = f"[{alert.severity.value.upper()}] {alert.rule}: {alert.summary}"
    context = (
        f"detector {alert.detector} · {alert.key} · {format_time(alert.time)} · "
        + _events_line(alert)
    )
    message = {
        "text": _slack_escape(headline),
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _slack_escape(headline)[:3000]},
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _slack_escape(context)[:3000]}],
            },
        ],
    }
    return HttpRequest(
        url, _json(message), {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
    )


def alertmanager_request(alert: Alert, *, url: str, generator_url: str | None) -> HttpRequest:
    """``POST {url}/api/v2/alerts`` with one alert.

    The shape is ``postableAlerts`` in Alertmanager's API v2 spec (prometheus/alertmanager,
    api/v2/openapi.yaml, basePath /api/v2/): an array of objects with ``labels`` (required)
    and ``annotations``, both string-to-string maps, ``startsAt`` / ``endsAt`` (date-time),
    and ``generatorURL`` (uri). ``endsAt`` is left out: an alert here is a moment, not a
    state keyledger will later resolve, so Alertmanager resolves it after its own
    ``resolve_timeout``. Labels identify (and group) the alert: rule, severity, detector,
    key; empty values are dropped, since Prometheus treats an empty label as absent.
    """
    labels = {
        "alertname": alert.rule,
        "severity": alert.severity.value,
        "detector": alert.detector,
        "key": alert.key,
        "service": "keyledger",
    }
    posted: dict[str, Any] = {
        "labels": {name: value for name, value in labels.items() if value},
        "annotations": {"summary": alert.summary, "description": _events_line(alert)},
        "startsAt": format_time(alert.time),
    }
    if generator_url is not None:
        posted["generatorURL"] = generator_url
    return HttpRequest(
        f"{url.rstrip('/')}/api/v2/alerts",
        _json([posted]),
        {"Content-Type": "application/json", "User-Agent": _USER_AGENT},
    )


# -- stdout -------------------------------------------------------------------------------


_Line = tuple[bytes, concurrent.futures.Future[None]]  # what to write; told when written


class StdoutSender:
    """One JSON line per alert (:func:`alert_document`) on standard output.

    Written by a daemon thread of its own: a log collector that stops reading fills the
    pipe, and that must stall neither the event loop nor the process's exit.
    """

    def __init__(self, *, stream: BinaryIO | None = None) -> None:
        self._stream = stream
        self._lines: queue.SimpleQueue[_Line | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def open(self) -> None:
        self._thread = threading.Thread(
            target=self._write_lines, name="keyledger-alerts-stdout", daemon=True
        )
        self._thread.start()

    async def send(self, alert: Alert) -> None:
        if self._thread is None:
            raise DeliveryError("error", "the destination was not started")
        written: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lines.put((_json(alert_document(alert)) + b"\n", written))
        try:
            await asyncio.wrap_future(written)
        except (OSError, ValueError) as exc:  # ValueError: stdout was closed
            raise DeliveryError("write", str(exc)) from None

    async def close(self) -> None:
        if self._thread is not None:
            self._lines.put(None)  # the thread ends after the lines queued before
            self._thread = None

    def _write_lines(self) -> None:
        while (work := self._lines.get()) is not None:
            line, written = work
            if not written.set_running_or_notify_cancel():
                continue  # given up on (timed out) before its turn
            try:
                stream = self._stream or sys.stdout.buffer
                stream.write(line)
                stream.flush()
            except BaseException as exc:  # handed to the awaiting coroutine
                written.set_exception(exc)
            else:
                written.set_result(None)


# -- building them from settings ----------------------------------------------------------


def _sender(settings: DestinationSettings, ca_file: Path | None) -> Sender:
    render: Callable[[Alert], HttpRequest]
    if isinstance(settings, WebhookSettings):
        render = functools.partial(webhook_request, url=settings.url, secret=settings.secret)
    elif isinstance(settings, SlackSettings):
        render = functools.partial(slack_request, url=settings.url)
    elif isinstance(settings, AlertmanagerSettings):
        render = functools.partial(
            alertmanager_request, url=settings.url, generator_url=settings.generator_url
        )
    else:
        return StdoutSender()
    return HttpSender(render, timeout_s=settings.timeout_s, ca_file=ca_file)


def build_destinations(
    settings: Iterable[DestinationSettings],
    *,
    observer: DeliveryObserver | None = None,
    ca_file: Path | None = None,
) -> list[Destination]:
    """One started-later destination per settings; ``ca_file`` is trusted by every HTTP one
    in addition to the system's CAs."""
    destinations: list[Destination] = []
    seen: set[str] = set()
    for each in settings:
        if each.name in seen:
            raise ValueError(f"two alert destinations are named {each.name!r}; rename one")
        seen.add(each.name)
        destinations.append(
            QueuedDestination(_sender(each, ca_file), settings=each, observer=observer)
        )
    return destinations


def settings_for(d: AlertDestinationConfig) -> DestinationSettings:
    """Settings for one destination as the config describes it, its URL and secret read
    from where the config says (a file or an env var). Raises ConfigError or ValueError."""
    kind = {
        "stdout": StdoutSettings,
        "alertmanager": AlertmanagerSettings,
        "slack": SlackSettings,
        "webhook": WebhookSettings,
    }[d.type]
    extra: dict[str, object] = {}
    if d.type != "stdout":
        extra["url"] = d.url or _secret(d, "url", d.url_env, d.url_file).decode()
    if d.type == "alertmanager":
        extra["generator_url"] = d.generator_url
    if d.type == "webhook":
        extra["secret"] = _secret(d, "secret", d.secret_env, d.secret_file)
    settings: DestinationSettings = kind(
        name=d.name,
        queue_size=d.queue_size,
        max_attempts=d.max_attempts,
        timeout_s=d.timeout_s,
        **extra,
    )
    return settings


def _secret(d: AlertDestinationConfig, what: str, env: str | None, file: Path | None) -> bytes:
    return require_key(
        env=env,
        file=file,
        setting=f"{d.name}'s {what}_file",
        missing=f"{d.name}: the env var {env} holds no {what}",
    )
