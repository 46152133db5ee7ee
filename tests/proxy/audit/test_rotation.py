"""Segment rotation: the chain runs on across numbered files that are never touched again;
the policy says when a segment is due, and the new one says where the chain came from."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from pathlib import Path

import orjson
import pytest

from keyledger.proxy.audit.chain import GENESIS, ChainState, seal
from keyledger.proxy.audit.checkpoints import CheckpointSigner
from keyledger.proxy.audit.journal import Journal, JournalUnavailable, Rotation
from keyledger.proxy.audit.rotation import RETRY_S, RotationPolicy, segment_start
from keyledger.proxy.audit.segments import chain_segments, checkpoint_file, segment_path
from keyledger.proxy.audit.verify import verify_path
from tests.proxy.audit.conftest import CHAIN, Intact, append, event, records, running

SEGMENT_NAME = re.compile(rf"^{CHAIN}\.(\d{{12}})\.jsonl$")


def segment_files(directory: Path) -> list[Path]:
    """The chain's segment files, oldest first."""
    return [s.path for s in chain_segments(directory, CHAIN)]


async def append_until_rotated(journal: Journal, times: int, start: int = 0) -> int:
    """Append events until ``times`` more rotations happened; return the next event number."""
    target = journal.stats.rotations + times
    n = start
    while journal.stats.rotations < target:
        await journal.append(event(n))
        n += 1
        assert n - start < 10_000, "rotation never happened"
    return n


def snapshot(paths: list[Path]) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


