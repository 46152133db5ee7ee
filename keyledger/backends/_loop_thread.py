"""An asyncio event loop running in a daemon thread, driven by sync code in other threads.

- :class:`LoopThread`: the loop and its thread, from sync code::

      thread = LoopThread("gcp-standin")
      thread.start(server.start)  # waits; raises here what server.start raised
      thread.run(server.some_coroutine())  # runs on the loop, returns its result here
      thread.stop(server.stop)  # then ends the loop and joins the thread

- :class:`AsyncServer`: a server with async ``start`` and ``stop``, and ``async with``.
- :class:`ThreadedServer`: one of those on its own :class:`LoopThread`, with ``with``
  (``start_in_thread`` / ``stop_thread``), like moto's ThreadedMotoServer.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

__all__ = ["AsyncServer", "LoopThread", "ThreadedServer"]

T = TypeVar("T")


class LoopThread:
    """One event loop in one daemon thread, from :meth:`start` to :meth:`stop`.

    ``name``: the thread's. ``timeout``: the seconds each wait from the calling thread
    (start, run, call, stop) may take before ``TimeoutError`` (None: no limit).
    A stopped LoopThread may be started again, on a new loop.
    """

    def __init__(self, name: str, *, timeout: float | None = None) -> None:
        self.name = name
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, e.g. for ``asyncio.run_coroutine_threadsafe``."""
        if self._loop is None:
            raise RuntimeError(f"the {self.name} loop thread has not been started")
        return self._loop

    def start(self, setup: Callable[[], Awaitable[object]]) -> None:
        """Start the thread and its loop, then run ``setup()`` on the loop and wait for it.

        If setup raises (or times out), the loop is ended and the exception raised here.
        """
        if self._loop is not None:
            raise RuntimeError(f"the {self.name} loop thread is already running")
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_forever()
            # Stopped: cancel and finish any task left (a setup that timed out...), as
            # asyncio.run does, so none is destroyed pending when the loop closes.
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._loop = loop
        self._thread.start()
        try:
            self.run(_awaited(setup))
        except BaseException:
            self._end()
            raise

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result (or exception)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise

    def call(self, function: Callable[[], T]) -> T:
        """Call ``function`` on the loop's thread and wait for its result (or exception)."""

        async def on_loop() -> T:
            return function()

        return self.run(on_loop())

    def stop(self, teardown: Callable[[], Awaitable[object]] | None = None) -> None:
        """Run ``teardown()`` on the loop and wait for it, then end the loop and join the
        thread, even if teardown raised. Does nothing if not running."""
        if self._loop is None:
            return
        try:
            if teardown is not None:
                self.run(_awaited(teardown))
        finally:
            self._end()

    def _end(self) -> None:
        loop, thread = self.loop, self._thread
        assert thread is not None
        self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout)
        if thread.is_alive():
            raise TimeoutError(f"the {self.name} loop did not stop within {self.timeout}s")
        loop.close()


class AsyncServer(abc.ABC):
    """A server started and stopped on the running event loop; ``async with`` does both."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ThreadedServer(AsyncServer):
    """An :class:`AsyncServer` on its own event loop in a daemon thread, for sync callers.

    Mixed in after the server class (``class ThreadedX(X, ThreadedServer)``), which gives
    ``start`` and ``stop``; ``thread_name`` names the thread.
    """

    thread_name: ClassVar[str] = "server"
    _thread: LoopThread | None = None

    def start_in_thread(self) -> None:
        """Start serving on a new loop in a new thread; returns once started."""
        self._thread = self._thread or LoopThread(self.thread_name)
        self._thread.start(self.start)

    def stop_thread(self) -> None:
        """Stop serving and end the thread (nothing if not started)."""
        if self._thread is not None:
            self._thread.stop(self.stop)

    def __enter__(self) -> Self:
        self.start_in_thread()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_thread()


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
