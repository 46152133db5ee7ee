"""The fleet-wide follower: the copies the real S3 and CloudWatch sinks ship to a real moto
server, and journal folders written by the real journal, read as history and then
followed while more arrives; the reorder window and the repeat filter on their own.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from aiohttp import web

from keyledger.alerts.engine import AlertEngine
from keyledger.alerts.follow import Follower, Polled, Reorder, Seen
from keyledger.alerts.model import Alert
from keyledger.alerts.rules import AlertRules, load_alert_files
from keyledger.alerts.sources import CloudWatchSource, JournalSource, S3Source, SourceError
from keyledger.alerts.streams import AdminStream
from keyledger.proxy.audit.events import AuditEvent, format_time
from keyledger.proxy.audit.filters import EventFilter
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.sinks import Batch
from keyledger.proxy.audit.sinks.base import Line, parse_line
from keyledger.proxy.audit.sinks.cloudwatch import CloudWatchSink
from keyledger.proxy.audit.sinks.s3 import S3Sink
from keyledger.proxy.config import CloudWatchSinkConfig, S3SinkConfig
from tests.audit_records import access_event
from tests.conftest import listen

REGION = "us-east-1"
# Recent enough for CloudWatch Logs (it refuses events older than 14 days).
T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)

BURST = """
    version: 1
    rules:
      - id: mallory-denied
        severity: high
        suppress: 0s
        deny_burst: {count: 4, window: 1m}
"""


def rules_in(tmp_path: Path, text: str = BURST) -> AlertRules:
    path = tmp_path / "rules" / "burst.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return load_alert_files([path])


def denied(seconds: float, principal: str = "mallory") -> AuditEvent:
    return access_event(
        at=T0 + timedelta(seconds=seconds), principal=principal, secret="prod/db", effect="deny"
    )


def allowed(seconds: float) -> AuditEvent:
    return access_event(at=T0 + timedelta(seconds=seconds), principal="app")


async def journaled(folder: Path, chain: str, events: Sequence[AuditEvent]) -> None:
    """``events`` appended to ``chain`` by a real journal (no checkpoints: every line
    is one of the events, in the order given)."""
    journal = Journal(directory=folder, chain_id=chain, fsync=False)
    await journal.start()
    try:
        for each in events:
            await journal.append(each)
    finally:
        await journal.close()


class Chains:
    """Each chain's events journaled by the real journal, handed out as sink batches."""

    def __init__(self, tmp_path: Path, **events: Sequence[AuditEvent]) -> None:
        folder = tmp_path / "journal"
        self.lines: dict[str, list[Line]] = {}
        for chain, chain_events in events.items():
            asyncio.run(journaled(folder, chain, chain_events))
            raw = b"".join(p.read_bytes() for p in sorted(folder.glob(f"{chain}.*.jsonl")))
            self.lines[chain] = [parse_line(line) for line in raw.splitlines()]
            assert len(self.lines[chain]) == len(chain_events)

    def batch(self, chain: str, first: int, last: int) -> Batch:
        """The chain's events ``first`` to ``last`` (seqs, from 1, inclusive)."""
        return Batch(chain, tuple(self.lines[chain][first - 1 : last]))


@pytest.fixture
def s3_sink(bucket: str) -> Iterator[S3Sink]:
    sink = S3Sink(S3SinkConfig(name="s3", bucket=bucket, prefix="prod/", region=REGION))
    yield sink
    asyncio.run(sink.close())


