"""The S3 and CloudWatch Logs sinks against a real moto server.

What lands remotely must be the journal byte for byte, locked where S3 can lock it, and
``audit verify`` on the remote copy must pass when it is intact and fail -- naming where --
when an event was removed or altered. Every test uses its own bucket or log group, so the
shared moto server is never reset.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import structlog.testing
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keyledger.proxy.audit.checkpoints import Checkpoint, CheckpointSigner, key_id
from keyledger.proxy.audit.events import AuditEvent, EventType, parse_time
from keyledger.proxy.audit.segments import chain_segments, checkpoint_file
from keyledger.proxy.audit.sinks import (
    Shipper,
    ShipperStatus,
    ShippingSettings,
    Sink,
    SinkError,
    SinkMisconfigured,
    make_sink,
)
from keyledger.proxy.audit.sinks.base import Batch, Line, parse_line
from keyledger.proxy.audit.sinks.cloudwatch import CloudWatchSink, put_calls, read_cloudwatch
from keyledger.proxy.audit.sinks.cursor import CursorStore
from keyledger.proxy.audit.sinks.s3 import S3Copies, S3Sink, read_s3
from keyledger.proxy.audit.verify import VerifyReport, verify_copies
from keyledger.proxy.config import CloudWatchSinkConfig, S3SinkConfig, SinkBatch
from tests.proxy.audit.conftest import CHAIN, running

REGION = "us-east-1"
PREFIX = "kl/"
RETENTION_DAYS = 30
# Small batches, so a few dozen events make several objects / calls.
SMALL_BATCH = SinkBatch(max_events=10, max_bytes=1 << 20, max_wait_s=0.05)
EVENTS = 45  # with a checkpoint every 20 events and one at close: 48 lines, 3 checkpoints


# -- fixtures and helpers -----------------------------------------------------------------


def aws_client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="test-admin",
        aws_secret_access_key="test-admin",
    )


@pytest.fixture
def s3(moto_url: str, store_credentials: None) -> Any:
    """A boto3 S3 client straight to moto (the sinks find their own credentials)."""
    return aws_client("s3", moto_url)


@pytest.fixture
def logs(moto_url: str, store_credentials: None) -> Any:
    """A boto3 CloudWatch Logs client straight to moto."""
    return aws_client("logs", moto_url)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_bucket(s3: Any, *, lock: bool = True) -> str:
    name = unique("kl-audit")
    if lock:
        s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        s3.create_bucket(Bucket=name)
    return name


def new_group() -> str:
    return unique("/keyledger/audit")  # slashes, as real log group names have


def sink_config(url: str, **settings: Any) -> dict[str, Any]:
    """A sink's settings: moto's region and URL and small batches, then ``settings``."""
    return {"region": REGION, "endpoint_url": url, "batch": SMALL_BATCH} | settings


def s3_config(url: str, bucket: str, **overrides: Any) -> S3SinkConfig:
    settings = {"name": "s3", "bucket": bucket, "prefix": PREFIX, "retention_days": RETENTION_DAYS}
    return S3SinkConfig(**sink_config(url, **(settings | overrides)))


def cw_config(url: str, group: str, **overrides: Any) -> CloudWatchSinkConfig:
    settings = {"name": "cw", "log_group": group}
    return CloudWatchSinkConfig(**sink_config(url, **(settings | overrides)))


@dataclass
class Shipped:
    """A journal written (and perhaps shipped): its lines and the key that signed it."""

    chain: str
    lines: list[bytes]  # every journal line with its newline, in seq order
    keys: dict[str, Ed25519PublicKey]
    status: ShipperStatus | None

    def line(self, seq: int) -> bytes:
        assert orjson.loads(self.lines[seq - 1])["chain"]["seq"] == seq
        return self.lines[seq - 1]

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints the journal sealed, from its checkpoint events."""
        records = [orjson.loads(raw) for raw in self.lines]
        return [Checkpoint.from_event(r) for r in records if r["type"] == "checkpoint"]

    def batch(self, first: int = 1, last: int | None = None) -> Batch:
        chosen = self.lines[first - 1 : last]
        return Batch(self.chain, tuple(parse_line(raw[:-1]) for raw in chosen))


