"""How fast `keyledger audit verify` checks a journal: events per second, and the cost
against merely reading and parsing the same lines.

    python bench/verify_throughput.py [--events 300000] [--segment-mib 64]

Writes a realistic journal with the real Journal (signed checkpoints every 1,000 events,
rotated segments, a checkpoint file) into a temporary folder, then times, in one run:

- parse:  read every line and orjson-parse it (the floor for any reader);
- verify: ``verify_path`` with the public key (chain, seq, links, checkpoints, signatures);
- cli:    the whole ``keyledger audit verify --public-key`` command, start-up included.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from keyledger.proxy.audit.checkpoints import (
    CheckpointSigner,
    generate_key_pair,
    load_private_key,
    load_public_keys,
)
from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    ResourceInfo,
    Status,
)
from keyledger.proxy.audit.journal import Checkpointing, Journal, Rotation
from keyledger.proxy.audit.segments import discover
from keyledger.proxy.audit.verify import verify_path
from keyledger.proxy.logging import configure_logging


def event(n: int) -> AuditEvent:
    """An access event shaped like the proxy's: ~1 KB of JSON."""
    allowed = n % 7 != 0
    return AuditEvent(
        type=EventType.ACCESS,
        request=RequestInfo(
            id=f"6f1c2a3e-{n:08x}-4c1d-9e2f-0123456789ab",
            protocol="aws-json",
            operation="GetSecretValue",
            source_ip=f"10.{n % 251}.{n % 13}.{n % 241}",
            user_agent="Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.1 lang/python#3.11.9",
        ),
        principal=PrincipalInfo(
            id=f"svc-{n % 40}", auth_method="sigv4", groups=("payments",), attributes={}
        ),
        action="read",
        resource=ResourceInfo(backend="aws", secret=f"prod/app-{n % 300}/db-password"),
        decision=DecisionInfo(
            effect="allow" if allowed else "deny",
            rule="payments-read" if allowed else "guardrail-prod",
            policy_hash="sha256:" + "3f" * 32,
            reason="allowed by rule payments-read" if allowed else "denied by guardrail-prod",
        ),
        outcome=Outcome(
            status=Status.SUCCESS if allowed else Status.DENIED,
            latency_ms=1.234,
            version_id="a1b2c3d4-0000-4000-8000-00000000000" + str(n % 10) if allowed else None,
            value_fingerprint="hmac-sha256:" + "9e" * 32 if allowed else None,
        ),
    )


async def write_journal(
    directory: Path, signer: CheckpointSigner, events: int, segment_bytes: int
) -> None:
    journal = Journal(
        directory=directory,
        chain_id="bench",
        fsync=False,  # the journal's durability is measured by bench/proxy_overhead.py
        rotation=Rotation(max_bytes=segment_bytes, max_age_s=None),
        checkpoints=Checkpointing(signer=signer, every_events=1000, every_s=3600),
    )
    await journal.start()
    batch = 200
    for start in range(0, events, batch):
        await journal.append_many([event(n) for n in range(start, min(events, start + batch))])
    await journal.close()


def parse_only(directory: Path) -> int:
    count = 0
    for segment in discover(directory).all_segments():
        with segment.path.open("rb") as handle:
            for line in handle:
                orjson.loads(line)
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--segment-mib", type=int, default=64)
    args = parser.parse_args()
    configure_logging(format="console", level="warning")

    with tempfile.TemporaryDirectory(prefix="keyledger-verify-bench-") as tmp:
        root = Path(tmp)
        private, public = generate_key_pair(root / "checkpoint")
        journal_dir = root / "audit"
        started = time.perf_counter()
        signer = CheckpointSigner(load_private_key(private.read_bytes(), source=str(private)))
        asyncio.run(write_journal(journal_dir, signer, args.events, args.segment_mib << 20))
        written = time.perf_counter() - started
        files = discover(journal_dir)
        size = sum(s.path.stat().st_size for s in files.all_segments())

        parse_only(journal_dir)  # warm the page cache: every pass below reads from memory
        started = time.perf_counter()
        lines = parse_only(journal_dir)
        parse_s = time.perf_counter() - started

        keys = load_public_keys([public])
        started = time.perf_counter()
        report = verify_path(journal_dir, public_keys=keys)
        verify_s = time.perf_counter() - started
        assert report.ok, report.problems
        chain = report.chains["bench"]

        started = time.perf_counter()
        cli = subprocess.run(
            [
                *(sys.executable, "-m", "keyledger", "audit", "verify", str(journal_dir)),
                *("--public-key", str(public), "--strict"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        cli_s = time.perf_counter() - started
        assert cli.returncode == 0, cli.stdout + cli.stderr

    mib = size / (1 << 20)
    print(f"journal: {lines:,} lines, {mib:,.0f} MiB in {chain.files} segment(s),")
    print(f"         {chain.checkpoints:,} signed checkpoints (written in {written:.1f} s)")
    print(f"parse only : {lines / parse_s:>12,.0f} events/s  {mib / parse_s:7.0f} MiB/s")
    print(
        f"verify     : {report.events / verify_s:>12,.0f} events/s  {mib / verify_s:7.0f} MiB/s"
        f"   ({verify_s / parse_s:.2f}x the time of parsing alone)"
    )
    print(f"cli (whole): {report.events / cli_s:>12,.0f} events/s  ({cli_s:.2f} s incl. start-up)")


if __name__ == "__main__":
    main()
