"""A minimal HTTP/1.1 server on asyncio streams, enough for the Google clients' requests.

backends/ stays free of the web stack (tests/test_architecture.py), so the REST surface is a
plain function from :class:`HttpRequest` to :class:`HttpResponse` served here: persistent
connections, ``Content-Length`` or chunked bodies, one request at a time per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = ["HttpRequest", "HttpResponse", "HttpServer"]

MAX_BODY = 1 << 20  # far above Secret Manager's 64 KiB payloads


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = field(repr=False)
    content_type: str = "application/json; charset=UTF-8"


Handler = Callable[[HttpRequest], HttpResponse]


class _BadRequest(Exception):
    pass


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0: any free port, then see :attr:`port`)."""

    def __init__(self, handler: Handler, *, host: str, port: int) -> None:
        self._handler, self._host, self._port = handler, host, port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the HTTP server has not been started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self._host, self._port)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Python 3.11 leaves idle keep-alive connections open: close them ourselves.
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is over."""
        line = await reader.readline()
        if not line:
            return False
        try:
            method, target, version = line.decode("latin-1").split()
            headers = await _headers(reader)
            body = await _body(reader, headers)
        except (_BadRequest, ValueError):
            writer.write(_head(HTTPStatus.BAD_REQUEST, "text/plain", 0, keep_alive=False))
            await writer.drain()
            return False
        response = self._handler(HttpRequest(method.upper(), target, headers, body))
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        writer.write(
            _head(response.status, response.content_type, len(response.body), keep_alive=keep_alive)
            + response.body
        )
        await writer.drain()
        return keep_alive


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise _BadRequest(line)
        headers[name.strip().lower()] = value.strip()
    return headers


async def _body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = bytearray()
        while size := int((await reader.readline()).split(b";")[0], 16):
            if len(chunks) + size > MAX_BODY:
                raise _BadRequest("body too large")
            chunks += await reader.readexactly(size)
            await reader.readline()  # the CRLF after each chunk
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return bytes(chunks)
    length = int(headers.get("content-length", "0"))
    if not 0 <= length <= MAX_BODY:
        raise _BadRequest("bad Content-Length")
    return await reader.readexactly(length)


def _head(status: int, content_type: str, length: int, *, keep_alive: bool) -> bytes:
    reason = HTTPStatus(status).phrase
    connection = "keep-alive" if keep_alive else "close"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: {connection}\r\n\r\n"
    ).encode("latin-1")
