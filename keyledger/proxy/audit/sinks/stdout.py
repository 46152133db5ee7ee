"""The stdout sink: one journal line per line on standard output, for container log
collectors (Fluent Bit, the CloudWatch agent, Vector). keyledger's own logs go to stderr,
so stdout carries nothing else.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from keyledger.proxy.audit.sinks._thread import ThreadedSink
from keyledger.proxy.audit.sinks.base import Batch, SinkError
from keyledger.proxy.config import StdoutSinkConfig

__all__ = ["StdoutSink"]


class StdoutSink(ThreadedSink):
    def __init__(self, config: StdoutSinkConfig, *, stream: BinaryIO | None = None) -> None:
        super().__init__(config)
        self._stream = stream

    async def prepare(self) -> None:
        return None

    async def send(self, batch: Batch) -> None:
        # In a thread of its own: a collector that stops reading fills the pipe, and must
        # not stall the event loop or the journal's fsyncs (the shipper waits; requests
        # do not).
        data = batch.jsonl()
        await self._thread.run(lambda: self._write(data))

    def _write(self, data: bytes) -> None:
        stream = self._stream or sys.stdout.buffer
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: stdout was closed
            raise SinkError(f"writing to stdout: {exc}") from None
