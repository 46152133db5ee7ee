"""What keyledger costs Azure Key Vault callers, through keyledger and direct, in one run.

    .venv/bin/python bench/azure_overhead.py [--quick] [--json] [--log-level info|warning]

Each server in its own process, all on 127.0.0.1 and all over HTTPS (Key Vault's SDKs send
their token over nothing else), with one CA made for the run by
:func:`keyledger.devtls.ensure_dev_tls`: the Key Vault stand-in
(:class:`keyledger.backends.azure_standin.AzureStandin`, started by this script with
``--role standin``, seeded with one secret) and keyledger (``keyledger serve --config``, its
data plane on HTTPS with ``tls: {cert, key}``, an azure backend on the stand-in as vault
``bench`` with ``credentials: standin`` and the run's CA as ``ca_file``, the durable journal
on, a bearer token from ``keyledger identity create bench --token``). Calls are made with
Microsoft's own client, azure-keyvault-secrets, changed only in vault URL and credential (a
token credential handing out keyledger's token; the stand-in takes any token) and trusting
the run's CA explicitly (``connection_verify``; REQUESTS_CA_BUNDLE and the like are dropped
from every process's environment so that they cannot override it):

(a) Latency: ``SecretClient.get_secret`` (the sync client, on requests) called sequentially,
    p50/p99, direct to the stand-in and through keyledger. The two take turns in blocks so
    that drift (CPU frequency, a busy neighbour) hits both alike.
(b) Throughput: a closed loop at concurrency 32 for a few seconds with the SDK's aio client
    (``azure.keyvault.secrets.aio``, one client shared by 32 tasks under ``asyncio.gather``),
    through keyledger and direct, taking turns (A B B A). Each load generator is a process of
    its own (``--role load``); the CPU time each process used per call says where the time
    goes.

Through keyledger a call crosses two TLS connections (client -> keyledger -> stand-in, the
second from the pooled aiohttp session keyledger lends its backend's aio SecretClient);
direct, one. All keep their connections alive: handshakes are paid in the warm-up.

The figures are ratios through / direct. Afterwards ``keyledger audit verify`` checks the
journal: it must be intact and hold at least as many events as keyledger served calls.
``--quick`` takes about 25 s, a full run about 40 s.

What every cloud's benchmark does alike (the run, the load generator processes, the report's
layout) is bench/cloud_bench.py's; this script holds what is Azure's: the stand-in, the
clients, keyledger's azure backend and TLS, and the words of the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import cloud_bench  # bench/ is on sys.path: this script runs from it
from cloud_bench import SECRET, VALUE, Cloud, Plan, Read, Settings, Tally, closed_loop
from proxy_overhead import HOST, free_ports

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

__all__ = ["main"]

VAULT = "bench"  # as keyledger's config and policy name the stand-in
TOKEN_LIFETIME_S = 3600
LABELS = {
    "direct": "direct to the stand-in",
    "keyledger": "through keyledger",
}
PAIRS = {"HTTPS": ("direct", "keyledger")}  # one protocol: load runs take turns A B B A


# -- the stand-in, as a process of its own ---------------------------------------------------


def serve_standin(port: int, cert: Path, key: Path) -> int:
    """Run the Key Vault stand-in over HTTPS until SIGINT/SIGTERM; print ``ready`` and its
    URL once it listens."""
    import uvloop

    from keyledger.backends.azure_standin import AzureStandin
    from keyledger.devtls import server_context

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        context = server_context(cert, key)
        async with AzureStandin(host=HOST, port=port, ssl_context=context) as standin:
            standin.seed({SECRET: VALUE.decode()})
            print(f"ready {standin.url}", flush=True)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())
    return 0


# -- Microsoft's clients ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A vault URL, and the CA its certificate is checked against."""

    url: str
    ca: str

    def __str__(self) -> str:
        return self.url


