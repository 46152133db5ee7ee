"""Slow and greedy clients hold no more than their share of the data plane.

aiohttp reads a request's headers with no time limit and keeps an idle connection for an
hour: it expects a reverse proxy in front, and keyledger is often the edge itself. A
slowloris (hundreds of connections, each trickling a header line every few seconds) would
hold the process's descriptors and memory for as long as it liked. The guard bounds, per
process:

- connections open at once (``limits.max_connections``): past it, a new connection is
  answered ``503`` with ``Connection: close`` and closed, before anything is read;
- the time a request's head may take (``limits.header_timeout_s``), counted from its first
  byte: a head still incomplete then has its connection closed;
- the time a connection may sit idle between requests (``limits.idle_timeout_s``),
  counted from a response (or from connecting); that bounds a reader stalling on a response
  too.

The body's own time limit is the request handler's (``limits.request_timeout_s``). A
connection closed by the guard never carried a request (only part of a head, or nothing),
so there is no call to audit; each closure is counted for ``/metrics``.

The guard sits between the event loop and aiohttp's per-connection protocol; the request
handler tells it when a request starts and ends (:meth:`ConnectionGuard.connection`), and
a sweep a few times per timeout closes the connections past their deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["ConnectionGuard", "GuardedSite"]

# What a connection past the limit gets: retried by every SDK keyledger serves.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 40\r\n"
    b"\r\n"
    b"keyledger: too many connections, retry\r\n"
)


class ConnectionGuard:
    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout_s: float,
        idle_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._open: dict[asyncio.BaseTransport, _Guarded] = {}
        # reason -> count: "limit", "header_timeout", "idle_timeout"
        self.closed: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return len(self._open)

    def wrap(self, factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to listen with, in place of aiohttp's ``factory``."""

        def guarded() -> asyncio.Protocol:
            if len(self._open) >= self.max_connections:
                return _Refused(self)
            return _Guarded(self, factory())

        return guarded

    def connection(self, transport: asyncio.BaseTransport | None) -> _Guarded | None:
        """The guarded connection a request arrived on (None: not one of ours), for the
        request handler to mark it busy, then idle."""
        return self._open.get(transport) if transport is not None else None

    async def run(self) -> None:
        """Close the connections past their time, a few times per shortest timeout: a
        deadline checked in a sweep costs a request two assignments, where a timer of its
        own would cost it a timer armed and cancelled."""
        every = min(1.0, self.header_timeout_s / 4, self.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(every)
            self.sweep()

    def sweep(self) -> None:
        now = self._clock()
        late = [c for c in self._open.values() if c.deadline is not None and now >= c.deadline]
        for connection in late:
            self.closed[connection.expire()] += 1

    def now(self) -> float:
        return self._clock()

    def _connected(self, transport: asyncio.BaseTransport, guarded: _Guarded) -> None:
        self._open[transport] = guarded

    def _gone(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._open.pop(transport, None)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the deadline the guard sweeps."""

    __slots__ = ("_guard", "_inner", "_transport", "deadline", "head")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self._guard = guard
        self._inner: Any = inner  # aiohttp's RequestHandler: a Protocol in all but name
        self._transport: asyncio.BaseTransport | None = None
        # When the guard closes it (None: a request is being handled, the handler's own
        # bounds hold); ``head``: the bytes of a request have begun to arrive.
        self.deadline: float | None = None
        self.head = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guard._connected(transport, self)
        self._inner.connection_made(transport)
        self.idle()

    def data_received(self, data: bytes) -> None:
        if not self.head and self.deadline is not None:
            self.head = True
            self.deadline = self._guard.now() + self._guard.header_timeout_s
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = None
        self._guard._gone(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def busy(self) -> None:
        """A request's head is complete and its handler runs: the handler bounds it now."""
        self.deadline = None

    def idle(self) -> None:
        """Between requests: the next one's first byte must come within the idle timeout."""
        self.head = False
        self.deadline = self._guard.now() + self._guard.idle_timeout_s

    def expire(self) -> str:
        """Close the connection; why, for the count."""
        self.deadline = None
        if self._transport is not None:
            self._transport.close()
        return "header_timeout" if self.head else "idle_timeout"


class _Refused(asyncio.Protocol):
    """A connection past ``max_connections``: told so, and closed."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard.closed["limit"] += 1
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_BUSY)
        transport.close()


class GuardedSite(web.SockSite):
    """aiohttp's SockSite, listening with ``guard`` between the loop and each connection.

    Only the server creation differs from SockSite.start: aiohttp has no hook for wrapping
    its protocol factory.
    """

    def __init__(self, runner: web.BaseRunner, sock: Any, guard: ConnectionGuard, **kw: Any):
        super().__init__(runner, sock, **kw)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server),
            sock=self._sock,
            ssl=self._ssl_context,
            backlog=self._backlog,
        )
