"""`keyledger serve --workers 2` with Google's gRPC API: the workers share its port as they
share the data port, and each records the calls it served on its own chain."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud.secretmanager_v1 import SecretManagerServiceClient
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from keyledger.backends.gcp_standin import ThreadedGcpStandin
from tests.conftest import REGION, journal_events
from tests.e2e.test_cli_serve import KEYLEDGER, ServedProxy, free_port, start_proxy
from tests.e2e.test_workers import wait_ready

GCP_POLICY = """\
version: 1
roles:
  - id: gcp-reader
    rules:
      - id: gcp-read
        actions: [read]
        resources: ["gcp:demo/*"]
bindings:
  - role: gcp-reader
    principals: [app]
"""


@pytest.fixture
def served(tmp_path: Path, moto_url: str) -> Iterator[tuple[ServedProxy, str, str]]:
    """Two workers in front of moto and the Google stand-in; (proxy, token, grpc target)."""
    with ThreadedGcpStandin() as standin:
        standin.seed("real", {"db": "grpc-value"})
        port = free_port()
        backends = {
            "aws": {"type": "aws", "region": REGION, "endpoint_url": moto_url},
            "gcp": {
                "type": "gcp",
                "endpoint": standin.grpc_target,
                "projects": {"demo": "real"},
                "credentials": "anonymous",
            },
        }
        extra = {"backends": backends, "frontends": {"gcp": {"grpc_listen": f"127.0.0.1:{port}"}}}
        proxy = start_proxy(tmp_path, moto_url, extra=extra, args=("--workers", "2"))
        try:
            created = subprocess.run(
                [*KEYLEDGER, "identity", "create", "app", "--token", "--config", str(proxy.config)],
                env=proxy.env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            fields = {line[:18].strip(): line[18:].strip() for line in created.stdout.splitlines()}
            token = fields["token"]
            (tmp_path / "policies" / "gcp.yaml").write_text(GCP_POLICY)  # reloaded live
            yield proxy, token, f"127.0.0.1:{port}"
        finally:
            if proxy.process.poll() is None:
                proxy.stop()


def read(target: str, token: str) -> Any:
    """One AccessSecretVersion on a fresh channel (a new connection, for the kernel to place)."""
    channel = grpc.insecure_channel(target)
    try:
        client = SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=channel)
        )
        return client.access_secret_version(
            name="projects/demo/secrets/db/versions/latest",
            metadata=[("authorization", f"Bearer {token}")],
        )
    finally:
        channel.close()


def test_workers_share_the_grpc_port(served: tuple[ServedProxy, str, str]) -> None:
    """Calls on fresh connections reach both workers' gRPC listeners on the one port, and
    each worker records what it served on its own chain."""
    proxy, token, target = served
    wait_ready(proxy)
    deadline = time.monotonic() + 20
    while True:  # until both workers have reloaded the token and the policy allowing it
        try:
            answers = [read(target, token) for _ in range(16)]
            break
        except (gexc.Unauthenticated, gexc.PermissionDenied):
            assert time.monotonic() < deadline
            time.sleep(0.2)

    assert {a.payload.data for a in answers} == {b"grpc-value"}
    proxy.stop()
    served_by = {
        e["chain"]["id"]
        for e in journal_events(proxy.journal_dir, "access")
        if e["request"]["protocol"] == "gcp-grpc" and e["outcome"]["status"] == "success"
    }
    assert served_by == {"cli-w0", "cli-w1"}
