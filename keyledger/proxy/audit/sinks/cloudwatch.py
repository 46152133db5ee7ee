"""The CloudWatch Logs sink: one log stream per chain, each journal line one log event.

The message is the journal line byte for byte, so ``audit verify cloudwatch://GROUP``
recomputes the same hashes; the timestamp is the event's own time. A batch is cut into
PutLogEvents calls within the service's limits: 10,000 events, 1,048,576 bytes counting 26
per event, 1 MB per event, chronological order, 24 hours from first to last.

Events CloudWatch will not take (older than 14 days or the group's retention, more than
2 hours ahead) come back as "rejected" in a successful call: they cannot be shipped there
ever, so they are logged and passed over rather than retried forever.

An event larger than one log event may be is never silently missing from the stream: a
stand-in goes in its place, at its time, naming its chain, seq and hash and saying why::

    {"keyledger_stand_in": {"reason": "event_too_large", "chain": "pod-a", "seq": 812,
      "hash": "sha256:...", "type": "access", "time": "...", "bytes": 1300000, ...}}

so the stream shows the gap and which event fills it (from the journal, or another sink);
``audit verify`` reads it as no event, and reports that seq as missing from the copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from keyledger.proxy.audit.sinks._aws import LazyClient, client_for, error_code, sink_error
from keyledger.proxy.audit.sinks._thread import ThreadedSink
from keyledger.proxy.audit.sinks.base import Batch, Line, SinkError
from keyledger.proxy.audit.verify import Copy
from keyledger.proxy.config import CloudWatchSinkConfig

__all__ = ["CloudWatchCopies", "CloudWatchSink", "put_calls", "read_cloudwatch", "stand_in"]

log = structlog.get_logger("keyledger.sinks.cloudwatch")

MAX_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 1_048_576 - EVENT_OVERHEAD
MAX_SPAN_MS = 24 * 3600 * 1000


def stand_in(line: Line, *, chain: str) -> dict[str, Any]:
    """What is sent in place of ``line``, too large for a log event: which event it was
    (chain, seq, hash, type, time) and why it is not there. Never any of its content."""
    try:
        parsed = orjson.loads(line.raw)
    except orjson.JSONDecodeError:
        parsed = None
    record: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    link: dict[str, Any] = record["chain"] if isinstance(record.get("chain"), dict) else {}
    return {
        "reason": "event_too_large",
        "chain": link.get("id", chain),
        "seq": line.seq,
        "hash": link.get("hash"),
        "type": record.get("type"),
        "time": record.get("time"),
        "bytes": len(line.raw),
        "limit": MAX_EVENT_BYTES,
        "note": "too large for one CloudWatch Logs event; the journal and the other sinks "
        "hold it whole",
    }


def put_calls(lines: Sequence[Line], *, chain: str = "") -> Iterator[list[Line]]:
    """``lines`` in time order, cut into groups PutLogEvents accepts.

    A line over the per-event limit cannot be sent at all: its :func:`stand_in` goes in its
    place (an audit event is far smaller, bodies and secret values are never part of it, so
    this is a bug or an attack to look into, and it is logged as an error).
    """
    call: list[Line] = []
    size = 0
    for line in sorted(lines, key=lambda line: line.time_ms):  # stable: seq order on ties
        if len(line.raw) > MAX_EVENT_BYTES:
            fields = stand_in(line, chain=chain)
            log.error(
                "cloudwatch_event_too_large",
                **{k: fields[k] for k in ("chain", "seq", "hash", "bytes")},
                note="a stand-in naming it is shipped in its place",
            )
            raw = orjson.dumps({"keyledger_stand_in": fields})
            line = Line(line.seq, line.time_ms, raw, None)  # sent in the event's place
        cost = len(line.raw) + EVENT_OVERHEAD
        if call and (
            len(call) == MAX_EVENTS
            or size + cost > MAX_BATCH_BYTES
            or line.time_ms - call[0].time_ms > MAX_SPAN_MS
        ):
            yield call
            call, size = [], 0
        call.append(line)
        size += cost
    if call:
        yield call


class CloudWatchSink(ThreadedSink):
    config: CloudWatchSinkConfig

    def __init__(self, config: CloudWatchSinkConfig, *, stream: str) -> None:
        super().__init__(config)
        self.stream = stream  # the chain id: one stream per replica (and worker)
        self._logs = LazyClient("logs", config)
        self.stood_in = 0  # events shipped as a stand-in, too large for CloudWatch

    async def prepare(self) -> None:
        await self._thread.run(self._create)

    def _create(self) -> None:
        """The group (with its retention) and this chain's stream, unless they exist."""
        group = self.config.log_group
        logs = self._logs()
        try:
            self._create_if_missing(logs.create_log_group, logGroupName=group)
            if self.config.retention_days is not None:
                logs.put_retention_policy(
                    logGroupName=group, retentionInDays=self.config.retention_days
                )
            self._create_if_missing(
                logs.create_log_stream, logGroupName=group, logStreamName=self.stream
            )
        except (ClientError, BotoCoreError) as exc:
            raise sink_error(exc, f"preparing log group {group}") from None

    @staticmethod
    def _create_if_missing(create: Any, **names: str) -> None:
        try:
            create(**names)
        except ClientError as exc:
            if error_code(exc) != "ResourceAlreadyExistsException":
                raise

    async def send(self, batch: Batch) -> None:
        await self._thread.run(lambda: self._put(batch))

    def _put(self, batch: Batch) -> None:
        group = self.config.log_group
        for call in put_calls(batch.lines, chain=batch.chain):
            try:
                response = self._logs().put_log_events(
                    logGroupName=group,
                    logStreamName=self.stream,
                    logEvents=[
                        {"timestamp": line.time_ms, "message": line.raw.decode()} for line in call
                    ],
                )
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    # Deleted under us: create it again, then the batch is retried whole.
                    self._create()
                    raise SinkError(
                        f"log group {group} or stream {self.stream} was missing"
                    ) from None
                raise sink_error(exc, f"PutLogEvents {group}/{self.stream}") from None
            except BotoCoreError as exc:
                raise sink_error(exc, f"PutLogEvents {group}/{self.stream}") from None
            rejected = response.get("rejectedLogEventsInfo")
            if rejected:
                log.error(
                    "cloudwatch_events_rejected",
                    sink=self.name,
                    first_seq=call[0].seq,
                    last_seq=call[-1].seq,
                    **{k: v for k, v in rejected.items() if isinstance(v, int)},
                    note="too old or too new for CloudWatch Logs; the journal and other "
                    "sinks keep them",
                )
        # Counted once the whole batch is in: a failed one is sent again.
        self.stood_in += sum(len(line.raw) > MAX_EVENT_BYTES for line in batch.lines)


