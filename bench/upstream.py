"""A fast stand-in for AWS Secrets Manager, for benchmarks only.

It speaks the JSON 1.1 wire protocol boto3 and keyledger use (``POST /`` with
``X-Amz-Target: secretsmanager.<Operation>``) for GetSecretValue, DescribeSecret and
ListSecrets, with response shapes taken from botocore's bundled service model, and keeps
connections alive. It checks no signature and holds a fixed set of secrets, answering from
bodies built once at start-up, so that per request it costs little more than aiohttp's own
request handling: a benchmark against it measures the proxy in front of it, not the store.

    python bench/upstream.py --port 8101        # prints "ready 127.0.0.1:8101" when listening
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
from collections.abc import Mapping
from typing import Any

import orjson
import uvloop
from aiohttp import web

__all__ = ["ACCOUNT", "REGION", "SECRETS", "make_app"]

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "secretsmanager."
REGION = "us-east-1"
ACCOUNT = "123456789012"
CREATED = 1700000000.0

# name -> (ARN suffix, VersionId, SecretString)
SECRETS: Mapping[str, tuple[str, str, str]] = {
    "bench/db/password": (
        "AbCdEf",
        "5c0ffee0-1f1e-4d3b-9a5e-0123456789ab",
        "c0rrect-h0rse-battery-staple-7f3a9b",
    ),
    "bench/api/token": (
        "GhIjKl",
        "0b5e55ed-2a2b-4c4d-8e8f-abcdef012345",
        '{"token":"bench-token-0123456789abcdef","issuer":"bench"}',
    ),
}

_NOT_FOUND = (400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")


def _arn(name: str, suffix: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-{suffix}"


def _value_body(name: str) -> bytes:
    suffix, version, value = SECRETS[name]
    return orjson.dumps(
        {
            "ARN": _arn(name, suffix),
            "Name": name,
            "VersionId": version,
            "SecretString": value,
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": CREATED,
        }
    )


def _describe(name: str, *, listing: bool) -> dict[str, Any]:
    """A DescribeSecret answer, or a ListSecrets entry (the model names one field apart)."""
    suffix, version, _ = SECRETS[name]
    return {
        "ARN": _arn(name, suffix),
        "Name": name,
        "Description": "keyledger benchmark secret",
        "LastChangedDate": CREATED,
        "LastAccessedDate": CREATED,
        "CreatedDate": CREATED,
        "SecretVersionsToStages" if listing else "VersionIdsToStages": {version: ["AWSCURRENT"]},
    }


class _Store:
    """The fixed secrets, their responses pre-rendered, looked up by name or ARN."""

    def __init__(self) -> None:
        self.by_id: dict[str, str] = {}
        for name, (suffix, _, _) in SECRETS.items():
            self.by_id[name] = name
            self.by_id[_arn(name, suffix)] = name
        self.values = {name: _value_body(name) for name in SECRETS}
        self.describes = {name: orjson.dumps(_describe(name, listing=False)) for name in SECRETS}
        self.ids = (f"{i:08x}-0000-4000-8000-{i:012x}" for i in itertools.count(1))

    def lookup(self, params: dict[str, Any]) -> str | None:
        secret_id = params.get("SecretId")
        return self.by_id.get(secret_id) if isinstance(secret_id, str) else None


def _reply(store: _Store, body: bytes, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=body,
        headers={"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": next(store.ids)},
    )


def _error(store: _Store, status: int, code: str, message: str) -> web.Response:
    body = orjson.dumps({"__type": code, "Message": message})
    response = _reply(store, body, status)
    response.headers["x-amzn-ErrorType"] = code
    return response


def make_app() -> web.Application:
    store = _Store()

    async def handle(request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        operation = target.removeprefix(TARGET_PREFIX) if target.startswith(TARGET_PREFIX) else ""
        try:
            params = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return _error(store, 400, "SerializationException", "the body is not JSON")
        if not isinstance(params, dict):
            return _error(store, 400, "SerializationException", "the body is not an object")
        if operation == "GetSecretValue":
            name = store.lookup(params)
            return _error(store, *_NOT_FOUND) if name is None else _reply(store, store.values[name])
        if operation == "DescribeSecret":
            name = store.lookup(params)
            return (
                _error(store, *_NOT_FOUND) if name is None else _reply(store, store.describes[name])
            )
        if operation == "ListSecrets":
            limit = params.get("MaxResults")
            names = list(SECRETS)[: limit if isinstance(limit, int) and limit > 0 else None]
            entries = [_describe(n, listing=True) for n in names]
            return _reply(store, orjson.dumps({"SecretList": entries}))
        return _error(store, 400, "UnknownOperationException", f"unknown operation {target!r}")

    app = web.Application()
    app.router.add_post("/", handle)
    return app


async def serve_until_signalled(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; print ``ready HOST:PORT`` once listening."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve_until_signalled(make_app(), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
