"""Retention: old journal segments go only once every sink has them, recorded on the chain."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from keyledger.proxy.audit.checkpoints import CheckpointSigner
from keyledger.proxy.audit.events import parse_time
from keyledger.proxy.audit.journal import Journal, Rotation
from keyledger.proxy.audit.retention import Retention
from keyledger.proxy.audit.segments import Segment, chain_segments
from keyledger.proxy.audit.sinks.cursor import Cursor, CursorStore
from keyledger.proxy.audit.sinks.shipper import Shipper, ShippingSettings
from keyledger.proxy.audit.sinks.stdout import StdoutSink
from keyledger.proxy.config import StdoutSinkConfig
from tests.conftest import running_proxy
from tests.proxy.audit.conftest import CHAIN, append, records, running, until
from tests.proxy.test_operate import Metrics

DAY = 86400.0
SMALL = Rotation(max_bytes=4096, max_age_s=None)


def segments(directory: Path) -> list[Segment]:
    return chain_segments(directory, CHAIN)


def last_of(segment: Segment) -> dict[str, object]:
    """The last record of a segment file."""
    return records(segment.path)[-1]


def last_time(segment: Segment) -> datetime:
    moment = parse_time(last_of(segment)["time"])
    assert moment is not None
    return moment


def acknowledge(directory: Path, sink: str, segment: Segment) -> None:
    """Save ``sink``'s cursor at the end of ``segment``, as its shipper does after an ack."""
    seq = last_of(segment)["chain"]["seq"]  # type: ignore[index]
    cursor = Cursor(segment.path.name, segment.path.stat().st_size, seq)
    CursorStore(directory).save(sink, CHAIN, cursor)


def days_later(days: float) -> Callable[[], datetime]:
    """A clock ``days`` from now: every event written so far is that old."""
    moment = datetime.now(UTC) + timedelta(days=days)
    return lambda: moment


def pruned_events(directory: Path) -> list[dict[str, object]]:
    """Every segment_pruned event's detail left in the journal, oldest first."""
    found = []
    for segment in segments(directory):
        for record in records(segment.path):
            detail = record.get("detail") or {}
            if detail.get("event") == "segment_pruned":
                found.append(detail)
    return found


async def filled(journal: Journal, count: int = 4) -> list[Segment]:
    """Append until the journal has ``count`` segments (the last one open)."""
    n = 0
    while len(segments(journal.directory)) < count:
        await append(journal, 5, start=n)
        n += 5
    return segments(journal.directory)