async def journal_and_ship(
    directory: Path,
    sink: Sink | None,
    *,
    chain: str = CHAIN,
    events: int = EVENTS,
    times: Sequence[datetime] | None = None,
    drain_s: float = 5.0,
) -> Shipped:
    """Write ``events`` to a checkpointed journal while a Shipper copies it to ``sink``."""
    private = Ed25519PrivateKey.generate()
    signer = CheckpointSigner(private)
    shipper = None
    try:
        async with running(directory, signer, chain=chain, every_events=20, every_s=60) as journal:
            if sink is not None:
                shipper = Shipper(
                    sink=sink,
                    journal=journal,
                    cursors=CursorStore(directory),
                    settings=ShippingSettings(
                        max_wait_s=0.05, retry_min_s=0.01, retry_max_s=0.05, drain_s=drain_s
                    ),
                )
                await shipper.check(5)
                shipper.start()
            for n in range(events):
                moment = times[n] if times is not None else datetime.now(UTC)
                await journal.append(
                    AuditEvent(type=EventType.LIFECYCLE, time=moment, detail={"event": f"e{n}"})
                )
    finally:  # the journal is closed (its end sealed) before the shipper drains
        if shipper is not None:
            await shipper.stop()
    public = private.public_key()
    status = None if shipper is None else shipper.status
    return Shipped(chain, journal_lines(directory, chain), {key_id(public): public}, status)


def journal_lines(directory: Path, chain: str) -> list[bytes]:
    return [
        raw
        for segment in chain_segments(directory, chain)
        for raw in segment.path.read_bytes().splitlines(keepends=True)
    ]


def shipped_fully(shipped: Shipped) -> None:
    status = shipped.status
    assert status is not None
    assert status.last_error is None, f"the sink failed: {status.last_error}"
    assert (status.shipped_seq, status.failures) == (len(shipped.lines), 0)


async def shipped_to_s3(
    directory: Path,
    url: str,
    bucket: str,
    *,
    times: Sequence[datetime] | None = None,
    drain_s: float = 5.0,
    **config: Any,
) -> Shipped:
    """A journal shipped in full to ``bucket`` by an S3 sink set up by ``s3_config``."""
    sink = S3Sink(s3_config(url, bucket, **config))
    shipped = await journal_and_ship(directory, sink, times=times, drain_s=drain_s)
    shipped_fully(shipped)
    return shipped


def versions(s3: Any, bucket: str, *, holding: int | None = None) -> list[dict[str, Any]]:
    """Every object version in ``bucket`` (or of the batch object holding seq ``holding``)."""
    found: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        found += page.get("Versions", [])
    if holding is not None:
        keys = {key for first, last, key in event_objects(s3, bucket) if first <= holding <= last}
        found = [v for v in found if v["Key"] in keys]
    return found


def event_objects(s3: Any, bucket: str) -> list[tuple[int, int, str]]:
    """(first seq, last seq, key) of every batch object, in seq order."""
    found = []
    for version in versions(s3, bucket):
        match = re.search(r"/(\d{12})-(\d{12})\.jsonl\.gz$", version["Key"])
        if match:
            found.append((int(match[1]), int(match[2]), version["Key"]))
    return sorted(set(found))


def put_altered(s3: Any, bucket: str, seq: int) -> str:
    """Upload the batch object holding ``seq`` again, with that event forged; its key."""
    ((first, _, key),) = [o for o in event_objects(s3, bucket) if o[0] <= seq <= o[1]]
    lines = gzip.decompress(get(s3, bucket, key)).splitlines(keepends=True)
    lines[seq - first] = forged(lines[seq - first])
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"".join(lines)))
    return key


def get(s3: Any, bucket: str, key: str, version_id: str | None = None) -> bytes:
    extra = {"VersionId": version_id} if version_id else {}
    body: bytes = s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
    return body


def forged(raw: bytes) -> bytes:
    """``raw`` with its detail changed, encoded as keyledger would (but the hash kept)."""
    record = orjson.loads(raw)
    record["detail"] = {"event": "forged"}
    return orjson.dumps(record) + b"\n"


def verify_s3(s3: Any, bucket: str, shipped: Shipped) -> tuple[VerifyReport, S3Copies]:
    found = read_s3(f"s3://{bucket}/{PREFIX}", client=s3)
    return verify_copies(found.copies, public_keys=shipped.keys), found


def time_ms(raw: bytes) -> int:
    moment = parse_time(orjson.loads(raw)["time"])
    assert moment is not None
    return int(moment.timestamp() * 1000)


# -- S3 -----------------------------------------------------------------------------------


