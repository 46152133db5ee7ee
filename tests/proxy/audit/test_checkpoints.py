"""Signed checkpoints: what the journal seals, where it files it, and how keys are handled."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyledger.cli import main
from keyledger.proxy.audit.chain import ChainState, seal
from keyledger.proxy.audit.checkpoints import (
    Checkpoint,
    CheckpointSigner,
    Seal,
    generate_key_pair,
    key_id,
    load_private_key,
    load_public_keys,
)
from keyledger.proxy.audit.events import AuditEvent, EventType, format_time
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.segments import checkpoint_file, segment_path
from tests.proxy.audit.conftest import (
    CHAIN,
    Intact,
    append,
    event,
    load_signer,
    records,
    running,
    until,
)


def checkpoint_events(path: Path) -> list[dict[str, Any]]:
    return [r for r in records(path) if r["type"] == "checkpoint"]


def now() -> str:
    return format_time(datetime.now(UTC))


async def filed_every_two(
    journal_dir: Path, signer: CheckpointSigner, events: int
) -> tuple[Journal, Path, bytes]:
    """Run a journal over ``events`` events sealed every two; return it (closed), its
    checkpoint file, and the bytes that file holds."""
    async with running(journal_dir, signer, every_events=2) as journal:
        await append(journal, events)
    cp_path = checkpoint_file(journal_dir, CHAIN)
    return journal, cp_path, cp_path.read_bytes()


class TestCheckpoint:
    def test_signed_checkpoint_verifies(
        self, signer: CheckpointSigner, public_keys: dict[str, Ed25519PublicKey]
    ) -> None:
        """A checkpoint verifies with the public key of the key that signed it."""
        checkpoint = signer.sign(chain=CHAIN, seal=Seal(3, "a" * 64), time=now(), previous=None)

        ((kid, public),) = public_keys.items()
        assert checkpoint.key_id == signer.key_id == kid == key_id(public)
        assert checkpoint.verify(public_keys) is None

    def test_another_key_is_named(self, signer: CheckpointSigner, tmp_path: Path) -> None:
        """Checked against another key, a checkpoint names its signer's key id and those given."""
        checkpoint = signer.sign(chain=CHAIN, seal=Seal(3, "a" * 64), time=now(), previous=None)
        _, other_pub = generate_key_pair(tmp_path / "other")
        other = load_public_keys([other_pub])
        (other_id,) = other

        reason = checkpoint.verify(other)

        assert reason == f"signed with another key (key id {signer.key_id}; given: {other_id})"
        assert checkpoint.verify({}) == (
            f"signed with another key (key id {signer.key_id}; given: none)"
        )

    @pytest.mark.parametrize(
        "change",
        [
            {"chain": "node-2"},
            {"seq": 4},
            {"hash": "b" * 64},
            {"time": "2020-01-01T00:00:00.000000Z"},
            {"previous": Seal(1, "c" * 64)},
        ],
        ids=["chain", "seq", "hash", "time", "previous"],
    )
    def test_altered_field_is_a_bad_signature(
        self,
        signer: CheckpointSigner,
        public_keys: dict[str, Ed25519PublicKey],
        change: dict[str, Any],
    ) -> None:
        """Changing any signed field of a checkpoint makes its signature fail."""
        checkpoint = signer.sign(chain=CHAIN, seal=Seal(3, "a" * 64), time=now(), previous=None)
        altered = dataclasses.replace(checkpoint, **change)

        reason = altered.verify(public_keys)

        assert reason == f"bad signature (key id {signer.key_id}): the checkpoint was altered"

    @pytest.mark.parametrize("signature", ["not base64!", "", "AAAA"])
    def test_garbage_signature_is_a_bad_signature(
        self, signer: CheckpointSigner, public_keys: dict[str, Ed25519PublicKey], signature: str
    ) -> None:
        """A signature that is not base64, or not 64 bytes, is reported, not raised."""
        checkpoint = signer.sign(chain=CHAIN, seal=Seal(3, "a" * 64), time=now(), previous=None)
        altered = dataclasses.replace(checkpoint, signature=signature)

        reason = altered.verify(public_keys)

        assert reason is not None
        assert reason.startswith("bad signature")

    @pytest.mark.parametrize("previous", [None, Seal(1, "c" * 64)], ids=["first", "linked"])
    def test_line_round_trip(
        self,
        signer: CheckpointSigner,
        public_keys: dict[str, Ed25519PublicKey],
        previous: Seal | None,
    ) -> None:
        """A checkpoint file line reads back as the same, still verifiable, checkpoint."""
        checkpoint = signer.sign(chain=CHAIN, seal=Seal(3, "a" * 64), time=now(), previous=previous)

        line = checkpoint.to_line()

        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert orjson.loads(line)["schema"] == "keyledger.checkpoint/v1"
        again = Checkpoint.from_line(line)
        assert again == checkpoint
        assert again.verify(public_keys) is None

    @pytest.mark.parametrize("previous", [None, Seal(1, "c" * 64)], ids=["first", "linked"])
    def test_event_round_trip(self, signer: CheckpointSigner, previous: Seal | None) -> None:
        """A checkpoint carried in a sealed journal event reads back as the same checkpoint."""
        checkpoint = signer.sign(chain=CHAIN, seal=Seal(3, "a" * 64), time=now(), previous=previous)
        record = AuditEvent(type=EventType.CHECKPOINT, detail=checkpoint.to_detail()).to_record()
        line, _ = seal(record, ChainState(CHAIN, 3, "a" * 64))

        assert Checkpoint.from_event(orjson.loads(line)) == checkpoint

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            (b"{not json\n", "not JSON"),
            (b'{"schema": "keyledger.audit/v1"}\n', "not keyledger.checkpoint/v1"),
            (b'{"schema": "keyledger.checkpoint/v1", "chain": "node-1"}\n', "not a keyledger"),
            (b"[1, 2]\n", "not a keyledger checkpoint"),
        ],
        ids=["garbage", "other-schema", "missing-fields", "not-an-object"],
    )
    def test_from_line_rejects_what_is_not_a_checkpoint(self, line: bytes, message: str) -> None:
        """A line that is not a checkpoint record is a ValueError saying why."""
        with pytest.raises(ValueError, match=message):
            Checkpoint.from_line(line)

    def test_from_line_rejects_a_wrongly_typed_field(self, signer: CheckpointSigner) -> None:
        """A seq written as a string is not silently accepted."""
        checkpoint = signer.sign(chain=CHAIN, seal=Seal(3, "a" * 64), time=now(), previous=None)
        data = orjson.loads(checkpoint.to_line())
        data["seq"] = "3"

        with pytest.raises(ValueError, match="expected an integer"):
            Checkpoint.from_line(orjson.dumps(data))

    def test_from_event_rejects_a_malformed_detail(self) -> None:
        """A checkpoint event without its signature is a ValueError, not a KeyError."""
        record = {"chain": {"id": CHAIN}, "detail": {"seals": {"seq": 1, "hash": "a" * 64}}}

        with pytest.raises(ValueError, match="malformed checkpoint event"):
            Checkpoint.from_event(record)