class TestPruneOnce:
    async def test_only_what_every_sink_acknowledged(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """With s3 through segment 3 and cloudwatch through segment 1, only segment 1 goes."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            first, second, third, _ = await filled(journal)
            acknowledge(journal_dir, "s3", third)
            acknowledge(journal_dir, "cloudwatch", first)
            retention = Retention(
                journal=journal, sinks=["s3", "cloudwatch"], max_age_s=DAY, now=days_later(2)
            )

            pruned = await retention.prune_once()

            assert pruned is not None
            assert pruned.segments == (first.path.name,)
            assert not first.path.exists()
            assert second.path.exists()
            assert "cloudwatch (at seq" in (retention.stats.waiting_for or "")

    async def test_only_segments_older_than_max_age(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A clock max_age past segment 2's newest event prunes segments 1 and 2, not 3."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            first, second, third, _ = await filled(journal)
            acknowledge(journal_dir, "s3", third)
            moment = last_time(second) + timedelta(seconds=DAY, microseconds=1)
            assert moment <= last_time(third) + timedelta(seconds=DAY)
            retention = Retention(journal=journal, sinks=["s3"], max_age_s=DAY, now=lambda: moment)

            pruned = await retention.prune_once()

            assert pruned is not None
            assert pruned.segments == (first.path.name, second.path.name)
            assert third.path.exists()

    async def test_never_the_open_segment(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """Everything acknowledged and a year old: every segment goes but the one being
        written."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            *closed, newest = await filled(journal)
            acknowledge(journal_dir, "s3", newest)
            retention = Retention(journal=journal, sinks=["s3"], max_age_s=DAY, now=days_later(365))

            pruned = await retention.prune_once()

            assert pruned is not None
            assert pruned.segments == tuple(s.path.name for s in closed)
            assert segments(journal_dir) == [newest]
            assert journal.path == newest.path

    async def test_nothing_before_any_sink_acknowledged(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A sink with no cursor yet has nothing: no segment goes, however old."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            before = await filled(journal)
            retention = Retention(journal=journal, sinks=["s3"], max_age_s=DAY, now=days_later(9))

            assert await retention.prune_once() is None
            assert segments(journal_dir) == before

    async def test_without_sinks_age_alone_decides(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """With no sinks (the without_sinks opt-in), old closed segments go; young ones stay."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            before = await filled(journal)
            young = Retention(journal=journal, sinks=[], max_age_s=DAY)
            assert await young.prune_once() is None

            old = Retention(journal=journal, sinks=[], max_age_s=DAY, now=days_later(2))
            pruned = await old.prune_once()

            assert pruned is not None
            assert len(pruned.segments) == len(before) - 1

    async def test_the_pruning_is_on_the_chain(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A segment_pruned lifecycle event names the files, their seq range and the hash the
        next segment's segment_start links to, with each sink's acknowledged seq."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            first, second, third, _ = await filled(journal)
            acknowledge(journal_dir, "s3", second)
            retention = Retention(journal=journal, sinks=["s3"], max_age_s=DAY, now=days_later(2))

            pruned = await retention.prune_once()

            link = records(third.path)[0]
            (detail,) = pruned_events(journal_dir)
            assert pruned is not None
            assert detail == {
                "event": "segment_pruned",
                "segments": [first.path.name, second.path.name],
                "first_seq": 1,
                "last_seq": link["chain"]["seq"] - 1,
                "last_hash": link["chain"]["prev"],
                "bytes": pruned.bytes,
                "max_age_s": DAY,
                "acknowledged_by": {"s3": link["chain"]["seq"] - 1},
            }
            assert link["detail"]["event"] == "segment_start"
            assert link["detail"]["previous_last_hash"] == detail["last_hash"]

    async def test_twice_prunes_once(self, journal_dir: Path, signer: CheckpointSigner) -> None:
        """A second pass with nothing new due deletes and records nothing."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            *_, newest = await filled(journal)
            acknowledge(journal_dir, "s3", newest)
            retention = Retention(journal=journal, sinks=["s3"], max_age_s=DAY, now=days_later(2))

            assert await retention.prune_once() is not None
            assert await retention.prune_once() is None
            assert len(pruned_events(journal_dir)) == 1

    async def test_a_segment_that_does_not_link_holds_everything_after_it(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A segment whose end is not what the next one links to (edited, replaced) is kept,
        and so is every later one: verify has something to say first."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            first, second, _, newest = await filled(journal)
            acknowledge(journal_dir, "s3", newest)
            lines = second.path.read_bytes().splitlines(keepends=True)
            second.path.write_bytes(b"".join(lines[:-1]))  # its sealing checkpoint cut off
            retention = Retention(journal=journal, sinks=["s3"], max_age_s=DAY, now=days_later(2))

            pruned = await retention.prune_once()

            assert pruned is not None
            assert pruned.segments == (first.path.name,)
            assert second.path.exists()


class TestWithAShipper:
    async def test_segments_go_once_a_real_shipper_acknowledged_them(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A running shipper's saved cursor is what retention reads: once the sink has every
        event, the old segments go, and shipping goes on from the open one without a gap."""
        shipped = io.BytesIO()
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            sink = StdoutSink(StdoutSinkConfig(name="collector"), stream=shipped)
            settings = ShippingSettings(max_wait_s=0.01, retry_min_s=0.01, retry_max_s=0.05)
            shipper = Shipper(
                sink=sink, journal=journal, cursors=CursorStore(journal_dir), settings=settings
            )
            shipper.start()
            try:
                before = await filled(journal)
                await until(lambda: shipper.status.shipped_seq == journal.durable_seq)
                retention = Retention(
                    journal=journal, sinks=["collector"], max_age_s=DAY, now=days_later(2)
                )

                pruned = await retention.prune_once()
                await append(journal, 3, start=500)
                await until(lambda: shipper.status.shipped_seq == journal.durable_seq)
            finally:
                await shipper.stop()

        assert pruned is not None
        assert pruned.segments == tuple(s.path.name for s in before[:-1])
        seqs = [orjson.loads(line)["chain"]["seq"] for line in shipped.getvalue().splitlines()]
        assert seqs == list(range(1, seqs[-1] + 1))


class TestRun:
    async def test_run_prunes_until_cancelled(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """run() prunes at once and again every interval, until cancelled."""
        async with running(journal_dir, signer, rotation=SMALL) as journal:
            await filled(journal, 3)
            retention = Retention(journal=journal, sinks=[], max_age_s=DAY, now=days_later(2))
            task = asyncio.create_task(retention.run(0.05))
            try:
                await until(lambda: retention.stats.prunings == 1)
                await filled(journal, 3)
                await until(lambda: retention.stats.prunings == 2)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert len(segments(journal_dir)) == 1
            assert retention.stats.pruned_seq > 0


def test_the_proxy_runs_retention_when_configured(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> None:
    """With audit.retention set, keyledger prunes as it serves, and /metrics shows what
    retention did (nothing yet on a journal this young)."""
    audit = {"retention": {"max_age": "1h", "without_sinks": True}}
    with running_proxy(tmp_path, moto_url, audit=audit) as proxy:
        metrics = Metrics(proxy)

    assert metrics.value("keyledger_retention_segments_pruned_total") == 0
    assert metrics.value("keyledger_retention_waiting_for_sinks") == 0
