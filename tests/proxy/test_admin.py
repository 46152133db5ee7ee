"""The admin API's live audit stream: who may read it, what it sends, and how it treats readers.

Every test serves ``make_admin_app`` over a real socket, fed by a real ``AuditBroadcaster``
that a real ``Journal`` in ``tmp_path`` publishes to once events are durable, exactly as
``keyledger serve`` wires them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from keyledger.proxy.admin import make_admin_app
from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    Outcome,
    PrincipalInfo,
    ResourceInfo,
    Status,
)
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.segments import segment_path
from keyledger.proxy.audit.sinks import Shipper, ShippingSettings
from keyledger.proxy.audit.sinks.cursor import CursorStore
from keyledger.proxy.audit.sinks.s3 import S3Sink
from keyledger.proxy.audit.stream import AuditBroadcaster
from keyledger.proxy.config import S3SinkConfig
from keyledger.proxy.health import Check
from keyledger.proxy.metrics import SinkCollector

CHAIN = "node-1"
TOKEN = b"admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN.decode()}"}
STREAM = "/v1/audit/stream"

Client = TestClient[web.Request, web.Application]


class NotAsked:
    """Readiness for tests of the stream: never asked (tests/proxy/test_operate.py asks)."""

    async def checks(self) -> tuple[Check, ...]:
        raise AssertionError("these tests do not ask for readiness")


def access(
    principal: str = "svc-payments",
    secret: str = "prod/db/password",
    *,
    action: str = "read",
    effect: str = "allow",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent(
        type=EventType.ACCESS,
        principal=PrincipalInfo(id=principal, auth_method="sigv4"),
        action=action,
        resource=ResourceInfo(backend="aws", secret=secret),
        decision=DecisionInfo(effect=effect, rule="r", policy_hash="h", reason=""),
        outcome=Outcome(status=Status.SUCCESS if effect == "allow" else Status.DENIED),
        detail=detail,
    )


def auth_failure() -> AuditEvent:
    return AuditEvent(
        type=EventType.AUTH_FAILURE,
        principal=PrincipalInfo(id="AKIAUNKNOWN", auth_method="sigv4"),
        outcome=Outcome(status=Status.DENIED, code="invalid_signature"),
    )


def lifecycle() -> AuditEvent:
    return AuditEvent(type=EventType.LIFECYCLE, detail={"event": "start"})


@dataclass
class Admin:
    client: Client
    journal: Journal
    broadcaster: AuditBroadcaster
    directory: Path

    def lines(self) -> list[bytes]:
        """The journal's lines, as on disk, without their newlines."""
        return segment_path(self.directory, CHAIN, 1).read_bytes().splitlines()

    async def stream(self, query: str = "", **headers: str) -> Stream:
        response = await self.client.get(f"{STREAM}{query}", headers={**AUTH, **headers})
        assert response.status == 200, await response.text()
        return Stream(response)


@contextlib.asynccontextmanager
async def serving(
    aiohttp_client: AiohttpClient, tmp_path: Path, *, backlog: int = 10_000, fsync: bool = True
) -> AsyncIterator[Admin]:
    """The admin app on a real socket, streaming what a real journal makes durable."""
    directory = tmp_path / "audit"
    broadcaster = AuditBroadcaster(backlog=backlog)
    journal = Journal(
        directory=directory, chain_id=CHAIN, fsync=fsync, on_durable=broadcaster.publish
    )
    await journal.start()
    try:
        app = make_admin_app(
            token=TOKEN,
            broadcaster=broadcaster,
            journal_dir=directory,
            registry=CollectorRegistry(),
            readiness=NotAsked(),
        )
        client = await aiohttp_client(app)
        yield Admin(client, journal, broadcaster, directory)
    finally:
        await journal.close()


@pytest.fixture
async def admin(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Admin]:
    async with serving(aiohttp_client, tmp_path) as running:
        yield running


@dataclass(frozen=True)
class Frame:
    event: str
    id: str | None
    data: bytes

    @property
    def seq(self) -> int:
        seq: int = orjson.loads(self.data)["chain"]["seq"]
        return seq


