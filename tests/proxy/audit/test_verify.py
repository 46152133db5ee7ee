"""Verification: an intact journal passes; every edit, deletion or reordering is found."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.proxy.audit.chain import ChainState, event_hash, seal
from keyledger.proxy.audit.events import AuditEvent, EventType, PrincipalInfo, ResourceInfo
from keyledger.proxy.audit.verify import Problem, verify_path


def chain_lines(chain_id: str, count: int) -> list[bytes]:
    state = ChainState(chain_id)
    lines = []
    for n in range(count):
        record = AuditEvent(
            type=EventType.ACCESS,
            principal=PrincipalInfo(id=f"svc-{n}", auth_method="sigv4"),
            action="read",
            resource=ResourceInfo(backend="aws", secret=f"staging/{n}"),
        ).to_record()
        line, state = seal(record, state)
        lines.append(line)
    return lines


def write(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def edited(line: bytes, change: dict[str, Any]) -> bytes:
    record = orjson.loads(line)
    for dotted, value in change.items():
        *parents, leaf = dotted.split(".")
        target = record
        for part in parents:
            target = target[part]
        target[leaf] = value
    return orjson.dumps(record) + b"\n"


def only_problem(path: Path) -> Problem:
    report = verify_path(path)
    assert not report.ok
    (problem,) = report.problems
    return problem


class TestVerifyPath:
    def test_intact_journal_passes(self, tmp_path: Path) -> None:
        """An untouched journal verifies, with its event count and last hash."""
        lines = chain_lines("node-1", 5)
        path = write(tmp_path / "node-1.jsonl", lines)

        report = verify_path(path)

        assert report.ok
        assert report.problems == []
        assert report.files == [str(path)]
        chain = report.chains["node-1"]
        assert (chain.events, chain.last_seq) == (5, 5)
        assert chain.last_hash == orjson.loads(lines[-1])["chain"]["hash"]

    def test_forged_line_of_another_chain_is_found(self, tmp_path: Path) -> None:
        """A self-consistent line claiming its own chain cannot hide inside this file."""
        lines = chain_lines("node-1", 4)
        forged = chain_lines("node-1 ", 1)[0]  # a chain id that differs by a space
        path = write(tmp_path / "node-1.jsonl", [*lines[:2], forged, *lines[2:]])

        problem = only_problem(path)

        assert problem.line == 3
        assert "belongs to chain 'node-1 '" in problem.reason

    def test_duplicate_key_that_parses_the_same_is_found(self, tmp_path: Path) -> None:
        """A prepended duplicate key shows readers another principal: not accepted."""
        lines = chain_lines("node-1", 3)
        lines[1] = b'{"principal":{"id":"mallory"},' + lines[1][1:]
        path = write(tmp_path / "node-1.jsonl", lines)

        problem = only_problem(path)

        assert (problem.line, problem.seq) == (2, 2)
        assert "not as keyledger wrote it" in problem.reason

    def test_nothing_to_verify_is_not_ok(self, tmp_path: Path) -> None:
        """A folder with no journal in it does not pass as verified."""
        assert not verify_path(tmp_path).ok

    def test_edited_field(self, tmp_path: Path) -> None:
        """Changing who read a secret is a hash mismatch at that file, line and seq."""
        lines = chain_lines("node-1", 5)
        lines[2] = edited(lines[2], {"principal.id": "svc-innocent"})
        path = write(tmp_path / "node-1.jsonl", lines)

        problem = only_problem(path)

        assert (problem.file, problem.line, problem.seq) == (str(path), 3, 3)
        assert str(problem) == (
            f"{path}:3: seq 3: hash mismatch: the event was modified after it was written"
        )

    def test_edited_and_rehashed_event_breaks_the_next_link(self, tmp_path: Path) -> None:
        """Recomputing an edited event's own hash is caught by the next event's prev."""
        lines = chain_lines("node-1", 5)
        record = orjson.loads(lines[2])
        record["principal"]["id"] = "svc-innocent"
        record["chain"]["hash"] = event_hash(record)
        lines[2] = orjson.dumps(record) + b"\n"
        path = write(tmp_path / "node-1.jsonl", lines)

        problem = only_problem(path)

        assert (problem.line, problem.seq) == (4, 4)
        assert problem.reason.startswith("broken link")

    def test_deleted_middle_line(self, tmp_path: Path) -> None:
        """Removing an event leaves a gap, reported where the chain resumes."""
        lines = chain_lines("node-1", 5)
        del lines[2]
        path = write(tmp_path / "node-1.jsonl", lines)

        problem = only_problem(path)

        assert (problem.line, problem.seq) == (3, 4)
        assert problem.reason == "gap: seq 3 missing (deleted or moved events)"

    def test_deleted_run_of_lines(self, tmp_path: Path) -> None:
        """Removing several events in a row names the whole missing range."""
        lines = chain_lines("node-1", 6)
        del lines[1:4]
        path = write(tmp_path / "node-1.jsonl", lines)

        assert only_problem(path).reason == "gap: seq 2-4 missing (deleted or moved events)"

    def test_deleted_first_line(self, tmp_path: Path) -> None:
        """Removing the first event is a gap too: seq 1 is missing."""
        lines = chain_lines("node-1", 4)
        path = write(tmp_path / "node-1.jsonl", lines[1:])

        problem = only_problem(path)

        assert (problem.line, problem.seq) == (1, 2)
        assert problem.reason == "gap: seq 1 missing (deleted or moved events)"

    def test_swapped_lines(self, tmp_path: Path) -> None:
        """Reordering two events is found at the first misplaced line."""
        lines = chain_lines("node-1", 5)
        lines[1], lines[3] = lines[3], lines[1]
        path = write(tmp_path / "node-1.jsonl", lines)

        assert only_problem(path).line == 2

    def test_inserted_copy(self, tmp_path: Path) -> None:
        """Replaying an event (a copied line) is found as a repeat."""
        lines = chain_lines("node-1", 5)
        lines.insert(3, lines[1])
        path = write(tmp_path / "node-1.jsonl", lines)

        problem = only_problem(path)

        assert (problem.line, problem.seq) == (4, 2)
        assert problem.reason == "out of order or repeated: expected seq 4"

    def test_torn_last_line(self, tmp_path: Path) -> None:
        """A last line without its newline is reported as a torn write."""
        lines = chain_lines("node-1", 3)
        lines[-1] = lines[-1][:30]
        path = write(tmp_path / "node-1.jsonl", lines)

        problem = only_problem(path)

        assert (problem.line, problem.seq) == (3, None)
        assert "torn write" in problem.reason

    def test_foreign_line(self, tmp_path: Path) -> None:
        """A line that is not an audit event is reported, not skipped."""
        lines = chain_lines("node-1", 3)
        lines.insert(1, b'{"hello": "world"}\n')
        path = write(tmp_path / "node-1.jsonl", lines)

        report = verify_path(path)

        assert not report.ok
        assert report.problems[0].line == 2
        assert "not a keyledger audit event" in report.problems[0].reason

    def test_folder_with_two_chains(self, tmp_path: Path) -> None:
        """Every chain in a folder is verified on its own."""
        write(tmp_path / "node-1.jsonl", chain_lines("node-1", 3))
        write(tmp_path / "replica" / "node-2.jsonl", chain_lines("node-2", 4))
        (tmp_path / "node-1.jsonl.torn-10").write_bytes(b"garbage")

        report = verify_path(tmp_path)

        assert report.ok, report.problems
        assert {c.id: c.events for c in report.chains.values()} == {"node-1": 3, "node-2": 4}
        assert len(report.files) == 2

    def test_one_broken_chain_does_not_hide_the_other(self, tmp_path: Path) -> None:
        """A break in one chain is reported for that chain only."""
        write(tmp_path / "node-1.jsonl", chain_lines("node-1", 3))
        broken = chain_lines("node-2", 4)
        del broken[1]
        write(tmp_path / "replica" / "node-2.jsonl", broken)

        report = verify_path(tmp_path)

        assert not report.ok
        assert report.chains["node-1"].problem is None
        assert report.chains["node-1"].events == 3
        problem = report.chains["node-2"].problem
        assert problem is not None
        assert problem.file == str(tmp_path / "replica" / "node-2.jsonl")
        assert report.problems == [problem]


# -- property: any single tampering is detected ------------------------------------------

EDITABLE = (
    "id",
    "time",
    "type",
    "action",
    "principal.id",
    "principal.auth_method",
    "resource.secret",
    "resource.backend",
    "chain.id",
    "chain.seq",
    "chain.prev",
    "chain.hash",
)

GENERATED = chain_lines("node-1", 8)


def tampered(draw: Callable[[st.SearchStrategy[Any]], Any], lines: list[bytes]) -> list[bytes]:
    out = list(lines)
    n = len(out)
    kind = draw(st.sampled_from(("edit", "delete", "swap", "duplicate")))
    if kind == "edit":
        i = draw(st.integers(0, n - 1))
        field = draw(st.sampled_from(EDITABLE))
        record = orjson.loads(out[i])
        *parents, leaf = field.split(".")
        old = record[parents[0]][leaf] if parents else record[leaf]
        new = old + 1 if isinstance(old, int) else old + draw(st.sampled_from(("x", "0", " ")))
        out[i] = edited(out[i], {field: new})
    elif kind == "delete":
        # Cutting events off the end leaves no trace without checkpoints (documented).
        del out[draw(st.integers(0, n - 2))]
    elif kind == "swap":
        i = draw(st.integers(0, n - 2))
        j = draw(st.integers(i + 1, n - 1))
        out[i], out[j] = out[j], out[i]
    else:
        source = draw(st.integers(0, n - 1))
        out.insert(draw(st.integers(0, n)), out[source])
    return out


class TestVerifyProperty:
    @settings(max_examples=150, deadline=None)
    @given(count=st.integers(2, 8), data=st.data())
    def test_any_single_tampering_is_reported(self, count: int, data: st.DataObject) -> None:
        """Editing, deleting, swapping or duplicating any line makes verification fail."""
        lines = tampered(data.draw, GENERATED[:count])
        with tempfile.TemporaryDirectory() as folder:
            report = verify_path(write(Path(folder) / "node-1.jsonl", lines))

        assert not report.ok
        assert report.problems


class TestTimes:
    """Times an auditor can trust: verification reports events timed earlier than the
    event before them, and the longest silence; neither makes the chain fail."""

    @staticmethod
    def timed(path: Path, *offsets_s: float) -> Path:
        from datetime import UTC, datetime, timedelta

        start = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
        state = ChainState("node-1")
        lines = []
        for offset in offsets_s:
            record = AuditEvent(
                type=EventType.LIFECYCLE,
                time=start + timedelta(seconds=offset),
                detail={"event": "tick"},
            ).to_record()
            line, state = seal(record, state)
            lines.append(line)
        return write(path, lines)

    def test_a_step_back_and_the_longest_gap_are_reported(self, tmp_path: Path) -> None:
        path = self.timed(tmp_path / "node-1.jsonl", 0, 10, 5, 8, 20, 7220, 7221)

        report = verify_path(path)

        assert report.ok
        chain = report.chains["node-1"]
        # 5 and 8 are both before 10, the latest seen: two steps back, the first at seq 3.
        assert chain.backwards == 2
        assert chain.first_backwards.startswith(f"{path}:3: seq 3: 2026-12-07T12:00:10")
        assert chain.largest_gap_s == 7200
        assert chain.largest_gap.startswith(f"{path}:6: seq 6: 2026-12-07T12:00:20")

    def test_an_orderly_chain_reports_nothing(self, tmp_path: Path) -> None:
        report = verify_path(self.timed(tmp_path / "node-1.jsonl", 0, 1, 1, 2, 60.5))
        chain = report.chains["node-1"]
        assert (chain.backwards, chain.largest_gap_s) == (0, 58.5)
