"""Shipping the journal to a remote sink: every durable event, once, in order, from a cursor."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyledger.proxy.audit.checkpoints import CheckpointSigner
from keyledger.proxy.audit.journal import Journal, Rotation
from keyledger.proxy.audit.segments import chain_segments
from keyledger.proxy.audit.sinks.base import (
    Batch,
    BatchLimits,
    SinkError,
    SinkMisconfigured,
    parse_line,
)
from keyledger.proxy.audit.sinks.cursor import START, Cursor, CursorStore
from keyledger.proxy.audit.sinks.shipper import Shipper, ShippingSettings, read_batch
from keyledger.proxy.audit.sinks.stdout import StdoutSink
from keyledger.proxy.config import StdoutSinkConfig
from tests.proxy.audit.conftest import CHAIN, append, event, new_journal
from tests.proxy.audit.conftest import running as running_journal

SIGNER = CheckpointSigner(Ed25519PrivateKey.generate())
FAST = ShippingSettings(max_wait_s=0.02, retry_min_s=0.01, retry_max_s=0.05, drain_s=2.0)
# A partial batch waits longer than any test runs: only a full one goes out.
PATIENT = ShippingSettings(max_wait_s=30, retry_min_s=0.01, retry_max_s=0.05)
NO_ROTATION = Rotation(max_bytes=None, max_age_s=None)
ROTATE_SMALL = Rotation(max_bytes=4096, max_age_s=None)
UNLIMITED = BatchLimits(max_events=100_000, max_bytes=1 << 30)

# The journals shipped here are signed by SIGNER and rotate only when a test says so.
journal = functools.partial(new_journal, signer=SIGNER, rotation=NO_ROTATION)
running = functools.partial(running_journal, signer=SIGNER, rotation=NO_ROTATION)


def draining(drain_s: float) -> ShippingSettings:
    """Quick batches and retries, and ``drain_s`` at stop to ship what is left."""
    return ShippingSettings(max_wait_s=0.01, retry_min_s=0.01, retry_max_s=0.05, drain_s=drain_s)


class MemorySink:
    """An in-memory implementation of the Sink protocol that records what it acknowledged."""

    def __init__(
        self, name: str = "mem", *, max_events: int = 1000, max_bytes: int = 1 << 20
    ) -> None:
        self._name = name
        self._limits = BatchLimits(max_events=max_events, max_bytes=max_bytes)
        self.batches: list[Batch] = []
        self.arrived: list[float] = []  # time.monotonic() of each acknowledged batch
        self.sends = 0  # attempts, failed ones included
        self.fail_next = 0  # fail this many sends, then work
        self.down = False  # fail every send while set
        self.hang = False  # sends wait for ``release`` while set
        self.release = asyncio.Event()
        self.prepares = 0
        self.prepare_errors: list[Exception] = []  # raised by the next prepare calls, in turn
        self.prepare_down = False  # every prepare fails while set
        self.prepare_hang = False
        self.ready = False
        self.sent_unprepared = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    async def prepare(self) -> None:
        self.prepares += 1
        if self.prepare_hang:
            await asyncio.Event().wait()
        if self.prepare_down:
            raise SinkError("sink unreachable")
        if self.prepare_errors:
            raise self.prepare_errors.pop(0)
        self.ready = True

    async def send(self, batch: Batch) -> None:
        self.sends += 1
        if not self.ready:
            self.sent_unprepared += 1
        if self.hang:
            await self.release.wait()
        if self.down:
            raise SinkError("sink is down")
        if self.fail_next:
            self.fail_next -= 1
            raise SinkError("throttled")
        self.batches.append(batch)
        self.arrived.append(time.monotonic())

    async def close(self) -> None:
        self.closed = True

    @property
    def raw(self) -> list[bytes]:
        return [line.raw for batch in self.batches for line in batch.lines]

    @property
    def seqs(self) -> list[int]:
        return [line.seq for batch in self.batches for line in batch.lines]

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else 0


def journal_lines(directory: Path) -> list[bytes]:
    """Every line of the chain's segment files, oldest first, without newlines."""
    return [
        line
        for segment in chain_segments(directory, CHAIN)
        for line in segment.path.read_bytes().splitlines()
    ]


def seqs_of(lines: list[bytes]) -> list[int]:
    return [int(orjson.loads(line)["chain"]["seq"]) for line in lines]


def types_of(lines: list[bytes]) -> set[str]:
    return {str(orjson.loads(line)["type"]) for line in lines}