async def test_s3_objects_are_gzip_jsonl_batches_identical_to_the_journal(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """Each batch is one gzip JSON-lines object under prefix/chain/date/first-last, same bytes."""
    bucket = new_bucket(s3)
    base = datetime(2025, 3, 4, 20, 0, tzinfo=UTC)  # the key's date is the events' own
    times = [base + timedelta(hours=n) for n in range(EVENTS)]
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket, times=times)

    objects = event_objects(s3, bucket)
    assert len(objects) >= 5  # batches of at most 10 of 48 lines
    pattern = re.compile(
        rf"{PREFIX}{CHAIN}/(\d{{4}}/\d{{2}}/\d{{2}})/(\d{{12}})-(\d{{12}})\.jsonl\.gz"
    )
    together = b""
    for first, last, key in objects:
        match = pattern.fullmatch(key)
        assert match, key
        body = get(s3, bucket, key)
        assert body[:2] == b"\x1f\x8b"  # gzip
        lines = gzip.decompress(body).splitlines(keepends=True)
        assert lines == shipped.lines[first - 1 : last]
        assert [orjson.loads(raw)["chain"]["seq"] for raw in lines] == list(range(first, last + 1))
        day = datetime.fromtimestamp(time_ms(lines[0]) / 1000, UTC)
        assert match[1] == f"{day:%Y/%m/%d}"
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["Metadata"] == {
            "keyledger-chain": CHAIN,
            "keyledger-first-seq": str(first),
            "keyledger-last-seq": str(last),
            "keyledger-events": str(last - first + 1),
        }
        together += gzip.decompress(body)
    assert objects[0][2].startswith(f"{PREFIX}{CHAIN}/2025/03/04/000000000001-")
    assert together == b"".join(shipped.lines)  # every event once, nothing between


async def test_s3_objects_are_locked_and_checksummed(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """Every object is COMPLIANCE-locked for retention_days and its version cannot be deleted."""
    bucket = new_bucket(s3)
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket)

    expected_until = datetime.now(UTC) + timedelta(days=RETENTION_DAYS)
    found = versions(s3, bucket)
    assert len(found) == len(event_objects(s3, bucket)) + 3  # and 3 checkpoint objects
    for version in found:
        key = version["Key"]
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert abs(head["ObjectLockRetainUntilDate"] - expected_until) < timedelta(minutes=5)
        digest = hashlib.sha256(get(s3, bucket, key)).digest()
        assert head["ChecksumSHA256"] == base64.b64encode(digest).decode()

    locked = found[0]
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=locked["Key"], VersionId=locked["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert len(versions(s3, bucket)) == len(found)
    report, _ = verify_s3(s3, bucket, shipped)
    assert report.ok, report.problems


async def test_s3_checkpoint_objects_hold_each_signed_checkpoint(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """Each checkpoint is its own object prefix/chain/checkpoints/<seq>.json, a signed record."""
    bucket = new_bucket(s3)
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket)

    sealed = shipped.checkpoints()
    assert [c.seq for c in sealed] == [20, 41, 47]
    keys = {v["Key"] for v in versions(s3, bucket) if "/checkpoints/" in v["Key"]}
    assert keys == {f"{PREFIX}{CHAIN}/checkpoints/{c.seq:012d}.json" for c in sealed}
    filed = checkpoint_file(tmp_path, CHAIN).read_bytes().splitlines(keepends=True)
    for checkpoint, record in zip(sealed, filed, strict=True):
        body = get(s3, bucket, f"{PREFIX}{CHAIN}/checkpoints/{checkpoint.seq:012d}.json")
        assert body == record == checkpoint.to_line()
        parsed = Checkpoint.from_line(body)
        assert parsed == checkpoint
        assert parsed.verify(shipped.keys) is None


async def test_s3_verify_passes_on_an_intact_copy(tmp_path: Path, moto_url: str, s3: Any) -> None:
    """`audit verify s3://bucket/prefix` passes with every event, checkpoint and signature."""
    bucket = new_bucket(s3)
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket)

    report, found = verify_s3(s3, bucket, shipped)
    assert report.ok, report.problems
    assert report.signatures_checked
    assert report.events == len(shipped.lines) == EVENTS + 3
    chain = report.chains[CHAIN]
    assert (chain.last_seq, chain.checkpoints, chain.unsealed) == (len(shipped.lines), 3, 0)
    assert (chain.missing, chain.duplicates) == ([], 0)
    assert found.objects == len(versions(s3, bucket))
    assert found.notes == []

    stranger = Ed25519PrivateKey.generate().public_key()
    wrong = verify_copies(found.copies, public_keys={key_id(stranger): stranger})
    assert not wrong.ok
    assert "signed with another key" in wrong.problems[0].reason