class Run:
    """A follower running on this loop, its alerts collected as they fire."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower
        self.live: list[Alert] = []
        self.history: list[Alert] = []
        self.following = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def on_alert(self, alert: Alert, live: bool) -> None:
        (self.live if live else self.history).append(alert)

    async def wait_for(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                assert self.task is not None
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def following(
    sources: Sequence[Any], rules: AlertRules, *, since: datetime, lag: float = 0.3
) -> Run:
    """A follower over ``sources`` started, its history read; the caller stops it."""
    run: Run
    follower = Follower(
        AlertEngine(rules),
        sources,
        on_alert=lambda alert, live: run.on_alert(alert, live),
        lag=timedelta(seconds=lag),
        on_following=lambda: run.following.set(),
    )
    run = Run(follower)
    run.task = asyncio.create_task(follower.run(EventFilter(since=since)))
    await run.wait_for(run.following.is_set)
    return run


def polled(source: Any) -> Polled:
    return Polled(source, interval_s=0.05)


def refs(alert: Alert) -> list[tuple[str | None, int | None]]:
    return [(e.chain, e.seq) for e in alert.events]


class TestS3:
    def test_history_then_new_objects_fire_once(
        self, tmp_path: Path, bucket: str, s3_sink: S3Sink
    ) -> None:
        """A burst in the shipped history is shown, not sent; one spread over two chains
        while following fires once, live, naming events of both; an object sent again and
        one cut differently (at-least-once shipping) repeat nothing."""
        chains = Chains(
            tmp_path,
            **{
                "node-1": [denied(0), denied(2), allowed(30), denied(60), denied(64)],
                "node-2": [denied(1), denied(3), denied(62), denied(66)],
            },
        )

        async def scenario() -> Run:
            # History: the first burst (0-3s), both chains, and node-1's allowed read.
            await s3_sink.send(chains.batch("node-1", 1, 3))
            await s3_sink.send(chains.batch("node-2", 1, 2))
            run = await following([polled(S3Source(f"s3://{bucket}/prod"))], rules, since=T0)
            assert len(run.history) == 1
            assert run.live == []
            # While following: the second burst, 60-66s, in objects of their own.
            await s3_sink.send(chains.batch("node-1", 4, 4))
            await s3_sink.send(chains.batch("node-2", 3, 3))
            await s3_sink.send(chains.batch("node-1", 4, 4))  # the same object again
            await s3_sink.send(chains.batch("node-2", 3, 4))  # cut differently
            await s3_sink.send(chains.batch("node-1", 5, 5))
            await run.wait_for(lambda: len(run.live) == 1)
            await asyncio.sleep(0.5)  # a few more polls: nothing fires twice
            await run.stop()
            return run

        rules = rules_in(tmp_path)
        run = asyncio.run(scenario())

        (first,) = run.history
        (second,) = run.live
        assert refs(first) == [("node-1", 1), ("node-2", 1), ("node-1", 2), ("node-2", 2)]
        assert refs(second) == [("node-1", 4), ("node-2", 3), ("node-1", 5), ("node-2", 4)]
        assert second.time == T0 + timedelta(seconds=66)
        # The same key again is not even read; the object cut differently repeats seq 3.
        assert run.follower.seen.repeats == 1
        assert run.follower.events == 9  # each call once

    @pytest.mark.parametrize(("lag", "in_order"), [(1.0, True), (0.0, False)])
    def test_the_reorder_window_feeds_chains_in_time_order(
        self, tmp_path: Path, bucket: str, s3_sink: S3Sink, lag: float, in_order: bool
    ) -> None:
        """node-1's object is found a poll before node-2's, whose events are older: held
        for --lag, the burst's events reach the engine in time order; with no lag, node-2's
        come late, after node-1's."""
        chains = Chains(
            tmp_path,
            # Closer together than the lag: the window is what orders them.
            **{"node-1": [denied(0.1), denied(0.3)], "node-2": [denied(0), denied(0.2)]},
        )

        async def scenario() -> Run:
            run = await following(
                [polled(S3Source(f"s3://{bucket}/prod"))], rules, since=T0, lag=lag
            )
            await s3_sink.send(chains.batch("node-1", 1, 2))
            await asyncio.sleep(0.3)  # several polls: node-1 alone is there
            await s3_sink.send(chains.batch("node-2", 1, 2))
            await run.wait_for(lambda: len(run.live) == 1)
            await run.stop()
            return run

        rules = rules_in(tmp_path)
        run = asyncio.run(scenario())

        (alert,) = run.live
        if in_order:
            assert refs(alert) == [("node-2", 1), ("node-1", 1), ("node-2", 2), ("node-1", 2)]
            assert run.follower.reorder.late == 0
        else:
            assert refs(alert) == [("node-1", 1), ("node-1", 2), ("node-2", 1), ("node-2", 2)]
            assert run.follower.reorder.late == 2  # node-2's, older than node-1's last

    def test_an_object_listed_late_is_read_and_a_lasting_gap_given_up(
        self, tmp_path: Path, bucket: str, s3_sink: S3Sink
    ) -> None:
        """An object that shows up after a later one (a lagging listing) is still read;
        a gap that never fills is given up after gap_wait, with a warning."""
        chains = Chains(tmp_path, **{"node-1": [denied(n) for n in range(8)]})
        warnings: list[str] = []
        clock = [0.0]
        source = S3Source(
            f"s3://{bucket}/prod", gap_wait_s=60, clock=lambda: clock[0], warn=warnings.append
        )

        async def scenario() -> list[list[int]]:
            await s3_sink.send(chains.batch("node-1", 1, 2))
            list(source.history(EventFilter(since=T0)))
            polls = []
            await s3_sink.send(chains.batch("node-1", 5, 6))  # 3 and 4 not listed yet
            polls.append(source.poll())
            await s3_sink.send(chains.batch("node-1", 3, 4))  # listed late
            polls.append(source.poll())
            await s3_sink.send(chains.batch("node-1", 8, 8))  # 7 never is
            polls.append(source.poll())
            clock[0] = 61
            polls.append(source.poll())
            return [[r["chain"]["seq"] for r in found] for found in polls]

        assert asyncio.run(scenario()) == [[5, 6], [3, 4], [8], []]
        assert warnings == [
            f"s3://{bucket}/prod/node-1/: seq 7-7 did not appear within 60s; "
            "going on without it (`keyledger audit verify` lists what a copy is missing)"
        ]

    def test_a_chain_quiet_for_ten_minutes_is_listed_once_a_minute(
        self, tmp_path: Path, bucket: str, s3_sink: S3Sink
    ) -> None:
        """A chain with no new object for ten minutes (a pod that is gone: pods get new
        names, so chains pile up) is listed once a minute, and read when it writes again;
        a busy chain is listed at every poll."""
        chains = Chains(tmp_path, **{"gone": [denied(0), denied(1)], "busy": [denied(0)] * 4})
        clock = [0.0]
        listed: list[str] = []
        s3 = boto3.client("s3")

        class Counting:
            """The S3 client, counting the listings of a chain's objects."""

            def __getattr__(self, name: str) -> Any:
                return getattr(s3, name)

            def list_objects_v2(self, **kwargs: Any) -> Any:
                listed.append(kwargs["Prefix"].split("/")[1])
                return s3.list_objects_v2(**kwargs)

        source = S3Source(f"s3://{bucket}/prod", client=Counting(), clock=lambda: clock[0])

        async def scenario() -> list[list[tuple[str, int]]]:
            await s3_sink.send(chains.batch("gone", 1, 1))
            await s3_sink.send(chains.batch("busy", 1, 1))
            list(source.history(EventFilter(since=T0)))
            polls = []
            for at, chain, seq in (
                (601, "busy", 2),
                (620, "busy", 3),
                (640, "gone", 2),
                (661, "busy", 4),
            ):
                clock[0] = at
                await s3_sink.send(chains.batch(chain, seq, seq))
                listed.clear()
                found = source.poll()
                polls.append(
                    [(r["chain"]["id"], r["chain"]["seq"]) for r in found]
                    + [("listed", len(listed))]
                )
            return polls

        assert asyncio.run(scenario()) == [
            [("busy", 2), ("listed", 2)],  # both listed: gone has been quiet for 601s
            [("busy", 3), ("listed", 1)],  # gone is not listed again before 661s
            [("listed", 1)],  # its new object waits
            [("busy", 4), ("gone", 2), ("listed", 2)],
        ]

    def test_a_bucket_that_is_not_there_says_so(self, aws_env: str) -> None:
        with pytest.raises(SourceError, match="listing s3://no-such-bucket-kl/: NoSuchBucket"):
            list(S3Source("s3://no-such-bucket-kl").history(EventFilter()))


