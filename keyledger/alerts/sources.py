"""Where a fleet's audit events are read from: a journal folder, or the copies the sinks
ship (``s3://BUCKET[/PREFIX]``, ``cloudwatch://GROUP[/STREAM]``), every chain of it.

Each source is an :class:`EventSource`: :meth:`~EventSource.history` reads the events from
the filter's ``since`` on, oldest first, every chain merged by time (as the folder reader
merges them), and leaves the source positioned at its end; :meth:`~EventSource.poll` then
returns what arrived since, each chain in its own order (the follower puts chains in time
order). Both block (files, boto3): call them from a worker thread. What a copy holds twice
(shipping is at least once) comes back twice: the follower drops repeats by chain and seq.

- **journal folder**: :class:`~keyledger.proxy.audit.reader.Follower` polls file sizes.
- **S3**: objects are named ``PREFIX<chain>/YYYY/MM/DD/<first seq>-<last seq>.jsonl.gz``
  (:func:`keyledger.proxy.audit.sinks.s3.batch_key`), so within a chain they sort by seq.
  Each poll lists the chains, then each chain after the last object read in an unbroken
  run of seqs; an object that shows up late (a listing that lags, on a store with eventual
  consistency) is still read, and after ``gap_wait`` a run that stays broken is given up
  on (a segment removed before it was shipped). A chain with no new object for ten
  minutes is listed once a minute, for a day once every ten minutes. The date is the
  first event's, so the history starts listing a day before ``since``.
- **CloudWatch Logs**: one stream per chain; GetLogEvents with each stream's forward
  token, the streams listed again at each poll (a new replica or worker is a new stream);
  a stream quiet for ten minutes is read once a minute, for a day once every ten minutes.
"""

from __future__ import annotations

import gzip
import heapq
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from keyledger.proxy.audit.filters import EventFilter
from keyledger.proxy.audit.sinks._aws import client_for, error_code, sink_error

__all__ = [
    "CloudWatchSource",
    "EventSource",
    "JournalSource",
    "S3Source",
    "SourceError",
    "merge_by_time",
]

Record = dict[str, Any]

_EVERYTHING = EventFilter()
# A chain with nothing new for a while (a replica or a pod that is gone: pods get new names,
# so their chains pile up) is read less often: (quiet for at least, then read every), s.
_QUIET = ((24 * 3600.0, 600.0), (600.0, 60.0))


class SourceError(Exception):
    """The source cannot be read (now): the message names it and says why."""


class EventSource(Protocol):
    name: str

    def history(self, filt: EventFilter) -> Iterator[Record]:
        """The events ``filt`` keeps, oldest first, every chain merged; read lazily. The
        source goes on (:meth:`poll`) after what it lists here."""
        ...

    def poll(self) -> list[Record]:
        """The events that arrived since the history or the last poll."""
        ...

    def close(self) -> None: ...


def _time_key(record: Record) -> str:
    time_ = record.get("time")
    return time_ if isinstance(time_, str) else ""


def merge_by_time(streams: Iterable[Iterable[Record]]) -> Iterator[Record]:
    """Streams each in time order, merged by time; ties keep the streams' order."""
    return heapq.merge(*streams, key=_time_key)


def _parse(line: bytes | str) -> Record | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # a torn or foreign line: skipped, as the folder reader does
    return record if isinstance(record, dict) else None


# -- a journal folder ------------------------------------------------------------------------


class JournalSource:
    """A journal folder (or one journal file) on this host: every chain in it."""

    _POLLS_PER_CALL = 16  # reads of a few MiB each before poll() hands back what it has

    def __init__(self, path: Path) -> None:
        from keyledger.proxy.audit.segments import discover

        if not path.exists():
            raise SourceError(f"SOURCE {path}: no such file or folder")
        if not discover(path).segments:
            raise SourceError(f"SOURCE {path}: no journal files (*.jsonl) found")
        self.name = str(path)
        self._path = path
        self._follower: Any = None

    def _start(self) -> Any:
        from keyledger.proxy.audit.reader import Follower

        self._follower = Follower(self._path, _EVERYTHING)
        self._follower.start(at_end=True)
        return self._follower

    def history(self, filt: EventFilter) -> Iterator[Record]:
        from keyledger.proxy.audit.reader import iter_records

        # Where following starts is fixed before the history is read: nothing appended in
        # between is missed (and what is read twice is dropped by its seq).
        self._start()
        return iter_records(self._path, filt)

    def poll(self) -> list[Record]:
        follower = self._follower or self._start()
        found: list[Record] = []
        for _ in range(self._POLLS_PER_CALL):
            records, more = follower.poll()
            found += records
            if not more:
                break
        return found

    def close(self) -> None:
        pass


