"""One writer per chain: the journal holds an exclusive ``flock`` on ``.<chain>.lock`` in
its folder while it runs, because a second writer would fork the chain (two events with
the same seq).

All of it is blocking and runs in a worker thread (start-up, or a new segment after the
folder was removed).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["ChainLock", "ChainLocked"]


class ChainLocked(RuntimeError):
    """Another writer holds the chain's lock."""


class ChainLock:
    """The lock file of one chain in one folder."""

    def __init__(self, directory: Path, chain_id: str) -> None:
        self.directory = directory
        self.chain_id = chain_id
        self.path = directory / f".{chain_id}.lock"
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ChainLocked` at once (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ChainLocked(
                f"another keyledger is writing chain {self.chain_id!r} in {self.directory}; "
                "give each replica (and each worker) its own audit.chain_id"
            ) from None
        self._fd = fd

    def reacquire(self) -> None:
        """Lock the lock file at its path again if it is not the one held.

        `rm -rf` of the folder takes the lock file with it, and another writer could lock a
        new one; the lock held stays held until the new one is taken.
        """
        try:
            same = os.path.samestat(os.stat(self.path), os.fstat(self._fd))
        except FileNotFoundError:
            same = False
        if not same:
            held, self._fd = self._fd, -1
            try:
                self.acquire()
            except BaseException:
                self._fd = held
                raise
            os.close(held)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing releases the lock
            self._fd = -1