async def test_s3_verify_fails_and_names_the_gap_when_a_version_is_removed(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """A batch object removed (GOVERNANCE bypass) fails verify; `missing` lists its seqs."""
    bucket = new_bucket(s3)
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket, lock_mode="GOVERNANCE")
    assert s3.head_object(Bucket=bucket, Key=event_objects(s3, bucket)[0][2])["ObjectLockMode"] == (
        "GOVERNANCE"
    )

    first, last, key = event_objects(s3, bucket)[1]
    (version,) = [v for v in versions(s3, bucket) if v["Key"] == key]
    s3.delete_object(
        Bucket=bucket, Key=key, VersionId=version["VersionId"], BypassGovernanceRetention=True
    )

    report, _ = verify_s3(s3, bucket, shipped)
    assert not report.ok
    chain = report.chains[CHAIN]
    assert chain.missing == [(first, last)]
    gap = f"{first}" if first == last else f"{first}-{last}"
    assert chain.problem is not None
    assert f"gap: seq {gap} missing" in chain.problem.reason
    assert chain.problem.seq == last + 1


async def test_s3_verify_fails_when_a_new_version_alters_an_event(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """An altered copy put over a batch key is a second version: 'differs from another copy'."""
    bucket = new_bucket(s3)
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket)

    put_altered(s3, bucket, 5)
    assert len(versions(s3, bucket, holding=5)) == 2

    report, found = verify_s3(s3, bucket, shipped)
    assert not report.ok
    problem = report.chains[CHAIN].problem
    assert problem is not None
    assert problem.seq == 5
    assert "differs from another copy" in problem.reason
    assert "?versionId=" in problem.file
    assert found.objects == len(versions(s3, bucket))


async def test_s3_verify_fails_with_a_hash_mismatch_when_the_original_is_replaced(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """An altered copy with the original version bypass-deleted fails on the event's hash."""
    bucket = new_bucket(s3)
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket, lock_mode="GOVERNANCE")

    (original,) = versions(s3, bucket, holding=5)
    key = put_altered(s3, bucket, 5)
    s3.delete_object(
        Bucket=bucket, Key=key, VersionId=original["VersionId"], BypassGovernanceRetention=True
    )

    report, _ = verify_s3(s3, bucket, shipped)
    assert not report.ok
    chain = report.chains[CHAIN]
    assert chain.problem is not None
    assert chain.problem.seq == 5
    assert "hash mismatch" in chain.problem.reason
    assert chain.missing == []


async def test_s3_a_delete_marker_hides_nothing_from_verify(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """A DELETE without a version id only adds a delete marker: verify still passes, and says so."""
    bucket = new_bucket(s3)
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket)

    key = event_objects(s3, bucket)[0][2]
    assert s3.delete_object(Bucket=bucket, Key=key)["DeleteMarker"] is True
    latest = s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", [])
    assert key not in {o["Key"] for o in latest}

    report, found = verify_s3(s3, bucket, shipped)
    assert report.ok, report.problems
    assert report.events == len(shipped.lines)
    assert len(found.notes) == 1
    assert "1 delete marker" in found.notes[0]


@pytest.mark.parametrize(
    ("prefix", "chain"),
    [("kl/", "checkpoints"), ("audit/checkpoints/", CHAIN)],
    ids=["chain-named-checkpoints", "prefix-with-a-checkpoints-folder"],
)
async def test_s3_verify_tells_batches_from_checkpoints_by_their_own_folder(
    tmp_path: Path, moto_url: str, s3: Any, prefix: str, chain: str
) -> None:
    """A chain id or prefix containing 'checkpoints' still verifies: batches stay events."""
    bucket = new_bucket(s3)
    sink = S3Sink(s3_config(moto_url, bucket, prefix=prefix))
    shipped = await journal_and_ship(tmp_path, sink, chain=chain, events=25)
    shipped_fully(shipped)
    found = read_s3(f"s3://{bucket}/{prefix}", client=s3)
    report = verify_copies(found.copies, public_keys=shipped.keys)
    assert report.ok, report.problems
    assert report.events == len(shipped.lines)


async def test_s3_bucket_without_object_lock_is_refused(moto_url: str, s3: Any) -> None:
    """prepare() refuses a bucket without Object Lock, naming the bucket and the fix."""
    bucket = new_bucket(s3, lock=False)
    sink = S3Sink(s3_config(moto_url, bucket))
    try:
        with pytest.raises(SinkMisconfigured) as refused:
            await sink.prepare()
    finally:
        await sink.close()
    message = str(refused.value)
    assert bucket in message
    assert "Object Lock" in message
    assert "require_object_lock" in message