class TestCloudWatch:
    def test_history_then_new_events_fire_once(self, tmp_path: Path, aws_env: str) -> None:
        """Every stream of the group (one per chain) read from since, then followed by its
        forward token; a stream that appears while following (a new replica) is read."""
        group = f"keyledger-{uuid.uuid4().hex[:12]}"
        chains = Chains(
            tmp_path,
            **{
                "node-1": [denied(0), denied(60), denied(62)],
                "node-2": [denied(1), denied(61)],
                "node-3": [denied(63)],
            },
        )

        def sink(stream: str) -> CloudWatchSink:
            config = CloudWatchSinkConfig(name="cloudwatch", log_group=group, region=REGION)
            return CloudWatchSink(config, stream=stream)

        async def scenario() -> Run:
            sinks = {chain: sink(chain) for chain in ("node-1", "node-2", "node-3")}
            for chain in ("node-1", "node-2"):
                await sinks[chain].prepare()
            await sinks["node-1"].send(chains.batch("node-1", 1, 1))
            await sinks["node-2"].send(chains.batch("node-2", 1, 1))
            rules = rules_in(tmp_path)
            source = polled(CloudWatchSource(f"cloudwatch://{group}"))
            run = await following([source], rules, since=T0)
            await sinks["node-1"].send(chains.batch("node-1", 2, 3))
            await sinks["node-2"].send(chains.batch("node-2", 2, 2))
            await sinks["node-1"].send(chains.batch("node-1", 2, 3))  # sent twice
            await sinks["node-3"].prepare()
            await sinks["node-3"].send(chains.batch("node-3", 1, 1))
            await run.wait_for(lambda: len(run.live) == 1)
            await asyncio.sleep(0.3)
            await run.stop()
            for each in sinks.values():
                await each.close()
            return run

        run = asyncio.run(scenario())

        assert run.history == []
        (alert,) = run.live
        assert refs(alert) == [("node-1", 2), ("node-2", 2), ("node-1", 3), ("node-3", 1)]
        assert run.follower.seen.repeats == 2

    def test_a_group_that_is_not_there_says_so(self, aws_env: str) -> None:
        with pytest.raises(SourceError, match="log group does not exist"):
            list(CloudWatchSource("cloudwatch://no-such-group").history(EventFilter()))


