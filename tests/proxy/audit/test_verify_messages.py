"""What `keyledger audit verify` prints says exactly what was found: counts, seqs, key ids.

Journals are written by the real Journal (checkpoints signed with a real key), then cut,
edited or verified with another key; the command runs through ``keyledger.cli.main``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyledger.cli import main
from keyledger.proxy.audit.checkpoints import (
    CheckpointSigner,
    generate_key_pair,
    load_public_keys,
)
from keyledger.proxy.audit.segments import checkpoint_file, segment_path
from keyledger.proxy.audit.verify import Copy, verify_copies
from tests.proxy.audit.conftest import CHAIN, append, running


def verify(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[str]]:
    """``keyledger audit verify ARGV``: (exit status, stdout lines)."""
    capsys.readouterr()  # the journal's own log lines, from writing it
    code = main(["audit", "verify", *map(str, argv)])
    return code, capsys.readouterr().out.splitlines()


def write(directory: Path, events: int, signer: CheckpointSigner | None, every: int = 3) -> Path:
    """``events`` events through a real journal, closed (so its end is sealed when signed)."""

    async def go() -> None:
        async with running(directory, signer, every_events=every) as journal:
            await append(journal, events)

    asyncio.run(go())
    return segment_path(directory, CHAIN, 1)


def cut(path: Path, count: int) -> None:
    """Remove the last ``count`` lines of ``path``."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-count]))


class TestSummary:
    def test_no_checkpoints_claims_no_signature(
        self, journal_dir: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A journal without checkpoints, verified with a key, says nothing was signed."""
        write(journal_dir, 3, None)

        code, out = verify(capsys, journal_dir, "--public-key", keys[1])

        assert code == 0
        assert out == [
            f"chain {CHAIN}: 3 events in 1 file(s), last seq 3, 0 checkpoint(s): ok",
            f"WARN chain {CHAIN}: no checkpoints found: the end of the journal is not sealed "
            "(all 3 event(s) unsealed)",
            "intact: 3 events verified; no checkpoints found, so no signature was checked",
        ]
        assert "signatures checked" not in "\n".join(out)

    def test_intact_names_how_many_checkpoints_each_key_signed(
        self,
        journal_dir: Path,
        keys: tuple[Path, Path],
        signer: CheckpointSigner,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The intact line counts the checkpoints whose signatures were checked, by key id."""
        write(journal_dir, 7, signer)

        code, out = verify(capsys, journal_dir, "--public-key", keys[1])

        assert code == 0
        assert out == [
            f"chain {CHAIN}: 10 events in 1 file(s), last seq 10, 3 checkpoint(s): ok",
            f"intact: 10 events verified, signatures checked (3 checkpoint(s): key "
            f"{signer.key_id})",
        ]

    def test_a_break_says_how_far_checking_got(
        self,
        journal_dir: Path,
        keys: tuple[Path, Path],
        signer: CheckpointSigner,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """An edit stops the check: the summary counts lines read and seqs checked, apart."""
        path = write(journal_dir, 7, signer)
        path.write_bytes(path.read_bytes().replace(b"svc-2", b"svc-X"))

        code, out = verify(capsys, journal_dir, "--public-key", keys[1])

        assert code == 1
        assert out == [
            f"chain {CHAIN}: 10 line(s) in 1 file(s); checked up to seq 2 (0 checkpoint(s)) "
            "before the problem below: BROKEN",
            f"FAIL {path}:3: seq 3: hash mismatch: the event was modified after it was written",
        ]


class TestCutEnd:
    def test_cutting_the_last_line_counts_one_event(
        self,
        journal_dir: Path,
        keys: tuple[Path, Path],
        signer: CheckpointSigner,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The final checkpoint event cut off: the file seals seq 9, its event was seq 10."""
        path = write(journal_dir, 7, signer)
        cut(path, 1)
        filed = checkpoint_file(journal_dir, CHAIN)

        code, out = verify(capsys, journal_dir, "--public-key", keys[1])

        assert code == 1
        assert out == [
            f"chain {CHAIN}: 9 events in 1 file(s), last seq 9, 2 checkpoint(s): BROKEN",
            f"FAIL {filed}:3: seq 9: the checkpoint file seals seq 9 (its checkpoint event is "
            "seq 10), but the journal ends at seq 9: at least 1 event (seq 10) was cut off its "
            "end",
        ]

    def test_a_deeper_cut_counts_to_the_newest_record(
        self,
        journal_dir: Path,
        keys: tuple[Path, Path],
        signer: CheckpointSigner,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Cut below two records: the first is named, the count runs to the newest one."""
        path = write(journal_dir, 7, signer)
        cut(path, 5)
        filed = checkpoint_file(journal_dir, CHAIN)

        code, out = verify(capsys, journal_dir, "--public-key", keys[1])

        assert code == 1
        assert out[1] == (
            f"FAIL {filed}:2: seq 7: the checkpoint file seals seq 7 (its checkpoint event is "
            "seq 8); its newest record, line 3, seals seq 9, but the journal ends at seq 5: at "
            "least 5 events (seq 6-10) were cut off its end"
        )

    def test_shipped_checkpoints_beyond_the_copy(
        self, journal_dir: Path, signer: CheckpointSigner, public_keys: dict[str, Ed25519PublicKey]
    ) -> None:
        """A remote copy missing its last event is told by its shipped checkpoints, counted."""
        path = write(journal_dir, 7, signer)
        lines = path.read_bytes().splitlines(keepends=True)[:-1]
        records = checkpoint_file(journal_dir, CHAIN).read_bytes().splitlines(keepends=True)
        copies = [Copy("s3://b/events", n, raw) for n, raw in enumerate(lines, 1)]
        copies += [Copy(f"s3://b/cp/{n}", 1, raw, "checkpoint") for n, raw in enumerate(records)]

        report = verify_copies(copies, public_keys=public_keys)

        (problem,) = report.problems
        assert str(problem) == (
            "s3://b/cp/2:1: seq 9: a shipped checkpoint seals seq 9 (its checkpoint event is "
            "seq 10), but the journal ends at seq 9: at least 1 event (seq 10) was cut off its "
            "end"
        )


class TestWrongKey:
    def test_names_both_key_ids_and_still_counts_the_events(
        self,
        journal_dir: Path,
        tmp_path: Path,
        signer: CheckpointSigner,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Verified with another key, every event is still read and both key ids are named."""
        write(journal_dir, 7, signer)
        _, other = generate_key_pair(tmp_path / "other")
        (other_id,) = load_public_keys([other])
        filed = checkpoint_file(journal_dir, CHAIN)

        code, out = verify(capsys, journal_dir, "--public-key", other)

        assert code == 1
        assert out == [
            f"chain {CHAIN}: 10 events in 1 file(s), last seq 10, 3 checkpoint(s): BROKEN",
            f"FAIL {filed}:1: seq 3: checkpoint signed with another key (key id "
            f"{signer.key_id}; given: {other_id})",
            f"  chain {CHAIN}: checkpoints signed by key id {signer.key_id} (3 checkpoint(s)); "
            f"the public key(s) given: {other_id}. Pass the .pub of every key id "
            "(--public-key repeats)",
        ]
        assert other_id != signer.key_id
