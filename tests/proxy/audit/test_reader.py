"""Reading journals back: all events in time order, the last few, and new ones as written."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from keyledger.proxy.audit.events import AuditEvent
from keyledger.proxy.audit.filters import EventFilter
from keyledger.proxy.audit.reader import follow, iter_records, last_records
from keyledger.proxy.audit.segments import checkpoint_file
from tests.audit_records import Record, SealedChain, access_event

START = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
POLL = 0.01


class Chain(SealedChain):
    """A chain of allowed reads, each at a time given: seq n by svc-(n % 3) of app/n, the
    secret's name padded with ``pad`` x's."""

    def reads(self, times: list[datetime], pad: int) -> list[AuditEvent]:
        first = self.state.seq + 1
        return [
            access_event(
                at=at,
                request=None,
                principal=f"svc-{seq % 3}",
                secret=f"app/{seq}" + "x" * pad,
                latency_ms=1.5,
            )
            for seq, at in enumerate(times, first)
        ]

    def lines(self, times: list[datetime], *, pad: int = 0) -> list[bytes]:
        """Sealed lines for reads at ``times``, not written anywhere."""
        return self.seal(*self.reads(times, pad))

    def write(self, times: list[datetime], *, pad: int = 0) -> list[bytes]:
        """Reads at ``times``, appended to the current segment."""
        return self.add(*self.reads(times, pad))


def minutes(*values: float) -> list[datetime]:
    return [START + timedelta(minutes=v) for v in values]


def where(record: Record) -> tuple[str, int]:
    return record["chain"]["id"], record["chain"]["seq"]


def two_chains(directory: Path) -> tuple[Chain, Chain]:
    """Chain a in three segments at even minutes, chain b in one at odd minutes."""
    a, b = Chain(directory, "replica-a"), Chain(directory, "replica-b")
    a.write(minutes(0, 2, 4))
    a.rotate()
    a.write(minutes(6, 8))
    a.rotate()
    a.write(minutes(10, 12, 14))
    b.write(minutes(1, 3, 5, 7, 9, 11))
    return a, b


class TestIterRecords:
    def test_chains_and_segments_merge_into_one_timeline(self, tmp_path: Path) -> None:
        """Three segments of one chain and a second chain read as one list in time order."""
        two_chains(tmp_path)

        records = list(iter_records(tmp_path, EventFilter()))

        assert [r["time"] for r in records] == sorted(r["time"] for r in records)
        assert len(records) == 14
        a_seqs = [seq for chain, seq in map(where, records) if chain == "replica-a"]
        assert a_seqs == list(range(1, 9))
        assert [where(r) for r in records[:3]] == [
            ("replica-a", 1),
            ("replica-b", 1),
            ("replica-a", 2),
        ]

    def test_a_single_file_is_a_source(self, tmp_path: Path) -> None:
        """Given one segment file, only its events are read."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0, 1))
        first = chain.path
        chain.rotate()
        chain.write(minutes(2))
        assert first is not None

        assert [where(r)[1] for r in iter_records(first, EventFilter())] == [1, 2]

    def test_torn_last_line_is_skipped(self, tmp_path: Path) -> None:
        """A half-written last line (a crash mid-write) is left out, not an error."""
        chain = Chain(tmp_path, "node-1")
        lines = chain.write(minutes(0, 1, 2))
        assert chain.path is not None
        with chain.path.open("ab") as handle:
            handle.write(chain.lines(minutes(3))[0][:40])

        records = list(iter_records(tmp_path, EventFilter()))

        assert [orjson.dumps(r) + b"\n" for r in records] == lines

    def test_lines_that_are_not_objects_are_skipped(self, tmp_path: Path) -> None:
        """Blank lines, garbage and JSON that is not an object do not stop the reader."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0))
        assert chain.path is not None
        with chain.path.open("ab") as handle:
            handle.write(b'\n[1, 2]\nnot json\n"text"\n')
        chain.write(minutes(1))

        assert [where(r)[1] for r in iter_records(tmp_path, EventFilter())] == [1, 2]

    def test_checkpoints_and_other_files_are_not_events(self, tmp_path: Path) -> None:
        """Checkpoint files, empty files and foreign JSON lines are not read as events."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0))
        checkpoint_file(tmp_path, "node-1").write_bytes(b'{"chain":{"id":"node-1","seq":1}}\n')
        (tmp_path / "empty.jsonl").touch()
        (tmp_path / "other.jsonl").write_bytes(b'{"level":"info"}\n')

        assert len(list(iter_records(tmp_path, EventFilter()))) == 1

    def test_filter_applies(self, tmp_path: Path) -> None:
        """Only events the filter matches are returned."""
        two_chains(tmp_path)
        svc1 = EventFilter(principals=frozenset({"svc-1"}))

        records = list(iter_records(tmp_path, svc1))

        assert records
        assert all(r["principal"]["id"] == "svc-1" for r in records)
        assert len(records) == sum(
            1 for r in iter_records(tmp_path, EventFilter()) if r["principal"]["id"] == "svc-1"
        )

    def test_missing_source_is_an_error(self, tmp_path: Path) -> None:
        """A mistyped path is reported instead of reading as an empty journal."""
        with pytest.raises(FileNotFoundError, match="no journal file or folder"):
            list(iter_records(tmp_path / "nope", EventFilter()))


