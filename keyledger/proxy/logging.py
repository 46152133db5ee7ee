"""The proxy's own operational logs: structlog, JSON lines in production, readable in dev.

These logs name requests, principals and secrets, never values; audit events go to the
journal, not here.

A line is rendered where it is logged and handed to a :class:`LogWriter`, whose thread
alone writes to stderr: a reader that stops reading (a stalled pipe, a slow log
collector) then fills a bounded queue, not the event loop's time. What the full queue
cannot take is dropped and counted (``keyledger_log_lines_dropped_total``), never waited
for. The libraries' own warnings (aiohttp, botocore: the standard logging module) take the
same way out.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["LogWriter", "configure_logging"]

_CLOSE = None  # the writer thread's signal to stop, once everything before it is written


def _orjson_dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=default).decode()  # type: ignore[arg-type]


class LogWriter:
    """Writes log lines to ``stream`` from a thread of its own, through a bounded queue."""

    def __init__(self, stream: TextIO, *, capacity: int = 10_000) -> None:
        self._stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._dropped = 0
        self.malformed = 0  # requests aiohttp could not parse (see _LibraryHandler)
        self._thread = threading.Thread(target=self._run, name="keyledger-log-writer", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines lost since start: the queue was full, or the stream refused them."""
        return self._dropped

    def write(self, line: str) -> None:
        """Queue ``line``; never blocks."""
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._drop()

    def _drop(self) -> None:
        with self._lock:
            self._dropped += 1

    def _run(self) -> None:
        while (line := self._queue.get()) is not _CLOSE:
            try:
                self._stream.write(line + "\n")
                if self._queue.empty():
                    self._stream.flush()  # a burst is written at once, then flushed
            except (OSError, ValueError):  # a closed pipe, a closed file
                self._drop()
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def close(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (within ``timeout_s``: a stalled reader is not waited for
        longer), then stop."""
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(_CLOSE, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))


class _QueuedLogger:
    """structlog's side: every level method hands the rendered line to the writer."""

    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


class _LibraryHandler(logging.Handler):
    """The standard logging module's records (aiohttp's, botocore's), as JSON lines on the
    same writer; without it Python's last-resort handler would write to stderr itself.

    aiohttp logs every request that is not HTTP at all (a bad request line, a header too
    long) as an error with its traceback: a scanner or a fuzzer would fill the log with
    them. Those are the client's fault and never reach keyledger (aiohttp answers 400), so
    they are counted (``keyledger_malformed_http_requests_total``) and summed up in one
    ``malformed_http_requests`` line a minute at most."""

    def __init__(self, writer: LogWriter, *, summary_every_s: float = 60.0) -> None:
        super().__init__(logging.WARNING)
        self._writer = writer
        self._every = summary_every_s
        self._unreported = 0
        self._next_summary = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if (malformed := _malformed_http(record)) is not None:
            self._count_malformed(record, malformed)
            return
        try:
            line: dict[str, Any] = {
                "event": record.getMessage(),
                "logger": record.name,
                "level": record.levelname.lower(),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            }
            if record.exc_info and record.exc_info[0] is not None:
                line["exception"] = record.exc_info[0].__name__
            self._writer.write(_orjson_dumps(line))
        except Exception:
            self.handleError(record)

    def _count_malformed(self, record: logging.LogRecord, kind: str) -> None:
        self._writer.malformed += 1
        self._unreported += 1
        if record.created < self._next_summary:
            return
        line = {
            "event": "malformed_http_requests",
            "count": self._unreported,
            "last": kind,
            "logger": record.name,
            "level": "warning",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
        }
        self._writer.write(_orjson_dumps(line))
        self._unreported, self._next_summary = 0, record.created + self._every


def _malformed_http(record: logging.LogRecord) -> str | None:
    """The error's name, if ``record`` is aiohttp's of a request it could not parse (the
    client's fault, not ours)."""
    if not record.name.startswith("aiohttp") or not record.exc_info:
        return None
    kind = record.exc_info[0]
    return kind.__name__ if kind is not None and issubclass(kind, HttpProcessingError) else None


def configure_logging(
    *, format: str = "json", level: str = "info", capacity: int = 10_000
) -> LogWriter:
    """Log to stderr through a :class:`LogWriter` (returned: its drops are a metric, and
    it is closed at exit so queued lines are written)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    writer = LogWriter(sys.stderr, capacity=capacity)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if format == "console":
        # Plain tracebacks: rich's would print local variables, which can hold secrets.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    else:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *args: _QueuedLogger(writer),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LibraryHandler)]:
        root.removeHandler(handler)  # configured again (tests): one handler, the new writer
    root.addHandler(_LibraryHandler(writer))
    return writer
