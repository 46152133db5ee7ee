"""Group commit: requests written while a round is in flight share the next one; a refused
round fails only its own requests; durability waiters wake once per round."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyledger.proxy.audit.groupcommit import GroupCommit, Round, Waiters
from keyledger.proxy.audit.segment_file import write_all


class SyncedFile:
    """A real file whose rounds fsync it in a worker thread, recording each round."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.rounds: list[tuple[int, list[bytes]]] = []
        self.gate: asyncio.Event | None = None  # when set up, a round waits for it

    def write(self, line: bytes) -> None:
        write_all(self.fd, line)

    async def sync(self, batch: Round) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.to_thread(os.fsync, self.fd)
        self.rounds.append((batch.events, batch.lines))
        batch.done.set_result(None)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[SyncedFile]:
    file = SyncedFile(tmp_path / "segment.jsonl")
    yield file
    file.close()


async def request(commit: GroupCommit, file: SyncedFile, n: int) -> None:
    """What the journal does per request: one write, then wait for the shared round."""
    line = f"{n}\n".encode()
    file.write(line)
    await asyncio.shield(commit.join(1, [line]))


class TestGroupCommit:
    async def test_concurrent_requests_share_rounds(self, synced: SyncedFile) -> None:
        """200 requests at once are all made durable, in far fewer fsync rounds, each
        request counted once."""
        commit = GroupCommit(synced.sync, keep_lines=False, name="test-fsync")

        await asyncio.gather(*(request(commit, synced, n) for n in range(200)))

        assert sum(events for events, _ in synced.rounds) == 200
        assert len(synced.rounds) < 200
        assert all(lines == [] for _, lines in synced.rounds)  # not kept: nobody reads them

    async def test_a_round_in_flight_leaves_later_requests_to_the_next(
        self, synced: SyncedFile
    ) -> None:
        """While one round syncs, everyone who writes joins the next round, together."""
        commit = GroupCommit(synced.sync, keep_lines=True, name="test-fsync")
        synced.gate = asyncio.Event()
        first = asyncio.create_task(request(commit, synced, 0))
        await asyncio.sleep(0)  # the first round starts and waits at the gate
        later = [asyncio.create_task(request(commit, synced, n)) for n in (1, 2, 3)]
        await asyncio.sleep(0)

        synced.gate.set()
        await asyncio.gather(first, *later)

        assert synced.rounds == [(1, [b"0\n"]), (3, [b"1\n", b"2\n", b"3\n"])]

    async def test_refuse_fails_the_waiting_round_not_the_one_in_flight(
        self, synced: SyncedFile
    ) -> None:
        """A refused round's requests get the error; the round already syncing completes."""
        commit = GroupCommit(synced.sync, keep_lines=False, name="test-fsync")
        synced.gate = asyncio.Event()
        in_flight = asyncio.create_task(request(commit, synced, 0))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(request(commit, synced, 1))
        await asyncio.sleep(0)

        commit.refuse(RuntimeError("the file was cut back"))
        synced.gate.set()

        await in_flight
        with pytest.raises(RuntimeError, match="cut back"):
            await waiting
        assert synced.rounds == [(1, [])]

    async def test_refuse_with_nothing_waiting_changes_nothing(self, synced: SyncedFile) -> None:
        """Refusing when no round waits fails nobody; the next request is synced."""
        commit = GroupCommit(synced.sync, keep_lines=False, name="test-fsync")
        commit.refuse(RuntimeError("nothing to refuse"))

        await request(commit, synced, 0)

        assert synced.rounds == [(1, [])]

    async def test_a_caller_going_away_does_not_cancel_the_round(self, synced: SyncedFile) -> None:
        """One request cancelled while waiting leaves the shared round to finish for others."""
        commit = GroupCommit(synced.sync, keep_lines=False, name="test-fsync")
        synced.gate = asyncio.Event()
        leaving = asyncio.create_task(request(commit, synced, 0))
        staying = asyncio.create_task(request(commit, synced, 1))
        await asyncio.sleep(0)

        leaving.cancel()
        synced.gate.set()

        await staying
        assert leaving.cancelled()
        assert synced.rounds == [(2, [])]

    async def test_drain_waits_for_every_round(self, synced: SyncedFile) -> None:
        """After drain, every request joined before it has its round done."""
        commit = GroupCommit(synced.sync, keep_lines=False, name="test-fsync")
        futures = []
        for _ in range(3):
            synced.write(b"x\n")
            futures.append(commit.join(1, [b"x\n"]))

        await commit.drain()

        assert all(f.done() and f.exception() is None for f in futures)
        assert sum(events for events, _ in synced.rounds) == 3
        await commit.drain()  # nothing running: returns at once


class TestWaiters:
    async def test_wake_releases_everyone_waiting(self) -> None:
        """Every waiter returns at the next wake, and only then."""
        waiters = Waiters()
        tasks = [asyncio.create_task(waiters.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(t.done() for t in tasks)

        waiters.wake()

        await asyncio.wait_for(asyncio.gather(*tasks), timeout=1)

    async def test_a_cancelled_waiter_is_forgotten(self) -> None:
        """A waiter cancelled (a shipper's timeout) leaves; later wakes skip it."""
        waiters = Waiters()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waiters.wait(), timeout=0.01)
        remaining = asyncio.create_task(waiters.wait())
        await asyncio.sleep(0)

        waiters.wake()

        await asyncio.wait_for(remaining, timeout=1)
        waiters.wake()  # nobody left: nothing to do
