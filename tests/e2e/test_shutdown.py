"""SIGTERM and SIGINT: `keyledger serve` stops gracefully, under load and mid-request.

The promise: on SIGTERM (or SIGINT) keyledger stops accepting connections, lets the
requests it is handling finish (bounded by ``limits.shutdown_timeout_s``), seals the
journal with a final checkpoint after a lifecycle ``stop`` event, and exits 0. A client
therefore sees, for every request, either its answer or a connection that keyledger never
took up; never a cut answer, and never an answer that is missing from the journal.

Which requests keyledger "took up" is decided by the journal, not guessed from timing:
each request carries a token of ours in its User-Agent (not signed by SigV4, recorded by
keyledger in every event), so a request whose connection failed must have no event at all.

Two of these caught aiohttp's own graceful shutdown out (it stopped reading the body of a
request already taken up, and waited twice the bound); keyledger now drains in-flight
requests itself (``proxy.inflight.InFlight``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.config
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from tests.conftest import REGION, journal_events
from tests.e2e.test_cli_serve import ServedProxy, start_proxy, verify

SECRET = "app/shutdown/value"
THREADS = 12
# Successful reads before the signal: the load is in full swing when it arrives.
WARM = 300
TOKEN_MARK = "shutdown-test/"
# limits.shutdown_timeout_s where a test sets it: short, so that a shutdown that uses it all
# up shows, and costs seconds rather than the default 20.
GRACE = 3.0
# One attempt per call (botocore's ``max_attempts: 1`` would still retry once, hiding a
# dropped connection behind a refused second attempt), with timeouts of its own.
ONE_ATTEMPT = botocore.config.Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"total_max_attempts": 1, "mode": "standard"},
)


# -- clients -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """What one GetSecretValue call through keyledger came to, as its client saw it."""

    token: str
    started: float
    ended: float
    # value: the secret; aws_error: a parsed AWS error; refused: no connection could be
    # made; dropped: connected, but closed before any answer; broken: anything else (a
    # truncated or garbled answer, a timeout).
    kind: str
    detail: str = ""
    request_id: str | None = None


class TaggedClient:
    """A boto3 client of its own whose every call carries a fresh token in its User-Agent."""

    def __init__(self, served: ServedProxy, name: str) -> None:
        self.client = served.client(config=ONE_ATTEMPT)
        self._name = name
        self._numbers = itertools.count()
        self._token = ""
        self.client.meta.events.register("before-send.secrets-manager.*", self._tag)

    def _tag(self, request: Any, **_: Any) -> None:
        # After signing: SigV4 leaves the User-Agent out of what it signs.
        agent = request.headers.get("User-Agent", b"")
        if isinstance(agent, bytes):
            agent = agent.decode()
        request.headers["User-Agent"] = f"{agent} {TOKEN_MARK}{self._token}"

    def get(self, secret_id: str, value: str) -> Call:
        self._token = token = f"{self._name}-{next(self._numbers)}"
        started = time.monotonic()
        try:
            response = self.client.get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            code = exc.response.get("Error", {}).get("Code")
            well_formed = bool(code) and bool(meta.get("HTTPStatusCode"))
            return Call(
                token,
                started,
                time.monotonic(),
                "aws_error" if well_formed else "broken",
                f"{code} {meta.get('HTTPStatusCode')}: {exc}",
                meta.get("RequestId"),
            )
        except EndpointConnectionError as exc:
            return Call(token, started, time.monotonic(), "refused", str(exc))
        except ConnectionClosedError as exc:
            cause = exc.kwargs.get("error")
            return Call(token, started, time.monotonic(), "dropped", f"{exc} ({cause!r})")
        except Exception as exc:  # ResponseParserError, IncompleteRead, ReadTimeoutError...
            return Call(token, started, time.monotonic(), "broken", f"{type(exc).__name__}: {exc}")
        got = response.get("SecretString")
        request_id = response["ResponseMetadata"].get("RequestId")
        if got != value:
            return Call(token, started, time.monotonic(), "broken", f"wrong value {got!r}")
        return Call(token, started, time.monotonic(), "value", request_id=request_id)


@dataclass
class Load:
    """Client threads reading one secret in a loop until their connection fails."""

    served: ServedProxy
    value: str
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        # Clients are built here: the default boto3 session that builds them is not
        # thread-safe.
        for number in range(THREADS):
            client = TaggedClient(self.served, f"t{number}")
            thread = threading.Thread(target=self._read, args=(client,), daemon=True)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def _read(self, client: TaggedClient) -> None:
        while not self.stop.is_set():
            call = client.get(SECRET, self.value)
            with self._lock:
                self.calls.append(call)
            if call.kind not in ("value", "aws_error"):
                return  # the connection failed: this client is done

    def successes(self) -> int:
        with self._lock:
            return sum(call.kind == "value" for call in self.calls)

    def running(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(40)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"


# -- a slow store --------------------------------------------------------------------------


class HoldingForwarder:
    """A TCP forwarder in front of the store that can hold back the store's answers.

    Requests go through at once (the store does the work); after ``hold``, the store's
    answers wait until ``release``. It counts the GetSecretValue requests it
    has passed on, so a test knows when they are in flight inside keyledger.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None
        assert parts.port is not None
        self._upstream = (parts.hostname, parts.port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._released: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self.seen = 0  # GetSecretValue requests passed on (written by the loop thread only)
        self.url = ""

    def __enter__(self) -> HoldingForwarder:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def hold(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_hold(True), self._loop).result(10)

    def release(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_hold(False), self._loop).result(10)

    async def _set_hold(self, on: bool) -> None:
        assert self._released is not None
        if on:
            self._released.clear()
        else:
            self._released.set()

    async def _start(self) -> None:
        self._released = asyncio.Event()
        self._released.set()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._server is not None
        assert self._released is not None
        self._server.close()
        self._released.set()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._released is not None
        released = self._released
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return

        async def requests() -> None:
            while data := await reader.read(65536):
                self.seen += data.count(b"secretsmanager.GetSecretValue")
                up_writer.write(data)
                await up_writer.drain()

        async def answers() -> None:
            while data := await up_reader.read(65536):
                await released.wait()
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(answers())]
        try:
            # Either side closing ends the pair, as a TCP proxy does.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            writer.close()
            up_writer.close()