def large_journal(directory: Path) -> None:
    """Two chains of several 64 KiB+ segments, interleaved in time."""
    a, b = Chain(directory, "replica-a"), Chain(directory, "replica-b")
    for segment in range(3):
        base = segment * 300
        a.write([START + timedelta(seconds=base + 2 * i) for i in range(150)], pad=400)
        b.write([START + timedelta(seconds=base + 2 * i + 1) for i in range(150)], pad=400)
        a.rotate()
        b.rotate()
    assert a.path is not None


class TestLastRecords:
    def test_large_files_give_exactly_the_tail(self, tmp_path: Path) -> None:
        """The last n matching events of a large journal equal the tail of a full read."""
        large_journal(tmp_path)
        assert all(p.stat().st_size > 1 << 16 for p in tmp_path.glob("*.jsonl") if p.stat().st_size)
        svc1 = EventFilter(principals=frozenset({"svc-1"}))

        for keep in (EventFilter(), svc1):
            everything = list(iter_records(tmp_path, keep))
            for n in (1, 25, 140):
                tail = last_records(tmp_path, n, keep)
                assert len(tail) == n
                assert tail == everything[-n:]

    def test_more_than_there_are(self, tmp_path: Path) -> None:
        """Asking for more events than exist returns them all, oldest first."""
        two_chains(tmp_path)

        assert last_records(tmp_path, 100, EventFilter()) == list(
            iter_records(tmp_path, EventFilter())
        )
        assert last_records(tmp_path, 0, EventFilter()) == []

    def test_torn_last_line_is_skipped(self, tmp_path: Path) -> None:
        """The last events are the last complete ones, not a half-written line."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0, 1, 2))
        assert chain.path is not None
        with chain.path.open("ab") as handle:
            handle.write(chain.lines(minutes(3))[0][:-30])

        assert [where(r)[1] for r in last_records(tmp_path, 2, EventFilter())] == [2, 3]

    def test_a_file_without_a_final_newline(self, tmp_path: Path) -> None:
        """A complete last event without its newline is still the last event."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0, 1))
        assert chain.path is not None
        chain.path.write_bytes(chain.path.read_bytes().rstrip(b"\n"))

        assert [where(r)[1] for r in last_records(tmp_path, 5, EventFilter())] == [1, 2]


@contextlib.asynccontextmanager
async def following(
    source: Path, filt: EventFilter | None = None, *, start_at_end: bool = False
) -> AsyncIterator[AsyncGenerator[Record, None]]:
    stream = follow(source, filt or EventFilter(), poll_s=POLL, start_at_end=start_at_end)
    try:
        yield stream
    finally:
        await stream.aclose()


async def take(stream: AsyncIterator[Record], count: int) -> list[Record]:
    async with asyncio.timeout(5):
        return [await anext(stream) for _ in range(count)]


async def _next(stream: AsyncIterator[Record]) -> Record:
    return await anext(stream)


async def still_waiting(stream: AsyncIterator[Record]) -> asyncio.Task[Record]:
    """The next event, asked for now; checked to not be there after a few polls."""
    task = asyncio.create_task(_next(stream))
    await asyncio.sleep(POLL * 10)
    assert not task.done()
    return task