class Stream:
    """A text/event-stream response, read one frame at a time (comments skipped)."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    async def frame(self, within: float = 5.0) -> Frame | None:
        """The next frame, or None at the end of the stream."""
        fields: dict[str, bytes] = {}
        async with asyncio.timeout(within):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.rstrip(b"\r\n")
                if not line:
                    if fields:
                        return Frame(
                            event=fields.get("event", b"message").decode(),
                            id=fields["id"].decode() if "id" in fields else None,
                            data=fields.get("data", b""),
                        )
                    continue
                if line.startswith(b":"):
                    continue  # a keep-alive comment
                name, _, value = line.partition(b":")
                fields[name.decode()] = value.removeprefix(b" ")

    async def audit_until(self, seq: int, within: float = 5.0) -> list[Frame]:
        """Audit frames up to the one with chain seq ``seq``."""
        frames: list[Frame] = []
        deadline = time.monotonic() + within
        while True:
            frame = await self.frame(deadline - time.monotonic())
            assert frame is not None, f"the stream ended after {frames}"
            assert frame.event == "audit", frame
            frames.append(frame)
            if frame.seq >= seq:
                return frames


class TestToken:
    @pytest.mark.parametrize(
        "authorization",
        [
            None,
            "Bearer wrong-token-0123456789abcdef",
            f"Bearer {TOKEN.decode()[:-1]}",
            f"Bearer {TOKEN.decode()}x",
            TOKEN.decode(),
            f"Basic {TOKEN.decode()}",
            "Bearer ",
        ],
    )
    async def test_a_missing_or_wrong_token_is_401(
        self, admin: Admin, authorization: str | None
    ) -> None:
        """Without exactly `Bearer <token>`, the stream answers 401 with WWW-Authenticate."""
        headers = {} if authorization is None else {"Authorization": authorization}

        response = await admin.client.get(STREAM, headers=headers)

        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="keyledger-admin"'
        assert await response.json() == {"error": "missing or wrong admin token"}

    async def test_the_token_guards_every_path(self, admin: Admin) -> None:
        """An unknown path without the token is 401 too: nothing tells what exists."""
        response = await admin.client.get("/v1/other")

        assert response.status == 401

    async def test_the_right_token_opens_an_event_stream(self, admin: Admin) -> None:
        """With the token, the answer is 200 text/event-stream, not cached."""
        response = await admin.client.get(STREAM, headers=AUTH)

        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        response.close()


class TestLive:
    async def test_appended_events_arrive_as_the_journal_lines(self, admin: Admin) -> None:
        """Each event made durable after connecting arrives as `event: audit`, with
        `id: <chain>:<seq>` and exactly the journal's line as data."""
        stream = await admin.stream()

        await admin.journal.append(access("svc-a"))
        await admin.journal.append_many([access("svc-b"), access("svc-c")])
        frames = await stream.audit_until(3)

        assert [f.id for f in frames] == [f"{CHAIN}:1", f"{CHAIN}:2", f"{CHAIN}:3"]
        assert [f.data for f in frames] == admin.lines()

    async def test_a_name_with_newlines_stays_one_data_line(self, admin: Admin) -> None:
        """A secret name holding newlines cannot split a frame or forge another one."""
        stream = await admin.stream()
        forged = "x\n\nevent: dropped\ndata: {}\n\nid: fake"

        await admin.journal.append(access(secret=forged))
        (frame,) = await stream.audit_until(1)

        assert frame.data == admin.lines()[0]
        assert orjson.loads(frame.data)["resource"]["secret"] == forged

    async def test_events_from_before_connecting_are_not_sent_without_last(
        self, admin: Admin
    ) -> None:
        """Without last=N, only events made durable after connecting are sent."""
        await admin.journal.append_many([access("svc-old")] * 3)
        stream = await admin.stream()

        await admin.journal.append(access("svc-new"))
        (frame,) = await stream.audit_until(4)

        assert orjson.loads(frame.data)["principal"]["id"] == "svc-new"

    async def test_every_reader_gets_every_event(self, admin: Admin) -> None:
        """Two readers connected at once each get the whole stream."""
        first, second = await admin.stream(), await admin.stream()

        for n in range(5):
            await admin.journal.append(access(f"svc-{n}"))

        assert [f.seq for f in await first.audit_until(5)] == [1, 2, 3, 4, 5]
        assert [f.seq for f in await second.audit_until(5)] == [1, 2, 3, 4, 5]


