"""The S3 sink: each batch one gzip JSON-lines object, locked with S3 Object Lock.

Layout, under the configured prefix::

    <chain>/2026/11/24/000000000001-000000004711.jsonl.gz   events 1..4711, as journaled
    <chain>/checkpoints/000000001000.json                    a signed checkpoint record

Object names sort by seq and carry the range; the date is the first event's (UTC). Every
PUT carries its retention (COMPLIANCE or GOVERNANCE, until now + retention days) and a
SHA-256 checksum that S3 checks on receipt. The gzip bytes are deterministic, so a batch
sent twice (at-least-once) becomes a second, identical version of the same key.

Reading back (``audit verify s3://bucket/prefix``) lists every *version*, not just the
latest: with Object Lock a DELETE without a version id only adds a delete marker, and a PUT
over a key only adds a version, so neither can hide or replace what was shipped.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from keyledger.proxy.audit.checkpoints import Checkpoint
from keyledger.proxy.audit.sinks._aws import LazyClient, client_for, error_code, sink_error
from keyledger.proxy.audit.sinks._thread import ThreadedSink
from keyledger.proxy.audit.sinks.base import Batch, SinkMisconfigured
from keyledger.proxy.audit.verify import Copy
from keyledger.proxy.config import S3SinkConfig

__all__ = ["S3Copies", "S3Sink", "batch_key", "checkpoint_key", "read_s3"]

log = structlog.get_logger("keyledger.sinks.s3")

_CHECKPOINTS = "checkpoints"
# By the key's end: a prefix or a chain may be called "checkpoints" too.
_CHECKPOINT_KEY = re.compile(rf"(?:^|/){_CHECKPOINTS}/\d{{12}}\.json$")
_DOWNLOAD_THREADS = 8


def batch_key(prefix: str, batch: Batch) -> str:
    day = datetime.fromtimestamp(batch.lines[0].time_ms / 1000, UTC)
    return (
        f"{prefix}{batch.chain}/{day:%Y/%m/%d}/"
        f"{batch.first_seq:012d}-{batch.last_seq:012d}.jsonl.gz"
    )


def checkpoint_key(prefix: str, checkpoint: Checkpoint) -> str:
    return f"{prefix}{checkpoint.chain}/{_CHECKPOINTS}/{checkpoint.seq:012d}.json"


class S3Sink(ThreadedSink):
    config: S3SinkConfig

    def __init__(self, config: S3SinkConfig) -> None:
        super().__init__(config)
        self._s3 = LazyClient("s3", config)
        # Retention on each PUT, unless the bucket turned out to have no Object Lock (and
        # require_object_lock is false): S3 refuses retention headers there.
        self._lock = config.lock_mode is not None

    async def prepare(self) -> None:
        await self._thread.run(self._check_object_lock)

    def _check_object_lock(self) -> None:
        """Refuse a bucket whose objects could be deleted or overwritten, unless told not to."""
        bucket = self.config.bucket
        try:
            found = self._s3().get_object_lock_configuration(Bucket=bucket)
            lock = found.get("ObjectLockConfiguration", {})
        except ClientError as exc:
            if error_code(exc) != "ObjectLockConfigurationNotFoundError":
                raise sink_error(exc, f"checking Object Lock on s3://{bucket}") from None
            lock = {}
        except BotoCoreError as exc:
            raise sink_error(exc, f"checking Object Lock on s3://{bucket}") from None
        enabled = lock.get("ObjectLockEnabled") == "Enabled"
        default_rule = lock.get("Rule", {}).get("DefaultRetention")
        problem = None
        if not enabled:
            problem = (
                f"bucket {bucket} does not have S3 Object Lock enabled, so shipped audit events "
                "could be deleted or overwritten: create the bucket with Object Lock "
                "(aws s3api create-bucket --object-lock-enabled-for-bucket ...)"
            )
        elif self.config.lock_mode is None and not default_rule:
            problem = (
                f"bucket {bucket} has no default retention and object_lock.mode is "
                "bucket_default: set object_lock.mode to COMPLIANCE or GOVERNANCE"
            )
        if problem is None:
            return
        if self.config.require_object_lock:
            raise SinkMisconfigured(f"{problem}, or set require_object_lock: false")
        log.warning("s3_sink_without_object_lock", sink=self.name, problem=problem)
        self._lock = enabled and self.config.lock_mode is not None

    async def send(self, batch: Batch) -> None:
        await self._thread.run(lambda: self._put_batch(batch))

    def _put_batch(self, batch: Batch) -> None:
        # Events first: a checkpoint object must never seal events that are not there.
        body = gzip.compress(batch.jsonl(), compresslevel=6, mtime=0)
        self._put(
            batch_key(self.config.prefix, batch),
            body,
            content_type="application/gzip",
            metadata={
                "keyledger-chain": batch.chain,
                "keyledger-first-seq": str(batch.first_seq),
                "keyledger-last-seq": str(batch.last_seq),
                "keyledger-events": str(len(batch.lines)),
            },
        )
        for checkpoint in batch.checkpoints:
            self._put(
                checkpoint_key(self.config.prefix, checkpoint),
                checkpoint.to_line(),
                content_type="application/x-ndjson",
                metadata={"keyledger-chain": checkpoint.chain},
            )

    def _put(self, key: str, body: bytes, *, content_type: str, metadata: dict[str, str]) -> None:
        lock: dict[str, Any] = {}
        if self._lock:
            until = datetime.now(UTC) + timedelta(days=self.config.retention_days)
            lock = {"ObjectLockMode": self.config.lock_mode, "ObjectLockRetainUntilDate": until}
        try:
            self._s3().put_object(
                Bucket=self.config.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=metadata,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
                **lock,
            )
        except (ClientError, BotoCoreError) as exc:
            raise sink_error(exc, f"PUT s3://{self.config.bucket}/{key}") from None


# -- reading back -------------------------------------------------------------------------


@dataclass(slots=True)
class S3Copies:
    """What ``s3://bucket/prefix`` holds: every line of every version, and what to say."""

    copies: list[Copy] = field(default_factory=list)
    objects: int = 0
    notes: list[str] = field(default_factory=list)


