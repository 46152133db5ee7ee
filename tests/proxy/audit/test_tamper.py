"""Tampering with a real rotated, checkpointed journal: every change is found and located.

One journal is written once by the real Journal (300 events, a checkpoint every 25, a new
segment every 16 KiB); each test tampers with a fresh copy of it.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.cli import main
from keyledger.proxy.audit.chain import ChainState, seal
from keyledger.proxy.audit.checkpoints import (
    Checkpoint,
    CheckpointSigner,
    Seal,
    generate_key_pair,
    load_private_key,
    load_public_keys,
)
from keyledger.proxy.audit.journal import Rotation
from keyledger.proxy.audit.segments import CHECKPOINT_SUFFIX
from keyledger.proxy.audit.verify import Problem, VerifyReport, verify_path
from tests.proxy.audit.conftest import CHAIN, append, load_signer, running

CHECKPOINTS = f"{CHAIN}{CHECKPOINT_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Pristine:
    """The journal's files by name, and the key material around it."""

    files: dict[str, bytes]
    public_pem: bytes
    other_private_pem: bytes
    other_public_pem: bytes

    @property
    def segment_names(self) -> list[str]:
        """Oldest first: the zero-padded names sort in seq order."""
        return sorted(n for n in self.files if n.endswith(".jsonl") and n != CHECKPOINTS)


async def _write_journal(directory: Path, signer: CheckpointSigner) -> None:
    rotation = Rotation(max_bytes=16384, max_age_s=None)
    async with running(directory, signer, rotation=rotation, every_events=25) as journal:
        await append(journal, 300)


@functools.cache
def pristine() -> Pristine:
    """Written once per test session (hypothesis cannot take a function-scoped fixture)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        private, public = generate_key_pair(root / "checkpoint")
        other_private, other_public = generate_key_pair(root / "other")
        asyncio.run(_write_journal(root / "journal", load_signer(private)))
        files = {p.name: p.read_bytes() for p in (root / "journal").iterdir()}
        return Pristine(
            files=files,
            public_pem=public.read_bytes(),
            other_private_pem=other_private.read_bytes(),
            other_public_pem=other_public.read_bytes(),
        )


@dataclass(frozen=True, slots=True)
class Copy:
    """A copy of the pristine journal to tamper with."""

    directory: Path
    public_key: Path
    other_public_key: Path
    other_signer: CheckpointSigner

    @property
    def segments(self) -> list[Path]:
        return [self.directory / name for name in pristine().segment_names]

    @property
    def checkpoint_file(self) -> Path:
        return self.directory / CHECKPOINTS

    def verify(self, *, keys: Path | None = None) -> VerifyReport:
        key = self.public_key if keys is None else keys
        return verify_path(self.directory, public_keys=load_public_keys([key]))

    def only_problem(self, *, keys: Path | None = None) -> Problem:
        report = self.verify(keys=keys)
        assert not report.ok
        (problem,) = report.problems
        return problem


def write_copy(pristine: Pristine, root: Path) -> Copy:
    directory = root / "journal"
    directory.mkdir()
    for name, data in pristine.files.items():
        (directory / name).write_bytes(data)
    public = root / "checkpoint.pub"
    public.write_bytes(pristine.public_pem)
    other_public = root / "other.pub"
    other_public.write_bytes(pristine.other_public_pem)
    other = load_private_key(pristine.other_private_pem, source="other.key")
    return Copy(directory, public, other_public, CheckpointSigner(other))


@pytest.fixture
def journal(tmp_path: Path) -> Copy:
    return write_copy(pristine(), tmp_path)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, content: list[bytes]) -> None:
    path.write_bytes(b"".join(content))


def record(line: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


def seq_of(line: bytes) -> int:
    seq: int = record(line)["chain"]["seq"]
    return seq


def line_of_seq(path: Path, seq: int) -> int:
    """The 1-based line number of ``seq`` in a segment."""
    (number,) = [n for n, line in enumerate(lines(path), start=1) if seq_of(line) == seq]
    return number


def edited(line: bytes, dotted: str, value: Any) -> bytes:
    data = record(line)
    *parents, leaf = dotted.split(".")
    target = data
    for part in parents:
        target = target[part]
    target[leaf] = value
    return orjson.dumps(data) + b"\n"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    capsys.readouterr()  # drop what the journal logged while it was written
    code = main(["audit", "verify", *argv])
    return code, capsys.readouterr().out.splitlines()


def cli(journal: Copy, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    return run_cli(capsys, str(journal.directory), "--public-key", str(journal.public_key), *extra)


def reseal(files: list[list[dict[str, Any]]]) -> list[list[bytes]]:
    """Recompute every hash in order, as a forger rewriting the journal would."""
    state = ChainState(CHAIN)
    out = []
    for records in files:
        sealed = []
        for data in records:
            line, state = seal({k: v for k, v in data.items() if k != "chain"}, state)
            sealed.append(line)
        out.append(sealed)
    return out


def rewrite(journal: Copy, change: Callable[[list[list[dict[str, Any]]]], None]) -> None:
    """Apply ``change`` to the events of each segment, then reseal and write them back."""
    files = [[record(line) for line in lines(path)] for path in journal.segments]
    change(files)
    for path, content in zip(journal.segments, reseal(files), strict=True):
        write_lines(path, content)


class TestIntact:
    def test_pristine_journal_verifies(
        self, journal: Copy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The untampered journal spans many files and checkpoints, and verifies with its key."""
        report = journal.verify()

        assert report.ok, report.problems
        chain = report.chains[CHAIN]
        assert chain.files == len(journal.segments) >= 5
        assert chain.checkpoints == len(lines(journal.checkpoint_file)) >= 12
        assert chain.unsealed == 0
        code, out = cli(journal, capsys)
        assert code == 0
        assert out[-1].startswith(f"intact: {chain.events:,} events verified, signatures checked")


