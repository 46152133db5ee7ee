"""Verification: an intact journal passes; every edit, deletion or reordering is found."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.proxy.audit.chain import ChainState, event_hash, seal
from keyledger.proxy.audit.checkpoints import CheckpointSigner
from keyledger.proxy.audit.events import AuditEvent, EventType, PrincipalInfo, ResourceInfo
from keyledger.proxy.audit.journal import Rotation
from keyledger.proxy.audit.retention import Retention
from keyledger.proxy.audit.segments import chain_segments
from keyledger.proxy.audit.sinks.cursor import Cursor, CursorStore
from keyledger.proxy.audit.verify import Problem, verify_path
from tests.proxy.audit.conftest import CHAIN, append, running

Keys = dict[str, Ed25519PublicKey]


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


# -- where verification starts: pruned segments, --from-seq ---------------------------------

SMALL_SEGMENTS = Rotation(max_bytes=4096, max_age_s=None)


async def pruned_journal(
    directory: Path, signer: CheckpointSigner | None, *, keep_from: int
) -> int:
    """A closed, checkpointed journal of six segments whose first ``keep_from - 1`` were
    pruned by retention once a sink acknowledged them; the first seq left."""
    async with running(directory, signer, rotation=SMALL_SEGMENTS, every_events=10) as journal:
        n = 0
        while len(chain_segments(directory, CHAIN)) < 6:
            await append(journal, 5, start=n)
            n += 5
        segments = chain_segments(directory, CHAIN)
        acked = segments[keep_from - 1]  # the first segment to keep
        CursorStore(directory).save("s3", CHAIN, Cursor(acked.path.name, 0, acked.first_seq - 1))
        later = datetime.now(UTC) + timedelta(days=2)
        retention = Retention(journal=journal, sinks=["s3"], max_age_s=86400, now=lambda: later)
        pruned = await retention.prune_once()
        assert pruned is not None
        assert len(pruned.segments) == keep_from - 1
        await append(journal, 5, start=n)
    return acked.first_seq


def earliest(directory: Path) -> Path:
    return chain_segments(directory, CHAIN)[0].path


class TestPrunedJournal:
    async def test_verifies_from_the_earliest_segment_left(
        self, journal_dir: Path, signer: CheckpointSigner, public_keys: Keys
    ) -> None:
        """After retention pruned two segments, the journal verifies with every signature
        from the first seq left, and the segment_pruned event accounts for the start."""
        first = await pruned_journal(journal_dir, signer, keep_from=3)

        report = verify_path(journal_dir, public_keys=public_keys)

        assert report.ok, report.problems
        chain = report.chains[CHAIN]
        assert (chain.first_seq, chain.start) == (first, "pruned")
        assert chain.pruned_by is not None
        assert chain.pruned_by.last_seq == first - 1
        assert len(chain.pruned_by.segments) == 2
        assert not chain.unaccounted
        assert chain.events == chain.last_seq - first + 1
        assert chain.checkpoints > 0

    async def test_earliest_segment_removed_by_hand_is_unaccounted(
        self, journal_dir: Path, signer: CheckpointSigner, public_keys: Keys
    ) -> None:
        """Removing the earliest segment left, with no pruning to say so, still verifies
        what is there, but the report says no segment_pruned event accounts for it."""
        await pruned_journal(journal_dir, signer, keep_from=2)
        earliest(journal_dir).unlink()

        report = verify_path(journal_dir, public_keys=public_keys)

        assert report.ok, report.problems
        chain = report.chains[CHAIN]
        assert chain.start == "pruned"
        assert chain.unaccounted

    async def test_a_middle_segment_removed_is_still_a_gap(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A segment removed after the earliest one left is a gap, pruning or not."""
        await pruned_journal(journal_dir, signer, keep_from=2)
        removed = chain_segments(journal_dir, CHAIN)[1]
        removed.path.unlink()

        problem = only_problem(journal_dir)

        assert problem.reason.startswith(f"gap: seq {removed.first_seq}-")
        assert "(a whole segment file?)" in problem.reason

    async def test_lines_cut_from_the_earliest_segment_are_a_gap(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """An earliest event that does not start a segment (its segment_start cut out) is a
        gap: retention removes whole files, never lines."""
        first = await pruned_journal(journal_dir, signer, keep_from=2)
        path = earliest(journal_dir)
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[1:]))

        problem = only_problem(journal_dir)

        assert problem.reason == f"gap: seq 1-{first} missing (deleted or moved events)"

    async def test_rewriting_the_earliest_segment_is_caught_by_its_checkpoints(
        self, journal_dir: Path, signer: CheckpointSigner, public_keys: Keys
    ) -> None:
        """An event dropped from the earliest segment left, and everything after resealed
        from the same link, no longer matches what its signed checkpoints sealed."""
        first = await pruned_journal(journal_dir, signer, keep_from=2)
        paths = [s.path for s in chain_segments(journal_dir, CHAIN)]
        events = [orjson.loads(line) for path in paths for line in path.read_bytes().splitlines()]
        del events[2]  # an access event, early in the earliest segment
        state = ChainState(CHAIN, first - 1, events[0]["chain"]["prev"])
        lines = []
        for record in events:
            del record["chain"]
            line, state = seal(record, state)
            lines.append(line)
        for path in paths[1:]:
            path.unlink()
        write(paths[0], lines)

        report = verify_path(journal_dir, public_keys=public_keys)

        assert not report.ok
        (problem,) = report.problems
        assert problem.reason.endswith("sealed: the journal was rewritten from here on")

    async def test_a_pruning_that_names_another_link_fails(self, journal_dir: Path) -> None:
        """The earliest segment left must link to the hash the segment_pruned event recorded:
        an unsigned chain resealed from another link is caught by that record alone."""
        first = await pruned_journal(journal_dir, None, keep_from=2)
        paths = [s.path for s in chain_segments(journal_dir, CHAIN)]
        state = ChainState(CHAIN, first - 1, "f" * 64)
        for path in paths:
            lines: list[bytes] = []
            for line in path.read_bytes().splitlines():
                record = orjson.loads(line)
                del record["chain"]
                if (record.get("detail") or {}).get("event") == "segment_start" and not lines:
                    record["detail"]["previous_last_hash"] = state.hash
                resealed, state = seal(record, state)
                lines.append(resealed)
            write(path, lines)

        problem = only_problem(journal_dir)

        assert problem.reason == (
            f"segment_pruned says seq {first - 1} had hash {pruned_hash(journal_dir)[:12]}, "
            "but the earliest segment links to ffffffffffff: it is not the segment that "
            "followed the pruned ones"
        )


