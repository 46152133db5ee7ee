"""H1Transport, the AWS backend's HTTP client, against real servers: what it does beyond the
contract every transport passes (tests/proxy/test_http_client.py): keep-alive and its
limits, every framing of an answer, bounds, deadlines and TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from keyledger.backends import HttpTransportError
from keyledger.devtls import ensure_dev_tls, server_context
from keyledger.proxy.h1 import H1Transport

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def h1() -> AsyncIterator[H1Transport]:
    client = H1Transport(timeout_s=2)
    await client.start()
    yield client
    await client.close()


async def raw_server(reply: Reply) -> tuple[asyncio.Server, str]:
    """A TCP server answering each connection with ``reply``: answers no framework sends."""
    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return head + await reader.readexactly(length)


class TestKeepAlive:
    async def test_one_connection_carries_many_requests(self, h1: H1Transport) -> None:
        """Sequential calls reuse one connection: the server sees one peer port."""
        ports: list[int] = []

        async def seen(request: web.Request) -> web.Response:
            assert request.transport is not None
            ports.append(request.transport.get_extra_info("peername")[1])
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/", seen)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            for _ in range(5):
                reply = await h1.request("POST", str(server.make_url("/")), headers={}, body=b"x")
                assert (reply.status, reply.body) == (200, b"ok")
        finally:
            await server.close()

        assert len(set(ports)) == 1

    async def test_at_most_max_connections_at_once(self) -> None:
        """Twenty concurrent calls with max_connections 2 open two connections."""
        peers: set[int] = set()

        async def slow(request: web.Request) -> web.Response:
            assert request.transport is not None
            peers.add(request.transport.get_extra_info("peername")[1])
            await asyncio.sleep(0.02)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/", slow)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        client = H1Transport(timeout_s=5, max_connections=2)
        await client.start()
        try:
            url = str(server.make_url("/"))
            replies = await asyncio.gather(
                *(client.request("POST", url, headers={}, body=b"") for _ in range(20))
            )
        finally:
            await client.close()
            await server.close()

        assert [r.status for r in replies] == [200] * 20
        assert len(peers) == 2

    async def test_a_connection_the_store_closed_while_idle_is_not_used(
        self, h1: H1Transport
    ) -> None:
        """The store closing an idle keep-alive connection costs nothing: the next call
        opens another."""
        served = 0

        async def once_then_close(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            nonlocal served
            await read_request(reader)
            served += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()  # without saying Connection: close

        server, url = await raw_server(once_then_close)
        try:
            first = await h1.request("POST", url, headers={}, body=b"")
            await asyncio.sleep(0.05)  # the close arrives while the connection is idle
            second = await h1.request("POST", url, headers={}, body=b"")
        finally:
            server.close()

        assert (first.body, second.body, served) == (b"ok", b"ok", 2)


class TestFraming:
    @pytest.mark.parametrize(
        ("answer", "body"),
        [
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                b"abcde",
            ),
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"until the end"),
            (
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone",
                b"done",
            ),
        ],
        ids=["chunked", "to-close", "interim-100"],
    )
    async def test_every_framing_of_an_answer(
        self, h1: H1Transport, answer: bytes, body: bytes
    ) -> None:
        """Chunked, ended by the connection's close, or after a 100 Continue: the body whole."""

        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
            writer.close()

        server, url = await raw_server(reply)
        try:
            got = await h1.request("POST", url, headers={"X-A": "1"}, body=b"{}")
        finally:
            server.close()

        assert got.body == body

    async def test_an_answer_cut_short_is_a_transport_error(self, h1: H1Transport) -> None:
        """A Content-Length the store never fills is an error, not a short body."""

        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
            await writer.drain()
            writer.close()

        server, url = await raw_server(reply)
        try:
            with pytest.raises(HttpTransportError):
                await h1.request("POST", url, headers={}, body=b"")
        finally:
            server.close()


class TestBounds:
    async def test_headers_past_the_bound_are_refused(self, h1: H1Transport) -> None:
        """An answer whose headers run past 64 KiB is an error, not memory."""

        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Junk: " + b"j" * 70_000 + b"\r\n\r\n")
            await writer.drain()
            writer.close()

        server, url = await raw_server(reply)
        try:
            with pytest.raises(HttpTransportError):
                await h1.request("POST", url, headers={}, body=b"")
        finally:
            server.close()

    async def test_a_silent_store_is_a_transport_error_at_the_deadline(
        self, h1: H1Transport
    ) -> None:
        """No answer within timeout_s (2 s here): an error, and the connection is closed."""

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(10)

        server, url = await raw_server(silent)
        try:
            with pytest.raises(HttpTransportError, match="TimeoutError"):
                await h1.request("POST", url, headers={}, body=b"")
        finally:
            server.close()

    async def test_a_header_that_would_split_the_request_is_refused(self, h1: H1Transport) -> None:
        """A line break in a header value never reaches the wire."""
        with pytest.raises(HttpTransportError, match="line break"):
            await h1.request(
                "POST", "http://127.0.0.1:9/", headers={"X-A": "1\r\nX-Injected: 1"}, body=b""
            )


class TestTls:
    async def test_a_store_whose_certificate_the_ca_file_signs(self, tmp_path: Path) -> None:
        """HTTPS with ``ca_file``: verified, hostname checked, answered."""
        tls = ensure_dev_tls(tmp_path, names=("localhost",))
        app = web.Application()

        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="over tls")

        app.router.add_post("/", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(tls.cert, tls.key))
        await site.start()
        port = runner.addresses[0][1]
        trusting = H1Transport(timeout_s=5, ca_file=tls.ca_cert)
        stranger = H1Transport(timeout_s=5)  # the system's trust store only
        await trusting.start()
        await stranger.start()
        try:
            url = f"https://localhost:{port}/"
            reply = await trusting.request("POST", url, headers={}, body=b"")
            with pytest.raises(HttpTransportError):
                await stranger.request("POST", url, headers={}, body=b"")
        finally:
            await trusting.close()
            await stranger.close()
            await runner.cleanup()

        assert reply.body == b"over tls"
