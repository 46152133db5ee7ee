"""`keyledger audit verify s3://...` and `cloudwatch://...` as a security team runs them:
the CLI, the AWS settings from the environment, and a real moto server holding the copies."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from keyledger.proxy.audit.checkpoints import generate_key_pair
from keyledger.proxy.audit.sinks import Batch, Sink
from keyledger.proxy.audit.sinks.base import parse_line
from keyledger.proxy.audit.sinks.cloudwatch import CloudWatchSink
from keyledger.proxy.audit.sinks.s3 import S3Sink
from keyledger.proxy.config import CloudWatchSinkConfig, S3SinkConfig
from tests.audit_records import CHAIN
from tests.test_audit_cli import audit, scenario

REGION = "us-east-1"


def shipped(tmp_path: Path) -> Batch:
    """The CLI tests' twelve-event chain, as one batch of journal lines."""
    chain = scenario(tmp_path / "audit")
    lines = chain.path.read_bytes().splitlines()
    return Batch(CHAIN, tuple(parse_line(raw) for raw in lines))


def send(sink: Sink, *batches: Batch) -> None:
    """Each batch sent by ``sink``, in the order given, each in an event loop of its own."""
    for batch in batches:
        asyncio.run(sink.send(batch))


def test_verify_s3_reads_the_shipped_objects(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Objects the S3 sink shipped verify from s3://bucket/prefix, listed by chain."""
    batch = shipped(tmp_path)
    sink = S3Sink(S3SinkConfig(name="s3", bucket=bucket, prefix="prod/", region=REGION))
    first, second = Batch(CHAIN, batch.lines[:5]), Batch(CHAIN, batch.lines[5:])
    send(sink, first, second, second)  # at-least-once: the second sent again after a timeout

    code, out, _ = audit(capsys, "verify", f"s3://{bucket}/prod")

    assert code == 0, out
    assert f"chain {CHAIN}: 12 events in 2 object(s), last seq 12" in out
    assert "7 duplicate(s) ignored" in out
    assert "intact: 12 events verified" in out


def test_verify_s3_without_checkpoints_claims_no_signature(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy with no checkpoints, verified with a public key, says no signature was checked."""
    sink = S3Sink(S3SinkConfig(name="s3", bucket=bucket, region=REGION))
    send(sink, shipped(tmp_path))
    _, public = generate_key_pair(tmp_path / "keys" / "checkpoint")

    code, out, _ = audit(capsys, "verify", f"s3://{bucket}", "--public-key", str(public))

    assert code == 0, out
    assert out.splitlines() == [
        f"chain {CHAIN}: 12 events in 1 object(s), last seq 12, 0 checkpoint(s): ok",
        f"WARN chain {CHAIN}: no checkpoints found: the end of the journal is not sealed "
        "(all 12 event(s) unsealed)",
        "intact: 12 events verified; no checkpoints found, so no signature was checked",
    ]


def test_verify_s3_lists_what_is_missing(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch that never arrived fails verify, and the missing seq range is printed."""
    lines = shipped(tmp_path).lines
    sink = S3Sink(S3SinkConfig(name="s3", bucket=bucket, region=REGION))
    send(sink, *(Batch(CHAIN, part) for part in (lines[:3], lines[6:8], lines[10:])))

    code, out, _ = audit(capsys, "verify", f"s3://{bucket}")

    assert code == 1
    assert "missing seq: 4-6, 9-10" in out
    # Checking stops at the first gap: the summary does not claim seq 12 was checked.
    assert f"chain {CHAIN}: 7 line(s) in 3 object(s); checked up to seq 3" in out
    assert "FAIL" in out
    assert "gap: seq 4-6 missing" in out


def test_verify_cloudwatch_reads_every_stream(
    aws_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Events the CloudWatch sink shipped verify from cloudwatch://GROUP."""
    group = f"keyledger-{uuid.uuid4().hex[:12]}"
    sink = CloudWatchSink(
        CloudWatchSinkConfig(name="cloudwatch", log_group=group, region=REGION), stream=CHAIN
    )
    asyncio.run(sink.prepare())
    send(sink, shipped(tmp_path))

    code, out, _ = audit(capsys, "verify", f"cloudwatch://{group}")

    assert code == 0, out
    assert f"chain {CHAIN}: 12 events in 1 stream(s), last seq 12" in out


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("s3://no-such-bucket-kl/prefix", "NoSuchBucket"),
        ("cloudwatch://no-such-group", "log group does not exist"),
        ("s3://", "expected s3://BUCKET"),
    ],
)
def test_a_source_that_is_not_there_is_a_usage_error(
    aws_env: str, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    """A bucket or log group that does not exist exits 2 with one line saying so."""
    code, _, err = audit(capsys, "verify", source)

    assert code == 2
    assert message in err
    assert "Traceback" not in err