class TestFollow:
    async def test_appended_lines_arrive(self, tmp_path: Path) -> None:
        """Events appended after following began are yielded in order."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0, 1))
        async with following(tmp_path) as stream:
            assert [where(r)[1] for r in await take(stream, 2)] == [1, 2]
            waiting = await still_waiting(stream)
            chain.write(minutes(2, 3, 4))
            async with asyncio.timeout(5):
                third = await waiting
            rest = await take(stream, 2)

        assert [where(r)[1] for r in [third, *rest]] == [3, 4, 5]

    async def test_starts_at_the_end(self, tmp_path: Path) -> None:
        """By default only events written after following began are yielded."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0, 1, 2))
        async with following(tmp_path, start_at_end=True) as stream:
            first = asyncio.create_task(_next(stream))
            async with asyncio.timeout(5):
                while not first.done():
                    chain.write(minutes(3))
                    await asyncio.sleep(POLL * 5)
            record = first.result()

        assert where(record)[1] > 3  # none of the three already there

    async def test_filter_applies(self, tmp_path: Path) -> None:
        """Only matching new events are yielded."""
        chain = Chain(tmp_path, "node-1")
        svc1 = EventFilter(principals=frozenset({"svc-1"}))
        async with following(tmp_path, svc1) as stream:
            chain.write(minutes(0, 1, 2, 3, 4, 5))
            records = await take(stream, 2)

        assert [where(r)[1] for r in records] == [1, 4]

    async def test_a_line_written_in_two_halves(self, tmp_path: Path) -> None:
        """A line is yielded once, whole, when its second half and newline arrive."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0))
        assert chain.path is not None
        line = chain.lines(minutes(1))[0]
        async with following(tmp_path) as stream:
            await take(stream, 1)
            with chain.path.open("ab") as handle:
                handle.write(line[:50])
            waiting = await still_waiting(stream)
            with chain.path.open("ab") as handle:
                handle.write(line[50:])
            async with asyncio.timeout(5):
                record = await waiting

        assert record == orjson.loads(line)

    @pytest.mark.parametrize("from_file", [False, True], ids=["folder", "file"])
    async def test_rotation_into_a_new_segment(self, tmp_path: Path, from_file: bool) -> None:
        """The chain goes on in its next segment once the old one has been read to its end."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0, 1))
        first = chain.path
        assert first is not None
        async with following(first if from_file else tmp_path) as stream:
            await take(stream, 2)
            waiting = await still_waiting(stream)
            chain.write(minutes(2, 3))  # the old segment's last events...
            chain.rotate()
            chain.write(minutes(4, 5))  # ...then the new segment's
            async with asyncio.timeout(5):
                records = [await waiting, *await take(stream, 3)]
            chain.rotate()
            chain.write(minutes(6))
            records += await take(stream, 1)

        assert [where(r)[1] for r in records] == [3, 4, 5, 6, 7]

    async def test_a_new_chain_appears(self, tmp_path: Path) -> None:
        """A replica that starts writing into the folder is followed from its first event."""
        a = Chain(tmp_path, "replica-a")
        a.write(minutes(0))
        b = Chain(tmp_path, "replica-b")
        async with following(tmp_path) as stream:
            await take(stream, 1)
            b.rotate()  # created empty first, as a writer does
            waiting = await still_waiting(stream)
            b.write(minutes(1, 2))
            async with asyncio.timeout(5):
                records = [await waiting, *await take(stream, 1)]

        assert [where(r) for r in records] == [("replica-b", 1), ("replica-b", 2)]

    async def test_chains_written_together_come_out_in_time_order(self, tmp_path: Path) -> None:
        """Events from several chains found in one look are merged by time."""
        a, b = Chain(tmp_path, "replica-a"), Chain(tmp_path, "replica-b")
        a.write(minutes(0))
        b.write(minutes(0.5))
        async with following(tmp_path) as stream:
            await take(stream, 2)
            b.write(minutes(2, 4))
            a.write(minutes(1, 3, 5))
            records = await take(stream, 5)

        assert [r["time"] for r in records] == sorted(r["time"] for r in records)

    async def test_torn_tail_set_aside(self, tmp_path: Path) -> None:
        """When a restarting writer cuts off a torn line and goes on, the new line is read."""
        chain = Chain(tmp_path, "node-1")
        chain.write(minutes(0, 1))
        assert chain.path is not None
        good, state = chain.path.stat().st_size, chain.state
        with chain.path.open("ab") as handle:
            handle.write(chain.lines(minutes(2))[0][:60])
        chain.state = state  # the restarted writer continues after the last whole line
        async with following(tmp_path) as stream:
            await take(stream, 2)
            waiting = await still_waiting(stream)
            with chain.path.open("r+b") as handle:
                handle.truncate(good)
            chain.write(minutes(3))
            async with asyncio.timeout(5):
                record = await waiting

        assert where(record) == ("node-1", 3)
        assert record["time"].startswith("2026-11-23T21:03:00")

    async def test_file_cut_shorter_is_read_from_its_new_end(self, tmp_path: Path) -> None:
        """If complete lines are cut off, what is written after the new end is read."""
        chain = Chain(tmp_path, "node-1")
        first = chain.write(minutes(0))[0]
        after_first = chain.state
        chain.write(minutes(1, 2))
        assert chain.path is not None
        async with following(tmp_path) as stream:
            await take(stream, 3)
            waiting = await still_waiting(stream)
            with chain.path.open("r+b") as handle:
                handle.truncate(len(first))
            await asyncio.sleep(POLL * 10)  # the follower notices the file is shorter
            chain.state = after_first
            chain.write(minutes(7, 8))
            async with asyncio.timeout(5):
                records = [await waiting, *await take(stream, 1)]

        assert [(where(r)[1], r["time"][11:16]) for r in records] == [(2, "21:07"), (3, "21:08")]

    async def test_missing_source_is_an_error(self, tmp_path: Path) -> None:
        """Following a path that does not exist fails at once."""
        with pytest.raises(FileNotFoundError):
            await anext(follow(tmp_path / "nope", EventFilter()))