# -- the S3 copy ----------------------------------------------------------------------------

_BATCH = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{12})-(\d{12})\.jsonl\.gz$")
_LIST_PAGE = 100  # keys per listing call while following: new objects, then a few others
_DOWNLOADS = 8  # objects fetched at once
_AHEAD = 4  # objects a chain fetches ahead of the one being read


@dataclass(slots=True)
class _Run:
    """Where one chain's objects have been read to."""

    after: str  # listing goes on after this key: every object up to it has been read
    last_new: float  # when an object of it was last found (or it was first seen; monotonic)
    next_seq: int | None = None  # the seq the next object must start at (None: unknown)
    ahead: dict[str, tuple[int, int]] = field(default_factory=dict)  # read past a gap
    gap_since: float | None = None  # when the run first stayed broken (monotonic)
    next_listing: float = 0.0  # not listed again before this (monotonic)


class S3Source:
    """``s3://BUCKET[/PREFIX]``: the objects the S3 sink writes, every chain under PREFIX.

    Reads the latest version of each object; ``audit verify`` reads every version.
    """

    def __init__(
        self,
        url: str,
        *,
        client: Any = None,
        gap_wait_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise SourceError(f"SOURCE {url}: expected s3://BUCKET[/PREFIX]")
        prefix = prefix.strip("/")
        self.name = url
        self._bucket = bucket
        self._prefix = f"{prefix}/" if prefix else ""  # as the sink's config writes it
        self._client = client
        self._gap_wait = gap_wait_s
        self._clock = clock
        self._warn = warn
        self._runs: dict[str, _Run] = {}
        self._pool = ThreadPoolExecutor(_DOWNLOADS, thread_name_prefix="s3-source")

    def _s3(self) -> Any:
        if self._client is None:
            self._client = client_for("s3", region=None, endpoint_url=None, profile=None)
        return self._client

    # Listing.

    def _chains(self) -> list[str]:
        pages = self._s3().get_paginator("list_objects_v2")
        try:
            found = [
                common["Prefix"][len(self._prefix) :].rstrip("/")
                for page in pages.paginate(Bucket=self._bucket, Prefix=self._prefix, Delimiter="/")
                for common in page.get("CommonPrefixes", [])
            ]
        except (ClientError, BotoCoreError) as exc:
            where = f"listing s3://{self._bucket}/{self._prefix}"
            raise SourceError(str(sink_error(exc, where))) from None
        return sorted(found)

    def _batches(self, chain: str, after: str, page_size: int = 1000) -> list[str]:
        """The chain's object keys after ``after``, in order, up to its first other key
        (checkpoints/ sorts after the dated folders)."""
        keys: list[str] = []
        paging: dict[str, str] = {"StartAfter": after}
        while True:
            try:
                page = self._s3().list_objects_v2(
                    Bucket=self._bucket,
                    Prefix=f"{self._prefix}{chain}/",
                    MaxKeys=page_size,
                    **paging,
                )
            except (ClientError, BotoCoreError) as exc:
                where = f"listing s3://{self._bucket}/{self._prefix}{chain}/"
                raise SourceError(str(sink_error(exc, where))) from None
            for item in page.get("Contents", []):
                if not _BATCH.search(item["Key"]):
                    return keys
                keys.append(item["Key"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return keys
            paging = {"ContinuationToken": token}

    def _fetch(self, key: str) -> list[Record]:
        try:
            body: bytes = self._s3().get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(str(sink_error(exc, f"GET s3://{self._bucket}/{key}"))) from None
        try:
            body = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        except (OSError, EOFError):
            self._warn(f"s3://{self._bucket}/{key}: not a readable gzip object; skipped")
            return []
        return [r for line in body.splitlines() if line and (r := _parse(line)) is not None]

    def _read(self, keys: list[str]) -> Iterator[tuple[str, list[Record]]]:
        """Each key's events, in order, a few fetched ahead."""
        pending: list[tuple[str, Future[list[Record]]]] = []
        todo = iter(keys)
        while True:
            while len(pending) < _AHEAD and (key := next(todo, None)) is not None:
                pending.append((key, self._pool.submit(self._fetch, key)))
            if not pending:
                return
            key, future = pending.pop(0)
            yield key, future.result()

    # Reading.

    def history(self, filt: EventFilter) -> Iterator[Record]:
        start = self._start_key(filt.since)
        listed = {
            chain: self._batches(chain, f"{self._prefix}{chain}/{start}")
            for chain in self._chains()
        }
        for chain, keys in listed.items():
            after = keys[-1] if keys else f"{self._prefix}{chain}/{start}"
            run = _Run(after=after, last_new=self._clock())
            if keys:
                run.next_seq = _seqs(keys[-1])[1] + 1
            self._runs[chain] = run
        return merge_by_time(self._chain_history(keys, filt) for keys in listed.values())

    @staticmethod
    def _start_key(since: datetime | None) -> str:
        # The folder a batch is filed under is its first event's day: one started the day
        # before may hold events from ``since`` on.
        return f"{since - timedelta(days=1):%Y/%m/%d}/" if since is not None else ""

    def _chain_history(self, keys: list[str], filt: EventFilter) -> Iterator[Record]:
        matches = filt.matches
        for _, records in self._read(keys):
            yield from (r for r in records if matches(r))

    def poll(self) -> list[Record]:
        found: list[Record] = []
        for chain in self._chains():
            now = self._clock()
            run = self._runs.get(chain)
            if run is None:
                run = self._runs[chain] = _Run(after=f"{self._prefix}{chain}/", last_new=now)
            if now < run.next_listing:
                continue  # quiet for long: listed now and then
            keys = [k for k in self._batches(chain, run.after, _LIST_PAGE) if k not in run.ahead]
            for key, records in self._read(keys):
                run.ahead[key] = _seqs(key)
                found += records
            if keys:
                run.last_new = now
            quiet = now - run.last_new
            run.next_listing = now + next((every for over, every in _QUIET if quiet >= over), 0)
            self._advance(chain, run)
        return found

    def _advance(self, chain: str, run: _Run) -> None:
        """Move ``after`` over the objects read that continue the run of seqs."""
        for key in sorted(run.ahead):
            first, last = run.ahead[key]
            if run.next_seq is not None and first > run.next_seq:
                now = self._clock()
                if run.gap_since is None:
                    run.gap_since = now
                if now - run.gap_since < self._gap_wait:
                    return  # an object may still show up in the listing
                self._warn(
                    f"s3://{self._bucket}/{self._prefix}{chain}/: seq {run.next_seq}-{first - 1} "
                    f"did not appear within {self._gap_wait:.0f}s; going on without it "
                    "(`keyledger audit verify` lists what a copy is missing)"
                )
            run.gap_since = None
            run.after = key
            run.next_seq = max(run.next_seq or 0, last + 1)
            del run.ahead[key]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _seqs(key: str) -> tuple[int, int]:
    match = _BATCH.search(key)
    assert match is not None
    return int(match.group(4)), int(match.group(5))


# -- the CloudWatch Logs copy -----------------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    start_ms: int  # the same on every call: the forward token is relative to it
    last_new: float  # when an event of it was last found (or it was first seen; monotonic)
    token: str | None = None
    foreign: bool = False  # a message that is not an event was seen (and said so)
    next_read: float = 0.0  # not read again before this (monotonic)


class CloudWatchSource:
    """``cloudwatch://GROUP`` (every stream: one per chain) or ``cloudwatch://GROUP/STREAM``."""

    def __init__(
        self,
        url: str,
        *,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        warn: Callable[[str], None] = lambda m: None,
    ) -> None:
        target = url.removeprefix("cloudwatch://")
        if not target:
            raise SourceError(f"SOURCE {url}: expected cloudwatch://LOG_GROUP[/STREAM]")
        self.name = url
        self._target = target
        self._client = client
        self._group: str | None = None
        self._only: str | None = None  # one stream, when the URL names one
        self._streams: dict[str, _Stream] = {}
        self._since_ms = 0
        self._clock = clock
        self._warn = warn

    def _logs(self) -> Any:
        if self._client is None:
            self._client = client_for("logs", region=None, endpoint_url=None, profile=None)
        return self._client

    def _list(self, group: str, prefix: str | None = None) -> list[str]:
        extra = {"logStreamNamePrefix": prefix} if prefix else {}
        pages = self._logs().get_paginator("describe_log_streams")
        return sorted(
            s["logStreamName"]
            for page in pages.paginate(logGroupName=group, **extra)
            for s in page.get("logStreams", [])
        )

    def _stream_names(self) -> list[str]:
        try:
            if self._group is None:
                self._resolve()
            assert self._group is not None
            names = self._list(self._group, self._only)
        except ClientError as exc:
            raise SourceError(
                str(sink_error(exc, f"listing the streams of {self._target}"))
            ) from None
        except BotoCoreError as exc:
            raise SourceError(
                str(sink_error(exc, f"listing the streams of {self._target}"))
            ) from None
        return [n for n in names if self._only is None or n == self._only]

    def _resolve(self) -> None:
        # Log group names may hold "/": the URL names a stream only when the whole of it is
        # not a group and what follows the last "/" is a stream of the rest.
        try:
            self._list(self._target)
            self._group = self._target
            return
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException" or "/" not in self._target:
                raise
        group, _, stream = self._target.rpartition("/")
        if stream in self._list(group, stream):
            self._group, self._only = group, stream
            return
        raise SourceError(
            f"SOURCE cloudwatch://{self._target}: no such log group, or group and stream"
        )

    def _events(self, name: str, stream: _Stream) -> Iterator[Record]:
        """The stream's events after its token, page by page, the token kept as it goes."""
        assert self._group is not None
        while True:
            extra: dict[str, Any] = {"nextToken": stream.token} if stream.token else {}
            try:
                page = self._logs().get_log_events(
                    logGroupName=self._group,
                    logStreamName=name,
                    startFromHead=True,
                    startTime=stream.start_ms,
                    **extra,
                )
            except (ClientError, BotoCoreError) as exc:
                raise SourceError(str(sink_error(exc, f"reading {self._group}/{name}"))) from None
            for event in page.get("events", []):
                record = _parse(event["message"])
                if record is not None:
                    yield record
                elif not stream.foreign:
                    stream.foreign = True
                    self._warn(f"{self._group}/{name}: a message that is no audit event; skipped")
            # The documented end: the same forward token comes back.
            done = page.get("nextForwardToken") in (None, stream.token)
            stream.token = page.get("nextForwardToken") or stream.token
            if done:
                return

    def history(self, filt: EventFilter) -> Iterator[Record]:
        self._since_ms = int(filt.since.timestamp() * 1000) if filt.since is not None else 0
        names = self._stream_names()
        self._streams = {name: _Stream(self._since_ms, self._clock()) for name in names}
        matches = filt.matches
        return merge_by_time(
            (r for r in self._events(name, stream) if matches(r))
            for name, stream in self._streams.items()
        )

    def poll(self) -> list[Record]:
        found: list[Record] = []
        for name in self._stream_names():
            now = self._clock()
            stream = self._streams.get(name)
            if stream is None:  # appeared since (a new replica or worker): all of it is new
                stream = self._streams[name] = _Stream(self._since_ms, now)
            if now < stream.next_read:
                continue  # quiet for long (a pod that is gone): read now and then
            new = list(self._events(name, stream))
            if new:
                stream.last_new = now
            quiet = now - stream.last_new
            stream.next_read = now + next((every for over, every in _QUIET if quiet >= over), 0)
            found += new
        return found

    def close(self) -> None:
        pass