async def test_s3_shipper_check_stops_at_a_bucket_without_object_lock(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """Start-up (Shipper.check) fails on a bucket without Object Lock instead of shipping."""
    bucket = new_bucket(s3, lock=False)
    with pytest.raises(SinkMisconfigured, match="Object Lock"):
        await journal_and_ship(tmp_path, S3Sink(s3_config(moto_url, bucket)), events=1)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


async def test_s3_bucket_default_mode_needs_a_default_retention(moto_url: str, s3: Any) -> None:
    """object_lock mode bucket_default on a bucket with no default retention is refused."""
    bucket = new_bucket(s3)
    sink = S3Sink(s3_config(moto_url, bucket, lock_mode=None))
    try:
        with pytest.raises(SinkMisconfigured, match="no default retention") as refused:
            await sink.prepare()
    finally:
        await sink.close()
    assert bucket in str(refused.value)


async def test_s3_bucket_default_mode_ships_under_the_buckets_default_retention(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """object_lock mode bucket_default ships to a bucket whose default retention locks it."""
    bucket = new_bucket(s3)
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 3}},
        },
    )
    shipped = await shipped_to_s3(tmp_path, moto_url, bucket, lock_mode=None)
    key = event_objects(s3, bucket)[0][2]
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    expected_until = datetime.now(UTC) + timedelta(days=3)
    assert abs(head["ObjectLockRetainUntilDate"] - expected_until) < timedelta(minutes=5)
    report, _ = verify_s3(s3, bucket, shipped)
    assert report.ok, report.problems


@pytest.mark.parametrize(
    "mode", [{}, {"lock_mode": None}], ids=["mode-left-at-default", "mode-bucket-default"]
)
async def test_s3_require_object_lock_false_ships_to_an_unlocked_bucket(
    tmp_path: Path, moto_url: str, s3: Any, mode: dict[str, Any]
) -> None:
    """With require_object_lock false (object_lock mode left at its default, or bucket_default)
    an unlocked bucket still ships, unlocked objects that verify."""
    bucket = new_bucket(s3, lock=False)
    shipped = await shipped_to_s3(
        tmp_path, moto_url, bucket, drain_s=1.0, require_object_lock=False, **mode
    )
    for version in versions(s3, bucket):  # no retention headers: S3 would refuse the PUT
        assert "ObjectLockMode" not in s3.head_object(Bucket=bucket, Key=version["Key"])
    report, _ = verify_s3(s3, bucket, shipped)
    assert report.ok, report.problems
    assert report.events == len(shipped.lines)


async def test_s3_a_batch_shipped_twice_counts_duplicates_and_verifies(
    tmp_path: Path, moto_url: str, s3: Any
) -> None:
    """At-least-once: a batch sent twice (or overlapping) counts as duplicates, not a failure."""
    bucket = new_bucket(s3)
    shipped = await journal_and_ship(tmp_path, None)
    sink = S3Sink(s3_config(moto_url, bucket))
    try:
        await sink.prepare()
        await sink.send(shipped.batch())
        await sink.send(shipped.batch())
        found = versions(s3, bucket)
        assert len(found) == 2 * (1 + 3)  # one batch object and 3 checkpoints, twice each
        assert len({v["Key"] for v in found}) == 4

        report, read = verify_s3(s3, bucket, shipped)
        assert report.ok, report.problems
        assert report.events == len(shipped.lines)
        assert report.chains[CHAIN].duplicates == len(shipped.lines)
        assert read.objects == 8

        await sink.send(shipped.batch(5, 14))  # a resend cut differently (lost cursor)
    finally:
        await sink.close()
    report, _ = verify_s3(s3, bucket, shipped)
    assert report.ok, report.problems
    assert report.chains[CHAIN].duplicates == len(shipped.lines) + 10
    assert report.chains[CHAIN].missing == []


# -- CloudWatch Logs ----------------------------------------------------------------------


def stream_events(logs: Any, group: str, stream: str) -> list[dict[str, Any]]:
    page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    found: list[dict[str, Any]] = page["events"]
    return found


def stream_names(logs: Any, group: str) -> list[str]:
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    return sorted(s["logStreamName"] for s in streams)


