"""The sealer: checkpoint events that seal the chain so far and name the one before, filed
once durable, and reconciled with the checkpoint file at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyledger.proxy.audit.chain import ChainState, event_hash, seal
from keyledger.proxy.audit.checkpoints import Checkpoint, CheckpointSigner
from keyledger.proxy.audit.clock import StepWatch
from keyledger.proxy.audit.recovery import CorruptJournal
from keyledger.proxy.audit.sealing import Checkpointing, Sealer
from keyledger.proxy.audit.segments import Segment, checkpoint_file, segment_path
from keyledger.proxy.audit.timeline import Timeline
from tests.proxy.audit.conftest import CHAIN, event


def sealer_in(directory: Path, signer: CheckpointSigner) -> Sealer:
    return Sealer(Checkpointing(signer=signer), directory=directory, chain_id=CHAIN, fsync=True)


def chain_of(count: int) -> tuple[list[bytes], ChainState]:
    """``count`` access events of CHAIN, sealed from genesis, and the state after them."""
    state, lines = ChainState(CHAIN), []
    for n in range(count):
        line, state = seal(event(n).to_record(), state)
        lines.append(line)
    return lines, state


def write_segment(directory: Path, lines: list[bytes]) -> list[Segment]:
    """``lines`` as the chain's first segment; the segments found."""
    path = segment_path(directory, CHAIN, 1)
    path.write_bytes(b"".join(lines))
    return [Segment(CHAIN, 1, path)]


class TestSeal:
    def test_the_checkpoint_event_seals_the_state_before_it(
        self, tmp_path: Path, signer: CheckpointSigner, public_keys: dict[str, Ed25519PublicKey]
    ) -> None:
        """The checkpoint signs the seq and hash it follows, verifies with the public key,
        and is itself the next event on the chain."""
        sealer = sealer_in(tmp_path, signer)
        _, state = chain_of(2)

        checkpoint, line, after = sealer.seal(state, None, Timeline(StepWatch()))

        record: dict[str, Any] = orjson.loads(line)
        assert (checkpoint.seq, checkpoint.hash) == (2, state.hash)
        assert checkpoint.previous is None
        assert checkpoint.verify(public_keys) is None
        assert record["type"] == "checkpoint"
        assert record["chain"]["seq"] == after.seq == 3
        assert record["chain"]["prev"] == state.hash
        assert event_hash(record) == record["chain"]["hash"] == after.hash
        assert Checkpoint.from_event(record) == checkpoint

    def test_a_checkpoint_names_the_one_before_it(
        self, tmp_path: Path, signer: CheckpointSigner
    ) -> None:
        """A later checkpoint carries the seal of the previous one."""
        sealer = sealer_in(tmp_path, signer)
        timeline = Timeline(StepWatch())
        _, state = chain_of(1)
        first, _, state = sealer.seal(state, None, timeline)

        second, _, _ = sealer.seal(state, first, timeline)

        assert second.previous == first.seal


class TestFiling:
    async def test_durable_checkpoints_are_filed(
        self, tmp_path: Path, signer: CheckpointSigner
    ) -> None:
        """What the journal made durable is appended to the checkpoint file, in order."""
        sealer = sealer_in(tmp_path, signer)
        timeline = Timeline(StepWatch())
        _, state = chain_of(1)
        first, _, state = sealer.seal(state, None, timeline)
        second, _, _ = sealer.seal(state, first, timeline)
        assert not sealer.unfiled

        sealer.durable(first)
        sealer.durable(second)
        assert sealer.unfiled
        await sealer.file_durable()

        assert not sealer.unfiled
        filed = checkpoint_file(tmp_path, CHAIN).read_bytes().splitlines(keepends=True)
        assert [Checkpoint.from_line(line) for line in filed] == [first, second]

    async def test_a_failed_filing_is_retried(
        self, tmp_path: Path, signer: CheckpointSigner
    ) -> None:
        """While the file cannot be written, checkpoints wait; the next try files them."""
        sealer = sealer_in(tmp_path, signer)
        _, state = chain_of(1)
        checkpoint, _, _ = sealer.seal(state, None, Timeline(StepWatch()))
        sealer.durable(checkpoint)
        blocked = checkpoint_file(tmp_path, CHAIN)
        blocked.mkdir()  # a folder where the file goes: the append fails (even as root)

        await sealer.file_durable()

        assert sealer.unfiled
        blocked.rmdir()
        await sealer.file_durable()
        assert not sealer.unfiled
        assert blocked.read_bytes() == checkpoint.to_line()


class TestOpen:
    def test_a_checkpoint_the_file_lacks_is_filed(
        self, tmp_path: Path, signer: CheckpointSigner
    ) -> None:
        """A crash between the journal's fsync and the file's append: start-up files it."""
        lines, state = chain_of(2)
        checkpoint, line, state = sealer_in(tmp_path, signer).seal(
            state, None, Timeline(StepWatch())
        )
        segments = write_segment(tmp_path, [*lines, line])
        found: dict[str, Any] = {}

        newest = sealer_in(tmp_path, signer).open(tmp_path, segments, state, found)

        assert newest == checkpoint
        assert found == {"checkpoint_filed": checkpoint.seq}
        assert checkpoint_file(tmp_path, CHAIN).read_bytes() == checkpoint.to_line()

    def test_nothing_to_mend(self, tmp_path: Path, signer: CheckpointSigner) -> None:
        """A journal without checkpoints and no file: no checkpoint, nothing recorded."""
        lines, state = chain_of(2)
        found: dict[str, Any] = {}

        newest = sealer_in(tmp_path, signer).open(
            tmp_path, write_segment(tmp_path, lines), state, found
        )

        assert newest is None
        assert found == {}
        assert not checkpoint_file(tmp_path, CHAIN).exists()

    def test_a_journal_behind_its_filed_checkpoint_is_refused(
        self, tmp_path: Path, signer: CheckpointSigner
    ) -> None:
        """The file seals seq 2, the journal ends at seq 1: start-up refuses, saying how to
        move the evidence aside."""
        lines, state = chain_of(2)
        checkpoint, _, _ = sealer_in(tmp_path, signer).seal(state, None, Timeline(StepWatch()))
        checkpoint_file(tmp_path, CHAIN).write_bytes(checkpoint.to_line())
        cut = write_segment(tmp_path, lines[:1])

        with pytest.raises(CorruptJournal, match=r"ends at seq 1, but .* reached seq 3") as info:
            sealer_in(tmp_path, signer).open(tmp_path, cut, ChainState(CHAIN, 1, "x"), {})

        assert f"mv {tmp_path} {tmp_path}.moved-aside-" in str(info.value)

    def test_a_torn_file_line_is_set_aside_and_recorded(
        self, tmp_path: Path, signer: CheckpointSigner
    ) -> None:
        """A half-written last line of the checkpoint file is moved aside and recorded."""
        lines, state = chain_of(1)
        checkpoint_file(tmp_path, CHAIN).write_bytes(b'{"chain":')
        found: dict[str, Any] = {}

        sealer_in(tmp_path, signer).open(tmp_path, write_segment(tmp_path, lines), state, found)

        moved_to = found["checkpoint_file_torn_moved_to"]
        assert (tmp_path / moved_to).read_bytes() == b'{"chain":'
        assert checkpoint_file(tmp_path, CHAIN).read_bytes() == b""