def read_s3(url: str, *, client: Any = None) -> S3Copies:
    """Download every version under ``s3://bucket/prefix`` as lines for ``verify_copies``."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{url}: expected s3://BUCKET[/PREFIX]")
    s3 = client or client_for("s3", region=None, endpoint_url=None, profile=None)
    found = S3Copies()
    try:
        versions, hidden = _list_versions(s3, bucket, prefix)
    except ClientError as exc:
        if error_code(exc) not in ("AccessDenied", "NotImplemented"):
            raise sink_error(exc, f"listing s3://{bucket}/{prefix}") from None
        versions, hidden = _list_latest(s3, bucket, prefix), 0
        found.notes.append(
            "read the latest versions only (no s3:ListBucketVersions): a delete marker or a "
            "newer version could hide an object"
        )
    except BotoCoreError as exc:
        raise sink_error(exc, f"listing s3://{bucket}/{prefix}") from None
    if hidden:
        found.notes.append(
            f"{hidden} delete marker(s) under s3://{bucket}/{prefix}: the locked versions "
            "behind them were read"
        )
    with ThreadPoolExecutor(_DOWNLOAD_THREADS) as pool:
        bodies = pool.map(lambda v: _download(s3, bucket, v), versions)
        for (key, version_id, several), body in zip(versions, bodies, strict=True):
            where = f"s3://{bucket}/{key}" + (f"?versionId={version_id}" if several else "")
            found.objects += 1
            found.copies.extend(_copies(key, where, body))
    return found


_Version = tuple[str, str | None, bool]  # key, version id, whether the key has several


def _list_versions(s3: Any, bucket: str, prefix: str) -> tuple[list[_Version], int]:
    """Every version, each key's oldest first: the one shipped before any overwrite."""
    found: list[tuple[str, Any, str | None]] = []
    markers = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        found += [
            (v["Key"], v["LastModified"], v.get("VersionId")) for v in page.get("Versions", [])
        ]
        markers += len(page.get("DeleteMarkers", []))
    # S3 lists a key's versions newest first: reversed, ties in LastModified (whole
    # seconds) keep the true order.
    found.reverse()
    found.sort(key=lambda version: version[:2])
    counts: dict[str, int] = {}
    for key, _, _ in found:
        counts[key] = counts.get(key, 0) + 1
    return [(key, vid, counts[key] > 1) for key, _, vid in found], markers


def _list_latest(s3: Any, bucket: str, prefix: str) -> list[_Version]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return [(key, None, False) for key in sorted(keys)]


def _download(s3: Any, bucket: str, version: _Version) -> bytes:
    key, version_id, _ = version
    extra = {"VersionId": version_id} if version_id and version_id != "null" else {}
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise sink_error(exc, f"GET s3://{bucket}/{key}") from None
    return body


def _copies(key: str, where: str, body: bytes) -> Iterator[Copy]:
    if body[:2] == b"\x1f\x8b":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            yield Copy(where, 1, body[:0], kind="event")  # reported as unreadable
            return
    kind = "checkpoint" if _CHECKPOINT_KEY.search(key) else "event"
    for number, raw in enumerate(body.splitlines(keepends=True), start=1):
        yield Copy(where, number, raw, kind=kind)