class TestKeys:
    def test_generate_writes_a_private_key_only_its_owner_reads(self, tmp_path: Path) -> None:
        """The private key is mode 0600 and the public key loads under the signer's key id."""
        private, public = generate_key_pair(tmp_path / "keys" / "checkpoint")

        assert private.name == "checkpoint.key"
        assert public.name == "checkpoint.pub"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        signer = load_signer(private)
        assert list(load_public_keys([public])) == [signer.key_id]

    @pytest.mark.parametrize("existing", ["key", "pub"])
    def test_generate_never_overwrites(self, tmp_path: Path, existing: str) -> None:
        """If either file of the pair exists, nothing is written and the file is untouched."""
        prefix = tmp_path / "checkpoint"
        there = tmp_path / f"checkpoint.{existing}"
        there.write_bytes(b"precious")

        with pytest.raises(FileExistsError, match="never overwrites a key"):
            generate_key_pair(prefix)

        assert there.read_bytes() == b"precious"
        assert sorted(p.name for p in tmp_path.iterdir()) == [there.name]

    def test_cli_generate_refuses_to_overwrite(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`keyledger keys generate` prints the key id once, then refuses the same prefix."""
        prefix = tmp_path / "checkpoint"

        assert main(["keys", "generate", "--out", str(prefix)]) == 0
        out = capsys.readouterr().out
        (kid,) = load_public_keys([tmp_path / "checkpoint.pub"])
        assert f"key id       {kid}" in out
        before = (tmp_path / "checkpoint.key").read_bytes()

        assert main(["keys", "generate", "--out", str(prefix)]) == 2
        assert "never overwrites a key" in capsys.readouterr().err
        assert (tmp_path / "checkpoint.key").read_bytes() == before

    def test_cli_verify_names_a_bad_public_key_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`keyledger audit verify --public-key` with a file that is no key exits 2 naming it."""
        (tmp_path / f"{CHAIN}.jsonl").write_bytes(b"")
        bad = tmp_path / "checkpoint.pub"
        bad.write_bytes(b"not a key")

        assert main(["audit", "verify", str(tmp_path), "--public-key", str(bad)]) == 2
        assert capsys.readouterr().err.startswith(f"keyledger: {bad}: not a PEM public key")

    def test_load_private_key_rejects_other_algorithms(self) -> None:
        """An EC key is refused with the file it came from and the algorithm needed."""
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

        with pytest.raises(ValueError, match=r"^keys/ec\.key: checkpoints need an Ed25519 key"):
            load_private_key(pem, source="keys/ec.key")

    @pytest.mark.parametrize(
        "pem",
        [b"hello", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b""],
        ids=["garbage", "broken-pem", "empty"],
    )
    def test_load_private_key_rejects_garbage(self, pem: bytes) -> None:
        """Bytes that are not a PEM private key are refused, naming the source."""
        with pytest.raises(ValueError, match=r"^keys/x\.key: not an unencrypted PEM private key"):
            load_private_key(pem, source="keys/x.key")

    def test_load_private_key_rejects_an_encrypted_key(self) -> None:
        """A passphrase-protected key is refused: the journal cannot prompt for it."""
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )

        with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
            load_private_key(pem, source="keys/x.key")

    def test_load_public_keys_names_the_bad_file(self, tmp_path: Path) -> None:
        """A public key file that is missing, garbage or not Ed25519 is named in the error."""
        missing = tmp_path / "missing.pub"
        with pytest.raises(ValueError, match=r"missing\.pub: cannot read public key"):
            load_public_keys([missing])

        garbage = tmp_path / "garbage.pub"
        garbage.write_bytes(b"hello")
        with pytest.raises(ValueError, match=r"garbage\.pub: not a PEM public key"):
            load_public_keys([garbage])

        ec_pub = tmp_path / "ec.pub"
        ec_pub.write_bytes(
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        with pytest.raises(ValueError, match=r"ec\.pub: not an Ed25519 public key"):
            load_public_keys([ec_pub])


class TestJournalCheckpoints:
    async def test_checkpoint_every_n_events_in_the_same_write(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """After every N events a checkpoint follows at once, with no fsync of its own."""
        async with running(journal_dir, signer, every_events=3) as journal:
            await append(journal, 3)
            # The third append returned with the checkpoint already durable behind it.
            assert journal.state.seq == 4
            assert journal.last_checkpoint is not None
            assert journal.last_checkpoint.seal.seq == 3
            assert journal.stats.fsyncs == 3
            await append(journal, 4, start=3)

        types = [(r["chain"]["seq"], r["type"]) for r in records(journal.path)]
        assert [seq for seq, kind in types if kind == "checkpoint"] == [4, 8, 10]
        assert journal.stats.checkpoints == 3

    async def test_checkpoint_seals_the_event_before_it_and_names_the_previous(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """Each checkpoint event seals the seq and hash just before it and links the last one."""
        async with running(journal_dir, signer, every_events=2) as journal:
            await append(journal, 7)

        lines = records(journal.path)
        previous: dict[str, Any] | None = None
        found = 0
        for before, line in itertools.pairwise(lines):
            if line["type"] != "checkpoint":
                continue
            found += 1
            detail = line["detail"]
            assert detail["seals"] == {
                "seq": before["chain"]["seq"],
                "hash": before["chain"]["hash"],
            }
            assert line["chain"]["prev"] == before["chain"]["hash"]
            assert detail["previous"] == previous
            assert detail["key_id"] == signer.key_id
            assert detail["time"] == line["time"]
            previous = detail["seals"]
        assert found == 4  # after events 2, 4 and 6, and the close after the 7th

    async def test_close_seals_what_is_unsealed(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """Closing writes a final checkpoint so the journal's end is signed."""
        async with running(journal_dir, signer) as journal:
            await append(journal, 2, start=1)
            assert journal.last_checkpoint is None

        last = records(journal.path)[-1]
        assert last["type"] == "checkpoint"
        assert last["chain"]["seq"] == 3
        assert last["detail"]["seals"]["seq"] == 2
        assert journal.last_checkpoint is not None
        assert journal.last_checkpoint.seq == 2

    async def test_close_adds_nothing_when_all_is_sealed(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A journal whose last event is a checkpoint is closed without another one."""
        async with running(journal_dir, signer, every_events=2) as journal:
            await append(journal, 2, start=1)

        assert [r["type"] for r in records(journal.path)] == ["access", "access", "checkpoint"]

    async def test_close_of_an_empty_journal_writes_nothing(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """With no events there is nothing to seal: no checkpoint event, no checkpoint file."""
        async with running(journal_dir, signer):
            pass

        assert segment_path(journal_dir, CHAIN, 1).read_bytes() == b""
        assert not checkpoint_file(journal_dir, CHAIN).exists()

    async def test_timer_seals_a_quiet_chain(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """When no more events come, the timer seals the last ones, once, and files it."""
        async with running(journal_dir, signer, every_s=0.05) as journal:
            await journal.append(event(1))
            await until(lambda: journal.last_checkpoint is not None)
            assert journal.last_checkpoint is not None
            assert journal.last_checkpoint.seq == 1
            await until(lambda: checkpoint_file(journal_dir, CHAIN).exists())
            # Quiet: several more ticks, nothing more to seal.
            await asyncio.sleep(0.2)
            assert journal.state.seq == 2

        assert [r["type"] for r in records(journal.path)] == ["access", "checkpoint"]
        (filed,) = checkpoint_file(journal_dir, CHAIN).read_bytes().splitlines(keepends=True)
        assert Checkpoint.from_line(filed).seq == 1

    async def test_explicit_checkpoint(self, journal_dir: Path, signer: CheckpointSigner) -> None:
        """checkpoint() seals what is written, and does nothing when nothing is unsealed."""
        async with running(journal_dir, signer) as journal:
            await journal.append(event(1))
            await journal.checkpoint()
            await journal.checkpoint()

            assert journal.state.seq == 2
            assert journal.last_checkpoint is not None
            assert journal.last_checkpoint.seq == 1

    async def test_every_durable_checkpoint_is_filed(
        self, journal_dir: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """The checkpoint file holds exactly the checkpoints of the journal, in order."""
        async with running(journal_dir, signer, every_events=4) as journal:
            await append(journal, 10)

        in_journal = [Checkpoint.from_event(r) for r in checkpoint_events(journal.path)]
        filed = [
            Checkpoint.from_line(line)
            for line in checkpoint_file(journal_dir, CHAIN).read_bytes().splitlines()
        ]
        assert filed == in_journal
        assert [c.seq for c in filed] == [4, 9, 12]
        report = intact(journal_dir)
        assert report.chains[CHAIN].checkpoints == 3
        assert report.chains[CHAIN].unsealed == 0

    async def test_without_checkpointing_nothing_is_signed(self, journal_dir: Path) -> None:
        """A journal without a signer writes no checkpoint events and no checkpoint file."""
        async with running(journal_dir, None) as journal:
            await journal.append(event(1))
            await journal.checkpoint()

        assert [r["type"] for r in records(journal.path)] == ["access"]
        assert not checkpoint_file(journal_dir, CHAIN).exists()

    async def test_restart_links_to_the_last_checkpoint(
        self, journal_dir: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """After a restart, the next checkpoint names the one the last run ended with."""
        async with running(journal_dir, signer) as journal:
            await journal.append(event(1))
        first = journal.last_checkpoint
        assert first is not None

        async with running(journal_dir, signer) as journal:
            assert journal.last_checkpoint == first
            await journal.append(event(2))

        second = journal.last_checkpoint
        assert second is not None
        assert second.seq == 3
        assert second.previous == first.seal
        lines = records(journal.path)
        assert [r["type"] for r in lines] == ["access", "checkpoint", "access", "checkpoint"]
        assert lines[3]["detail"]["previous"] == {"seq": 1, "hash": lines[0]["chain"]["hash"]}
        assert len(checkpoint_file(journal_dir, CHAIN).read_bytes().splitlines()) == 2
        intact(journal_dir)

    async def test_startup_files_a_checkpoint_the_file_lacks(
        self, journal_dir: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """A checkpoint that reached the journal but not the file (a crash) is filed at start-up."""
        journal, cp_path, complete = await filed_every_two(journal_dir, signer, 5)
        cp_path.write_bytes(b"".join(complete.splitlines(keepends=True)[:-1]))
        newest = journal.last_checkpoint
        assert newest is not None

        async with running(journal_dir, signer, every_events=2) as journal:
            assert journal.last_checkpoint == newest
            assert cp_path.read_bytes() == complete

        recovered = records(journal.path)[newest.seq + 1]
        assert recovered["type"] == "lifecycle"
        assert recovered["detail"] == {"event": "journal_recovered", "checkpoint_filed": newest.seq}
        # The recovery event itself was sealed on close, linking to the refiled checkpoint.
        last = Checkpoint.from_event(records(journal.path)[-1])
        assert last.previous == newest.seal
        intact(journal_dir)

    async def test_startup_refiles_a_deleted_checkpoint_file(
        self, journal_dir: Path, signer: CheckpointSigner
    ) -> None:
        """A lost checkpoint file is started again from the journal's newest checkpoint."""
        async with running(journal_dir, signer) as journal:
            await journal.append(event(1))
        newest = journal.last_checkpoint
        assert newest is not None
        checkpoint_file(journal_dir, CHAIN).unlink()

        async with running(journal_dir, signer) as journal:
            pass

        lines = checkpoint_file(journal_dir, CHAIN).read_bytes().splitlines(keepends=True)
        assert lines[0] == newest.to_line()

    async def test_torn_checkpoint_file_line_is_moved_aside(
        self, journal_dir: Path, signer: CheckpointSigner, intact: Intact
    ) -> None:
        """A half-appended checkpoint record is set aside, recorded, and the file repaired."""
        _, cp_path, complete = await filed_every_two(journal_dir, signer, 4)
        *kept, last = complete.splitlines(keepends=True)
        good = b"".join(kept)
        torn = last[:50]
        cp_path.write_bytes(good + torn)

        async with running(journal_dir, signer, every_events=2) as journal:
            pass

        aside = cp_path.with_name(f"{cp_path.name}.torn-{len(good)}")
        assert aside.read_bytes() == torn
        assert cp_path.read_bytes().startswith(complete)
        recovered = [r for r in records(journal.path) if r["type"] == "lifecycle"]
        assert [r["detail"] for r in recovered] == [
            {
                "event": "journal_recovered",
                "checkpoint_file_torn_moved_to": aside.name,
                "checkpoint_filed": Checkpoint.from_line(last).seq,
            }
        ]
        intact(journal_dir)
