"""What keyledger costs Google Cloud callers, REST and gRPC, measured side by side in one run.

    .venv/bin/python bench/gcp_overhead.py [--quick] [--json] [--log-level info|warning]

Each server in its own process, all on 127.0.0.1: the Google stand-in
(:class:`keyledger.backends.gcp_standin.GcpStandin`, REST and gRPC on one in-memory store,
started by this script with ``--role standin``) and keyledger (``keyledger serve --config``,
a gcp backend on the stand-in's gRPC target with anonymous credentials, the gcp-rest front
end on its data plane and the gcp-grpc one on ``frontends.gcp.grpc_listen``, the durable
journal on, a bearer token from ``keyledger identity create bench --token``). Calls are made
with Google's own client, google-cloud-secret-manager, changed only in endpoint and
credentials, as in tests/e2e/test_gcp.py:

(a) Latency: ``access_secret_version`` called sequentially, p50/p99, for REST direct to the
    stand-in, REST through keyledger, gRPC direct and gRPC through keyledger. The four take
    turns in blocks so that drift (CPU frequency, a busy neighbour) hits all alike.
(b) Throughput: a closed loop at concurrency 32 for a few seconds, through keyledger and
    direct, taking turns (A B B A): gRPC with the SDK's async client (32 tasks under
    ``asyncio.gather``), REST with the SDK's sync client in 32 threads (the REST transport
    is requests, so the generator is GIL-bound: its own CPU per call is shown). Each load
    generator is a process of its own (``--role load``); the CPU time each process used
    per call says where the time goes.

Through keyledger, both protocols reach the stand-in over gRPC (the backend speaks gRPC
only), so "REST through keyledger" is REST in, gRPC out; "REST direct" is REST end to end.

The figures are ratios through / direct. Afterwards ``keyledger audit verify`` checks the
journal: it must be intact and hold at least as many events as keyledger served calls.
``--quick`` takes about 20 s, a full run about a minute.

What every cloud's benchmark does alike (the run, the load generator processes, the report's
layout) is bench/cloud_bench.py's; this script holds what is Google's: the stand-in, the
clients, keyledger's gcp backend and front ends, and the words of the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloud_bench  # bench/ is on sys.path: this script runs from it
from cloud_bench import (
    MAX_CALLS,
    SECRET,
    VALUE,
    Cloud,
    Plan,
    Read,
    Settings,
    Tally,
    attempt,
    closed_loop,
)
from proxy_overhead import HOST, free_ports

__all__ = ["main"]

CALLER_PROJECT = "keyledger-bench"  # the project callers name through keyledger
REAL_PROJECT = "bench-project"  # the stand-in's, which keyledger maps it to
CALL_TIMEOUT_S = 10.0
LABELS = {
    "rest-direct": "REST direct to the stand-in",
    "rest-keyledger": "REST through keyledger",
    "grpc-direct": "gRPC direct to the stand-in",
    "grpc-keyledger": "gRPC through keyledger",
}
# Load runs take turns direct / through keyledger per protocol, gRPC first.
PAIRS = {"gRPC": ("grpc-direct", "grpc-keyledger"), "REST": ("rest-direct", "rest-keyledger")}


def version_name(project: str) -> str:
    return f"projects/{project}/secrets/{SECRET}/versions/latest"


# -- the stand-in, as a process of its own ---------------------------------------------------


def serve_standin(rest_port: int, grpc_port: int) -> int:
    """Run the Google stand-in until SIGINT/SIGTERM; print ``ready`` once both listen."""
    import uvloop

    from keyledger.backends.gcp_standin import GcpStandin

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with GcpStandin(host=HOST, rest_port=rest_port, grpc_port=grpc_port) as standin:
            standin.seed(REAL_PROJECT, {SECRET: VALUE})
            print(f"ready {standin.rest_url} {standin.grpc_target}", flush=True)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())
    return 0


# -- Google's clients ------------------------------------------------------------------------

_GRPC_OPTIONS = [("grpc.enable_http_proxy", 0)]


def rest_client(endpoint: str, token: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient
    from google.oauth2.credentials import Credentials

    return SecretManagerServiceClient(
        transport="rest",
        credentials=Credentials(token=token),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=endpoint),
    )


def grpc_client(target: str) -> Any:
    import grpc
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcTransport,
    )

    channel = grpc.insecure_channel(target, options=_GRPC_OPTIONS)
    return SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channel))


@dataclass(frozen=True, slots=True)
class Target:
    """Where one of the four measured paths goes."""

    protocol: str  # rest | grpc
    address: str  # REST: an http:// URL; gRPC: host:port
    project: str

    def __str__(self) -> str:
        return f"{self.protocol} {self.address}"


def sync_reader(target: Target, token: str) -> tuple[Read, Callable[[], None]]:
    """One sync client for ``target``: a call that reads the secret and returns its bytes,
    and what closes the client's connection."""
    name = version_name(target.project)
    if target.protocol == "rest":
        client = rest_client(target.address, token)
        metadata: list[tuple[str, str]] = []  # the token travels as the OAuth access token
    else:
        client = grpc_client(target.address)
        metadata = [("authorization", f"Bearer {token}")]

    def read() -> bytes:
        answer = client.access_secret_version(
            name=name, retry=None, timeout=CALL_TIMEOUT_S, metadata=metadata
        )
        data: bytes = answer.payload.data
        return data

    return read, client.transport.close


