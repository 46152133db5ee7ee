"""A lost segment file: what the next segment records, which requests were never
acknowledged, and how long appends are refused after a new segment failed."""

from __future__ import annotations

import os
from pathlib import Path

from keyledger.proxy.audit.filewatch import FileChange, Found, judge, look
from keyledger.proxy.audit.lostfile import RETRY_S, LostFile, error_text, unacknowledged


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def replaced(tmp_path: Path) -> FileChange:
    """A real segment replaced under its open descriptor, as `sed -i` does, judged."""
    path = tmp_path / "node-1.000000000001.jsonl"
    path.write_bytes(b"x" * 30)
    fd = os.open(path, os.O_RDONLY)
    try:
        other = tmp_path / "edited"
        other.write_bytes(b"y" * 12)
        other.replace(path)
        change = judge(look(fd, path), path, low=30, high=30)
    finally:
        os.close(fd)
    assert change is not None
    return change


class TestDetail:
    def test_events_written_since_the_last_check_are_listed(self, tmp_path: Path) -> None:
        """Seqs written after the last durable one went into the lost file unacknowledged."""
        lost = LostFile(replaced(tmp_path))

        detail = lost.detail(durable_seq=7, written_seq=9)

        assert detail == {
            "found": "node-1.000000000001.jsonl was replaced by another file (12 bytes)",
            "written_bytes": 30,
            "found_bytes": 12,
            "unacknowledged_seqs": {"first": 8, "last": 9},
        }

    def test_nothing_unacknowledged_when_all_was_durable(self, tmp_path: Path) -> None:
        """A file lost while the journal was quiet refused nobody."""
        detail = LostFile(replaced(tmp_path)).detail(durable_seq=9, written_seq=9)

        assert detail["unacknowledged_seqs"] is None


class TestRefusal:
    def test_a_new_segment_is_tried_at_once(self, tmp_path: Path) -> None:
        """Before any failure, an append goes on to try the new segment."""
        assert LostFile(replaced(tmp_path)).refusal(tmp_path) is None

    def test_after_a_failed_segment_appends_are_refused_for_a_while(self, tmp_path: Path) -> None:
        """For RETRY_S after a failed new segment, appends are refused with both reasons;
        then the journal tries again."""
        clock = FakeClock()
        lost = LostFile(replaced(tmp_path), clock=clock)

        error = lost.new_segment_failed(FileNotFoundError(2, "No such file or directory"))

        assert error == "No such file or directory"
        refused = lost.refusal(tmp_path)
        assert refused == (
            "node-1.000000000001.jsonl was replaced by another file (12 bytes), and no new "
            f"segment can be written in {tmp_path}: No such file or directory"
        )
        clock.now += RETRY_S
        assert lost.refusal(tmp_path) is None


class TestMessages:
    def test_an_unacknowledged_request_is_told_why(self) -> None:
        """The refusal names what happened to the file."""
        change = FileChange(Found.REMOVED, Path("a.jsonl"), written_bytes=10, found_bytes=None)

        assert unacknowledged(change) == (
            "the audit journal's file changed under it (a.jsonl was removed); the event was "
            "not kept where it can be verified"
        )

    def test_error_text_prefers_the_os_reason(self) -> None:
        """An OS error reads as its strerror; anything else as its message."""
        assert error_text(PermissionError(13, "Permission denied", "x")) == "Permission denied"
        assert error_text(OSError("bare")) == "bare"
        assert error_text(RuntimeError("another keyledger is writing")) == (
            "another keyledger is writing"
        )