class StaticToken:
    """A token credential that hands out keyledger's token, as Azure's SDKs take one."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + TOKEN_LIFETIME_S)


class AsyncStaticToken:
    """The same, for the aio client."""

    def __init__(self, token: str) -> None:
        self._sync = StaticToken(token)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._sync.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncStaticToken:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        pass


def _client_options(target: Target) -> dict[str, Any]:
    return {
        "connection_verify": target.ca,  # the run's CA, whatever the environment says
        "verify_challenge_resource": False,  # 127.0.0.1 is not a name under vault.azure.net
        "retry_total": 0,
    }


def _as_bytes(value: str | None) -> bytes:
    return value.encode() if value is not None else b""


def sync_reader(target: Target, token: str) -> tuple[Read, Callable[[], None]]:
    """One sync SecretClient for ``target``: a call that reads the secret and returns its
    value's bytes, and what closes the client's connections."""
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(target.url, StaticToken(token), **_client_options(target))

    def read() -> bytes:
        return _as_bytes(client.get_secret(SECRET).value)

    return read, client.close


# -- (b) throughput: what a load generator process runs --------------------------------------


def load_aio(target: Target, token: str, concurrency: int, tally: Tally) -> None:
    """``concurrency`` tasks sharing one aio SecretClient, gathered, until the window ends."""
    import uvloop
    from azure.keyvault.secrets.aio import SecretClient

    async def load() -> None:
        async with (
            AsyncStaticToken(token) as credential,
            SecretClient(target.url, credential, **_client_options(target)) as client,
        ):

            async def read() -> bytes:
                return _as_bytes((await client.get_secret(SECRET)).value)

            await closed_loop(read, concurrency, tally)

    uvloop.run(load())


# -- Azure Key Vault, as the run sees it -----------------------------------------------------


class Azure(Cloud[Target]):
    """HTTPS, direct to the stand-in and through keyledger."""

    name = "azure"
    title = "Azure"
    script = Path(__file__).resolve()
    quick_takes = "about 25 s"
    full = Settings(1500, 100, 100, 1.0, 5.0, 2, 32)
    quick = Settings(800, 50, 50, 0.5, 3.0, 2, 32)
    resources = f"azure:{VAULT}/*"
    labels = LABELS
    pairs = PAIRS
    latency_caption = "get_secret with azure-keyvault-secrets (sync client), HTTPS"
    p99_difference = True

    def add_standin_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
        parser.add_argument("--cert", type=Path, help=argparse.SUPPRESS)
        parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)

    def serve_standin(self, args: argparse.Namespace) -> int:
        return serve_standin(args.port, args.cert, args.key)

    def plan(self, workdir: Path, log_level: str) -> Plan[Target]:
        from keyledger.devtls import ensure_dev_tls

        tls = ensure_dev_tls(workdir / "tls")
        standin_port, kl_port = free_ports(2)
        standin_url = f"https://{HOST}:{standin_port}"
        return Plan(
            port=kl_port,
            store=f"""\
tls: {{cert: "{tls.cert}", key: "{tls.key}"}}
backends:
  azure:
    type: azure
    credentials: standin
    ca_file: "{tls.ca_cert}"
    vaults: {{{VAULT}: {{url: "{standin_url}", default: true}}}}
""",
            standin=[
                *("--port", str(standin_port)),
                *("--cert", str(tls.cert), "--key", str(tls.key)),
            ],
            targets={
                "direct": Target(standin_url, str(tls.ca_cert)),
                "keyledger": Target(f"https://{HOST}:{kl_port}", str(tls.ca_cert)),
            },
        )

    def target(self, fields: dict[str, Any]) -> Target:
        return Target(**fields)

    def sync_reader(self, target: Target, token: str) -> tuple[Read, Callable[[], None]]:
        return sync_reader(target, token)

    def loader(self, target: Target, token: str, concurrency: int) -> Callable[[Tally], None]:
        return functools.partial(load_aio, target, token, concurrency)

    def load_caption(self, concurrency: int) -> str:
        return f"aio client, one shared by {concurrency} tasks under asyncio.gather"


def main(argv: list[str] | None = None) -> int:
    return cloud_bench.main(Azure(), argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