def verify_cw(logs: Any, group: str, keys: dict[str, Ed25519PublicKey]) -> VerifyReport:
    return verify_copies(
        read_cloudwatch(f"cloudwatch://{group}", client=logs).copies, public_keys=keys
    )


async def shipped_to_cloudwatch(
    directory: Path, url: str, group: str, *, times: Sequence[datetime] | None = None, **config: Any
) -> Shipped:
    """A journal of chain CHAIN shipped in full to ``group`` by a sink set up by ``cw_config``."""
    sink = make_sink(cw_config(url, group, **config), chain=CHAIN)
    shipped = await journal_and_ship(directory, sink, times=times)
    shipped_fully(shipped)
    return shipped


async def test_cloudwatch_prepare_creates_group_stream_and_retention(
    moto_url: str, logs: Any
) -> None:
    """prepare() creates the log group (with retention_days) and a stream named after the chain."""
    group = new_group()
    sink = make_sink(cw_config(moto_url, group, retention_days=7), chain=CHAIN)
    other = make_sink(cw_config(moto_url, group, retention_days=7), chain="node-2")
    try:
        await sink.prepare()
        (described,) = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        assert described["logGroupName"] == group
        assert described["retentionInDays"] == 7
        assert stream_names(logs, group) == [CHAIN]

        await sink.prepare()  # both exist now: nothing to create, no error
        await other.prepare()  # an existing group gets another chain's stream
        assert stream_names(logs, group) == [CHAIN, "node-2"]
    finally:
        await sink.close()
        await other.close()


async def test_cloudwatch_prepare_leaves_retention_alone_when_unset(
    moto_url: str, logs: Any
) -> None:
    """Without retention_days an existing group's retention is left as it is."""
    group = new_group()
    logs.create_log_group(logGroupName=group)
    logs.put_retention_policy(logGroupName=group, retentionInDays=90)
    sink = make_sink(cw_config(moto_url, group), chain=CHAIN)
    try:
        await sink.prepare()
    finally:
        await sink.close()
    (described,) = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert described["retentionInDays"] == 90
    assert stream_names(logs, group) == [CHAIN]


async def test_cloudwatch_events_arrive_in_order_and_verify(
    tmp_path: Path, moto_url: str, logs: Any
) -> None:
    """Each journal line is one log event, in seq order, at the event's time; verify passes."""
    group = new_group()
    shipped = await shipped_to_cloudwatch(tmp_path, moto_url, group, retention_days=7)
    assert shipped.status is not None
    assert shipped.status.batches >= 5

    events = stream_events(logs, group, CHAIN)
    assert [e["message"] for e in events] == [raw[:-1].decode() for raw in shipped.lines]
    assert [e["timestamp"] for e in events] == [time_ms(raw) for raw in shipped.lines]

    found = read_cloudwatch(f"cloudwatch://{group}", client=logs)
    assert found.streams == 1
    report = verify_copies(found.copies, public_keys=shipped.keys)
    assert report.ok, report.problems
    assert report.events == len(shipped.lines)
    chain = report.chains[CHAIN]
    assert (chain.checkpoints, chain.missing, chain.duplicates) == (3, [], 0)


async def test_cloudwatch_verifies_when_event_times_are_not_in_seq_order(
    tmp_path: Path, moto_url: str, logs: Any
) -> None:
    """Events stamped out of seq order (concurrent requests) are sent by time and still verify."""
    group = new_group()
    now = datetime.now(UTC)
    times = [now - timedelta(seconds=(n * 7) % 5) for n in range(EVENTS)]
    shipped = await shipped_to_cloudwatch(tmp_path, moto_url, group, times=times)

    events = stream_events(logs, group, CHAIN)
    assert sorted(e["message"] for e in events) == sorted(
        raw[:-1].decode() for raw in shipped.lines
    )
    report = verify_cw(logs, group, shipped.keys)
    assert report.ok, report.problems
    assert report.events == len(shipped.lines)


async def test_cloudwatch_passes_over_events_it_rejects_as_too_old(
    tmp_path: Path, moto_url: str, logs: Any
) -> None:
    """Events CloudWatch rejects as too old are logged and passed over, not retried forever."""
    group = new_group()
    now = datetime.now(UTC)
    times = [now - timedelta(days=30)] * 5 + [now] * (EVENTS - 5)
    with structlog.testing.capture_logs() as logged:
        shipped = await shipped_to_cloudwatch(tmp_path, moto_url, group, times=times)
    assert "cloudwatch_events_rejected" in {e["event"] for e in logged}

    assert len(stream_events(logs, group, CHAIN)) == len(shipped.lines) - 5
    report = verify_cw(logs, group, shipped.keys)
    assert not report.ok  # the stream really lacks them, and verify says where
    assert report.chains[CHAIN].missing == [(1, 5)]


