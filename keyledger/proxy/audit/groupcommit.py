"""Group commit: many requests share one fsync.

Writing is cheap (the page cache) and ``fsync`` is slow, so requests written while one
sync round is in flight all join the *next* round: one future, one count, one list of
lines, whatever the number of requests. A single task runs rounds until nobody waits; what
a round does (sync, check the file, mark durable) is the journal's, given as a coroutine.

Shippers that wait for more durable events (``Journal.wait_durable``) wait on
:class:`Waiters`, woken after each round that made progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

__all__ = ["GroupCommit", "Round", "Waiters"]


class Round:
    """One fsync round: the future its requests wait on, their events and lines."""

    __slots__ = ("done", "events", "lines")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.events = 0
        self.lines: list[bytes] = []  # kept only when someone reads them (keep_lines)


class GroupCommit:
    """Gathers requests into the next round and runs rounds, one at a time, in one task."""

    def __init__(
        self, sync: Callable[[Round], Awaitable[None]], *, keep_lines: bool, name: str
    ) -> None:
        self._sync = sync
        self._keep_lines = keep_lines
        self._name = name
        self._next: Round | None = None  # the round requests join now
        self._task: asyncio.Task[None] | None = None

    def join(self, events: int, lines: list[bytes]) -> asyncio.Future[None]:
        """Add a request's written lines to the next round; its future resolves when the
        round is done (callers shield it: one going away must not cancel the rest)."""
        joining = self._next
        if joining is None:
            joining = self._next = Round(asyncio.get_running_loop().create_future())
        joining.events += events
        if self._keep_lines:
            joining.lines += lines
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        return joining.done

    def refuse(self, exc: BaseException) -> None:
        """Fail the round not yet started (what it would sync is gone)."""
        if self._next is not None:
            self._next.done.set_exception(exc)
            self._next = None

    async def drain(self) -> None:
        """Wait until no round runs or waits (nothing is written meanwhile)."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def _run(self) -> None:
        """Rounds until nobody is waiting; each covers everything written before it."""
        while self._next is not None:
            current, self._next = self._next, None
            await self._sync(current)


class Waiters:
    """Tasks waiting for the next round that makes progress."""

    def __init__(self) -> None:
        self._waiting: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        """Return at the next :meth:`wake` (callers bound the wait)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled: nobody will resolve it
                self._waiting.remove(waiter)

    def wake(self) -> None:
        if self._waiting:  # most rounds have nobody waiting
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)