class TestTamper:
    def test_edited_field(self, journal: Copy, capsys: pytest.CaptureFixture[str]) -> None:
        """Changing who read a secret is a hash mismatch at that file, line and seq."""
        path = journal.segments[2]
        content = lines(path)
        assert record(content[9])["type"] == "access"
        content[9] = edited(content[9], "principal.id", "svc-innocent")
        write_lines(path, content)
        seq = seq_of(content[9])

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (str(path), 10, seq)
        assert problem.reason == "hash mismatch: the event was modified after it was written"
        code, out = cli(journal, capsys)
        assert code == 1
        assert f"FAIL {path}:10: seq {seq}: hash mismatch" in "\n".join(out)
        assert any(line.startswith(f"chain {CHAIN}:") and line.endswith("BROKEN") for line in out)

    def test_deleted_line(self, journal: Copy) -> None:
        """Removing an event is a gap where the chain resumes."""
        path = journal.segments[1]
        content = lines(path)
        gone = seq_of(content[4])
        del content[4]
        write_lines(path, content)

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (str(path), 5, gone + 1)
        assert problem.reason == f"gap: seq {gone} missing (deleted or moved events)"

    def test_duplicated_line(self, journal: Copy) -> None:
        """A replayed (copied) event is found as a repeat right where it was inserted."""
        path = journal.segments[3]
        content = lines(path)
        copied = seq_of(content[6])
        content.insert(7, content[6])
        write_lines(path, content)

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (str(path), 8, copied)
        assert problem.reason == f"out of order or repeated: expected seq {copied + 1}"

    def test_swapped_lines(self, journal: Copy) -> None:
        """Reordering two events is found at the first misplaced line."""
        path = journal.segments[1]
        content = lines(path)
        first, later = seq_of(content[3]), seq_of(content[8])
        content[3], content[8] = content[8], content[3]
        write_lines(path, content)

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (str(path), 4, later)
        assert problem.reason == f"gap: seq {first}-{later - 1} missing (deleted or moved events)"

    def test_removed_middle_segment(
        self, journal: Copy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A whole missing file is a gap at line 1 of the file after it."""
        removed, after = journal.segments[4], journal.segments[5]
        first, last = seq_of(lines(removed)[0]), seq_of(lines(removed)[-1])
        removed.unlink()

        problem = journal.only_problem()

        resumes = seq_of(lines(after)[0])
        assert resumes == last + 1
        assert (problem.file, problem.line, problem.seq) == (str(after), 1, resumes)
        assert problem.reason == (
            f"gap: seq {first}-{last} missing (a whole segment file?) (deleted or moved events)"
        )
        code, out = cli(journal, capsys)
        assert code == 1
        assert f"FAIL {after}:1: seq {resumes}: gap: seq {first}-{last} missing" in "\n".join(out)

    def test_truncated_tail_below_a_checkpoint(
        self, journal: Copy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Cutting events off the end, checkpoint file left alone, is found in that file."""
        path = journal.segments[-1]
        content = lines(path)
        write_lines(path, content[:10])
        ends = seq_of(content[9])
        filed = [Checkpoint.from_line(line) for line in lines(journal.checkpoint_file)]
        number, first_beyond = next((n, c) for n, c in enumerate(filed, 1) if c.seq >= ends)

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (
            str(journal.checkpoint_file),
            number,
            first_beyond.seq,
        )
        newest = filed[-1].seq
        assert problem.reason == (
            f"the checkpoint file seals seq {first_beyond.seq} (its checkpoint event is seq "
            f"{first_beyond.seq + 1}); its newest record, line {len(filed)}, seals seq {newest}, "
            f"but the journal ends at seq {ends}: at least {newest + 1 - ends} events "
            f"(seq {ends + 1}-{newest + 1}) were cut off its end"
        )
        code, out = cli(journal, capsys)
        assert code == 1
        assert (
            f"FAIL {journal.checkpoint_file}:{number}: seq {first_beyond.seq}: the checkpoint "
            f"file seals seq {first_beyond.seq} (its checkpoint event is seq "
            f"{first_beyond.seq + 1})"
        ) in "\n".join(out)

    def test_cut_of_only_the_final_checkpoint_event(self, journal: Copy) -> None:
        """Even the last line alone cannot be cut: the checkpoint file still names it."""
        path = journal.segments[-1]
        content = lines(path)
        write_lines(path, content[:-1])
        final = Checkpoint.from_line(lines(journal.checkpoint_file)[-1])

        problem = journal.only_problem()

        assert problem.file == str(journal.checkpoint_file)
        assert problem.seq == final.seq == seq_of(content[-2])
        assert problem.reason.endswith(
            f"but the journal ends at seq {final.seq}: at least 1 event (seq {final.seq + 1}) "
            "was cut off its end"
        )

    def test_verified_with_another_key(
        self, journal: Copy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Checkpoints made by a key other than the one given fail, naming both key ids."""
        (signer_id,) = load_public_keys([journal.public_key])
        (other_id,) = load_public_keys([journal.other_public_key])

        problem = journal.only_problem(keys=journal.other_public_key)

        assert (problem.file, problem.line) == (str(journal.checkpoint_file), 1)
        assert problem.reason == (
            f"checkpoint signed with another key (key id {signer_id}; given: {other_id})"
        )
        code, out = run_cli(
            capsys, str(journal.directory), "--public-key", str(journal.other_public_key)
        )
        assert code == 1
        assert f"FAIL {journal.checkpoint_file}:1: seq {problem.seq}: checkpoint signed with" in (
            "\n".join(out)
        )

    def test_checkpoint_re_signed_with_another_key(
        self, journal: Copy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A checkpoint forged with the forger's own key, chain recomputed, is found."""
        path = journal.segments[2]
        number = next(n for n, line in enumerate(lines(path), 1) if b'"type":"checkpoint"' in line)
        index = journal.segments.index(path)

        def resign(files: list[list[dict[str, Any]]]) -> None:
            data = files[index][number - 1]
            genuine = Checkpoint.from_event(data)
            forged = journal.other_signer.sign(
                chain=CHAIN, seal=genuine.seal, time=genuine.time, previous=genuine.previous
            )
            data["detail"] = forged.to_detail()

        rewrite(journal, resign)
        seq = seq_of(lines(path)[number - 1])

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (str(path), number, seq)
        (signer_id,) = load_public_keys([journal.public_key])
        assert problem.reason == (
            f"checkpoint signed with another key (key id {journal.other_signer.key_id}; "
            f"given: {signer_id})"
        )
        code, out = cli(journal, capsys)
        assert code == 1
        assert f"FAIL {path}:{number}: seq {seq}: checkpoint signed with another key" in (
            "\n".join(out)
        )

    def test_rewrite_with_fresh_hashes(self, journal: Copy, tmp_path: Path) -> None:
        """An edit with every later hash recomputed passes a bare chain, not a checkpointed one."""
        index, row = 3, 12

        def edit(files: list[list[dict[str, Any]]]) -> None:
            assert files[index][row]["type"] == "access"
            files[index][row]["principal"]["id"] = "svc-innocent"

        # Without checkpoints, the forgery is perfect: that is what they are for.
        bare = tmp_path / "bare"
        bare.mkdir()
        files = [
            [r for r in map(record, lines(path)) if r["type"] != "checkpoint"]
            for path in journal.segments
        ]
        edit(files)
        for path, sealed in zip(journal.segments, reseal(files), strict=True):
            write_lines(bare / path.name, sealed)
        assert b"svc-innocent" in (bare / journal.segments[index].name).read_bytes()
        assert verify_path(bare).ok

        rewrite(journal, edit)
        path = journal.segments[index]
        # The next checkpoint at or after the edit sealed the old hash of its event.
        edited_seq = seq_of(lines(path)[row])
        filed = [Checkpoint.from_line(line) for line in lines(journal.checkpoint_file)]
        number, sealing = next((n, c) for n, c in enumerate(filed, 1) if c.seq >= edited_seq)
        where = next(p for p in journal.segments if any(seq_of(x) == sealing.seq for x in lines(p)))

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (
            str(where),
            line_of_seq(where, sealing.seq),
            sealing.seq,
        )
        assert problem.reason == (
            f"differs from what checkpoint {journal.checkpoint_file}:{number} sealed: the "
            "journal was rewritten from here on"
        )

    def test_rewrite_that_forges_the_seals_too(
        self, journal: Copy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Patching every checkpoint's seal after a rewrite breaks its signature instead."""
        index, row = 3, 12

        def forge(files: list[list[dict[str, Any]]]) -> None:
            files[index][row]["principal"]["id"] = "svc-innocent"
            state = ChainState(CHAIN)
            previous: Seal | None = None
            for content in files:
                for data in content:
                    if data["type"] == "checkpoint":
                        data["detail"]["seals"] = {"seq": state.seq, "hash": state.hash}
                        data["detail"]["previous"] = (
                            None if previous is None else (previous.to_json())
                        )
                        previous = Seal(state.seq, state.hash)
                    _, state = seal({k: v for k, v in data.items() if k != "chain"}, state)

        rewrite(journal, forge)
        journal.checkpoint_file.unlink()  # it would give the rewrite away at once
        path = journal.segments[index]
        edited_seq = seq_of(lines(path)[row])
        later = [
            (p, n, seq_of(line))
            for p in journal.segments
            for n, line in enumerate(lines(p), 1)
            if b'"type":"checkpoint"' in line and seq_of(line) > edited_seq
        ]
        where, number, seq = later[0]

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (str(where), number, seq)
        (signer_id,) = load_public_keys([journal.public_key])
        assert problem.reason == (
            f"checkpoint bad signature (key id {signer_id}): the checkpoint was altered"
        )
        # Without the public key nothing can tell: verify says so, and --strict refuses it.
        unchecked = verify_path(journal.directory)
        assert unchecked.ok
        assert not unchecked.signatures_checked
        code, out = run_cli(capsys, str(journal.directory))
        assert code == 0
        assert "WARN checkpoint signatures not checked: pass --public-key FILE.pub" in out
        code, out = run_cli(capsys, str(journal.directory), "--strict")
        assert code == 1
        assert out[-1].startswith("not intact under --strict")

    def test_removed_checkpoint_event_with_fresh_hashes(self, journal: Copy) -> None:
        """Dropping a checkpoint and recomputing the chain is found where it used to be."""
        index = 1
        path = journal.segments[index]
        number = next(n for n, line in enumerate(lines(path), 1) if b'"type":"checkpoint"' in line)
        assert number < len(lines(path))  # one inside the file, not the one ending it
        removed = Checkpoint.from_event(record(lines(path)[number - 1]))
        filed_number = next(
            n
            for n, line in enumerate(lines(journal.checkpoint_file), 1)
            if Checkpoint.from_line(line) == removed
        )

        def drop(files: list[list[dict[str, Any]]]) -> None:
            del files[index][number - 1]

        rewrite(journal, drop)

        problem = journal.only_problem()

        assert (problem.file, problem.line, problem.seq) == (
            str(path),
            number,
            removed.seq + 1,
        )
        assert problem.reason == (
            f"checkpoint {journal.checkpoint_file}:{filed_number} should follow seq "
            f"{removed.seq} here: it was removed from the journal"
        )

    def test_unsealed_events_are_a_warning_and_fail_strict(
        self, journal: Copy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Events written after the last checkpoint verify, with a warning --strict refuses."""

        async def more_without_checkpoints() -> None:
            async with running(journal.directory) as plain:
                await append(plain, 3, start=1000)

        asyncio.run(more_without_checkpoints())
        sealed_seq = seq_of(lines(journal.segments[-1])[-4])

        report = journal.verify()

        assert report.ok, report.problems
        assert report.chains[CHAIN].unsealed == 3
        assert report.chains[CHAIN].last_checkpoint_seq == sealed_seq
        code, out = cli(journal, capsys)
        assert code == 0
        assert (
            f"WARN chain {CHAIN}: 3 event(s) after the last checkpoint (seq {sealed_seq}) are "
            "unsealed"
        ) in out
        code, out = cli(journal, capsys, "--strict")
        assert code == 1
        assert out[-1] == (
            "not intact under --strict: every event must be sealed by a verified signature"
        )

    def test_without_a_public_key_signatures_are_not_checked(
        self, journal: Copy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An intact journal verified without a key passes with a warning, and fails --strict."""
        code, out = run_cli(capsys, str(journal.directory))
        assert code == 0
        assert "WARN checkpoint signatures not checked: pass --public-key FILE.pub" in out
        assert out[-1].startswith("intact: ")
        assert "signatures checked" not in out[-1]

        code, out = run_cli(capsys, str(journal.directory), "--strict")
        assert code == 1


# -- property: any single tampering is found ---------------------------------------------

MUTATIONS = ("edit", "delete", "duplicate", "swap", "truncate")
FIELDS = ("chain.seq", "principal.id", "resource.secret", "time", "detail")


def _bumped(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):
        return {**value, "x": 1}
    return "x"


def tampered(draw: Callable[[st.SearchStrategy[Any]], Any], files: list[list[bytes]]) -> str:
    """Apply one random change to ``files`` (segment lines, in order) in place; describe it."""
    flat = [(f, i) for f, content in enumerate(files) for i in range(len(content))]
    kind = draw(st.sampled_from(MUTATIONS))
    if kind == "edit":
        f, i = draw(st.sampled_from(flat))
        data = record(files[f][i])
        present = [
            name
            for name in FIELDS
            if name.split(".")[0] in data and data[name.split(".")[0]] is not None
        ]
        name = draw(st.sampled_from(present))
        if name == "detail":
            key = draw(st.sampled_from(sorted(data["detail"])))
            data["detail"][key] = _bumped(data["detail"][key])
            files[f][i] = orjson.dumps(data) + b"\n"
        else:
            *parents, leaf = name.split(".")
            target = data
            for part in parents:
                target = target[part]
            files[f][i] = edited(files[f][i], name, _bumped(target[leaf]))
        return f"edit {name} of file {f} line {i + 1}"
    if kind == "delete":
        f, i = draw(st.sampled_from(flat))
        del files[f][i]
        return f"delete file {f} line {i + 1}"
    if kind == "duplicate":
        f, i = draw(st.sampled_from(flat))
        g = draw(st.integers(0, len(files) - 1))
        j = draw(st.integers(0, len(files[g])))
        files[g].insert(j, files[f][i])
        return f"copy file {f} line {i + 1} to file {g} before line {j + 1}"
    if kind == "swap":
        a, b = draw(st.lists(st.sampled_from(flat), min_size=2, max_size=2, unique=True))
        files[a[0]][a[1]], files[b[0]][b[1]] = files[b[0]][b[1]], files[a[0]][a[1]]
        return f"swap {a} and {b}"
    cut = draw(st.integers(1, len(flat)))
    for f, i in reversed(flat[-cut:]):
        del files[f][i]
    return f"truncate the last {cut} lines"


class TestTamperProperty:
    @settings(max_examples=50, deadline=None)
    @given(data=st.data())
    def test_any_single_tampering_is_found(self, data: st.DataObject) -> None:
        """Editing, deleting, copying, swapping or cutting off any line fails verification.

        Cutting the end is only detectable up to the last checkpoint the checkpoint file
        holds: events after it are unsealed, and a journal cut back together with its
        checkpoint file to an earlier checkpoint looks like one that ended there. This journal
        ends with the checkpoint written at close and filed, so every cut, even of one line,
        reaches below a filed checkpoint and is found.
        """
        source = pristine()
        files = [source.files[name].splitlines(keepends=True) for name in source.segment_names]
        change = tampered(data.draw, files)
        with tempfile.TemporaryDirectory() as folder:
            journal = write_copy(source, Path(folder))
            for path, content in zip(journal.segments, files, strict=True):
                if content:
                    write_lines(path, content)
                else:
                    path.unlink()

            report = journal.verify()

        assert not report.ok, change
        assert report.problems, change