async def test_cloudwatch_verify_fails_on_a_forged_copy_of_an_event(
    tmp_path: Path, moto_url: str, logs: Any
) -> None:
    """An altered event put into the stream for an existing seq fails verify at that seq."""
    group = new_group()
    shipped = await shipped_to_cloudwatch(tmp_path, moto_url, group)
    assert verify_cw(logs, group, shipped.keys).ok

    logs.put_log_events(
        logGroupName=group,
        logStreamName=CHAIN,
        logEvents=[
            {
                "timestamp": time_ms(shipped.line(5)),
                "message": forged(shipped.line(5))[:-1].decode(),
            }
        ],
    )
    report = verify_cw(logs, group, shipped.keys)
    assert not report.ok
    problem = report.chains[CHAIN].problem
    assert problem is not None
    assert problem.seq == 5
    assert "differs from another copy" in problem.reason


async def test_cloudwatch_two_chains_two_streams_and_one_stream_urls(
    tmp_path: Path, moto_url: str, logs: Any
) -> None:
    """Two chains in one group get a stream each; GROUP verifies both, GROUP/STREAM reads one."""
    group = new_group()
    one = await journal_and_ship(
        tmp_path / "a", make_sink(cw_config(moto_url, group), chain="node-a"), chain="node-a"
    )
    two = await journal_and_ship(
        tmp_path / "b",
        make_sink(cw_config(moto_url, group), chain="node-b"),
        chain="node-b",
        events=25,
    )
    shipped_fully(one)
    shipped_fully(two)
    assert stream_names(logs, group) == ["node-a", "node-b"]

    everything = read_cloudwatch(f"cloudwatch://{group}", client=logs)
    assert everything.streams == 2
    report = verify_copies(everything.copies, public_keys=one.keys | two.keys)
    assert report.ok, report.problems
    assert {c.id: c.events for c in report.chains.values()} == {
        "node-a": len(one.lines),
        "node-b": len(two.lines),
    }

    single = read_cloudwatch(f"cloudwatch://{group}/node-b", client=logs)
    assert single.streams == 1
    assert {c.where for c in single.copies} == {f"cloudwatch://{group}/node-b"}
    report = verify_copies(single.copies, public_keys=two.keys)
    assert report.ok, report.problems
    assert list(report.chains) == ["node-b"]
    assert report.events == len(two.lines)


async def test_cloudwatch_unknown_group_or_stream_is_an_error(moto_url: str, logs: Any) -> None:
    """cloudwatch://GROUP/STREAM naming no existing stream says so instead of verifying nothing."""
    group = new_group()
    logs.create_log_group(logGroupName=group)
    with pytest.raises(ValueError, match="no such log group"):
        read_cloudwatch(f"cloudwatch://{group}/nope", client=logs)


async def test_cloudwatch_recreates_a_deleted_log_group(
    tmp_path: Path, moto_url: str, logs: Any
) -> None:
    """A log group deleted under the sink is created again and the retried batch lands."""
    group = new_group()
    shipped = await journal_and_ship(tmp_path, None, events=5)
    sink = CloudWatchSink(cw_config(moto_url, group, retention_days=7), stream=CHAIN)
    try:
        await sink.prepare()
        logs.delete_log_group(logGroupName=group)
        with pytest.raises(SinkError, match="was missing"):
            await sink.send(shipped.batch())
        assert stream_names(logs, group) == [CHAIN]
        await sink.send(shipped.batch())  # the shipper's retry
    finally:
        await sink.close()
    report = verify_cw(logs, group, shipped.keys)
    assert report.ok, report.problems
    assert report.events == len(shipped.lines)


