"""LoopThread: the stand-ins' and the tests' event loop in a thread, driven from sync code."""

from __future__ import annotations

import asyncio
import threading

import pytest

from keyledger.backends._loop_thread import LoopThread


def test_setup_runs_on_the_loop_and_its_failure_is_raised_to_the_caller() -> None:
    """A server that cannot start says why in the caller's thread, and leaves no thread
    behind; the same LoopThread starts again afterwards."""
    before = set(threading.enumerate())
    loop_thread = LoopThread("test-loop", timeout=5)

    async def broken() -> None:
        raise OSError("address in use")

    with pytest.raises(OSError, match="address in use"):
        loop_thread.start(broken)
    assert not loop_thread.running
    assert not set(threading.enumerate()) - before  # nothing left (others may have ended)

    seen: list[str] = []

    async def setup() -> None:
        seen.append(threading.current_thread().name)

    loop_thread.start(setup)
    try:
        assert seen == ["test-loop"]
        assert loop_thread.call(lambda: threading.current_thread().name) == "test-loop"
        assert loop_thread.run(asyncio.sleep(0, result=42)) == 42
        with pytest.raises(RuntimeError, match="already running"):
            loop_thread.start(setup)
    finally:
        loop_thread.stop()
    loop_thread.stop()  # twice: nothing
    assert not set(threading.enumerate()) - before  # nothing left (others may have ended)


def test_stop_ends_the_thread_even_when_teardown_fails_and_cancels_what_is_left() -> None:
    """A teardown that raises still ends the loop and joins the thread; tasks still
    pending are cancelled, not destroyed pending."""
    before = set(threading.enumerate())
    loop_thread = LoopThread("test-loop", timeout=5)
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def setup() -> None:
        asyncio.get_running_loop().create_task(forever())

    async def teardown() -> None:
        raise ValueError("teardown failed")

    loop_thread.start(setup)
    with pytest.raises(ValueError, match="teardown failed"):
        loop_thread.stop(teardown)
    assert cancelled.is_set()
    assert not loop_thread.running
    assert not set(threading.enumerate()) - before  # nothing left (others may have ended)


def test_a_run_that_takes_too_long_times_out() -> None:
    """``timeout`` bounds each wait from the calling thread."""
    loop_thread = LoopThread("test-loop", timeout=0.2)

    async def nothing() -> None:
        return None

    loop_thread.start(nothing)
    try:
        with pytest.raises(TimeoutError):
            loop_thread.run(asyncio.sleep(5))
    finally:
        loop_thread.stop()