class TestJournalFolder:
    def test_chains_appended_while_following(self, tmp_path: Path) -> None:
        """A folder's chains (say, `serve --workers 2` on one host) followed while their
        journals append: the burst spread over both fires once."""
        folder = tmp_path / "journal"

        async def scenario() -> Run:
            journals = [
                Journal(directory=folder, chain_id=chain, fsync=False)
                for chain in ("node-w0", "node-w1")
            ]
            for journal in journals:
                await journal.start()
                await journal.append(allowed(0))
            run = await following([polled(JournalSource(folder))], rules_in(tmp_path), since=T0)
            for n in range(4):
                await journals[n % 2].append(denied(10 + n))
            await run.wait_for(lambda: len(run.live) == 1)
            await run.stop()
            for journal in journals:
                await journal.close()
            return run

        run = asyncio.run(scenario())

        (alert,) = run.live
        assert refs(alert) == [("node-w0", 2), ("node-w1", 2), ("node-w0", 3), ("node-w1", 3)]


class TestAdminStream:
    def test_a_stream_cut_off_is_opened_again_from_the_newest_event_seen(
        self, tmp_path: Path
    ) -> None:
        """The first connection replays two denials, passes one live and is cut; the
        follower connects again asking for events since the newest it saw, gets that one
        replayed again (dropped) and a fourth: one alert, with each event once."""
        records = [
            {**event("w0", n + 1, n), "type": "access", "decision": {"effect": "deny"}}
            for n in range(4)
        ]
        admin = FakeAdmin(records)

        async def scenario() -> tuple[Run, str]:
            url = await admin.start()
            stream = AdminStream(url, token="t" * 32, backoff_min_s=0.05)
            run = await following([stream], rules_in(tmp_path), since=T0)
            await run.wait_for(lambda: len(run.live) == 1)
            await run.stop()
            await admin.stop()
            return run, url

        run, _ = asyncio.run(scenario())

        (alert,) = run.live
        assert refs(alert) == [("w0", 1), ("w0", 2), ("w0", 3), ("w0", 4)]
        assert run.follower.seen.repeats == 1
        first, second = admin.queries[:2]
        assert first == {"last": "10000", "since": T0.isoformat()}
        assert second == {"last": "10000", "since": records[2]["time"]}
        assert admin.authorizations == {"Bearer " + "t" * 32}


