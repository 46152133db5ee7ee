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

The guard sits between the event loop and aiohttp's per-connection protocol, and learns
when a request starts and ends from :meth:`ConnectionGuard.middleware`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["ConnectionGuard", "GuardedSite"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
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

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guarded = self._open.get(request.transport) if request.transport else None
        if guarded is None:
            return await handler(request)
        guarded.busy()
        try:
            return await handler(request)
        finally:
            guarded.idle()

    def _connected(self, transport: asyncio.BaseTransport, guarded: _Guarded) -> None:
        self._open[transport] = guarded

    def _gone(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._open.pop(transport, None)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's timers."""

    __slots__ = ("_guard", "_inner", "_state", "_timer", "_transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self._guard = guard
        self._inner: Any = inner  # aiohttp's RequestHandler: a Protocol in all but name
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = "idle"  # idle -> head (bytes of a request came) -> busy -> idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guard._connected(transport, self)
        self._inner.connection_made(transport)
        self._arm(self._guard.idle_timeout_s, "idle_timeout")

    def data_received(self, data: bytes) -> None:
        if self._state == "idle":
            self._state = "head"
            self._arm(self._guard.header_timeout_s, "header_timeout")
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._guard._gone(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def busy(self) -> None:
        """A request's head is complete and its handler runs: the handler bounds it now."""
        self._state = "busy"
        self._disarm()

    def idle(self) -> None:
        self._state = "idle"
        self._arm(self._guard.idle_timeout_s, "idle_timeout")

    def _arm(self, delay: float, reason: str) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._expire, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, reason: str) -> None:
        self._timer = None
        if self._state == "busy" or self._transport is None:
            return
        self._guard.closed[reason] += 1
        self._transport.close()


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