def pruned_hash(directory: Path) -> str:
    """The last_hash the (one) segment_pruned event in the journal recorded."""
    for segment in chain_segments(directory, CHAIN):
        for line in segment.path.read_bytes().splitlines():
            detail = orjson.loads(line).get("detail") or {}
            if detail.get("event") == "segment_pruned":
                return str(detail["last_hash"])
    raise AssertionError("no segment_pruned event")


class TestFromSeq:
    async def test_checks_from_the_seq_given(
        self, journal_dir: Path, signer: CheckpointSigner, public_keys: Keys
    ) -> None:
        """--from-seq N: lines before N are not checked (an edit there goes unseen), the
        events from N on are, signatures included."""
        async with running(journal_dir, signer, every_events=10) as journal:
            await append(journal, 40)
        path = chain_segments(journal_dir, CHAIN)[0].path
        lines = path.read_bytes().splitlines(keepends=True)
        lines[3] = edited(lines[3], {"principal.id": "someone-else"})
        write(path, lines)

        report = verify_path(journal_dir, public_keys=public_keys, from_seq=20)

        assert report.ok, report.problems
        chain = report.chains[CHAIN]
        assert (chain.first_seq, chain.start, chain.skipped) == (20, "from_seq", 19)
        assert chain.events == chain.last_seq - 19
        assert chain.checkpoints > 0
        assert not verify_path(journal_dir, public_keys=public_keys).ok

    async def test_an_edit_after_the_seq_given_is_found(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """Edits from the seq given on are found as ever."""
        async with running(journal_dir, signer, every_events=10) as journal:
            await append(journal, 40)
        path = chain_segments(journal_dir, CHAIN)[0].path
        lines = path.read_bytes().splitlines(keepends=True)
        lines[30] = edited(lines[30], {"principal.id": "someone-else"})
        write(path, lines)

        report = verify_path(journal_dir, from_seq=20)

        assert [p.seq for p in report.problems] == [31]

    def test_a_seq_past_the_end_is_a_problem(self, tmp_path: Path) -> None:
        """A --from-seq beyond the chain's last event checks nothing, and says so."""
        path = write(tmp_path / "node-1.jsonl", chain_lines("node-1", 5))

        report = verify_path(path, from_seq=9)

        (problem,) = report.problems
        assert problem.reason == "no event from seq 9 on: the chain ends at seq 5"

    def test_only_the_chains_asked_for(self, tmp_path: Path) -> None:
        """chains= verifies only those chains: a broken other one is not read."""
        write(tmp_path / "node-1.jsonl", chain_lines("node-1", 3))
        write(tmp_path / "node-2.jsonl", chain_lines("node-2", 3)[1:])

        report = verify_path(tmp_path, chains=["node-1"])

        assert report.ok
        assert list(report.chains) == ["node-1"]
