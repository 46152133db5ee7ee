"""The chain lock: one writer per chain and folder, taken again when the folder is made anew."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from keyledger.proxy.audit.lock import ChainLock, ChainLocked

# Another process trying the same lock: flock is per open file, so this is what a second
# keyledger would see.
TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(1)
sys.exit(0)
"""


def free_for_another_process(path: Path) -> bool:
    """Whether another process can take the lock at ``path`` right now."""
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(path)], check=False).returncode == 0


class TestChainLock:
    def test_a_second_holder_is_refused_and_named(self, tmp_path: Path) -> None:
        """While one lock holds the chain, another on the same chain and folder is refused."""
        first = ChainLock(tmp_path, "node-1")
        first.acquire()
        second = ChainLock(tmp_path, "node-1")

        with pytest.raises(ChainLocked, match="another keyledger is writing chain 'node-1'"):
            second.acquire()

        assert first.held
        assert not second.held
        assert not free_for_another_process(first.path)
        first.release()

    def test_release_frees_the_chain(self, tmp_path: Path) -> None:
        """Once released, another process can lock the chain, and so can a new holder."""
        lock = ChainLock(tmp_path, "node-1")
        lock.acquire()
        lock.release()

        assert not lock.held
        assert free_for_another_process(lock.path)
        again = ChainLock(tmp_path, "node-1")
        again.acquire()
        again.release()

    def test_other_chains_are_independent(self, tmp_path: Path) -> None:
        """Two chains in one folder each have their own lock file."""
        one, two = ChainLock(tmp_path, "node-1"), ChainLock(tmp_path, "node-2")
        one.acquire()
        two.acquire()

        assert one.path.name == ".node-1.lock"
        assert two.path.name == ".node-2.lock"
        one.release()
        two.release()

    def test_reacquire_keeps_the_lock_it_still_holds(self, tmp_path: Path) -> None:
        """With its lock file still in place, reacquiring changes nothing."""
        lock = ChainLock(tmp_path, "node-1")
        lock.acquire()
        inode = lock.path.stat().st_ino

        lock.reacquire()

        assert lock.path.stat().st_ino == inode
        assert not free_for_another_process(lock.path)
        lock.release()

    def test_reacquire_locks_a_folder_made_anew(self, tmp_path: Path) -> None:
        """After `rm -rf` of the folder, the lock is taken on the new lock file."""
        folder = tmp_path / "journal"
        folder.mkdir()
        lock = ChainLock(folder, "node-1")
        lock.acquire()
        shutil.rmtree(folder)
        folder.mkdir()
        assert free_for_another_process(lock.path)  # the old lock guards a file gone

        lock.reacquire()

        assert not free_for_another_process(lock.path)
        lock.release()

    def test_reacquire_keeps_the_old_lock_when_the_new_one_is_taken(self, tmp_path: Path) -> None:
        """If another writer locked the new lock file first, the old lock stays held."""
        folder = tmp_path / "journal"
        folder.mkdir()
        lock = ChainLock(folder, "node-1")
        lock.acquire()
        shutil.rmtree(folder)
        folder.mkdir()
        other = ChainLock(folder, "node-1")
        other.acquire()

        with pytest.raises(ChainLocked):
            lock.reacquire()

        assert lock.held
        other.release()
        lock.release()
