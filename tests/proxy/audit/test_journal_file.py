"""The journal keeps writing where readers look: a segment file changed under it is left
behind, the chain goes on in a fresh segment that records what was found, and no event
is acknowledged from a file nobody can see. A journal cut behind its checkpoints refuses
to start rather than reuse sealed seqs."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keyledger.proxy.audit.checkpoints import CheckpointSigner
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.audit.segments import chain_segments, discover, segment_path
from keyledger.proxy.audit.verify import verify_path
from tests.proxy.audit.conftest import (
    CHAIN,
    append,
    event,
    new_journal,
    records,
    running,
    until,
)

# Quick enough that a test waits a fraction of a second for the journal to notice.
WATCH_S = 0.05


def sed_in_place(path: Path) -> None:
    """What the README invites: `sed -i` rewrites the file into a new one (a new inode)."""
    subprocess.run(["sed", "-i", "s/svc-1/svc-X/", str(path)], check=True)


def truncate(path: Path) -> None:
    subprocess.run(["truncate", "-s", "0", str(path)], check=True)


def move_within_folder(path: Path) -> None:
    path.rename(path.with_name("kept-by-hand.jsonl"))


def remove(path: Path) -> None:
    path.unlink()


def append_foreign_line(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(b'{"forged": true}\n')


CHANGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "sed -i": (sed_in_place, "file_replaced"),
    "truncate": (truncate, "file_truncated"),
    "mv": (move_within_folder, "file_moved"),
    "rm": (remove, "file_removed"),
    "append": (append_foreign_line, "file_appended"),
}


def visible_events(directory: Path) -> list[dict[str, Any]]:
    """Every event in the chain's files that readers find at the journal's folder."""
    found = discover(directory)
    return [
        record
        for segment in found.segments.get(CHAIN, [])
        for record in records(segment.path)
        if "chain" in record
    ]


def principals(events: list[dict[str, Any]]) -> list[str]:
    """The principal of each access event, in order."""
    return [e["principal"]["id"] for e in events if e["type"] == "access"]


def new_segment_header(directory: Path) -> dict[str, Any]:
    """The first event of the chain's newest segment file."""
    return records(chain_segments(directory, CHAIN)[-1].path)[0]


async def change_while_quiet(journal_dir: Path, change: Callable[[Path], None]) -> Path:
    """Three events, ``change`` to the live segment, wait for the journal to leave it, two
    more events; return the changed segment's path."""
    async with running(journal_dir, watch_s=WATCH_S) as journal:
        await append(journal, 3)
        first = journal.path
        change(first)
        await until(lambda: journal.path != first)
        await append(journal, 2, start=3)
    return first


class TestQuietJournal:
    @pytest.mark.parametrize("how", list(CHANGES))
    async def test_a_changed_file_is_left_for_a_new_segment_before_the_next_request(
        self, journal_dir: Path, how: str
    ) -> None:
        """A segment changed while no request is under way is noticed on the timer, and the
        next event lands in a new segment that begins by saying what was found."""
        change, reason = CHANGES[how]
        async with running(journal_dir, watch_s=WATCH_S) as journal:
            await append(journal, 3)
            first = journal.path
            change(first)
            await until(lambda: journal.path != first)
            assert journal.healthy
            await journal.append(event(10))
            assert journal.stats.files_lost == 1

        header = new_segment_header(journal_dir)
        assert header["type"] == "lifecycle"
        assert header["chain"]["seq"] == 4
        assert header["detail"]["event"] == "segment_start"
        assert header["detail"]["reason"] == reason
        assert header["detail"]["previous_segment"] == first.name
        assert header["detail"]["previous_last_seq"] == 3
        assert header["detail"]["unacknowledged_seqs"] is None
        assert first.name in header["detail"]["found"]
        assert principals(records(journal.path)) == ["svc-10"]

    async def test_a_file_moved_within_the_folder_still_verifies(self, journal_dir: Path) -> None:
        """Readers find segments by content, so a segment moved aside by hand and the new one
        that continues it still form one intact chain."""
        await change_while_quiet(journal_dir, move_within_folder)

        report = verify_path(journal_dir)
        assert report.ok, report.problems
        assert report.chains[CHAIN].last_seq == 6

    async def test_sed_edit_is_reported_by_verify_and_the_chain_goes_on(
        self, journal_dir: Path
    ) -> None:
        """After `sed -i` on the live segment, verify names the edited line, and the events
        written since link onto the chain as keyledger wrote it (no seq reused)."""
        first = await change_while_quiet(journal_dir, sed_in_place)

        report = verify_path(journal_dir)
        assert not report.ok
        assert report.problems[0].file == str(first)
        assert report.problems[0].seq == 2  # svc-1's event
        seqs = [r["chain"]["seq"] for r in visible_events(journal_dir)]
        assert seqs == [1, 2, 3, 4, 5, 6]


