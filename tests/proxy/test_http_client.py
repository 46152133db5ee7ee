"""The HTTP clients keyledger lends its backends (AiohttpTransport; H1Transport, the AWS
backend's), over a real socket: each passes every test here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from keyledger.backends import HttpTransportError
from keyledger.proxy.h1 import H1Transport
from keyledger.proxy.http_client import AiohttpTransport

Transport = AiohttpTransport | H1Transport


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {"method": request.method, "path": request.path_qs, "body": body.decode()},
        headers={"X-Seen-Length": str(len(body))},
    )


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPTemporaryRedirect("/elsewhere")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", "/moved", moved)
    app.router.add_route("*", "/{tail:.*}", echo)
    running = TestServer(app, host="127.0.0.1")
    await running.start_server()
    yield running
    await running.close()


@pytest.fixture(params=["aiohttp", "h1"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    client: Transport = (
        AiohttpTransport(timeout_s=5) if request.param == "aiohttp" else H1Transport(timeout_s=5)
    )
    await client.start()
    yield client
    await client.close()


class TestRequest:
    @pytest.mark.parametrize(
        ("method", "body"),
        [("GET", b""), ("POST", b'{"a": 1}'), ("PATCH", b'{"labels": {}}'), ("DELETE", b"")],
    )
    async def test_every_method_a_rest_store_needs(
        self, server: TestServer, transport: Transport, method: str, body: bytes
    ) -> None:
        """GET, POST, PATCH and DELETE reach the server as sent, with their bodies."""
        url = str(server.make_url("/v1/projects/p/secrets/s?updateMask=labels"))

        reply = await transport.request(method, url, headers={"X-Test": "1"}, body=body)

        assert reply.status == 200
        assert reply.headers["x-seen-length"] == str(len(body))
        assert reply.body.decode() == (
            f'{{"method": "{method}", "path": "/v1/projects/p/secrets/s?updateMask=labels", '
            f'"body": "{body.decode().replace(chr(34), chr(92) + chr(34))}"}}'
        )

    async def test_a_redirect_is_answered_not_followed(
        self, server: TestServer, transport: Transport
    ) -> None:
        """A signed body (maybe a value being written) is never re-sent where a redirect
        points: the redirect comes back as the answer."""
        reply = await transport.request(
            "POST", str(server.make_url("/moved")), headers={}, body=b"secret"
        )

        assert reply.status == 307
        assert reply.headers["location"] == "/elsewhere"

    async def test_nobody_listening_is_a_transport_error(
        self, transport: Transport, unused_tcp_port: int
    ) -> None:
        """A store that cannot be reached raises HttpTransportError, not aiohttp's own."""
        with pytest.raises(HttpTransportError):
            await transport.request("GET", f"http://127.0.0.1:{unused_tcp_port}/", headers={})
