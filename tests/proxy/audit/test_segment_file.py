"""The open segment file: appends, rewinds after a failed write, new segments that appear
whole, and opening the newest segment where a crash left it."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from keyledger.proxy.audit.chain import GENESIS, ChainState, seal
from keyledger.proxy.audit.recovery import CorruptJournal
from keyledger.proxy.audit.segment_file import (
    SegmentFile,
    create_segment,
    open_newest,
    write_all,
)
from keyledger.proxy.audit.segments import Segment, segment_path
from tests.proxy.audit.conftest import CHAIN, event


def chained_lines(count: int) -> list[bytes]:
    """``count`` journal lines of CHAIN, sealed from genesis."""
    state, lines = ChainState(CHAIN), []
    for n in range(count):
        line, state = seal(event(n).to_record(), state)
        lines.append(line)
    return lines


def opened_file(path: Path) -> SegmentFile:
    """``path`` opened for appending, as the journal does."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    return SegmentFile(fd, Segment(CHAIN, 1, path), time.time())


class TestSegmentFile:
    def test_append_then_cut_back(self, tmp_path: Path) -> None:
        """Appended bytes land at the end; cutting back to a length drops what followed."""
        file = opened_file(tmp_path / "segment.jsonl")
        file.append(b"durable\n")
        file.append(b"failed write\n")

        assert file.cut_to(len(b"durable\n"))

        assert file.size() == len(b"durable\n")
        file.append(b"next\n")
        file.close()
        assert (tmp_path / "segment.jsonl").read_bytes() == b"durable\nnext\n"
        assert not file.is_open

    @pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
    def test_a_file_that_refuses_the_cut_but_holds_nothing_past_it(self, tmp_path: Path) -> None:
        """/dev/full cannot be truncated, but holds nothing beyond length 0: nothing to rewind."""
        link = tmp_path / "full.jsonl"
        link.symlink_to("/dev/full")
        file = opened_file(link)

        with pytest.raises(OSError, match="No space left"):
            file.append(b"line\n")

        assert file.cut_to(0)
        assert not file.cut_to(10)  # it does not end at 10: bytes would be missing
        file.close()

    def test_write_all_writes_every_byte(self, tmp_path: Path) -> None:
        """A large write goes in whole, however the kernel splits it."""
        data = b"x" * (4 << 20)
        fd = os.open(tmp_path / "big", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)

        assert (tmp_path / "big").read_bytes() == data


class TestCreateSegment:
    def test_appears_whole_and_open_for_appending(self, tmp_path: Path) -> None:
        """The new segment holds its first line, no partial file is left, and the returned
        descriptor appends after it."""
        path = tmp_path / "chain.000000000005.jsonl"

        fd = create_segment(path, b"first\n", fsync=True)
        try:
            write_all(fd, b"second\n")
        finally:
            os.close(fd)

        assert path.read_bytes() == b"first\nsecond\n"
        assert [p.name for p in tmp_path.iterdir()] == [path.name]
        assert oct(path.stat().st_mode & 0o777) == oct(0o640)

    def test_failure_leaves_nothing_behind(self, tmp_path: Path) -> None:
        """If the rename fails (the target is a folder), no segment and no partial remain."""
        path = tmp_path / "chain.000000000005.jsonl"
        path.mkdir()

        with pytest.raises(IsADirectoryError):
            create_segment(path, b"first\n", fsync=True)

        assert [p.name for p in tmp_path.iterdir()] == [path.name]
        assert path.is_dir()


class TestOpenNewest:
    def test_an_empty_folder_gets_the_first_segment(self, tmp_path: Path) -> None:
        """With no segment yet, the first one is created empty, born now, at genesis."""
        opened = open_newest(tmp_path, CHAIN)
        opened.file.close()

        assert opened.segments == []
        assert opened.file.path == segment_path(tmp_path, CHAIN, 1)
        assert opened.file.path.read_bytes() == b""
        assert opened.tail.state == ChainState(CHAIN, 0, GENESIS)
        assert abs(opened.file.born - time.time()) < 60
        assert opened.torn_moved_to is None

    def test_reads_where_the_newest_segment_ends(self, tmp_path: Path) -> None:
        """The newest segment is opened at its end; its age counts from its first event."""
        lines = chained_lines(3)
        segment_path(tmp_path, CHAIN, 1).write_bytes(lines[0])
        newest = segment_path(tmp_path, CHAIN, 2)
        newest.write_bytes(b"".join(lines[1:]))

        opened = open_newest(tmp_path, CHAIN)
        opened.file.close()

        assert opened.file.path == newest
        assert opened.tail.state.seq == 3
        assert opened.tail.size == newest.stat().st_size
        assert [s.first_seq for s in opened.segments] == [1, 2]
        first_time = datetime.fromisoformat(orjson.loads(lines[1])["time"])
        assert opened.file.born == first_time.timestamp()

    def test_an_empty_newest_segment_made_by_hand_is_removed(self, tmp_path: Path) -> None:
        """An empty newest segment after others goes; the chain continues from the one before."""
        first = segment_path(tmp_path, CHAIN, 1)
        first.write_bytes(b"".join(chained_lines(2)))
        segment_path(tmp_path, CHAIN, 3).touch()

        opened = open_newest(tmp_path, CHAIN)
        opened.file.close()

        assert opened.file.path == first
        assert not segment_path(tmp_path, CHAIN, 3).exists()

    def test_a_torn_tail_is_set_aside(self, tmp_path: Path) -> None:
        """A partial last line is copied aside and cut off; the chain ends before it."""
        path = segment_path(tmp_path, CHAIN, 1)
        whole = b"".join(chained_lines(2))
        path.write_bytes(whole + b'{"schema":"keyled')

        opened = open_newest(tmp_path, CHAIN)
        opened.file.close()

        assert opened.tail.state.seq == 2
        assert opened.torn_moved_to == f"{path.name}.torn-{len(whole)}"
        assert (tmp_path / opened.torn_moved_to).read_bytes() == b'{"schema":"keyled'
        assert path.read_bytes() == whole

    def test_another_chain_s_file_is_refused(self, tmp_path: Path) -> None:
        """A segment whose last event belongs to another chain is not opened."""
        segment_path(tmp_path, "node-2", 1).write_bytes(b"".join(chained_lines(1)))

        with pytest.raises(CorruptJournal, match="holds chain 'node-1'"):
            open_newest(tmp_path, "node-2")

        assert segment_path(tmp_path, "node-2", 1).exists()  # found, so kept

    def test_a_foreign_legacy_file_is_refused_and_kept(self, tmp_path: Path) -> None:
        """A legacy single file whose last line is no event is refused, and left as found."""
        (tmp_path / f"{CHAIN}.jsonl").write_bytes(b'{"hello": "world"}\n')

        with pytest.raises(CorruptJournal, match="is not a keyledger event"):
            open_newest(tmp_path, CHAIN)

        assert (tmp_path / f"{CHAIN}.jsonl").exists()
