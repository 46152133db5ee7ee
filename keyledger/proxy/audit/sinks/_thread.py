"""A sink's own worker thread: blocking SDK calls run here, never in asyncio's default pool.

The default pool also runs the journal's fsyncs, so a sink call that hangs (a host that
accepts connections and never answers) must not hold one of its threads; and a daemon
thread cannot keep the process alive at exit, so shutdown is bounded by ``drain``, not by
an SDK timeout. A call abandoned that way had not been acknowledged: the cursor did not
move, and the batch is sent again after the restart.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from keyledger.proxy.audit.sinks.base import BatchLimits
from keyledger.proxy.config import SinkConfig

__all__ = ["SinkThread", "ThreadedSink"]

T = TypeVar("T")

_Work = tuple[Future[object], Callable[[], object]]


class SinkThread:
    """One daemon thread running one call at a time, in order."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on the thread; cancelling the await abandons it (it finishes alone)."""
        future: Future[object] = Future()
        self._queue.put((future, call))
        result = await asyncio.wrap_future(future)
        return result  # type: ignore[return-value]

    def close(self) -> None:
        """The thread ends after the calls already queued."""
        self._queue.put(None)

    def _serve(self) -> None:
        while (work := self._queue.get()) is not None:
            future, call = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)


class ThreadedSink:
    """What every sink shares: its name and limits from config, its thread, closing."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self._thread = SinkThread(f"keyledger-sink-{config.name}")

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def limits(self) -> BatchLimits:
        batch = self.config.batch
        return BatchLimits(max_events=batch.max_events, max_bytes=batch.max_bytes)

    async def close(self) -> None:
        # A call still running on the thread keeps what it uses; the thread ends after it.
        self._thread.close()
