"""`keyledger audit tail|export|report` say, in one line on stderr, when what they read does
not verify, naming where and the verify command; stdout stays the data it always was.

Journals are real: the CLI tests' twelve-event chain sealed line by line, or one written by
the real Journal with signed checkpoints, then edited or cut as an attacker would.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path

import orjson
import pytest

from keyledger.proxy.audit.checkpoints import generate_key_pair
from keyledger.proxy.audit.segments import checkpoint_file, segment_path
from tests.audit_records import CHAIN, SealedChain
from tests.proxy.audit.conftest import append, load_signer, running
from tests.test_audit_cli import KEYLEDGER, access, at_recent, audit, export, scenario


def warning(path: Path, line: int, seq: int, reason: str, source: Path, key: str) -> str:
    """The warning line a reader prints for a problem at ``path:line``."""
    return (
        f"keyledger: warning: what was read does not verify: {path}:{line}: seq {seq}: "
        f"{reason}; check the journal with: keyledger audit verify {source} --public-key {key}\n"
    )


EDITED = "hash mismatch: the event was modified after it was written"


@pytest.fixture
def forged(tmp_path: Path) -> SealedChain:
    """The twelve-event chain with seq 3's principal changed to mallory, hash left alone."""
    chain = scenario(tmp_path / "audit")
    lines = chain.path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"svc-batch"', b'"mallory"')
    chain.path.write_bytes(b"".join(lines))
    return chain


class TestEdited:
    def test_export_warns_on_stderr_and_keeps_stdout_data(
        self, forged: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An export of an edited journal is still the whole export, plus one warning line."""
        source = forged.path.parent

        code, out, err = export(capsys, source, "jsonl")

        assert code == 0
        assert [orjson.loads(line)["chain"]["seq"] for line in out.splitlines()] == list(
            range(1, 13)
        )
        assert err == warning(forged.path, 3, 3, EDITED, source, "FILE.pub")

    def test_csv_export_stays_machine_readable(
        self, forged: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The CSV on stdout parses whole: the warning never lands in it."""
        code, out, err = export(capsys, forged.path.parent, "csv")

        assert code == 0
        assert len(list(csv.reader(io.StringIO(out)))) == 13
        assert "does not verify" not in out
        assert err.count("\n") == 1

    def test_report_warns_about_the_forged_principal(
        self, forged: SealedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The report lists what it read, and says it does not verify, with the dev key path."""
        _, public = generate_key_pair(tmp_path / "keys" / "checkpoint")
        source = forged.path.parent

        code, out, err = audit(capsys, "report", source)

        assert code == 0
        assert "mallory" in out
        assert err == warning(forged.path, 3, 3, EDITED, source, str(public))

    def test_tail_warns_only_about_what_it_read(
        self, forged: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """tail -n 2 reads past nothing edited; tail -n 12 reads the edit and says so."""
        source = forged.path.parent

        code, _, err = audit(capsys, "tail", source, "-n", "2")
        assert (code, err) == (0, "")

        code, out, err = audit(capsys, "tail", source, "-n", "12")
        assert code == 0
        assert len(out.splitlines()) == 12
        assert err == warning(forged.path, 3, 3, EDITED, source, "FILE.pub")

    def test_a_removed_line_is_a_gap(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Deleting seq 5 is named where the chain resumes, by tail as by export."""
        chain = scenario(tmp_path / "audit")
        lines = chain.path.read_bytes().splitlines(keepends=True)
        del lines[4]
        chain.path.write_bytes(b"".join(lines))
        gap = "gap: seq 5 missing (deleted or moved events)"

        for command in (("tail", "-n", "20"), ("export", "--format", "jsonl")):
            code, _, err = audit(capsys, command[0], chain.path.parent, *command[1:])
            assert code == 0
            assert err == warning(chain.path, 5, 6, gap, chain.path.parent, "FILE.pub"), command

    def test_an_intact_journal_reads_silently(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No warning at all when everything read verifies."""
        for command in (("tail",), ("export", "--format", "csv"), ("report",)):
            code, _, err = audit(capsys, command[0], journal.path.parent, *command[1:])
            assert (code, err) == (0, ""), command


@pytest.fixture
def journal(tmp_path: Path) -> SealedChain:
    return scenario(tmp_path / "audit")


class TestCutTail:
    def test_tail_and_report_see_the_checkpoint_file_ahead(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The last line cut off a sealed journal: the checkpoint file still seals more."""
        private, _ = generate_key_pair(tmp_path / "keys" / "checkpoint")
        directory = tmp_path / "audit"

        async def write() -> None:
            async with running(directory, load_signer(private), every_events=3) as journal:
                await append(journal, 7)

        asyncio.run(write())
        path = segment_path(directory, CHAIN, 1)
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
        filed = checkpoint_file(directory, CHAIN)
        cut = (
            "the checkpoint file seals seq 9 (its checkpoint event is seq 10), but the journal "
            "ends at seq 9: at least 1 event (seq 10) was cut off its end"
        )
        key = str(tmp_path / "keys" / "checkpoint.pub")

        for command in (("tail", "-n", "1"), ("report",), ("export", "--format", "ecs")):
            capsys.readouterr()
            code, _, err = audit(capsys, command[0], directory, *command[1:])
            assert code == 0
            assert err == warning(filed, 3, 9, cut, directory, key), command


class TestFollow:
    async def test_a_forged_line_appended_while_following_is_warned_about(
        self, tmp_path: Path
    ) -> None:
        """tail -f checks each line it reads: one that does not link is named on stderr."""
        chain = scenario(tmp_path / "audit")
        process = await asyncio.create_subprocess_exec(
            *KEYLEDGER,
            "audit",
            "tail",
            str(chain.path.parent),
            "-n",
            "1",
            "-f",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            assert process.stderr is not None
            async with asyncio.timeout(20):
                await process.stdout.readline()  # the last event: following has begun
            chain.add(access(at_recent(7), "svc-payments", "prod/db/password"))  # seq 13
            forged = SealedChain(tmp_path / "elsewhere").seal(
                *[access(at_recent(8), "mallory", "prod/db/password")] * 14
            )[-1]  # a self-consistent seq 14 of another history: its prev does not link
            with chain.path.open("ab") as handle:
                handle.write(forged)
            started = time.monotonic()
            async with asyncio.timeout(10):
                err = (await process.stderr.readline()).decode()
            assert time.monotonic() - started < 10
            assert err == warning(
                chain.path,
                14,
                14,
                "broken link: prev does not match the event before it",
                chain.path.parent,
                "FILE.pub",
            )
        finally:
            process.terminate()
            await process.wait()
