"""The journal: durable, chained, group-committed, recovering from crashes, failing closed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from keyledger.proxy.audit.chain import GENESIS
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.audit.segments import segment_path
from keyledger.proxy.audit.verify import verify_path
from tests.proxy.audit.conftest import CHAIN, append, event, records, running


class TestJournal:
    async def test_append_is_on_disk_when_it_returns(self, tmp_path: Path) -> None:
        """Once append returns, the event's line is in the file, chained from genesis."""
        async with running(tmp_path) as journal:
            await journal.append(event(1))

            (line,) = records(segment_path(tmp_path, CHAIN, 1))

        assert line["principal"]["id"] == "svc-1"
        assert line["chain"]["seq"] == 1
        assert line["chain"]["prev"] == GENESIS
        assert journal.state.seq == 1

    async def test_chain_continues_across_restarts(self, tmp_path: Path) -> None:
        """After close and reopen, new events continue the same chain with no gap or fork."""
        async with running(tmp_path) as journal:
            await append(journal, 3)
        last_hash = records(segment_path(tmp_path, CHAIN, 1))[-1]["chain"]["hash"]

        async with running(tmp_path) as journal:
            assert journal.state.seq == 3
            await journal.append(event(3))

        lines = records(segment_path(tmp_path, CHAIN, 1))
        assert [r["chain"]["seq"] for r in lines] == [1, 2, 3, 4]
        assert lines[3]["chain"]["prev"] == last_hash
        assert verify_path(tmp_path).ok

    async def test_concurrent_appends_share_fsyncs(self, tmp_path: Path) -> None:
        """Many concurrent requests each get their own seq, with no gaps, in few fsyncs."""
        async with running(tmp_path) as journal:
            await asyncio.gather(*(journal.append(event(n)) for n in range(500)))
            stats = journal.stats

        lines = records(segment_path(tmp_path, CHAIN, 1))
        assert [r["chain"]["seq"] for r in lines] == list(range(1, 501))
        assert sorted(r["principal"]["id"] for r in lines) == sorted(f"svc-{n}" for n in range(500))
        assert stats.events == 500
        assert stats.events_per_fsync > 1
        assert verify_path(tmp_path).ok

    async def test_append_many(self, tmp_path: Path) -> None:
        """A batch of events is made durable together and chained in order."""
        async with running(tmp_path) as journal:
            await journal.append_many([event(n) for n in range(5)])

        lines = records(segment_path(tmp_path, CHAIN, 1))
        assert [r["principal"]["id"] for r in lines] == [f"svc-{n}" for n in range(5)]

    async def test_torn_tail_is_moved_aside_and_recorded(self, tmp_path: Path) -> None:
        """A half-written last line from a crash is kept aside, logged, and the chain goes on."""
        async with running(tmp_path) as journal:
            await append(journal, 2, start=1)
        path = segment_path(tmp_path, CHAIN, 1)
        good_size = path.stat().st_size
        torn = path.read_bytes().splitlines(keepends=True)[0][:40]
        with path.open("ab") as handle:
            handle.write(torn)

        async with running(tmp_path) as journal:
            await journal.append(event(3))

        aside = path.with_name(f"{path.name}.torn-{good_size}")
        assert aside.read_bytes() == torn
        lines = records(path)
        assert [r["chain"]["seq"] for r in lines] == [1, 2, 3, 4]
        recovered = lines[2]
        assert recovered["type"] == "lifecycle"
        assert recovered["detail"] == {
            "event": "journal_recovered",
            "torn_bytes": len(torn),
            "moved_to": aside.name,
        }
        report = verify_path(tmp_path)
        assert report.ok, report.problems
        assert report.chains[CHAIN].events == 4

    @pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
    async def test_write_failure_fails_closed(self, tmp_path: Path) -> None:
        """When the disk refuses the write, append raises and the journal reports unhealthy."""
        directory = tmp_path / "journal"
        directory.mkdir()
        segment_path(directory, CHAIN, 1).symlink_to("/dev/full")

        async with running(directory) as journal:
            assert journal.healthy
            with pytest.raises(JournalUnavailable, match="could not be written"):
                await journal.append(event(1))

            assert not journal.healthy
            assert journal.stats.failures == 1
            assert journal.state.seq == 0
            # /dev/full cannot be truncated either, but it holds nothing past the durable
            # end: there is nothing to rewind, so the journal keeps trying (and is refused)
            # instead of waiting for a restart, and serves again once writes succeed.
            with pytest.raises(JournalUnavailable, match="could not be written"):
                await journal.ensure_writable()
            assert not journal.healthy

    async def test_ensure_writable_is_free_when_healthy(self, tmp_path: Path) -> None:
        """On a healthy journal the pre-request check writes nothing."""
        async with running(tmp_path) as journal:
            await journal.append(event(1))
            await journal.ensure_writable()

            assert journal.state.seq == 1
            assert journal.stats.events == 1

    async def test_append_when_not_running(self, tmp_path: Path) -> None:
        """Appending to a journal that was never started, or was closed, is refused."""
        journal = Journal(directory=tmp_path, chain_id=CHAIN)
        with pytest.raises(JournalUnavailable, match="not running"):
            await journal.append(event(1))

        async with running(tmp_path) as journal:
            pass
        with pytest.raises(JournalUnavailable, match="not running"):
            await journal.append(event(1))

    async def test_refuses_another_chains_file(self, tmp_path: Path) -> None:
        """A journal file whose last event belongs to another chain is not continued."""
        async with running(tmp_path) as journal:
            await journal.append(event(1))
        other = Journal(directory=tmp_path, chain_id="node-2")
        os.replace(segment_path(tmp_path, CHAIN, 1), segment_path(tmp_path, "node-2", 1))

        with pytest.raises(JournalUnavailable, match="holds chain 'node-1'"):
            await other.start()

    async def test_refuses_a_foreign_last_line(self, tmp_path: Path) -> None:
        """A complete last line that is not a keyledger event stops start-up."""
        segment_path(tmp_path, CHAIN, 1).write_bytes(b'{"hello": "world"}\n')

        with pytest.raises(JournalUnavailable, match="is not a keyledger event"):
            await Journal(directory=tmp_path, chain_id=CHAIN).start()

    @pytest.mark.parametrize("chain_id", ["", "-lead", "a/b", "x" * 129, "has space"])
    def test_rejects_bad_chain_ids(self, tmp_path: Path, chain_id: str) -> None:
        """Chain ids become file names, so only safe names are accepted."""
        with pytest.raises(ValueError, match="chain id"):
            Journal(directory=tmp_path, chain_id=chain_id)


class TestOneWriter:
    async def test_a_second_writer_of_a_chain_is_refused(self, tmp_path: Path) -> None:
        """Two processes on one chain would fork it: the second refuses to start."""
        async with running(tmp_path) as first:
            await first.append(event(1))
            second = Journal(directory=tmp_path, chain_id=CHAIN)
            with pytest.raises(JournalUnavailable, match="another keyledger is writing chain"):
                await second.start()
            await first.append(event(2))

        # Once the first has closed, the chain is free again, and intact.
        async with running(tmp_path) as again:
            await again.append(event(3))
        assert verify_path(tmp_path).ok
