"""A bare pass-through proxy: the throughput baseline keyledger is compared against.

It forwards ``POST /`` (body plus the content-type, X-Amz-Target and signature headers) to
the upstream over one pooled aiohttp session and returns the upstream's status, body and
content-type. No authentication, no policy, no audit: the cost of one more aiohttp hop and
nothing else, which is the floor for any proxy written on the same stack.

    python bench/passthrough.py --port 8102 --upstream http://127.0.0.1:8101
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web
from upstream import serve_until_signalled  # bench/ is on sys.path: run from it

__all__ = ["make_app"]

_FORWARD = ("Content-Type", "X-Amz-Target", "X-Amz-Date", "Authorization")
_RETURN = ("x-amzn-RequestId", "x-amzn-ErrorType")
SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str, *, max_connections: int = 256) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k in _FORWARD if (v := request.headers.get(k)) is not None}
        async with request.app[SESSION].post(upstream, data=body, headers=headers) as resp:
            data = await resp.read()
            out = {"Content-Type": resp.headers.get("Content-Type", "application/octet-stream")}
            out.update((k, v) for k in _RETURN if (v := resp.headers.get(k)) is not None)
            return web.Response(status=resp.status, body=data, headers=out)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections),
            timeout=aiohttp.ClientTimeout(total=10),
            skip_auto_headers=("User-Agent", "Content-Type"),
        )
        yield
        await app[SESSION].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/", handle)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8101")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        # The same event loop as keyledger serve, so the baseline is like for like.
        uvloop.run(serve_until_signalled(make_app(args.upstream), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
