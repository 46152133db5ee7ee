"""A burst spread across two workers is missed by neither: `keyledger serve --workers 2`
with a deny-burst rule of four, four denied reads split between the workers (so neither
worker's own rule fires), and `keyledger alerts run --follow` over the shared S3 copy,
with the same config, catches it and sends it to the same signed webhook, once.
"""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.alerts.test_alerts_cli import Spawned
from tests.conftest import REGION, clean_env, journal_events
from tests.e2e.test_alerts import SECRET, Receiver, payload, wait
from tests.e2e.test_cli_serve import ServedProxy, start_proxy
from tests.e2e.test_workers import wait_ready

RULES = """
    version: 1
    rules:
      - id: app-denied-repeatedly
        severity: high
        deny_burst: {count: 4, window: 1m}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def fleet(
    tmp_path: Path, moto_url: str, store: Any, receiver: Receiver
) -> Iterator[tuple[ServedProxy, str]]:
    """Two workers behind one port, each shipping its chain to one S3 bucket within 200 ms,
    each with the rule and the webhook; the bucket's name."""
    store.create_secret(Name="app/db/password", SecretString="guarded")
    bucket = f"fleet-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="security",
        aws_secret_access_key="security",
    )
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    (tmp_path / "alerts.yaml").write_text(textwrap.dedent(RULES))
    (tmp_path / "webhook.key").write_bytes(SECRET)
    extra = {
        "audit": {
            "journal": "audit",
            "chain_id": "cli",
            "checkpoints": {"key_file": "keys/checkpoint.key"},
            "sinks": [
                {
                    "type": "s3",
                    "bucket": bucket,
                    "prefix": "audit",
                    "region": REGION,
                    "endpoint_url": moto_url,
                    "object_lock": {"mode": "GOVERNANCE", "retention_days": 1},
                    "batch": {"max_wait": "200ms"},
                }
            ],
        },
        "alerts": {
            "rules": ["alerts.yaml"],
            "destinations": [
                {
                    "type": "webhook",
                    "name": "soc",
                    "url": f"{receiver.url}/hook",
                    "secret_file": "webhook.key",
                }
            ],
        },
    }
    served = start_proxy(tmp_path, moto_url, extra=extra, args=("--workers", "2"))
    yield served, bucket
    if served.process.poll() is None:
        served.stop()


def worker_of(served: ServedProxy, request_id: str) -> str:
    """The chain (the worker) that recorded the request: durable before the answer."""
    (event,) = [
        e
        for e in journal_events(served.journal_dir)
        if (e.get("request") or {}).get("id") == request_id
    ]
    return str(event["chain"]["id"])


def client_per_worker(served: ServedProxy) -> dict[str, Any]:
    """A client whose kept-alive connection each worker holds: fresh connections, one per
    client, until the kernel has given one to each (found by an allowed read's chain)."""
    clients: dict[str, Any] = {}
    for _ in range(40):
        client = served.client()
        answer = client.get_secret_value(SecretId="app/db/password")
        clients.setdefault(worker_of(served, answer["ResponseMetadata"]["RequestId"]), client)
        if len(clients) == 2:
            return clients
    pytest.fail("the kernel gave every connection to one worker")


def test_a_burst_spread_across_two_workers_is_caught_by_the_fleet_follower(
    tmp_path: Path, moto_url: str, fleet: tuple[ServedProxy, str], receiver: Receiver
) -> None:
    served, bucket = fleet
    env = clean_env(
        AWS_ACCESS_KEY_ID="security",
        AWS_SECRET_ACCESS_KEY="security",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL_S3=moto_url,
    )
    follower = None
    try:
        wait_ready(served)
        follower = Spawned(f"s3://{bucket}/audit", "--follow", "--config", served.config,
                           "--interval", "200ms", "--lag", "1s", "--json", env=env)  # fmt: skip
        follower.wait_for(follower.err, "following")
        clients = client_per_worker(served)
        started = time.monotonic()
        for client in (*clients.values(), *clients.values()):  # w0, w1, w0, w1
            with pytest.raises(ClientError) as refused:
                client.get_secret_value(SecretId="app/forbidden")
            assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
        wait(lambda: receiver.webhooks, within=15)
        caught = time.monotonic() - started
        time.sleep(1.0)  # a worker's own rule would have fired by now (it takes well under 1 s)
        printed = follower.wait_for(follower.out, "app-denied-repeatedly")
        code = follower.stop()
    finally:
        if follower is not None:
            follower.stop()
        served.stop()

    events = journal_events(served.journal_dir)
    denied = [
        e
        for e in events
        if e["type"] == "access" and (e.get("resource") or {}).get("secret") == "app/forbidden"
    ]
    by_worker = {chain: [e for e in denied if e["chain"]["id"] == chain] for chain in clients}
    # Both workers served some of the burst, and neither enough to trip its own rule.
    assert sorted(len(found) for found in by_worker.values()) == [2, 2]
    assert [e for e in events if e["type"] == "alert"] == []
    # The follower caught it from the shared copy and sent it once, signed, to the webhook.
    assert code == 0, follower.err
    assert receiver.refused == 0
    ((_, body),) = receiver.webhooks
    alert = payload(body)
    assert (alert["rule"], alert["key"]) == ("app-denied-repeatedly", "principal app")
    assert alert["events"] == [
        {"id": e["id"], "chain": e["chain"]["id"], "seq": e["chain"]["seq"]}
        for e in sorted(denied, key=lambda e: e["time"])
    ]
    assert {e["chain"] for e in alert["events"]} == {"cli-w0", "cli-w1"}
    assert '"app-denied-repeatedly"' in printed
    assert caught < 10, caught
