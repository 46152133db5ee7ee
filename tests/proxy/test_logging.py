"""The operational log never holds up the event loop: a stalled stderr fills a bounded
queue, what it cannot take is dropped and counted, and what was queued is written once
the reader is back."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator

import pytest

from keyledger.proxy.logging import LogWriter


@pytest.fixture
def stalled() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A pipe nobody reads yet: its writer blocks once ~64 KiB are in it."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w")
    yield stream, read_fd
    with contextlib.suppress(OSError):
        stream.close()
    os.close(read_fd)


def drain(read_fd: int, into: bytearray, stop: threading.Event) -> None:
    """Read the pipe until ``stop`` is set and nothing is left in it."""
    os.set_blocking(read_fd, False)
    while True:
        try:
            chunk = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            if stop.is_set():
                return
            time.sleep(0.005)
            continue
        into.extend(chunk)


def test_a_stalled_reader_costs_the_logger_nothing_and_drops_are_counted(
    stalled: tuple[io.TextIOWrapper, int],
) -> None:
    """50,000 lines of 100 bytes into a stalled pipe with room for 1,000 queued: writing
    them all takes well under a second (each write returns at once), the overflow is
    counted; once the pipe is read, the lines that were kept arrive in order."""
    stream, read_fd = stalled
    writer = LogWriter(stream, capacity=1000)
    line = "x" * 99

    started = time.perf_counter()
    for n in range(50_000):
        writer.write(f"{n:06d}{line}")
    took = time.perf_counter() - started

    assert took < 1.0
    assert writer.dropped >= 50_000 - 1000 - 700  # the queue, and what the pipe took
    received = bytearray()
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(read_fd, received, stop))
    reader.start()
    writer.close(timeout_s=5)
    stop.set()
    reader.join()
    numbers = [int(row[:6]) for row in received.decode().splitlines()]
    assert numbers == sorted(numbers)
    assert len(numbers) == 50_000 - writer.dropped


def test_close_gives_up_on_a_reader_that_never_comes_back(
    stalled: tuple[io.TextIOWrapper, int],
) -> None:
    stream, _ = stalled
    writer = LogWriter(stream, capacity=10)
    for _ in range(2000):
        writer.write("y" * 200)

    started = time.monotonic()
    writer.close(timeout_s=0.5)

    assert time.monotonic() - started < 1.5


def test_a_closed_stream_counts_as_drops() -> None:
    stream = io.StringIO()
    writer = LogWriter(stream)
    stream.close()
    writer.write("lost")
    writer.close(timeout_s=1)
    assert writer.dropped == 1


def test_drops_are_a_metric() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from keyledger.proxy.metrics import LogCollector

    stream = io.StringIO()
    writer = LogWriter(stream)
    stream.close()
    writer.write("lost")
    writer.write("lost too")
    writer.close(timeout_s=1)
    registry = CollectorRegistry()
    registry.register(LogCollector(writer))

    assert b"keyledger_log_lines_dropped_total 2.0" in generate_latest(registry)


@pytest.fixture
def logging_configured() -> Iterator[None]:
    """configure_logging's global settings (structlog's, the root logger's), undone after."""
    import logging

    import structlog

    handlers = list(logging.getLogger().handlers)
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers


async def test_requests_that_are_not_http_are_counted_not_logged_one_by_one(
    capfd: pytest.CaptureFixture[str], logging_configured: None
) -> None:
    """A scanner's garbage (a header line too long, a request line that is not HTTP) gets
    aiohttp's 400 and one summary line a minute, not an error with a traceback each; the
    count is kept for /metrics."""
    from aiohttp import web

    from keyledger.proxy.logging import configure_logging
    from tests.conftest import listen

    writer = configure_logging(format="json", level="info")
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    runner = await listen(app)
    port = runner.addresses[0][1]
    try:
        too_long = b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n"
        for garbage in [too_long, b"GET / HTTP/9\r\n\r\n"] * 5:
            reader, writer_stream = await asyncio.open_connection("127.0.0.1", port)
            writer_stream.write(garbage)
            assert b" 400 Bad Request" in await reader.read(100)
            writer_stream.close()
    finally:
        await runner.cleanup()
        writer.close()
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]

    assert writer.malformed == 10
    assert [line["event"] for line in logged] == ["malformed_http_requests"]
    assert logged[0]["count"] == 1
    assert "Traceback" not in json.dumps(logged)