async def eventually(condition: Callable[[], bool], what: str, *, within: float = 3.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for: {what}")
        await asyncio.sleep(0.005)


class WatchedJournal:
    """The real journal as a shipper sees it (DurableJournal), noting when the shipper waits
    for it; ``stale_lookups`` makes the next durable_seq lookups see nothing durable yet, as
    when events become durable just after the shipper looked."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.waiting = 0
        self.stale_lookups = 0

    @property
    def directory(self) -> Path:
        return self.journal.directory

    @property
    def chain_id(self) -> str:
        return self.journal.chain_id

    @property
    def durable_seq(self) -> int:
        if self.stale_lookups:
            self.stale_lookups -= 1
            return 0
        return self.journal.durable_seq

    async def wait_durable(self, beyond: int) -> None:
        self.waiting += 1
        try:
            await self.journal.wait_durable(beyond)
        finally:
            self.waiting -= 1


def shipper(
    journal: Journal | WatchedJournal,
    sink: MemorySink | StdoutSink,
    settings: ShippingSettings = FAST,
) -> Shipper:
    return Shipper(
        sink=sink, journal=journal, cursors=CursorStore(journal.directory), settings=settings
    )


async def idle(view: WatchedJournal, ships: Shipper) -> None:
    """Until the shipper has shipped all that is durable and waits for the journal (so no
    read of it is under way)."""
    await eventually(
        lambda: ships.status.shipped_seq == view.journal.durable_seq and view.waiting > 0,
        "the shipper to catch up and wait",
    )


async def start_watched(
    directory: Path,
    sink: MemorySink | StdoutSink,
    settings: ShippingSettings = FAST,
    *,
    rotation: Rotation = NO_ROTATION,
    every_events: int = 1000,
) -> tuple[Journal, WatchedJournal, Shipper]:
    """A started journal, the shipper's watched view of it, and a started shipper."""
    opened = journal(directory, rotation=rotation, every_events=every_events)
    await opened.start()
    view = WatchedJournal(opened)
    ships = shipper(view, sink, settings)
    ships.start()
    return opened, view, ships


async def close_once_shipped(view: WatchedJournal, ships: Shipper) -> None:
    """Once the shipper has caught up, close the journal (which seals its end with a
    checkpoint), then stop the shipper (which ships that too)."""
    await idle(view, ships)
    await view.journal.close()
    await ships.stop()


@contextlib.asynccontextmanager
async def shipping(
    journal: Journal, sink: MemorySink, settings: ShippingSettings = FAST
) -> AsyncIterator[Shipper]:
    started = shipper(journal, sink, settings)
    started.start()
    try:
        yield started
    finally:
        await started.stop()


async def caught_up(journal: Journal, sink: MemorySink) -> None:
    await eventually(
        lambda: sink.last_seq == journal.durable_seq, f"the sink to reach {journal.durable_seq}"
    )


async def shipped_at_once(directory: Path, events: int, *, last_seq: int, what: str) -> MemorySink:
    """A sink taking 5 events a batch, once ``events`` events appended together reached it up
    to ``last_seq`` within half a second, though a partial batch would wait (PATIENT)."""
    sink = MemorySink(max_events=5)
    async with running(directory) as opened, shipping(opened, sink, PATIENT):
        await opened.append_many([event(n) for n in range(events)])
        await eventually(lambda: sink.last_seq == last_seq, what, within=0.5)
    return sink


@contextlib.asynccontextmanager
async def tried(
    directory: Path, sink: MemorySink, settings: ShippingSettings, events: int
) -> AsyncIterator[Shipper]:
    """A started shipper on a running journal given ``events`` events, once it has tried to
    send them; the journal closes on the way out."""
    async with running(directory) as opened:
        ships = shipper(opened, sink, settings)
        ships.start()
        await append(opened, events)
        await eventually(lambda: sink.sends >= 1, "a send attempt")
        yield ships


async def stops_in_time(
    directory: Path, sink: MemorySink, events: int, *, drain_s: float, margin: float
) -> None:
    """A shipper that has tried to send ``events`` events to ``sink`` stops within its
    drain_s and ``margin`` seconds more."""
    async with tried(directory, sink, draining(drain_s), events) as ships:
        began = time.monotonic()
        await ships.stop()
        assert time.monotonic() - began < drain_s + margin


class TestDelivery:
    async def test_every_event_arrives_once_in_order_with_the_journal_bytes(
        self, tmp_path: Path
    ) -> None:
        """Every journal line (checkpoints and segment starts too) reaches the sink exactly
        once, in seq order, byte for byte."""
        sink = MemorySink(max_events=7)
        opened, view, ships = await start_watched(
            tmp_path, sink, rotation=ROTATE_SMALL, every_events=5
        )
        await append(opened, 12)
        await opened.append_many([event(n) for n in range(12, 30)])
        await close_once_shipped(view, ships)

        lines = journal_lines(tmp_path)
        assert len(chain_segments(tmp_path, CHAIN)) > 1
        assert sink.raw == lines
        assert sink.seqs == list(range(1, len(lines) + 1))
        assert {"access", "checkpoint", "lifecycle"} <= types_of(sink.raw)
        assert b"".join(batch.jsonl() for batch in sink.batches) == b"".join(
            line + b"\n" for line in lines
        )
        assert all(batch.chain == CHAIN for batch in sink.batches)
        assert ships.status.shipped_seq == len(lines)
        assert ships.status.shipped_events == len(lines)
        assert ships.status.batches == len(sink.batches)

    async def test_shipping_follows_rotation_into_new_segments(self, tmp_path: Path) -> None:
        """While the journal rotates, shipping runs on from each segment into the next."""
        sink = MemorySink(max_events=4)
        async with (
            running(tmp_path, rotation=ROTATE_SMALL) as opened,
            shipping(opened, sink) as ships,
        ):
            n = 0
            while opened.stats.rotations < 3:
                await opened.append(event(n))
                n += 1
            await caught_up(opened, sink)
            assert ships.status.failures == 0
            lines = journal_lines(tmp_path)

        segments = chain_segments(tmp_path, CHAIN)
        assert len(segments) == 4
        shipped = sink.raw
        assert shipped == lines
        for segment in segments:
            # Each segment's first line is the one with the seq its name says, and arrived.
            assert seqs_of(segment.path.read_bytes().splitlines()[:1]) == [segment.first_seq]
        starts = [orjson.loads(line) for line in shipped if b'"segment_start"' in line]
        assert len(starts) == 3
        cursor = CursorStore(tmp_path).load("mem", CHAIN)
        assert cursor.segment == segments[-1].path.name
        assert cursor.seq == sink.last_seq

    async def test_batches_respect_max_events(self, tmp_path: Path) -> None:
        """No batch holds more than max_events; a backlog goes out in full batches."""
        sink = MemorySink(max_events=4)
        async with running(tmp_path) as opened:
            await opened.append_many([event(n) for n in range(30)])
            async with shipping(opened, sink):
                await caught_up(opened, sink)

        assert [len(batch.lines) for batch in sink.batches] == [4] * 7 + [2]
        assert sink.seqs == list(range(1, 31))

    async def test_batches_respect_max_bytes(self, tmp_path: Path) -> None:
        """No batch is bigger than max_bytes (newlines included); each is as full as fits."""
        async with running(tmp_path) as opened:
            await opened.append_many([event(n) for n in range(3000, 3025)])
            sizes = [len(line) + 1 for line in journal_lines(tmp_path)]
            max_bytes = sum(sizes[:3]) + 10  # room for three lines, not four
            sink = MemorySink(max_events=1000, max_bytes=max_bytes)
            async with shipping(opened, sink):
                await caught_up(opened, sink)

        assert sink.seqs == list(range(1, 26))
        batch_bytes = [len(batch.jsonl()) for batch in sink.batches]
        assert all(size <= max_bytes for size in batch_bytes)
        assert len(sink.batches) > 1
        for batch, following in zip(sink.batches, sink.batches[1:], strict=False):
            assert len(batch.jsonl()) + len(following.lines[0].raw) + 1 > max_bytes

    async def test_a_single_event_over_max_bytes_still_ships_alone(self, tmp_path: Path) -> None:
        """An event bigger than max_bytes is not stuck forever: it goes out on its own."""
        sink = MemorySink(max_events=100, max_bytes=100)
        async with running(tmp_path) as opened, shipping(opened, sink):
            await append(opened, 3)
            await caught_up(opened, sink)

        assert [len(batch.lines) for batch in sink.batches] == [1, 1, 1]

    async def test_a_partial_batch_waits_max_wait_then_goes(self, tmp_path: Path) -> None:
        """A batch that is not full waits up to max_wait for more events, then goes out."""
        settings = ShippingSettings(max_wait_s=0.2, retry_min_s=0.01, retry_max_s=0.05)
        sink = MemorySink(max_events=100)
        async with running(tmp_path) as opened, shipping(opened, sink, settings):
            began = time.monotonic()
            await opened.append(event(1))
            await opened.append(event(2))  # arrives while the first waits
            await caught_up(opened, sink)

        assert [[line.seq for line in batch.lines] for batch in sink.batches] == [[1, 2]]
        assert sink.arrived[0] - began >= 0.2
        assert sink.arrived[0] - began < 0.2 + 1

    async def test_a_backlog_of_full_batches_does_not_wait(self, tmp_path: Path) -> None:
        """Batches that reach max_events go out at once, not after max_wait."""
        sink = await shipped_at_once(tmp_path, 11, last_seq=10, what="two full batches")

        assert [len(batch.lines) for batch in sink.batches[:2]] == [5, 5]

    async def test_a_batch_of_exactly_max_events_does_not_wait(self, tmp_path: Path) -> None:
        """A batch that reaches max_events goes out at once even when nothing follows it."""
        sink = await shipped_at_once(tmp_path, 5, last_seq=5, what="the full batch")

        assert [len(batch.lines) for batch in sink.batches] == [5]

    async def test_a_batch_full_by_bytes_does_not_wait(self, tmp_path: Path) -> None:
        """A batch that reaches max_bytes goes out at once, not after max_wait."""
        async with running(tmp_path) as opened:
            await opened.append_many([event(n) for n in range(3000, 3009)])
            sizes = [len(line) + 1 for line in journal_lines(tmp_path)]
            sink = MemorySink(max_events=1000, max_bytes=sum(sizes[:3]) + 10)
            async with shipping(opened, sink, PATIENT):
                await eventually(lambda: sink.last_seq >= 6, "two byte-full batches", within=0.5)

        assert [len(batch.lines) for batch in sink.batches[:2]] == [3, 3]


class TestCursor:
    async def test_a_restart_ships_only_what_is_new(self, tmp_path: Path) -> None:
        """After a restart on the same folder the sink gets the new events, not the old
        ones again (a resent batch at most), and nothing is skipped."""
        first = MemorySink(max_events=4)
        async with running(tmp_path) as opened, shipping(opened, first):
            await append(opened, 10)
            await caught_up(opened, first)
        shipped_before = first.last_seq  # the journal's closing checkpoint came after
        assert CursorStore(tmp_path).path("mem", CHAIN).is_file()

        second = MemorySink(max_events=4)
        async with running(tmp_path) as opened, shipping(opened, second):
            await append(opened, 5, start=10)
            await caught_up(opened, second)
            end = opened.durable_seq

        assert end > shipped_before + 5
        start = second.seqs[0]
        assert shipped_before - 4 < start <= shipped_before + 1
        assert second.seqs == list(range(start, end + 1))
        assert second.raw == journal_lines(tmp_path)[start - 1 : end]

    async def test_a_junk_cursor_ships_from_the_start_again(self, tmp_path: Path) -> None:
        """A cursor file with junk in it means shipping everything again: duplicates,
        never a skip."""
        async with running(tmp_path) as opened:
            first = MemorySink()
            async with shipping(opened, first):
                await append(opened, 6)
                await caught_up(opened, first)
        CursorStore(tmp_path).path("mem", CHAIN).write_bytes(b'{"schema": "keyledger.cur')

        second = MemorySink()
        async with running(tmp_path) as opened, shipping(opened, second):
            await append(opened, 2, start=6)
            await caught_up(opened, second)
            end = opened.durable_seq

        assert second.seqs == list(range(1, end + 1))

    @pytest.mark.parametrize(
        "content",
        [
            b"",
            b"{not json",
            b"\xff\xfe",
            b'{"schema": "keyledger.cursor/v9", "segment": "a", "offset": 1, "seq": 1}',
            b'{"schema": "keyledger.cursor/v1", "segment": "a", "offset": -5, "seq": 3}',
            b'{"schema": "keyledger.cursor/v1", "segment": "a", "offset": "x", "seq": 3}',
            b'{"schema": "keyledger.cursor/v1", "segment": "a"}',
            b"null",
            b"[1, 2]",
            b'"keyledger.cursor/v1"',
        ],
    )
    def test_junk_cursor_files_load_as_the_start(self, tmp_path: Path, content: bytes) -> None:
        """Whatever junk a cursor file holds, it reads as "nothing shipped yet"."""
        store = CursorStore(tmp_path)
        store.save("mem", CHAIN, Cursor("x.jsonl", 10, 2))
        store.path("mem", CHAIN).write_bytes(content)

        assert store.load("mem", CHAIN) == START

    def test_cursor_is_replaced_whole(self, tmp_path: Path) -> None:
        """A saved cursor reads back as saved, and no partial file is left beside it."""
        store = CursorStore(tmp_path)
        store.save("mem", CHAIN, Cursor("a.jsonl", 10, 2))
        store.save("mem", CHAIN, Cursor("b.jsonl", 20, 4))

        assert store.load("mem", CHAIN) == Cursor("b.jsonl", 20, 4)
        assert store.load("other", CHAIN) == START
        assert sorted(p.name for p in store.directory.iterdir()) == [f"mem.{CHAIN}.json"]
        assert store.directory == tmp_path / ".cursors"

    async def test_a_removed_segment_resumes_at_the_next_one(self, tmp_path: Path) -> None:
        """When retention removed the cursor's segment, shipping goes on at the next
        segment that exists, and the read names the seqs it could not ship."""
        async with running(tmp_path, rotation=ROTATE_SMALL) as opened:
            while opened.stats.rotations < 3:
                await opened.append(event(opened.state.seq))
        first, second, *_ = chain_segments(tmp_path, CHAIN)
        head = first.path.read_bytes().splitlines(keepends=True)[:2]
        cursor = Cursor(first.path.name, len(b"".join(head)), 2)
        CursorStore(tmp_path).save("mem", CHAIN, cursor)
        first.path.unlink()

        read = read_batch(tmp_path, CHAIN, cursor, up_to=10**9, limits=UNLIMITED)
        assert read.lines[0].seq == second.first_seq
        assert read.missing == (3, second.first_seq - 1)

        sink = MemorySink()
        async with running(tmp_path) as opened, shipping(opened, sink):
            await opened.append(event(99))
            await caught_up(opened, sink)
            end = opened.durable_seq
        assert sink.seqs == list(range(second.first_seq, end + 1))

    async def test_a_cursor_not_made_for_this_file_rereads_it(self, tmp_path: Path) -> None:
        """A cursor offset past the end of its file (the journal started over) rereads the
        file from its start rather than skipping what it holds."""
        async with running(tmp_path) as opened:
            await append(opened, 4)
        (segment,) = chain_segments(tmp_path, CHAIN)
        cursor = Cursor(segment.path.name, segment.path.stat().st_size + 500, 0)

        read = read_batch(tmp_path, CHAIN, cursor, up_to=10**9, limits=UNLIMITED)

        assert [line.seq for line in read.lines] == seqs_of(journal_lines(tmp_path))


class TestReadBatch:
    async def test_never_past_the_durable_bound(self, tmp_path: Path) -> None:
        """Lines after up_to (not yet durable) are never read; the next read goes on there."""
        async with running(tmp_path) as opened:
            await append(opened, 20)

        read = read_batch(tmp_path, CHAIN, START, up_to=7, limits=UNLIMITED)
        assert [line.seq for line in read.lines] == list(range(1, 8))
        assert read.cursor.seq == 7
        assert read.missing is None

        rest = read_batch(tmp_path, CHAIN, read.cursor, up_to=20, limits=UNLIMITED)
        assert [line.seq for line in rest.lines] == list(range(8, 21))
        assert read_batch(tmp_path, CHAIN, rest.cursor, up_to=20, limits=UNLIMITED).lines == ()

    async def test_stops_at_a_partial_last_line(self, tmp_path: Path) -> None:
        """A last line still being written (no newline) is left for the next read."""
        source = tmp_path / "journal"
        async with running(source) as opened:
            await append(opened, 5)
        copy = tmp_path / "copy"
        shutil.copytree(source, copy)
        (segment,) = chain_segments(copy, CHAIN)
        complete = segment.path.stat().st_size
        last = len(journal_lines(copy))
        line = orjson.dumps({"type": "access", "chain": {"id": CHAIN, "seq": last + 1}})
        with segment.path.open("ab") as handle:
            handle.write(line[:20])

        read = read_batch(copy, CHAIN, START, up_to=10**9, limits=UNLIMITED)
        assert [x.seq for x in read.lines] == list(range(1, last + 1))
        assert read.cursor == Cursor(segment.path.name, complete, last)

        with segment.path.open("ab") as handle:
            handle.write(line[20:] + b"\n")
        more = read_batch(copy, CHAIN, read.cursor, up_to=10**9, limits=UNLIMITED)
        assert [(x.seq, x.raw) for x in more.lines] == [(last + 1, line)]

    async def test_limits_cut_between_lines(self, tmp_path: Path) -> None:
        """A read stops before the line that would break max_events or max_bytes."""
        async with running(tmp_path) as opened:
            await append(opened, 10)
        lines = journal_lines(tmp_path)

        by_count = read_batch(
            tmp_path, CHAIN, START, up_to=10, limits=BatchLimits(max_events=3, max_bytes=1 << 20)
        )
        two = len(lines[0]) + len(lines[1]) + 2
        by_size = read_batch(
            tmp_path, CHAIN, START, up_to=10, limits=BatchLimits(max_events=100, max_bytes=two)
        )

        assert [x.raw for x in by_count.lines] == lines[:3]
        assert by_count.cursor.offset == sum(len(x) + 1 for x in lines[:3])
        assert [x.raw for x in by_size.lines] == lines[:2]
        assert by_size.cursor == Cursor(by_count.cursor.segment, two, 2)


class TestFailures:
    async def test_failed_sends_are_retried_without_loss(self, tmp_path: Path) -> None:
        """A sink that fails three times then works gets everything, once; the failures
        are counted and the error is cleared once sending works again."""
        sink = MemorySink(max_events=5)
        sink.fail_next = 3
        async with running(tmp_path) as opened, shipping(opened, sink) as ships:
            await append(opened, 12)
            await caught_up(opened, sink)
            status = ships.status

            assert sink.seqs == list(range(1, 13))
            assert status.failures == 3
            assert status.last_error is None
            assert sink.sends == len(sink.batches) + 3

    async def test_last_error_shows_while_the_sink_is_down(self, tmp_path: Path) -> None:
        """While the sink fails, status shows why; once it is back, the error clears."""
        sink = MemorySink()
        sink.down = True
        async with running(tmp_path) as opened, shipping(opened, sink) as ships:
            await append(opened, 3)
            await eventually(lambda: ships.status.failures >= 2, "repeated failures")
            assert ships.status.last_error == "sink is down"
            assert sink.batches == []

            sink.down = False
            await caught_up(opened, sink)
            assert ships.status.last_error is None
            assert sink.seqs == [1, 2, 3]

    @pytest.mark.parametrize("trouble", ["down", "hang"])
    async def test_appends_never_wait_on_the_sink(self, tmp_path: Path, trouble: str) -> None:
        """Requests are journaled at full speed while the sink fails or hangs."""
        sink = MemorySink(max_events=2)
        sink.down = trouble == "down"
        sink.hang = trouble == "hang"
        settings = draining(0.1)
        async with running(tmp_path) as opened, shipping(opened, sink, settings) as ships:
            async with asyncio.timeout(2):
                for n in range(40):
                    await opened.append(event(n))
                    await asyncio.sleep(0)  # let the shipper run between requests
            await eventually(lambda: sink.sends >= 1, "a send attempt")

            assert opened.durable_seq == 40
            assert sink.batches == []
            assert ships.lag_events == 40
            sink.down = False
            sink.release.set()
            await caught_up(opened, sink)

    async def test_lag_grows_and_the_alarm_follows(self, tmp_path: Path) -> None:
        """With the sink failing, the lag grows and the alarm turns on past
        lag_alarm_events; once the sink catches up, the alarm turns off."""
        settings = ShippingSettings(
            max_wait_s=0.01, retry_min_s=0.01, retry_max_s=0.02, lag_alarm_events=10
        )
        sink = MemorySink(max_events=4)
        sink.down = True
        async with running(tmp_path) as opened, shipping(opened, sink, settings) as ships:
            await append(opened, 5)
            failures = ships.status.failures
            await eventually(lambda: ships.status.failures > failures + 1, "failures at 5")
            assert ships.lag_events == 5
            assert not ships.status.alarm

            await append(opened, 7, start=5)
            assert ships.lag_events == 12
            await eventually(lambda: ships.status.alarm, "the alarm")

            assert ships.status.lag_seconds() > 0

            sink.down = False
            await caught_up(opened, sink)
            await eventually(lambda: not ships.status.alarm, "the alarm to clear")
            assert ships.lag_events == 0
            await eventually(lambda: ships.status.lag_seconds() == 0, "no lag in seconds")
            assert ships.status.shipped_seq == 12

    async def test_lag_after_a_restart_counts_from_the_cursor(self, tmp_path: Path) -> None:
        """After a restart with the sink unreachable, the lag is what was not shipped, not
        the whole journal."""
        first = MemorySink()
        opened, view, ships = await start_watched(tmp_path, first)
        await append(opened, 8)
        await close_once_shipped(view, ships)
        assert first.last_seq == 9  # with the closing checkpoint

        second = MemorySink()
        second.prepare_down = True
        quick_stop = dataclasses.replace(FAST, drain_s=0.1)
        async with running(tmp_path) as opened, shipping(opened, second, quick_stop) as ships:
            await ships.check(1.0)
            await append(opened, 2, start=8)
            prepares = second.prepares
            await eventually(lambda: second.prepares >= prepares + 2, "prepare attempts")
            assert ships.lag_events == 2
            assert ships.status.shipped_seq == 9


class TestStop:
    async def test_stop_drains_the_closing_events(self, tmp_path: Path) -> None:
        """Closing the journal and then stopping ships everything, the closing checkpoint
        included, without waiting for a partial batch to fill."""
        settings = dataclasses.replace(PATIENT, drain_s=2)
        sink = MemorySink()
        opened, view, ships = await start_watched(tmp_path, sink, settings)
        await idle(view, ships)
        await append(opened, 3)  # a partial batch, waiting for more
        await opened.close()

        began = time.monotonic()
        await ships.stop()

        assert time.monotonic() - began < 1.0
        assert sink.raw == journal_lines(tmp_path)
        assert sink.seqs == [1, 2, 3, 4]
        assert orjson.loads(sink.raw[-1])["type"] == "checkpoint"
        assert sink.closed
        assert CursorStore(tmp_path).load("mem", CHAIN).seq == 4

    async def test_stop_right_after_start_ships_what_is_durable(self, tmp_path: Path) -> None:
        """A shipper stopped as soon as it started still ships what the journal holds."""
        async with running(tmp_path) as opened:
            await append(opened, 3)
            sink = MemorySink()
            ships = shipper(opened, sink)
            ships.start()
            await ships.stop()

            assert sink.seqs == [1, 2, 3]

    async def test_stop_ships_events_that_became_durable_during_the_last_read(
        self, tmp_path: Path
    ) -> None:
        """Events that became durable while the shipper was reading are still drained."""
        async with running(tmp_path) as opened:
            await append(opened, 3)
            view = WatchedJournal(opened)
            view.stale_lookups = 1  # the shipper's read began before these were durable
            sink = MemorySink()
            ships = shipper(view, sink)
            ships.start()
            await ships.stop()

            assert sink.seqs == [1, 2, 3]

    async def test_stop_returns_in_time_when_the_sink_is_down(self, tmp_path: Path) -> None:
        """With the sink down, stop gives up after drain_s; the cursor still says where to
        resume, and the next start ships it all."""
        sink = MemorySink()
        sink.down = True
        await stops_in_time(tmp_path, sink, 3, drain_s=0.3, margin=1)
        assert sink.batches == []
        assert sink.closed
        assert CursorStore(tmp_path).load("mem", CHAIN).seq == 0

        again = MemorySink()
        async with running(tmp_path) as opened, shipping(opened, again):
            await caught_up(opened, again)
        assert again.seqs[:3] == [1, 2, 3]

    async def test_stop_returns_when_the_sink_hangs(self, tmp_path: Path) -> None:
        """A sink that never answers does not hold up shutdown beyond the drain time."""
        sink = MemorySink()
        sink.hang = True
        await stops_in_time(tmp_path, sink, 2, drain_s=0.1, margin=1.5)
        assert sink.closed
        assert sink.batches == []

    async def test_draining_a_down_sink_still_backs_off(self, tmp_path: Path) -> None:
        """While stop drains, a failing sink is retried with backoff, not hammered."""
        settings = ShippingSettings(max_wait_s=0.01, retry_min_s=0.1, retry_max_s=0.2, drain_s=0.5)
        sink = MemorySink()
        sink.down = True
        async with tried(tmp_path, sink, settings, 1) as ships:
            before = sink.sends
            await ships.stop()
        # At most one attempt per retry_min_s of drain time, plus the first.
        assert sink.sends - before <= settings.drain_s / settings.retry_min_s + 2

    async def test_stop_before_start_is_harmless(self, tmp_path: Path) -> None:
        """Stopping a shipper that never started returns at once and ships nothing."""
        sink = MemorySink()
        async with running(tmp_path) as opened:
            await append(opened, 1)
            ships = shipper(opened, sink)
            async with asyncio.timeout(1):
                await ships.stop()
        assert sink.sends == 0


class TestCheck:
    async def test_a_misconfigured_sink_stops_start_up(self, tmp_path: Path) -> None:
        """check() raises SinkMisconfigured, so keyledger refuses to start."""
        sink = MemorySink()
        sink.prepare_errors = [SinkMisconfigured("bucket has no Object Lock")]
        async with running(tmp_path) as opened:
            ships = shipper(opened, sink)
            with pytest.raises(SinkMisconfigured, match="Object Lock"):
                await ships.check(1.0)
        assert not ships.status.prepared

    @pytest.mark.parametrize(
        "error", [SinkError("connection refused"), OSError("connection refused")]
    )
    async def test_an_unreachable_sink_does_not_stop_start_up(
        self, tmp_path: Path, error: Exception
    ) -> None:
        """check() with a sink that cannot be reached returns, leaving it unprepared."""
        sink = MemorySink()
        sink.prepare_errors = [error]
        async with running(tmp_path) as opened:
            ships = shipper(opened, sink)
            await ships.check(1.0)
        assert not ships.status.prepared
        assert ships.status.last_error == "connection refused"
        assert ships.status.failures == 1

    async def test_a_hanging_sink_does_not_hold_up_start_up(self, tmp_path: Path) -> None:
        """check() gives up on a prepare that does not answer within within_s."""
        sink = MemorySink()
        sink.prepare_hang = True
        async with running(tmp_path) as opened:
            ships = shipper(opened, sink)
            began = time.monotonic()
            await ships.check(0.05)
            assert time.monotonic() - began < 1
        assert not ships.status.prepared
        assert ships.status.last_error is not None
        assert "0.05s" in ships.status.last_error

    async def test_a_ready_sink_is_prepared(self, tmp_path: Path) -> None:
        """check() with a working sink marks it prepared, and it is not prepared again."""
        sink = MemorySink()
        async with running(tmp_path) as opened:
            ships = shipper(opened, sink)
            await ships.check(1.0)
            assert ships.status.prepared
            ships.start()
            try:
                await append(opened, 2)
                await caught_up(opened, sink)
            finally:
                await ships.stop()
        assert sink.prepares == 1

    async def test_the_shipper_prepares_until_it_works_before_sending(self, tmp_path: Path) -> None:
        """A sink that was not ready at start-up is prepared again and again (even when it
        says it is misconfigured) and only sent to once prepare worked."""
        sink = MemorySink()
        sink.prepare_errors = [
            SinkError("unreachable"),
            SinkError("unreachable"),
            SinkMisconfigured("no Object Lock yet"),
            SinkError("unreachable"),
        ]
        async with running(tmp_path) as opened:
            ships = shipper(opened, sink)
            await ships.check(1.0)
            assert not ships.status.prepared
            await append(opened, 3)
            ships.start()
            try:
                await caught_up(opened, sink)
            finally:
                await ships.stop()

        assert sink.prepares == 5
        assert sink.sent_unprepared == 0
        assert ships.status.prepared
        assert ships.status.failures == 4
        assert sink.seqs == [1, 2, 3]


class TestStdoutSink:
    async def test_one_json_line_per_event(self, tmp_path: Path) -> None:
        """Shipped to stdout, each event is one JSON line, exactly as in the journal."""
        stream = io.BytesIO()
        sink = StdoutSink(StdoutSinkConfig(name="stdout"), stream=stream)
        opened, view, ships = await start_watched(tmp_path, sink)
        await append(opened, 5)
        await close_once_shipped(view, ships)

        lines = journal_lines(tmp_path)
        assert stream.getvalue() == b"".join(line + b"\n" for line in lines)
        out = stream.getvalue().splitlines()
        assert [orjson.loads(line)["chain"]["seq"] for line in out] == [1, 2, 3, 4, 5, 6]
        assert sink.name == "stdout"
        assert sink.limits == BatchLimits(max_events=1000, max_bytes=1 << 20)

    async def test_a_closed_stream_is_a_sink_error(self, tmp_path: Path) -> None:
        """Writing to a closed stdout fails the send with SinkError, so it is retried."""
        async with running(tmp_path) as opened:
            await append(opened, 1)
        stream = io.BytesIO()
        stream.close()
        sink = StdoutSink(StdoutSinkConfig(name="stdout"), stream=stream)
        batch = Batch(CHAIN, tuple(parse_line(raw) for raw in journal_lines(tmp_path)))

        with pytest.raises(SinkError, match="writing to stdout"):
            await sink.send(batch)