# -- (b) throughput: what a load generator process runs --------------------------------------


def load_grpc(target: Target, token: str, concurrency: int, tally: Tally) -> None:
    """``concurrency`` tasks of the SDK's async gRPC client, gathered, until the window ends."""
    import grpc
    import uvloop
    from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcAsyncIOTransport,
    )

    name = version_name(target.project)
    metadata = [("authorization", f"Bearer {token}")]

    async def load() -> None:
        channel = grpc.aio.insecure_channel(target.address, options=_GRPC_OPTIONS)
        client = SecretManagerServiceAsyncClient(
            transport=SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
        )

        async def read() -> bytes:
            answer = await client.access_secret_version(
                name=name, retry=None, timeout=CALL_TIMEOUT_S, metadata=metadata
            )
            data: bytes = answer.payload.data
            return data

        try:
            await closed_loop(read, concurrency, tally)
        finally:
            await channel.close()

    uvloop.run(load())


def load_rest(target: Target, token: str, concurrency: int, tally: Tally) -> None:
    """``concurrency`` threads, each with its own sync REST client, until the window ends."""
    per_worker = MAX_CALLS // concurrency
    readers = [sync_reader(target, token)[0] for _ in range(concurrency)]

    def worker(read: Read) -> None:
        for _ in range(per_worker):
            started = time.monotonic()
            if started >= tally.window[1]:
                return
            error = attempt(read)
            tally.record(started, time.monotonic(), error)

    threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(tally.window[1] - time.monotonic() + 2 * CALL_TIMEOUT_S)


# -- Google Cloud, as the run sees it --------------------------------------------------------


class Google(Cloud[Target]):
    """REST and gRPC, each direct to the stand-in and through keyledger."""

    name = "gcp"
    title = "GCP"
    script = Path(__file__).resolve()
    quick_takes = "about 20 s"
    full = Settings(1000, 100, 100, 1.0, 5.0, 2, 32)
    quick = Settings(400, 50, 50, 0.5, 2.0, 1, 32)
    resources = f"gcp:{CALLER_PROJECT}/bench-*"
    labels = LABELS
    pairs = PAIRS
    latency_caption = "AccessSecretVersion with google-cloud-secret-manager"

    def add_standin_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rest-port", type=int, help=argparse.SUPPRESS)
        parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)

    def serve_standin(self, args: argparse.Namespace) -> int:
        return serve_standin(args.rest_port, args.grpc_port)

    def plan(self, workdir: Path, log_level: str) -> Plan[Target]:
        rest_port, grpc_port, kl_port, kl_grpc_port = free_ports(4)
        return Plan(
            port=kl_port,
            more_ports=(kl_grpc_port,),
            store=f"""\
backends:
  gcp:
    type: gcp
    endpoint: "{HOST}:{grpc_port}"
    projects: {{{CALLER_PROJECT}: {REAL_PROJECT}}}
    credentials: anonymous
frontends:
  gcp: {{grpc_listen: "{HOST}:{kl_grpc_port}"}}
""",
            standin=["--rest-port", str(rest_port), "--grpc-port", str(grpc_port)],
            targets={
                "rest-direct": Target("rest", f"http://{HOST}:{rest_port}", REAL_PROJECT),
                "rest-keyledger": Target("rest", f"http://{HOST}:{kl_port}", CALLER_PROJECT),
                "grpc-direct": Target("grpc", f"{HOST}:{grpc_port}", REAL_PROJECT),
                "grpc-keyledger": Target("grpc", f"{HOST}:{kl_grpc_port}", CALLER_PROJECT),
            },
        )

    def target(self, fields: dict[str, Any]) -> Target:
        return Target(**fields)

    def sync_reader(self, target: Target, token: str) -> tuple[Read, Callable[[], None]]:
        return sync_reader(target, token)

    def loader(self, target: Target, token: str, concurrency: int) -> Callable[[Tally], None]:
        if target.protocol == "grpc":
            return functools.partial(load_grpc, target, token, concurrency)
        read, close = sync_reader(target, token)
        read()  # imports done and the path warm before the clock starts
        close()
        return functools.partial(load_rest, target, token, concurrency)

    def load_caption(self, concurrency: int) -> str:
        return f"gRPC: async client, asyncio.gather; REST: sync client in {concurrency} threads"


def main(argv: list[str] | None = None) -> int:
    return cloud_bench.main(Google(), argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