class TestRotation:
    async def test_size_starts_numbered_segments(self, journal_dir: Path) -> None:
        """Past max_bytes a new file is started, named by the seq of its first event."""
        async with running(
            journal_dir, rotation=Rotation(max_bytes=4096, max_age_s=None)
        ) as journal:
            await append_until_rotated(journal, 3)
            assert journal.stats.rotations == 3

        paths = segment_files(journal_dir)
        assert len(paths) == 4
        assert paths[0] == segment_path(journal_dir, CHAIN, 1)
        for path in paths:
            match = SEGMENT_NAME.match(path.name)
            assert match is not None, path.name
            assert int(match[1]) == records(path)[0]["chain"]["seq"]
        for path in paths[:-1]:
            # Rotated once past the limit, by at most the line that crossed it.
            size = path.stat().st_size
            assert 4096 <= size < 4096 + 1024
        assert journal.path == paths[-1]

    async def test_chain_runs_on_across_files(self, journal_dir: Path) -> None:
        """Each new file opens with a segment_start event naming the file and hash before it."""
        async with running(
            journal_dir, rotation=Rotation(max_bytes=4096, max_age_s=None)
        ) as journal:
            await append_until_rotated(journal, 3)

        paths = segment_files(journal_dir)
        for before, after in itertools.pairwise(paths):
            last = records(before)[-1]["chain"]
            header = records(after)[0]
            assert header["type"] == "lifecycle"
            assert header["chain"]["seq"] == last["seq"] + 1
            assert header["chain"]["prev"] == last["hash"]
            assert header["detail"] == {
                "event": "segment_start",
                "reason": "size",
                "previous_segment": before.name,
                "previous_last_seq": last["seq"],
                "previous_last_hash": last["hash"],
            }
        seqs = [r["chain"]["seq"] for p in paths for r in records(p)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert records(paths[0])[0]["chain"]["prev"] == GENESIS

    async def test_age_starts_a_new_segment(self, journal_dir: Path) -> None:
        """A segment older than max_age_s is closed at the next event, with reason age."""
        async with running(
            journal_dir, rotation=Rotation(max_bytes=None, max_age_s=0.05)
        ) as journal:
            await append(journal, 2, start=1)
            await asyncio.sleep(0.1)
            await journal.append(event(3))
            assert journal.stats.rotations == 1

        first, second = segment_files(journal_dir)
        assert [r["chain"]["seq"] for r in records(first)] == [1, 2]
        header, moved = records(second)
        assert header["detail"]["reason"] == "age"
        assert moved["principal"]["id"] == "svc-3"

    async def test_closed_segments_end_with_a_checkpoint(
        self, journal_dir: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """With checkpoints on, every file ends sealed, so each verifies with its own signature."""
        rotation = Rotation(max_bytes=4096, max_age_s=None)
        async with running(journal_dir, signer, rotation=rotation) as journal:
            await append_until_rotated(journal, 3)
            await journal.append(event(-1))

        paths = segment_files(journal_dir)
        assert len(paths) == 4
        for path in paths:
            before, last = records(path)[-2:]
            assert last["type"] == "checkpoint", path.name
            assert last["detail"]["seals"] == {
                "seq": before["chain"]["seq"],
                "hash": before["chain"]["hash"],
            }
        filed = checkpoint_file(journal_dir, CHAIN).read_bytes().splitlines()
        assert len(filed) == 4
        report = intact(journal_dir)
        assert report.chains[CHAIN].unsealed == 0

    async def test_rotated_files_are_never_modified(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """Once rotated away from, a file keeps its bytes and mtime through writes and restarts."""
        rotation = Rotation(max_bytes=4096, max_age_s=None)
        async with running(journal_dir, signer, rotation=rotation, every_events=5) as journal:
            n = await append_until_rotated(journal, 2)
            closed = segment_files(journal_dir)[:-1]
            before = snapshot(closed)
            n = await append_until_rotated(journal, 2, n)
        async with running(journal_dir, signer, rotation=rotation, every_events=5) as journal:
            await append_until_rotated(journal, 1, n)

        assert len(segment_files(journal_dir)) == 6
        assert snapshot(closed) == before

    async def test_restart_continues_in_the_newest_segment(
        self, journal_dir: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """After a restart, events go on in the newest file, not a new or older one."""
        rotation = Rotation(max_bytes=4096, max_age_s=None)
        async with running(journal_dir, signer, rotation=rotation) as journal:
            n = await append_until_rotated(journal, 2)
            await journal.append(event(n))
        newest = segment_files(journal_dir)[-1]
        assert newest.stat().st_size < 4096
        last_seq = journal.state.seq

        async with running(journal_dir, signer, rotation=rotation) as journal:
            assert journal.path == newest
            assert journal.state.seq == last_seq
            await journal.append(event(n + 1))

        assert segment_files(journal_dir)[-1] == newest
        appended = records(newest)[-2]
        assert appended["principal"]["id"] == f"svc-{n + 1}"
        assert appended["chain"]["seq"] == last_seq + 1
        intact(journal_dir)

    async def test_restart_rotates_a_segment_that_aged_meanwhile(self, journal_dir: Path) -> None:
        """A segment's age counts from its first event, so downtime counts toward it."""
        rotation = Rotation(max_bytes=None, max_age_s=0.1)
        async with running(journal_dir, rotation=rotation) as journal:
            await append(journal, 2, start=1)
        await asyncio.sleep(0.15)

        async with running(journal_dir, rotation=rotation) as journal:
            await journal.append(event(3))

        first, second = segment_files(journal_dir)
        assert len(records(first)) == 2
        assert records(second)[0]["detail"]["reason"] == "age"

    async def test_multi_segment_journal_verifies(
        self, journal_dir: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """verify on the folder checks every file of the chain as one run and counts them."""
        rotation = Rotation(max_bytes=4096, max_age_s=None)
        async with running(journal_dir, signer, rotation=rotation, every_events=7) as journal:
            await append_until_rotated(journal, 4)
        state = journal.state  # after the checkpoint close wrote

        report = intact(journal_dir)

        chain = report.chains[CHAIN]
        assert chain.files == 5
        assert (chain.last_seq, chain.last_hash) == (state.seq, state.hash)
        assert chain.events == state.seq
        assert len(report.files) == 6  # five segments and the checkpoint file
        assert str(checkpoint_file(journal_dir, CHAIN)) in report.files

    @pytest.mark.parametrize("checkpoints", [False, True], ids=["plain", "checkpointed"])
    async def test_never_loops_on_a_segment_holding_only_its_header(
        self, journal_dir: Path, signer: CheckpointSigner, checkpoints: bool
    ) -> None:
        """With limits every file exceeds at once, each append still lands, one file each."""
        rotation = Rotation(max_bytes=1, max_age_s=0)
        async with running(
            journal_dir, signer if checkpoints else None, rotation=rotation
        ) as journal:
            async with asyncio.timeout(5):
                await append(journal, 6)
            paths = segment_files(journal_dir)

        assert [r["principal"]["id"] for r in records(paths[0])[:2]] == ["svc-0", "svc-1"]
        assert len(paths) == 5
        for path in paths[1:-1]:
            types = [r["type"] for r in records(path)]
            expected = ["lifecycle", "access"] + (["checkpoint"] if checkpoints else [])
            assert types == expected, path.name
        assert verify_path(journal_dir).ok

    @pytest.mark.parametrize("trigger", ["close", "timer"])
    async def test_no_segment_is_opened_without_an_event(
        self, journal_dir: Path, signer: CheckpointSigner, trigger: str
    ) -> None:
        """Sealing a journal due for rotation does not open a file that holds no event.

        Rotation happens for the next event; a checkpoint written by close or by the timer
        of a quiet chain has no event to carry into a new file, so it belongs in the old one.
        """
        if trigger == "close":
            rotation, every_s = Rotation(max_bytes=4096, max_age_s=None), 3600.0
        else:
            rotation, every_s = Rotation(max_bytes=None, max_age_s=0.1), 0.05
        async with running(journal_dir, signer, rotation=rotation, every_s=every_s) as journal:
            n = 0
            while journal.path.stat().st_size < 4096:
                await journal.append(event(n))
                n += 1
            if trigger == "timer":
                await asyncio.sleep(0.6)  # a dozen ticks, several segment lifetimes

        for path in segment_files(journal_dir):
            kinds = [
                r["detail"]["event"] if r["type"] == "lifecycle" else r["type"]
                for r in records(path)
            ]
            carried = [k for k in kinds if k not in ("segment_start", "checkpoint")]
            assert carried, f"{path.name} holds no event, only {kinds}"

    async def test_legacy_single_file_is_continued_then_rotated(
        self, tmp_path: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """A journal from before rotation goes on in <chain>.jsonl, then into numbered files."""
        journal_dir = tmp_path  # a folder that already holds the legacy file
        legacy = journal_dir / f"{CHAIN}.jsonl"
        state = ChainState(CHAIN)
        lines = []
        for n in range(3):
            line, state = seal(event(n).to_record(), state)
            lines.append(line)
        legacy.write_bytes(b"".join(lines))

        rotation = Rotation(max_bytes=4096, max_age_s=None)
        async with running(journal_dir, signer, rotation=rotation) as journal:
            assert journal.path == legacy
            assert journal.state == state
            n = await append_until_rotated(journal, 2, 3)
        async with running(journal_dir, signer, rotation=rotation) as journal:
            newest = journal.path
            await journal.append(event(n))

        paths = segment_files(journal_dir)
        assert paths[0] == legacy
        assert len(paths) == 3
        assert newest == paths[-1]
        assert legacy.read_bytes().startswith(b"".join(lines))
        continued = records(legacy)[3]
        assert continued["chain"]["seq"] == 4
        assert continued["chain"]["prev"] == state.hash
        header = records(paths[1])[0]
        assert paths[1] == segment_path(journal_dir, CHAIN, header["chain"]["seq"])
        assert header["detail"]["previous_segment"] == legacy.name
        assert header["detail"]["previous_last_seq"] == records(legacy)[-1]["chain"]["seq"]
        assert records(legacy)[-1]["type"] == "checkpoint"
        report = intact(journal_dir)
        assert report.chains[CHAIN].files == 3

    async def test_empty_newest_segment_is_dropped(self, journal_dir: Path) -> None:
        """An empty numbered file after the real ones (made by hand) is removed, not continued."""
        rotation = Rotation(max_bytes=4096, max_age_s=None)
        async with running(journal_dir, rotation=rotation) as journal:
            await append_until_rotated(journal, 1)
            state = journal.state
        stray = segment_path(journal_dir, CHAIN, state.seq + 1)
        stray.write_bytes(b"")

        async with running(journal_dir, rotation=rotation) as journal:
            assert journal.state == state
            assert journal.path == segment_files(journal_dir)[-1]

        assert not stray.exists()
        assert verify_path(journal_dir).ok

    async def test_close_waits_for_a_rotation_in_flight(
        self, journal_dir: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """Closing while a request is rotating the journal leaves it sealed, with no stray error."""
        rotation = Rotation(max_bytes=1, max_age_s=None)
        async with running(journal_dir, signer, rotation=rotation) as journal:
            await append(journal, 2, start=1)
            # This append starts a rotation (a checkpoint, then a new file) ...
            request = asyncio.create_task(journal.append(event(3)))
            await asyncio.sleep(0)
            # ... and the proxy shuts down meanwhile (the context manager closes it).

        # The request's event was written, or it was refused the documented way.
        with contextlib.suppress(JournalUnavailable):
            await request
        report = intact(journal_dir)
        assert report.chains[CHAIN].unsealed == 0, "the journal's end is not sealed"

    async def test_event_after_a_rotation_is_in_the_new_file(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """An event appended just after a rotation is in the new file when append returns."""
        rotation = Rotation(max_bytes=4096, max_age_s=None)
        async with running(journal_dir, signer, rotation=rotation) as journal:
            n = await append_until_rotated(journal, 1)
            await journal.append(event(n))
            on_disk = journal.path.read_bytes()

        lines = [orjson.loads(line) for line in on_disk.splitlines()]
        assert [r["type"] for r in lines] == ["lifecycle", "access", "access"]
        assert lines[-1]["principal"]["id"] == f"svc-{n}"
        assert journal.stats.rotations == 1


class FakeClock:
    """Epoch seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class TestRotationPolicy:
    def test_size_is_due_at_the_limit(self) -> None:
        """A segment at or past max_bytes is due by size; below it, not."""
        clock = FakeClock()
        policy = RotationPolicy(Rotation(max_bytes=1000, max_age_s=None), clock=clock)

        assert policy.due(size=999, born=clock.now) is None
        assert policy.due(size=1000, born=clock.now) == "size"

    def test_age_is_due_at_the_limit(self) -> None:
        """A segment begun max_age_s ago is due by age."""
        clock = FakeClock()
        policy = RotationPolicy(Rotation(max_bytes=None, max_age_s=60), clock=clock)
        born = clock.now
        clock.now += 59

        assert policy.due(size=10, born=born) is None
        clock.now += 1
        assert policy.due(size=10, born=born) == "age"

    def test_size_is_named_before_age(self) -> None:
        """When both limits are passed, the reason is size."""
        clock = FakeClock()
        policy = RotationPolicy(Rotation(max_bytes=10, max_age_s=1), clock=clock)

        assert policy.due(size=10, born=clock.now - 5) == "size"

    def test_no_limits_never_rotate(self) -> None:
        """With both triggers off, no segment is ever due."""
        clock = FakeClock()
        policy = RotationPolicy(Rotation(max_bytes=None, max_age_s=None), clock=clock)

        assert policy.due(size=1 << 40, born=0.0) is None

    def test_a_failure_pauses_rotation_for_a_minute(self) -> None:
        """After a failed rotation nothing is due for RETRY_S seconds, then it is again."""
        clock = FakeClock()
        policy = RotationPolicy(Rotation(max_bytes=10), clock=clock)

        policy.failed()

        assert policy.due(size=100, born=clock.now) is None
        clock.now += RETRY_S - 1
        assert policy.due(size=100, born=clock.now) is None
        clock.now += 1
        assert policy.due(size=100, born=clock.now) == "size"


class TestSegmentStart:
    def test_names_the_previous_file_and_its_last_event(self) -> None:
        """The first event of a new segment says why and where the chain comes from."""
        previous = ChainState(CHAIN, 41, "ab" * 32)

        detail = segment_start("size", Path(f"/j/{CHAIN}.000000000001.jsonl"), previous)

        assert detail == {
            "event": "segment_start",
            "reason": "size",
            "previous_segment": f"{CHAIN}.000000000001.jsonl",
            "previous_last_seq": 41,
            "previous_last_hash": "ab" * 32,
        }

    def test_more_detail_follows_in_order(self) -> None:
        """What a lost file adds comes after the chain's link, in the order given."""
        detail = segment_start(
            "file_removed", Path("x.jsonl"), ChainState(CHAIN), found="x was removed", n=1
        )

        assert list(detail)[-2:] == ["found", "n"]