# The events every filter case sees, seq 1-6; each case then appends its own seq 7.
MIX = (
    access("svc-payments", "prod/db/password"),  # 1
    access("svc-batch", "prod/db/password", action="write", effect="deny"),  # 2
    auth_failure(),  # 3
    access("alice", "staging/api-key"),  # 4
    lifecycle(),  # 5
    access("svc-batch", "prod/cache/url", effect="deny"),  # 6
)


class TestFilters:
    @pytest.mark.parametrize(
        ("query", "last_event", "expected"),
        [
            ("?principal=svc-pay*", access("svc-payments"), [1, 7]),
            ("?principal=svc-*&principal=alice", access("alice"), [1, 2, 4, 6, 7]),
            ("?secret=prod/*", access(secret="prod/x"), [1, 2, 6, 7]),
            ("?secret=aws:prod/db/*", access(secret="prod/db/y"), [1, 2, 7]),
            ("?effect=deny", auth_failure(), [2, 3, 6, 7]),
            ("?effect=allow", access(), [1, 4, 7]),
            ("?type=auth_failure", auth_failure(), [3, 7]),
            ("?type=lifecycle,auth_failure", lifecycle(), [3, 5, 7]),
            ("?action=write", access(action="write"), [2, 7]),
            ("?principal=svc-*&effect=deny&type=access", access("svc-z", effect="deny"), [2, 6, 7]),
            ("?since=1h", access(), [1, 2, 3, 4, 5, 6, 7]),
        ],
    )
    async def test_the_query_filters_the_stream(
        self, admin: Admin, query: str, last_event: AuditEvent, expected: list[int]
    ) -> None:
        """Only events matching the query's filters are sent; kinds must all hold."""
        stream = await admin.stream(query)

        await admin.journal.append_many(MIX)
        await admin.journal.append(last_event)
        frames = await stream.audit_until(7)

        assert [f.seq for f in frames] == expected

    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("?effect=maybe", "'effect'"),
            ("?type=acess", "'type'"),
            ("?action=reed", "'action'"),
            ("?since=yesterday", "'since'"),
            ("?until=soon", "'until'"),
            ("?since=1h&until=2h", "'since'"),
            ("?since=1h&since=2h", "'since'"),
            ("?last=-1", "'last'"),
            ("?last=10001", "'last'"),
            ("?last=ten", "'last'"),
        ],
    )
    async def test_a_bad_query_is_400_naming_the_parameter(
        self, admin: Admin, query: str, parameter: str
    ) -> None:
        """A query the stream cannot honour is refused with JSON naming the parameter."""
        response = await admin.client.get(f"{STREAM}{query}", headers=AUTH)

        assert response.status == 400
        assert response.content_type == "application/json"
        body = await response.json()
        assert parameter in body["error"], body

    async def test_a_typo_gets_a_suggestion(self, admin: Admin) -> None:
        """A misspelt value is answered with the closest valid one."""
        response = await admin.client.get(f"{STREAM}?type=acess", headers=AUTH)

        assert "did you mean 'access'?" in (await response.json())["error"]