async def test_cloudwatch_ships_a_stand_in_for_an_event_too_large_for_it(
    tmp_path: Path, moto_url: str, logs: Any
) -> None:
    """An event over CloudWatch's per-event limit is not silently missing from the stream:
    a stand-in at its place names its chain, seq and hash, the sink counts it, the error is
    logged, and verify reports that one seq missing from the copy."""
    group = new_group()
    async with running(tmp_path, chain=CHAIN) as journal:
        for n in range(5):
            size = 1_100_000 if n == 2 else 10
            await journal.append(
                AuditEvent(type=EventType.LIFECYCLE, detail={"event": f"e{n}", "pad": "p" * size})
            )
    raw = journal_lines(tmp_path, CHAIN)
    huge = orjson.loads(raw[2])
    sink = CloudWatchSink(cw_config(moto_url, group), stream=CHAIN)
    try:
        await sink.prepare()
        with structlog.testing.capture_logs() as logged:
            await sink.send(Batch(CHAIN, tuple(parse_line(r[:-1]) for r in raw)))
    finally:
        await sink.close()

    messages = [e["message"] for e in stream_events(logs, group, CHAIN)]
    assert len(messages) == len(raw) == 5
    assert [m.encode() + b"\n" for i, m in enumerate(messages) if i != 2] == raw[:2] + raw[3:]
    stood_in = orjson.loads(messages[2])["keyledger_stand_in"]
    assert stood_in["reason"] == "event_too_large"
    assert (stood_in["chain"], stood_in["seq"], stood_in["hash"]) == (
        CHAIN,
        3,
        huge["chain"]["hash"],
    )
    assert stood_in["bytes"] == len(raw[2]) - 1
    assert "ppp" not in messages[2]
    assert sink.stood_in == 1
    (error,) = [e for e in logged if e["event"] == "cloudwatch_event_too_large"]
    assert (error["chain"], error["seq"], error["hash"]) == (CHAIN, 3, huge["chain"]["hash"])
    report = verify_cw(logs, group, {})
    assert not report.ok
    assert report.chains[CHAIN].missing == [(3, 3)]


# -- put_calls: PutLogEvents limits ---------------------------------------------------------


def line(seq: int, time: int = 1_000, size: int = 10) -> Line:
    return Line(seq, time, b"x" * size, None)


def seqs(calls: list[list[Line]]) -> list[list[int]]:
    return [[entry.seq for entry in call] for call in calls]


def test_put_calls_sorts_by_time_keeping_seq_order_on_ties() -> None:
    """Events go out in time order; events of the same millisecond keep their seq order."""
    lines = [line(1, 30), line(2, 10), line(3, 20), line(4, 10), line(5, 30)]
    assert seqs(list(put_calls(lines))) == [[2, 4, 3, 1, 5]]
    assert list(put_calls([])) == []


def test_put_calls_cuts_at_10000_events() -> None:
    """No call carries more than 10,000 events."""
    calls = list(put_calls([line(n, size=1) for n in range(1, 20_002)]))
    assert [len(call) for call in calls] == [10_000, 10_000, 1]
    assert [entry.seq for call in calls for entry in call] == list(range(1, 20_002))


def test_put_calls_cuts_at_1mib_counting_26_bytes_per_event() -> None:
    """A call's messages plus 26 bytes per event stay within 1,048,576 bytes."""
    exact = [line(1, size=500_000), line(2, size=1_048_576 - 500_000 - 2 * 26)]
    assert seqs(list(put_calls(exact))) == [[1, 2]]
    over = [line(1, size=500_000), line(2, size=1_048_576 - 500_000 - 2 * 26 + 1)]
    assert seqs(list(put_calls(over))) == [[1], [2]]

    many = list(put_calls([line(n, size=1000 - 26) for n in range(1, 2001)]))
    assert [len(call) for call in many] == [1048, 952]  # 1048 x 1000 bytes fit, 1049 do not


def test_put_calls_cuts_at_a_24_hour_span() -> None:
    """No call spans more than 24 hours from its first event to its last."""
    day = 24 * 3600 * 1000
    lines = [line(1, 0), line(2, day), line(3, day + 1), line(4, 2 * day + 1), line(5, 2 * day + 2)]
    assert seqs(list(put_calls(lines))) == [[1, 2], [3, 4], [5]]


def test_put_calls_sends_a_stand_in_for_an_event_over_the_per_event_limit() -> None:
    """An event over 1 MB minus 26 bytes cannot be sent: a small stand-in for it goes in
    its place, and the error is logged."""
    biggest = 1_048_576 - 26
    lines = [line(1), line(2, size=biggest + 1), line(3, size=biggest)]
    with structlog.testing.capture_logs() as logged:
        calls = list(put_calls(lines, chain="pod-a"))
    assert seqs(calls) == [[1, 2], [3]]
    stood_in = orjson.loads(calls[0][1].raw)["keyledger_stand_in"]
    assert (stood_in["chain"], stood_in["seq"], stood_in["bytes"]) == ("pod-a", 2, biggest + 1)
    assert [(e["event"], e["seq"]) for e in logged] == [("cloudwatch_event_too_large", 2)]