class FakeAdmin:
    """An admin API's audit stream that cuts its first reader off after one live event."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.queries: list[dict[str, str]] = []
        self.authorizations: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._done = asyncio.Event()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v1/audit/stream", self._stream)
        self._runner = await listen(app)
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        assert self._runner is not None
        self._done.set()
        await self._runner.cleanup()

    @staticmethod
    def _frame(record: dict[str, Any]) -> bytes:
        return b"event: audit\ndata: " + orjson.dumps(record) + b"\n\n"

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        self.authorizations.add(request.headers["Authorization"])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        since = request.query.get("since", "")
        first = len(self.queries) == 1
        replay = self.records[:2] if first else [r for r in self.records[:3] if r["time"] >= since]
        live = self.records[2:3] if first else self.records[3:]
        await response.write(b"".join(map(self._frame, replay)) + b"event: replayed\ndata: {}\n\n")
        await response.write(b"".join(map(self._frame, live)))
        if not first:
            await self._done.wait()  # held open, as a live stream is
        return response


class TestPolled:
    def test_a_poll_that_fails_is_tried_again(self) -> None:
        """A source that cannot be read for a moment: warned about, read again later."""
        warnings: list[str] = []

        class Flaky:
            name = "flaky"
            polls = 0

            def history(self, filt: EventFilter) -> Iterator[dict[str, Any]]:
                return iter([])

            def poll(self) -> list[dict[str, Any]]:
                self.polls += 1
                if self.polls == 1:
                    raise SourceError("listing s3://b/: SlowDown: reduce your request rate")
                return [event("a", self.polls, 0)]

            def close(self) -> None:
                pass

        async def first_batch() -> list[dict[str, Any]]:
            async for batch in Polled(Flaky(), interval_s=0.01, warn=warnings.append).updates():
                return batch
            raise AssertionError("updates ended")

        assert asyncio.run(first_batch()) == [event("a", 2, 0)]
        assert warnings == [
            "listing s3://b/: SlowDown: reduce your request rate; trying again in 0.02s"
        ]


# -- the parts on their own -----------------------------------------------------------------


def event(chain: str, seq: int, seconds: float) -> dict[str, Any]:
    return {
        "id": f"{chain}-{seq}",
        "time": format_time(T0 + timedelta(seconds=seconds)),
        "chain": {"id": chain, "seq": seq},
    }


class TestReorder:
    def test_events_are_handed_on_in_time_order_once_older_than_newest_minus_lag(
        self,
    ) -> None:
        """Pushed out of order across chains, an event goes once one newer than it by
        more than the lag has been seen."""
        reorder = Reorder(timedelta(seconds=10), clock=lambda: 0.0)
        for record in (event("a", 1, 5), event("b", 1, 1), event("a", 2, 12)):
            reorder.push(record)
        assert reorder.due() == [event("b", 1, 1)]
        reorder.push(event("b", 2, 20))
        assert reorder.due() == [event("a", 1, 5)]
        assert [r["id"] for r in reorder.drain()] == ["a-2", "b-2"]

    def test_a_quiet_spell_does_not_hold_the_last_events_for_ever(self) -> None:
        """With nothing newer arriving, an event goes once it has been held for the lag."""
        now = [100.0]
        reorder = Reorder(timedelta(seconds=10), clock=lambda: now[0])
        reorder.push(event("a", 1, 0))
        assert (reorder.due(), reorder.wait_s()) == ([], 10.0)
        now[0] = 110.0
        assert reorder.due() == [event("a", 1, 0)]
        assert reorder.wait_s() is None

    def test_an_event_older_than_one_handed_on_goes_at_once_and_is_counted(self) -> None:
        reorder = Reorder(timedelta(seconds=0), clock=lambda: 0.0)
        reorder.push(event("a", 1, 5))
        assert reorder.due() == [event("a", 1, 5)]
        reorder.push(event("b", 1, 4))
        assert (reorder.due(), reorder.late) == ([event("b", 1, 4)], 1)


class TestSeen:
    def test_a_repeat_is_dropped_by_chain_and_seq(self) -> None:
        seen = Seen()
        offered = [event("a", 1, 0), event("a", 2, 1), event("a", 1, 0), event("b", 2, 1)]
        assert [seen(r) for r in offered] == [True, True, False, True]
        assert seen.repeats == 1

    def test_a_gap_that_fills_later_is_not_a_repeat(self) -> None:
        """An object listed late: its seqs, below ones already seen, are new."""
        seen = Seen()
        assert [seen(event("a", s, 0)) for s in (1, 4, 5, 2, 3, 4, 6)] == [
            True,
            True,
            True,
            True,
            True,
            False,
            True,
        ]

    def test_an_event_without_a_chain_is_told_apart_by_its_id(self) -> None:
        seen = Seen()
        record = {"id": "01X", "time": format_time(T0)}
        assert (seen(record), seen(record), seen({**record, "id": "01Y"})) == (True, False, True)