class TestReplay:
    async def test_last_n_replays_then_says_replayed_then_goes_live(self, admin: Admin) -> None:
        """last=3 sends the last three durable events, then `event: replayed`, then live ones."""
        await admin.journal.append_many([access(f"svc-{n}") for n in range(6)])
        stream = await admin.stream("?last=3")

        replayed = await stream.audit_until(6)
        marker = await stream.frame()
        await admin.journal.append(access("svc-live"))
        live = await stream.audit_until(7)

        assert [f.seq for f in replayed] == [4, 5, 6]
        assert [f.id for f in replayed] == [f"{CHAIN}:4", f"{CHAIN}:5", f"{CHAIN}:6"]
        assert [orjson.loads(f.data) for f in replayed] == [
            orjson.loads(line) for line in admin.lines()[3:6]
        ]
        assert marker == Frame(event="replayed", id=None, data=b"{}")
        assert [f.seq for f in live] == [7]
        assert live[0].data == admin.lines()[6]

    async def test_replay_applies_the_filters(self, admin: Admin) -> None:
        """last=2 with a filter replays the last two matching events, however far back."""
        await admin.journal.append_many(MIX)
        stream = await admin.stream("?last=2&effect=deny")

        replayed = await stream.audit_until(6)

        assert [f.seq for f in replayed] == [3, 6]
        assert (await stream.frame()) == Frame(event="replayed", id=None, data=b"{}")

    async def test_replay_of_an_empty_journal_says_replayed(self, admin: Admin) -> None:
        """With nothing to replay, `event: replayed` comes at once."""
        stream = await admin.stream("?last=5")

        assert await stream.frame() == Frame(event="replayed", id=None, data=b"{}")

    async def test_events_appended_during_the_replay_are_sent_once(self, admin: Admin) -> None:
        """Events appended while the replay is read are each sent exactly once, and none
        falls between the replay and the live stream."""
        await admin.journal.append_many([access(f"svc-{n}") for n in range(20)])
        done = asyncio.Event()

        async def keep_appending() -> None:
            n = 20
            while not done.is_set() or n < 60:
                await admin.journal.append(access(f"svc-{n}"))
                n += 1

        appender = asyncio.create_task(keep_appending())
        try:
            response = await admin.client.get(f"{STREAM}?last=5", headers=AUTH)
            assert response.status == 200
            stream = Stream(response)
            frames: list[Frame] = []
            while (frame := await stream.frame()) is not None and frame.event == "audit":
                frames.append(frame)
            assert frame is not None
            assert frame.event == "replayed"
            replayed_to = frames[-1].seq
        finally:
            done.set()
            await appender
        last = admin.journal.state.seq
        frames += await stream.audit_until(last)

        seqs = [f.seq for f in frames]
        assert seqs == list(range(seqs[0], last + 1))
        assert len(seqs) >= 5
        assert replayed_to < last  # live events followed the replay