# -- helpers -------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    assert wait_until(condition, timeout), f"timed out waiting for {what}"


def refuses_connections(served: ServedProxy) -> bool:
    port = urlsplit(served.url).port
    assert port is not None
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_exit(served: ServedProxy, timeout: float) -> tuple[int | None, float]:
    """The exit code once keyledger exits (None if it did not within ``timeout``), and when."""
    deadline = time.monotonic() + timeout
    while served.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return served.process.poll(), time.monotonic()


def log_events(log: str) -> list[str]:
    """The ``event`` of every JSON log line keyledger wrote."""
    events = []
    for line in log.splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict) and "event" in record:
                events.append(str(record["event"]))
    return events


def token_of(event: dict[str, Any]) -> str | None:
    agent = (event.get("request") or {}).get("user_agent") or ""
    _, mark, token = agent.rpartition(TOKEN_MARK)
    return token if mark else None


def reads_by_token(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Our GetSecretValue access events, by the token of the call that made each one."""
    reads: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["type"] != "access" or event["request"]["operation"] != "GetSecretValue":
            continue
        token = token_of(event)
        assert token is not None, event
        assert token not in reads, f"two events for one call (a retry?): {event}"
        reads[token] = event
    return reads


def assert_sealed_and_verifies(served: ServedProxy) -> list[dict[str, Any]]:
    """The chain verifies under --strict, ending ``stop`` then its sealing checkpoint."""
    public_key = served.journal_dir.parent / "keys" / "checkpoint.pub"
    result = verify(served.journal_dir, "--public-key", str(public_key), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact" in result.stdout, result.stdout
    events = journal_events(served.journal_dir)
    assert [e["chain"]["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "checkpoint", events[-1]
    seals = events[-1]["detail"]["seals"]
    assert seals == {"seq": events[-2]["chain"]["seq"], "hash": events[-2]["chain"]["hash"]}
    assert events[-2]["type"] == "lifecycle", events[-2]
    assert events[-2]["detail"]["event"] == "stop", events[-2]
    stages = [e["detail"]["event"] for e in events if e["type"] == "lifecycle"]
    assert stages.count("start") == 1
    assert stages.count("stop") == 1
    return events


def assert_stopped_cleanly(log: str) -> None:
    said = log_events(log)
    for event in ("stopping", "journal_closed", "stopped"):
        assert event in said, f"no {event!r} in the log:\n{log[-3000:]}"
    assert said.index("stopping") < said.index("journal_closed") < said.index("stopped")
    assert "request_failed" not in said, log[-3000:]


@contextlib.contextmanager
def proxy(tmp_path: Path, moto_url: str, **extra: Any) -> Iterator[ServedProxy]:
    """keyledger as a real process, never left running."""
    served = start_proxy(tmp_path, moto_url, extra=extra or None)
    try:
        yield served
    finally:
        if served.process.poll() is None:
            served.process.kill()
        served.process.wait(30)


# -- tests ---------------------------------------------------------------------------------


def test_sigterm_under_load_answers_every_accepted_request(
    tmp_path: Path, moto_url: str, store: Any
) -> None:
    """SIGTERM amid 12 clients reading in a loop: every call keyledger took up is answered
    in full and recorded; the others are refused a connection; exit 0, sealed journal."""
    value = f"under-load-{secrets.token_hex(8)}"
    store.create_secret(Name=SECRET, SecretString=value)
    with proxy(tmp_path, moto_url, limits={"shutdown_timeout_s": GRACE}) as served:
        load = Load(served, value)
        load.start()
        try:
            wait_for(lambda: load.successes() >= WARM, f"{WARM} reads", timeout=60)
            signalled = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            code, exited = wait_exit(served, timeout=2 * GRACE + 20)
            # Every client keeps calling until keyledger no longer takes its connections.
            turned_away = wait_until(lambda: load.running() == 0, timeout=20)
        finally:
            load.join()
        log = served.read_log()

    calls = sorted(load.calls, key=lambda c: c.ended)
    kinds = {kind: sum(c.kind == kind for c in calls) for kind in sorted({c.kind for c in calls})}
    answered_after = sum(c.kind == "value" and c.ended > signalled for c in calls)
    # Dropped only once the grace period ran out: keyledger held these connections open.
    held = [c for c in calls if c.kind == "dropped" and c.ended - signalled > GRACE - 0.25]
    note = (
        f"{kinds}, {len(held)} held until the grace period ran out; {answered_after} answered "
        f"after SIGTERM; exit {code} {exited - signalled:.2f}s after it"
    )
    print(note)  # what -s shows
    note += f"; log:\n{log[-3000:]}"
    assert turned_away, note
    assert code == 0, note
    assert held == [], note
    # Nothing was slow: the grace period was not needed.
    assert exited - signalled < GRACE, note

    # Every answer arrived whole: a value or a parsed AWS error, nothing cut or garbled.
    assert [c for c in calls if c.kind == "broken"] == [], note
    # No client failed before the signal; after it, each one ended turned away.
    failed = [c for c in calls if c.kind not in ("value", "aws_error")]
    assert all(c.ended > signalled for c in failed), note
    assert kinds.get("refused", 0) + kinds.get("dropped", 0) == THREADS, note
    # The signal came with requests in flight, and they were answered.
    assert answered_after > 0, note

    events = assert_sealed_and_verifies(served)
    reads = reads_by_token(events)
    stop_seq = events[-2]["chain"]["seq"]
    for call in calls:
        event = reads.get(call.token)
        if call.kind == "value":
            # Answered, so recorded first, with the request id the client was given.
            assert event is not None, f"{call} is not in the journal"
            assert event["outcome"]["status"] == "success", event
            assert event["request"]["id"] == call.request_id, (call, event)
            assert event["chain"]["seq"] < stop_seq
        elif call.kind == "aws_error":
            assert event is None or event["request"]["id"] == call.request_id, (call, event)
        else:
            # Its connection failed: keyledger must never have taken it up. A call that
            # was recorded but not answered would be a request cut off by the shutdown.
            assert event is None, f"{call} was taken up but never answered: {event}"
    answered = {c.token for c in calls if c.kind in ("value", "aws_error")}
    assert set(reads) <= answered, f"recorded but never answered: {set(reads) - answered}"
    successes = [e for e in reads.values() if e["outcome"]["status"] == "success"]
    assert len(successes) == kinds["value"]

    assert_stopped_cleanly(log)


@pytest.mark.parametrize(
    ("shutdown_timeout_s", "release_after_stop", "on_time"),
    [
        pytest.param(None, True, False, id="finished-within-the-grace-period"),
        pytest.param(0.5, False, False, id="cut-off-after-the-grace-period"),
        pytest.param(2.0, False, True, id="cut-off-when-the-grace-period-ends"),
    ],
)
def test_in_flight_slow_requests_finish_after_sigterm(
    tmp_path: Path,
    moto_url: str,
    store: Any,
    shutdown_timeout_s: float | None,
    release_after_stop: bool,
    on_time: bool,
) -> None:
    """Reads held up in the store when SIGTERM arrives: keyledger stops taking connections
    at once, and answers them when the store does, within the grace period. Past it
    (0.5 s here, with the store still silent), they are cut off: no answer, nothing
    recorded as served but a cut_off event naming them, and still exit 0 with a sealed
    journal."""
    value = f"in-flight-{secrets.token_hex(8)}"
    store.create_secret(Name=SECRET, SecretString=value)
    in_flight = 6
    with HoldingForwarder(moto_url) as store_link:
        extra: dict[str, Any] = {
            "backends": {"aws": {"type": "aws", "region": REGION, "endpoint_url": store_link.url}}
        }
        if shutdown_timeout_s is not None:
            extra["limits"] = {"shutdown_timeout_s": shutdown_timeout_s}
        # The pool last: on a failure keyledger is killed first, so no call waits on it.
        with ThreadPoolExecutor(in_flight) as pool, proxy(tmp_path, moto_url, **extra) as served:
            warm = TaggedClient(served, "warm").get(SECRET, value)
            assert warm.kind == "value", warm
            clients = [TaggedClient(served, f"slow{n}") for n in range(in_flight)]
            late = TaggedClient(served, "late")
            store_link.hold()
            seen = store_link.seen
            futures: list[Future[Call]] = [pool.submit(c.get, SECRET, value) for c in clients]
            wait_for(lambda: store_link.seen - seen >= in_flight, "the reads to reach the store")
            assert not any(f.done() for f in futures)

            signalled = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            wait_for(lambda: refuses_connections(served), "keyledger to stop listening")
            turned_away = late.get(SECRET, value)
            if release_after_stop:
                assert served.process.poll() is None, "exited with requests in flight"
                store_link.release()
            code, exited = wait_exit(served, timeout=30)
            store_link.release()
            calls = [f.result(timeout=30) for f in futures]
            log = served.read_log()

    note = f"{[(c.kind, c.detail) for c in calls]}; exit {code} after {exited - signalled:.2f}s"
    print(note)  # what -s shows
    note += f"; log:\n{log[-3000:]}"
    assert turned_away.kind == "refused", (turned_away, note)
    assert code == 0, note
    events = assert_sealed_and_verifies(served)
    reads = reads_by_token(events)
    assert reads[warm.token]["outcome"]["status"] == "success"
    if release_after_stop:
        # Answered in full after the signal, and recorded before the journal closed.
        assert [c.kind for c in calls] == ["value"] * in_flight, note
        assert all(c.ended > signalled for c in calls)
        for call in calls:
            event = reads[call.token]
            assert event["outcome"]["status"] == "success", event
            assert event["request"]["id"] == call.request_id
        assert exited - signalled < 10, note
    else:
        # The grace period ran out with the store still silent: cut off once it was over,
        # not before and not hung; nothing was served, so nothing is recorded as served.
        assert shutdown_timeout_s is not None
        assert [c.kind for c in calls] == ["dropped"] * in_flight, note
        assert all(c.ended - signalled >= shutdown_timeout_s for c in calls), note
        assert exited - signalled < 2 * shutdown_timeout_s + 3, note
        cut_off = [reads[c.token] for c in calls if c.token in reads]
        assert [e for e in cut_off if e["outcome"]["status"] == "success"] == [], cut_off
        # And the record says so: one cut_off event names each call left unanswered.
        (record,) = [e for e in events if (e.get("detail") or {}).get("event") == "cut_off"]
        assert record["detail"]["count"] == in_flight
        named = [token_of({"request": r}) for r in record["detail"]["requests"]]
        assert sorted(named) == sorted(c.token for c in calls)  # type: ignore[type-var]
    assert_stopped_cleanly(log)
    if on_time:
        # The grace period is the bound the deployments budget for (terminationGracePeriod,
        # TimeoutStopSec): the calls are cut off when it ends, and keyledger exits soon after.
        assert shutdown_timeout_s is not None
        assert all(c.ended - signalled < shutdown_timeout_s + 1 for c in calls), note
        assert exited - signalled < shutdown_timeout_s + 1.5, note


def signed_read(served: ServedProxy, token: str) -> tuple[bytes, bytes]:
    """A SigV4-signed GetSecretValue as raw HTTP: its head (asking for 100-continue) and
    its body, so that a test can send them apart, as a slow client would."""
    body = orjson.dumps({"SecretId": SECRET})
    request = AWSRequest(
        method="POST",
        url=served.url + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "secretsmanager.GetSecretValue",
        },
    )
    credentials = Credentials(served.key_id, served.secret)
    SigV4Auth(credentials, "secretsmanager", REGION).add_auth(request)
    headers = {
        **dict(request.headers.items()),
        "Host": urlsplit(served.url).netloc,
        "Content-Length": str(len(body)),
        "Expect": "100-continue",  # neither it nor the User-Agent is signed
        "User-Agent": f"raw {TOKEN_MARK}{token}",
    }
    head = "POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode(), body


def send_head(served: ServedProxy, head: bytes) -> socket.socket:
    """A connection on which keyledger has taken up a request and waits for its body."""
    port = urlsplit(served.url).port
    assert port is not None
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head)
    interim = b""
    while not interim.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            pytest.fail(f"closed instead of 100 Continue: {interim!r}")
        interim += chunk
    if not interim.startswith(b"HTTP/1.1 100"):
        pytest.fail(f"no 100 Continue: {interim!r}")
    return sock


def finish(sock: socket.socket, body: bytes) -> tuple[str, str]:
    """Send the body; what came back: ("value", the secret) or ("dropped", how)."""
    with sock:
        try:
            sock.sendall(body)
            response = http.client.HTTPResponse(sock, method="POST")
            response.begin()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return "dropped", repr(exc)
    if response.status != 200:
        return "error", f"{response.status} {data!r}"
    return "value", str(orjson.loads(data)["SecretString"])


def test_a_request_body_arriving_after_sigterm_is_read(
    tmp_path: Path, moto_url: str, store: Any
) -> None:
    """A call keyledger has taken up (it answered 100 Continue) whose body arrives after
    SIGTERM, as a slow client's does, is read and answered within the grace period."""
    value = f"slow-body-{secrets.token_hex(8)}"
    store.create_secret(Name=SECRET, SecretString=value)
    with proxy(tmp_path, moto_url, limits={"shutdown_timeout_s": GRACE}) as served:
        # The same call in one go, first: signing and 100-continue work through keyledger.
        head, body = signed_read(served, "control")
        control = finish(send_head(served, head), body)
        if control != ("value", value):
            pytest.fail(f"the control call failed: {control}")

        head, body = signed_read(served, "slow")
        sock = send_head(served, head)
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        if not wait_until(lambda: refuses_connections(served), timeout=20):
            pytest.fail("keyledger did not stop listening")
        # The body arrives well into the shutdown, well within the grace period: a slow
        # client, not a synchronisation.
        time.sleep(0.3)
        outcome = finish(sock, body)
        answered = time.monotonic()
        code, exited = wait_exit(served, timeout=2 * GRACE + 20)
        log = served.read_log()

    note = f"{outcome} {answered - signalled:.2f}s after SIGTERM; exit {code} after "
    note += f"{exited - signalled:.2f}s"
    print(note)  # what -s shows
    assert outcome == ("value", value), note
    assert answered - signalled < GRACE, note
    assert code == 0, note + log[-3000:]
    reads = reads_by_token(assert_sealed_and_verifies(served))
    assert set(reads) == {"control", "slow"}
    assert reads["slow"]["outcome"]["status"] == "success"
    assert_stopped_cleanly(log)


def test_sigint_is_the_same(tmp_path: Path, moto_url: str, store: Any) -> None:
    """Ctrl-C stops keyledger as SIGTERM does: exit 0, the journal sealed and verified."""
    value = f"sigint-{secrets.token_hex(8)}"
    store.create_secret(Name=SECRET, SecretString=value)
    with proxy(tmp_path, moto_url) as served:
        client = TaggedClient(served, "c")
        calls = [client.get(SECRET, value) for _ in range(5)]
        served.process.send_signal(signal.SIGINT)
        code, _ = wait_exit(served, timeout=30)
        log = served.read_log()
    assert code == 0, log[-3000:]
    assert [c.kind for c in calls] == ["value"] * 5
    events = assert_sealed_and_verifies(served)
    reads = reads_by_token(events)
    assert {t: e["request"]["id"] for t, e in reads.items()} == {
        c.token: c.request_id for c in calls
    }
    assert_stopped_cleanly(log)