class TestBusyJournal:
    @pytest.mark.parametrize("how", list(CHANGES))
    async def test_an_event_written_into_a_changed_file_is_never_acknowledged(
        self, journal_dir: Path, how: str
    ) -> None:
        """An event that went into the changed file before anyone noticed is refused (its
        request fails closed); the next one lands in a new segment that lists it."""
        change, reason = CHANGES[how]
        async with running(journal_dir, watch_s=3600) as journal:
            await append(journal, 3)
            first = journal.path
            change(first)
            with pytest.raises(JournalUnavailable, match="changed under it"):
                await journal.append(event(99))
            await journal.append(event(10))

        header = new_segment_header(journal_dir)
        assert header["detail"]["reason"] == reason
        assert header["detail"]["unacknowledged_seqs"] == {"first": 4, "last": 4}
        assert header["chain"]["seq"] == 5  # seq 4 is never given to another event
        served = principals(visible_events(journal_dir))
        assert "svc-10" in served
        if how in ("sed -i", "rm"):  # elsewhere the file (or a copy) is still found: seq 4
            assert "svc-99" not in served  # is there, but its request was refused

    async def test_concurrent_requests_across_a_replacement(self, journal_dir: Path) -> None:
        """Every append that returned while the file was replaced under a stream of appends
        is in a file at the journal's folder, and no seq names two events."""
        acknowledged: list[int] = []

        async def request(n: int) -> None:
            try:
                await journal.append(event(n))
            except JournalUnavailable:
                return
            acknowledged.append(n)

        async with running(journal_dir, watch_s=WATCH_S) as journal:
            first_batch = [asyncio.create_task(request(n)) for n in range(200)]
            await asyncio.sleep(0)
            sed_in_place(journal.path)
            await asyncio.gather(*first_batch)
            await asyncio.gather(*(request(n) for n in range(200, 400)))

        visible = visible_events(journal_dir)
        seen = set(principals(visible))
        assert {f"svc-{n}" for n in acknowledged} <= seen | {"svc-X"}
        assert all(f"svc-{n}" in seen for n in acknowledged if n >= 200)
        seqs = [r["chain"]["seq"] for r in visible]
        assert len(seqs) == len(set(seqs))


class TestNoNewSegment:
    async def test_appends_are_refused_until_a_new_segment_can_be_written(
        self, journal_dir: Path
    ) -> None:
        """With the journal folder removed and a file in its place, appends are refused with
        the reason; once the folder can be made again, the chain goes on there."""
        async with running(journal_dir, watch_s=WATCH_S) as journal:
            await append(journal, 2)
            shutil.rmtree(journal_dir)
            os.close(os.open(journal_dir, os.O_CREAT | os.O_WRONLY))  # a file, not a folder
            await until(lambda: not journal.healthy)
            with pytest.raises(JournalUnavailable, match="no new segment can be written"):
                await journal.ensure_writable()
            os.unlink(journal_dir)
            await asyncio.sleep(1.1)  # a failed attempt is retried after a second
            await journal.ensure_writable()
            assert journal.healthy
            await journal.append(event(5))

        header = new_segment_header(journal_dir)
        assert header["detail"]["reason"] == "file_removed"
        assert header["chain"]["seq"] == 3

    async def test_the_lock_is_taken_again_in_a_folder_made_anew(self, journal_dir: Path) -> None:
        """After `rm -rf` of the journal folder, a second writer of the chain is still
        refused: the journal locks the folder it makes anew."""
        async with running(journal_dir, watch_s=WATCH_S) as journal:
            await append(journal, 2)
            shutil.rmtree(journal_dir)
            await until(lambda: chain_segments(journal_dir, CHAIN) != [])
            second = new_journal(journal_dir)
            with pytest.raises(JournalUnavailable, match="another keyledger is writing"):
                await second.start()


class TestClose:
    async def test_close_seals_in_a_new_segment_not_in_the_lost_file(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A file replaced just before shutdown gets no final checkpoint: the new segment
        holds the record of what was found and the seal."""
        journal = new_journal(journal_dir, signer, watch_s=3600)
        await journal.start()
        await append(journal, 3)
        first = journal.path
        size = first.stat().st_size
        sed_in_place(first)
        await journal.close()

        assert first.stat().st_size == size  # the edited copy got nothing more
        last = chain_segments(journal_dir, CHAIN)[-1].path
        kinds = [r["type"] for r in records(last)]
        assert kinds == ["lifecycle", "checkpoint"]


class TestStartBehindCheckpoints:
    async def _sealed_journal(self, directory: Path, signer: CheckpointSigner) -> Journal:
        async with running(directory, signer) as journal:
            await append(journal, 5)
        return journal

    async def test_a_cut_journal_refuses_to_start(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """Events cut off the end below the checkpoint file's seal: start-up refuses, naming
        both seqs, the verify command and how to move the evidence aside."""
        await self._sealed_journal(journal_dir, signer)
        path = segment_path(journal_dir, CHAIN, 1)
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:3]))

        journal = new_journal(journal_dir, signer)
        with pytest.raises(JournalUnavailable) as raised:
            await journal.start()
        message = str(raised.value)
        assert "ends at seq 3" in message
        assert "reached seq 6 (a checkpoint of seq 5)" in message
        assert f"keyledger audit verify {journal_dir}" in message
        assert f"mv {journal_dir} {journal_dir}.moved-aside-" in message
        assert path.read_bytes() == b"".join(lines[:3])  # nothing written

    async def test_removed_segments_refuse_to_start(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """With every segment removed but the checkpoint file left, the chain would restart
        at seq 1 under sealed seqs: start-up refuses."""
        await self._sealed_journal(journal_dir, signer)
        segment_path(journal_dir, CHAIN, 1).unlink()

        with pytest.raises(JournalUnavailable, match="ends at seq 0"):
            await new_journal(journal_dir, signer).start()
        assert chain_segments(journal_dir, CHAIN) == []

    async def test_moved_aside_as_told_starts_afresh(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """The command the refusal prints leaves a folder that starts a new, intact chain."""
        await self._sealed_journal(journal_dir, signer)
        path = segment_path(journal_dir, CHAIN, 1)
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:3]))
        with pytest.raises(JournalUnavailable) as raised:
            await new_journal(journal_dir, signer).start()
        command = str(raised.value).rsplit("`mv ", 1)[1].rstrip("`")
        source, target = command.split()
        os.rename(source, target)

        async with running(journal_dir, signer) as journal:
            await append(journal, 1)
        assert verify_path(journal_dir).ok