class TestSlowReaders:
    async def test_a_burst_past_the_backlog_drops_the_reader_not_the_journal(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        """More events at once than the backlog holds: the append returns promptly, the
        reader is told `event: dropped` with the reason, and its stream ends."""
        async with serving(aiohttp_client, tmp_path, backlog=10) as admin:
            stream = await admin.stream()

            started = time.monotonic()
            await admin.journal.append_many([access(f"svc-{n}") for n in range(30)])
            appended_in = time.monotonic() - started
            frame = await stream.frame()
            end = await stream.frame()

            assert appended_in < 1
            assert frame is not None
            assert frame.event == "dropped"
            assert orjson.loads(frame.data) == {
                "reason": "the reader fell more than 10 events behind"
            }
            assert end is None
            assert admin.broadcaster.dropped == 1
            # The journal went on regardless, and so do new readers.
            fresh = await admin.stream()
            await admin.journal.append(access("svc-after"))
            assert [f.seq for f in await fresh.audit_until(31)] == [31]

    async def test_a_stalled_reader_never_slows_appends_and_is_dropped(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        """A reader that stops reading (its socket full) never makes an append wait; a
        reader that keeps up gets every event; the stalled one, once it reads again, gets
        what was sent, then `event: dropped`, then the end of the stream."""
        async with serving(aiohttp_client, tmp_path, backlog=20, fsync=False) as admin:
            stalled = stalled_reader(admin.client)
            healthy = await admin.stream()
            received: list[Frame] = []

            async def read_healthy() -> None:
                while len(received) < 400:
                    frame = await healthy.frame(within=20)
                    assert frame is not None
                    assert frame.event == "audit", frame
                    received.append(frame)

            reading = asyncio.create_task(read_healthy())
            await asyncio.sleep(0.05)  # the stalled request is being served
            slowest = 0.0
            started = time.monotonic()
            padding = "p" * 32_000
            for n in range(400):
                before = time.monotonic()
                await admin.journal.append(access(f"svc-{n}", detail={"padding": padding}))
                slowest = max(slowest, time.monotonic() - before)
                await asyncio.sleep(0)  # let the stream handlers run, as requests would
            total = time.monotonic() - started
            await asyncio.wait_for(reading, 20)

            assert slowest < 0.5
            assert total < 10
            assert [f.seq for f in received] == list(range(1, 401))

            body = await read_to_end(stalled)
            frames = body.split(b"\n\n")
            assert frames[-1] == b""
            last = frames[-2]
            assert last.startswith(b"event: dropped\ndata: "), last[:200]
            assert b"fell more than 20 events behind" in last
            audit = [f for f in frames[:-2] if f.startswith(b"id: ")]
            assert all(f.split(b"\n")[1] == b"event: audit" for f in audit)
            assert len(audit) < 400
            seqs = [int(f.split(b"\n")[0].rpartition(b":")[2]) for f in audit]
            assert seqs == list(range(1, len(seqs) + 1))
            assert admin.broadcaster.dropped == 1


def stalled_reader(client: Client) -> socket.socket:
    """A connection that asks for the stream and then reads nothing (a tiny receive buffer,
    so the server's writes back up quickly)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert client.port is not None
    sock.connect(("127.0.0.1", client.port))
    request = (
        f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN.decode()}"
        "\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(request.encode())
    sock.setblocking(False)
    return sock


async def read_to_end(sock: socket.socket) -> bytes:
    """The body (de-chunked) of the response on ``sock``, read until the server closes it."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        async with asyncio.timeout(20):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"transfer-encoding: chunked" in head.lower(), head
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    break
                body += await reader.readexactly(size)
                assert await reader.readexactly(2) == b"\r\n"
            assert await reader.read() == b"\r\n"
    finally:
        writer.close()
    return bytes(body)


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class TestSinks:
    async def test_metrics_and_sinks_show_a_sink_falling_behind(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        """While a sink's endpoint refuses connections, /v1/sinks and /metrics show its lag,
        failures and alarm."""
        directory = tmp_path / "audit"
        journal = Journal(directory=directory, chain_id=CHAIN)
        await journal.start()
        unreachable = S3SinkConfig(
            name="archive",
            bucket="archive",
            region="us-east-1",
            endpoint_url=f"http://127.0.0.1:{closed_port()}",
            static_credentials=("test", "test"),
        )
        shipper = Shipper(
            sink=S3Sink(unreachable),
            journal=journal,
            cursors=CursorStore(directory),
            settings=ShippingSettings(
                max_wait_s=0.0,
                retry_min_s=0.01,
                retry_max_s=0.02,
                lag_alarm_events=3,
                drain_s=0.1,
            ),
        )
        await shipper.check(1)
        shipper.start()
        try:
            registry = CollectorRegistry()
            registry.register(SinkCollector((shipper,)))
            app = make_admin_app(
                token=TOKEN,
                broadcaster=AuditBroadcaster(),
                journal_dir=directory,
                registry=registry,
                readiness=NotAsked(),
                shippers=(shipper,),
            )
            client = await aiohttp_client(app)
            for n in range(5):
                await journal.append(access(f"svc-{n}"))
            deadline = time.monotonic() + 5
            while not shipper.status.alarm:
                assert time.monotonic() < deadline, shipper.status
                await asyncio.sleep(0.01)

            status = await (await client.get("/v1/sinks", headers=AUTH)).json()
            metrics = await (await client.get("/metrics", headers=AUTH)).text()
            refused = await client.get("/metrics")
        finally:
            await shipper.stop()
            await journal.close()

        (sink,) = status["sinks"]
        assert sink["sink"] == "archive"
        assert sink["lag_events"] == 5
        assert sink["shipped_seq"] == 0
        assert sink["alarm"] is True
        assert sink["ready"] is False  # its start-up check never got an answer
        assert sink["failures"] >= 1
        assert "Could not connect" in sink["last_error"]
        assert 'keyledger_sink_lag_events{sink="archive"} 5.0' in metrics
        assert 'keyledger_sink_lag_alarm{sink="archive"} 1.0' in metrics
        assert 'keyledger_sink_shipped_events_total{sink="archive"} 0.0' in metrics
        lag_seconds = next(
            line for line in metrics.splitlines() if line.startswith("keyledger_sink_lag_seconds")
        )
        assert float(lag_seconds.split()[-1]) > 0
        assert refused.status == 401


class TestShutdown:
    async def test_shutdown_ends_open_streams_promptly(self, admin: Admin) -> None:
        """Stopping the admin server ends every open stream at once instead of waiting on
        idle readers until the shutdown timeout."""
        first, second = await admin.stream(), await admin.stream("?last=1")
        assert await second.frame() == Frame(event="replayed", id=None, data=b"{}")

        started = time.monotonic()
        await admin.client.server.close()
        closed_in = time.monotonic() - started

        assert closed_in < 2
        assert await first.frame(within=2) is None
        assert await second.frame(within=2) is None
        # Closing the streams did not touch the journal.
        await admin.journal.append(access())
        assert admin.journal.state.seq == 1
