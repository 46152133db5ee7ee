"""How fast the shippers drain the journal into each sink, against the same calls made
directly with boto3 (no journal reading, no cursor): events per second, in one run.

    python bench/sink_throughput.py [--events 50000] [--batch 5000]

Writes a realistic journal (~1 KB events, signed checkpoints every 1,000) with the real
Journal, then, per sink, ships all of it from an empty cursor and times until the last
event is acknowledged:

- s3:         gzip JSON-lines objects with Object Lock and SHA-256 checksums, to a moto server;
- cloudwatch: PutLogEvents, to the same moto server;
- stdout:     one line per event, to /dev/null (the shipper's own ceiling).

"direct" sends the same batches with plain boto3 from memory: the sink's service cost
alone. moto is a single-threaded Python server, far slower than AWS; the ratio, not the
absolute figure, says what keyledger adds.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify_throughput import write_journal  # bench/ is on sys.path: this script runs from it

from keyledger.proxy.audit.checkpoints import CheckpointSigner, generate_key_pair, load_private_key
from keyledger.proxy.audit.segments import discover
from keyledger.proxy.audit.sinks import Shipper, ShippingSettings, make_sink
from keyledger.proxy.audit.sinks.base import Batch, parse_line
from keyledger.proxy.audit.sinks.cursor import CursorStore
from keyledger.proxy.config import (
    CloudWatchSinkConfig,
    S3SinkConfig,
    SinkBatch,
    SinkConfig,
    StdoutSinkConfig,
)
from keyledger.proxy.logging import configure_logging

REGION = "us-east-1"
CHAIN = "bench"


@dataclass
class Written:
    """A journal that is done writing: everything in its folder is durable."""

    directory: Path
    chain_id: str
    durable_seq: int

    async def wait_durable(self, beyond: int) -> None:
        await asyncio.sleep(3600)


async def ship(sink_config: SinkConfig, journal: Written, cursors: Path) -> float:
    shipper = Shipper(
        sink=make_sink(sink_config, chain=CHAIN),
        journal=journal,
        cursors=CursorStore(cursors),
        settings=ShippingSettings(max_wait_s=0.0, retry_min_s=0.05, retry_max_s=0.5),
    )
    await shipper.check(30)
    started = time.perf_counter()
    shipper.start()
    # Polling the status is the measurement; 5 ms is well below one batch's time.
    while shipper.status.shipped_seq < journal.durable_seq:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    await shipper.stop()
    assert shipper.status.failures == 0, shipper.status.last_error
    return elapsed


def batches(journal_dir: Path, size: int) -> list[Batch]:
    lines = []
    for segment in discover(journal_dir).all_segments():
        lines += [parse_line(raw.rstrip(b"\n")) for raw in segment.path.read_bytes().splitlines()]
    return [Batch(CHAIN, tuple(lines[i : i + size])) for i in range(0, len(lines), size)]


def direct_s3(s3: Any, bucket: str, work: list[Batch]) -> float:
    from datetime import UTC, datetime, timedelta

    started = time.perf_counter()
    for batch in work:
        s3.put_object(
            Bucket=bucket,
            Key=f"direct/{batch.first_seq:012d}-{batch.last_seq:012d}.jsonl.gz",
            Body=gzip.compress(batch.jsonl(), compresslevel=6, mtime=0),
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
            ChecksumAlgorithm="SHA256",
        )
    return time.perf_counter() - started


def direct_logs(logs: Any, group: str, work: list[Batch]) -> float:
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="direct")
    started = time.perf_counter()
    for batch in work:
        logs.put_log_events(
            logGroupName=group,
            logStreamName="direct",
            logEvents=[
                {"timestamp": line.time_ms, "message": line.raw.decode()} for line in batch.lines
            ],
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5_000, help="events per object / call")
    args = parser.parse_args()
    configure_logging(format="console", level="warning")

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[name] = "bench"
    os.environ.pop("AWS_PROFILE", None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = {"endpoint_url": url, "region_name": REGION}
    s3, logs = boto3.client("s3", **client), boto3.client("logs", **client)
    s3.create_bucket(Bucket="bench-audit", ObjectLockEnabledForBucket=True)
    batch = SinkBatch(max_events=args.batch, max_bytes=64 << 20, max_wait_s=0.0)
    aws = {"region": REGION, "endpoint_url": url}
    sinks: dict[str, SinkConfig] = {
        "s3": S3SinkConfig(name="s3", bucket="bench-audit", batch=batch, **aws),  # type: ignore[arg-type]
        "cloudwatch": CloudWatchSinkConfig(
            name="cloudwatch",
            log_group="bench-audit",
            batch=batch,
            **aws,  # type: ignore[arg-type]
        ),
        "stdout": StdoutSinkConfig(name="stdout", batch=batch),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="keyledger-sink-bench-") as tmp:
            root = Path(tmp)
            private, _ = generate_key_pair(root / "checkpoint")
            signer = CheckpointSigner(load_private_key(private.read_bytes(), source="bench"))
            journal_dir = root / "audit"
            asyncio.run(write_journal(journal_dir, signer, args.events, 64 << 20))
            work = batches(journal_dir, args.batch)
            events = sum(len(b.lines) for b in work)
            mib = sum(len(b.jsonl()) for b in work) / (1 << 20)
            journal = Written(journal_dir, CHAIN, work[-1].last_seq)
            print(f"journal: {events:,} events, {mib:.0f} MiB; batches of {args.batch:,}")
            direct = {
                "s3": direct_s3(s3, "bench-audit", work),
                "cloudwatch": direct_logs(logs, "bench-direct", work),
            }
            stdout = os.dup(1)
            for name, config in sinks.items():
                if name == "stdout":
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, 1)
                try:
                    elapsed = asyncio.run(ship(config, journal, root / name))
                finally:
                    os.dup2(stdout, 1)
                line = f"{name:<11}: keyledger {events / elapsed:>9,.0f} events/s"
                if name in direct:
                    rate = events / direct[name]
                    line += (
                        f"   direct {rate:>9,.0f} events/s   ratio {direct[name] / elapsed:.2f}x"
                    )
                print(line)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