# -- reading back -------------------------------------------------------------------------


@dataclass(slots=True)
class CloudWatchCopies:
    copies: list[Copy] = field(default_factory=list)
    streams: int = 0


def read_cloudwatch(url: str, *, client: Any = None) -> CloudWatchCopies:
    """Every event of every stream of ``cloudwatch://GROUP`` (or of ``GROUP/STREAM``)."""
    target = url.removeprefix("cloudwatch://")
    # Log group names may contain "/": the stream is whatever follows the last one, and only
    # when that group exists with that stream.
    logs = client or client_for("logs", region=None, endpoint_url=None, profile=None)
    group, streams = _resolve(logs, target)
    found = CloudWatchCopies()
    for stream in streams:
        found.streams += 1
        where = f"cloudwatch://{group}/{stream}"
        for number, message in enumerate(_messages(logs, group, stream), start=1):
            found.copies.append(Copy(where, number, message.encode() + b"\n"))
    return found


def _resolve(logs: Any, target: str) -> tuple[str, list[str]]:
    if not target:
        raise ValueError("expected cloudwatch://LOG_GROUP[/STREAM]")
    try:
        return target, _streams(logs, target)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException" or "/" not in target:
            raise sink_error(exc, f"listing the streams of {target}") from None
    group, _, stream = target.rpartition("/")
    try:
        if stream in _streams(logs, group, prefix=stream):
            return group, [stream]
    except ClientError as exc:
        raise sink_error(exc, f"listing the streams of {group}") from None
    raise ValueError(f"cloudwatch://{target}: no such log group, or group and stream")


def _streams(logs: Any, group: str, prefix: str | None = None) -> list[str]:
    extra = {"logStreamNamePrefix": prefix} if prefix else {}
    names = []
    for page in logs.get_paginator("describe_log_streams").paginate(logGroupName=group, **extra):
        names += [s["logStreamName"] for s in page.get("logStreams", [])]
    return sorted(names)


def _messages(logs: Any, group: str, stream: str) -> Iterator[str]:
    token: str | None = None
    while True:
        extra: dict[str, str] = {"nextToken": token} if token else {}
        try:
            page = logs.get_log_events(
                logGroupName=group, logStreamName=stream, startFromHead=True, **extra
            )
        except (ClientError, BotoCoreError) as exc:
            raise sink_error(exc, f"reading {group}/{stream}") from None
        for event in page.get("events", []):
            yield event["message"]
        # The documented end: the same forward token comes back.
        if page.get("nextForwardToken") in (None, token):
            return
        token = page["nextForwardToken"]
