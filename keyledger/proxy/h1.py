"""A small keep-alive HTTP/1.1 client for the store's JSON API: the proxy's hottest I/O.

Forwarding to the store was the largest single cost on keyledger's event loop (about 28%
of its samples under load), nearly all of it aiohttp's client machinery: a request, a
response, a connection wrapper, a writer, a payload and a timer object per call, and a task
to write the body. No option of aiohttp's changed that measurably
(``bench/forward_clients.py``). This client sends what keyledger already holds (method,
URL, a few signed headers, a small body) on a pooled connection in one write, and reads
the answer with ``httptools`` (the parser uvicorn uses, in C): about a quarter of the CPU
per call.

What it does, and no more: HTTP/1.1 with keep-alive, per origin a pool of at most
``max_connections``; TLS with the system's trust store or ``ca_file``, SNI and hostname
checks; answers of any framing (Content-Length, chunked, to connection close); a total
deadline per request (``timeout_s``, connecting included); bounds on an answer's headers
and body; idle connections dropped after ``idle_s``. A connection that fails is closed,
never reused, and the request is not sent again: a write must not happen twice, and the
callers' SDKs retry what keyledger answers as unavailable. No redirects (a redirect would
send a signed body, perhaps a secret being written, wherever it points), no proxies, no
compression (only what the caller signs is sent).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools

from keyledger.backends import HttpReply, HttpTransportError

__all__ = ["H1Transport"]

_MAX_HEADER_BYTES = 64 << 10
_MAX_BODY_BYTES = 32 << 20  # far beyond any store answer (a value is at most 64 KiB)
_ROUTES_KEPT = 64  # URLs whose split is kept (a backend uses one or two)


class H1Transport:
    """See the module's docstring; ``start`` before use, ``close`` when done."""

    def __init__(
        self,
        *,
        timeout_s: float,
        max_connections: int = 256,
        ca_file: Path | None = None,
        idle_s: float = 15.0,
    ) -> None:
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._ca_file = ca_file
        self._idle_s = idle_s  # below the stores' own keep-alive (AWS: 60 s and more)
        self._tls: ssl.SSLContext | None = None
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._routes: dict[str, tuple[_Pool, str, str]] = {}
        self._closed = False

    async def start(self) -> None:
        # One context for every pool: building one reads the trust store.
        self._tls = ssl.create_default_context(
            cafile=str(self._ca_file) if self._ca_file is not None else None
        )

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._routes.clear()

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        if self._closed or self._tls is None:
            raise HttpTransportError("the HTTP client is not started")
        pool, target, netloc = self._routes.get(url) or self._route(url)
        try:
            head = _head(method, target, netloc, headers, len(body))
        except UnicodeEncodeError:
            raise HttpTransportError("a header is not Latin-1 text") from None
        try:
            async with asyncio.timeout(self._timeout_s):
                return await pool.send(head + body)
        except TimeoutError:
            raise HttpTransportError("TimeoutError") from None
        except OSError as exc:
            raise HttpTransportError(type(exc).__name__) from exc

    def _route(self, url: str) -> tuple[_Pool, str, str]:
        """The pool, request target and Host of ``url``, kept: a backend calls one or two
        URLs over and over, and splitting one costs more than the rest of the head."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpTransportError(f"not an http(s) URL: {url[:100]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(origin)
        if pool is None:
            tls = self._tls if parts.scheme == "https" else None
            pool = self._pools[origin] = _Pool(
                parts.hostname, port, tls, self._max_connections, self._idle_s
            )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if len(self._routes) >= _ROUTES_KEPT:
            self._routes.clear()
        route = self._routes[url] = (pool, target, parts.netloc)
        return route


def _head(method: str, target: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length", "connection", "transfer-encoding"):
            continue  # this client's to say
        line = f"{name}: {value}"
        if "\r" in line or "\n" in line or "\0" in line:
            raise HttpTransportError("a header holds a line break or NUL")
        lines.append(line)
    if length or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Pool:
    """Connections to one origin: idle ones reused newest first, at most ``limit`` open."""

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None, limit: int, idle_s: float
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._idle_s = idle_s
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Connection] = set()

    async def send(self, data: bytes) -> HttpReply:
        async with self._slots:
            connection = self._reuse() or await self._connect()
            try:
                reply = await connection.exchange(data)
            except BaseException:
                connection.close()  # its state is unknown: never reused
                raise
            if connection.reusable:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
            return reply

    def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < self._idle_s:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: _Connection(self._open),
            self._host,
            self._port,
            ssl=self._tls,
            server_hostname=self._host if self._tls is not None else None,
        )
        return connection


class _Connection(asyncio.Protocol):
    """One connection: a request written whole, its answer parsed as it arrives."""

    def __init__(self, registry: set[_Connection]) -> None:
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[HttpReply] | None = None
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._headers_done = False
        self._lost = False
        self._keep_alive = False
        self.idle_since = 0.0

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not self._lost and self._answer is None

    async def exchange(self, data: bytes) -> HttpReply:
        assert self._transport is not None
        if self._lost:
            raise ConnectionResetError("the store closed the connection")
        self._answer = asyncio.get_running_loop().create_future()
        self._headers, self._header_bytes, self._body, self._body_bytes = {}, 0, [], 0
        self._keep_alive, self._headers_done = False, False
        self._transport.write(data)
        try:
            return await self._answer
        finally:
            self._answer = None

    def close(self) -> None:
        self._lost = True
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are transports.
        self._transport = cast(asyncio.Transport, transport)
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._registry.discard(self)
        answer = self._answer
        if answer is None or answer.done():
            return
        if self._headers_done and self._framed_by_close():
            # An answer with neither a length nor chunks ends where the connection does.
            answer.set_result(
                HttpReply(self._parser.get_status_code(), self._headers, b"".join(self._body))
            )
        else:
            answer.set_exception(
                exc or ConnectionResetError("the store closed the connection mid-answer")
            )

    def _framed_by_close(self) -> bool:
        chunked = "chunked" in self._headers.get("transfer-encoding", "").lower()
        return "content-length" not in self._headers and not chunked

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionError("the store asked to switch protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"the store's answer is not HTTP ({exc})"))
        except _TooLarge as exc:
            self._fail(ConnectionError(str(exc)))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise _TooLarge(f"the store's headers exceed {_MAX_HEADER_BYTES} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # Repeated headers joined, as aiohttp's mapping would show the first; callers read
        # one-valued headers (content type, request id, error type).
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, chunk: bytes) -> None:
        self._body_bytes += len(chunk)
        if self._body_bytes > _MAX_BODY_BYTES:
            raise _TooLarge(f"the store's answer exceeds {_MAX_BODY_BYTES} bytes")
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers, self._header_bytes, self._headers_done = {}, 0, False
            return
        self._keep_alive = bool(self._parser.should_keep_alive())
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(HttpReply(status, self._headers, b"".join(self._body)))

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.close()


class _TooLarge(Exception):
    pass
