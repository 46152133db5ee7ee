"""Live fan-out of durable events to readers of the admin audit stream.

The journal hands over each batch of lines once it is durable, on the event loop, and must
not wait for anyone: each subscription keeps a bounded backlog, and a reader that falls
that far behind is dropped (told so, then disconnected) instead of slowing the data plane
or growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from keyledger.proxy.audit.filters import EventFilter

__all__ = ["AuditBroadcaster", "Subscription", "server_sent_events"]


class Subscription:
    """One reader's filtered view of the stream."""

    def __init__(self, filt: EventFilter, limit: int) -> None:
        self.filter = filt
        self.limit = limit
        self.dropped = False
        self.closed = False
        self._items: deque[tuple[dict[str, Any], bytes]] = deque()
        self._wake = asyncio.Event()

    def offer(self, record: dict[str, Any], line: bytes) -> None:
        if self.dropped or self.closed or not self.filter.matches(record):
            return
        if len(self._items) >= self.limit:
            # Too slow: free the memory now and let the reader find out.
            self.dropped = True
            self._items.clear()
        else:
            self._items.append((record, line))
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next_batch(self, quiet_s: float) -> list[tuple[dict[str, Any], bytes]]:
        """What arrived since the last call; empty after ``quiet_s`` of quiet or on close."""
        if not self._items and not (self.dropped or self.closed):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(quiet_s):
                    await self._wake.wait()
        self._wake.clear()
        batch = list(self._items)
        self._items.clear()
        return batch


class AuditBroadcaster:
    """Hands durable journal lines to every live subscription."""

    def __init__(self, *, backlog: int = 10_000) -> None:
        self.backlog = backlog
        self._subscriptions: set[Subscription] = set()
        self.dropped = 0  # readers dropped for being slow, since start

    def subscribe(self, filt: EventFilter) -> Subscription:
        subscription = Subscription(filt, self.backlog)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        if subscription.dropped:
            self.dropped += 1

    def publish(self, lines: Sequence[bytes]) -> None:
        """Called by the journal with lines that are durable; never blocks."""
        if not self._subscriptions:
            return
        for line in lines:
            record = orjson.loads(line)
            for subscription in self._subscriptions:
                subscription.offer(record, line)

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()


async def server_sent_events(stream: Any) -> AsyncIterator[tuple[str, bytes]]:
    """(event name, data) pairs of a text/event-stream body: the admin stream as its
    readers (`audit tail --url`, the fleet follower) take it."""
    event, data = "message", b""
    async for raw in stream:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, data
            event, data = "message", b""
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data += line[5:].lstrip(b" ")
