"""The admin API's live audit stream as a source of events: one per replica (or per
``serve --workers N`` supervisor, whose stream already merges every worker's).

``GET /v1/audit/stream?last=N&since=T`` replays the last N events of each chain from T on,
then says ``replayed``, then passes on each event once it is durable: the history and the
live events come from one connection, with no gap between them. When the connection drops
(a restart, a network blip, the server dropping a reader that fell behind), it is opened
again after a pause that doubles from ``backoff_min_s`` up to ``backoff_max_s``, replaying
from the newest event seen: what is replayed twice is dropped by the follower (chain, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from keyledger.alerts.sources import SourceError
from keyledger.proxy.audit.filters import EventFilter
from keyledger.proxy.audit.stream import server_sent_events

__all__ = ["MAX_REPLAY", "AdminStream", "admin_token"]

Record = dict[str, Any]

MAX_REPLAY = 10_000  # the most events of each chain the admin API replays


def admin_token(token_file: str | None) -> str:
    """The admin token: the file's content, else KEYLEDGER_ADMIN_TOKEN."""
    if token_file:
        try:
            return Path(token_file).read_text().strip()
        except OSError as exc:
            raise SourceError(f"--token-file {token_file}: {exc.strerror}") from exc
    token = os.environ.get("KEYLEDGER_ADMIN_TOKEN")
    if not token:
        raise SourceError("--url needs the admin token: --token-file FILE or KEYLEDGER_ADMIN_TOKEN")
    return token


class AdminStream:
    """``URL/v1/audit/stream``: the history (replayed), then live events, reconnecting."""

    def __init__(
        self,
        url: str,
        *,
        token: str,
        cacert: str | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.name = url
        self._endpoint = url.rstrip("/") + "/v1/audit/stream"
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=cacert) if cacert else True
        )
        self._backoff = (backoff_min_s, backoff_max_s)
        self._warn = warn
        self._session: aiohttp.ClientSession | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._newest: str | None = None  # the time of the newest event seen

    async def _connect(self, since: str | None) -> aiohttp.ClientResponse:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=None)
            self._session = aiohttp.ClientSession(timeout=timeout)
        params = [("last", str(MAX_REPLAY))] + ([("since", since)] if since else [])
        try:
            response = await self._session.get(
                self._endpoint, params=params, headers=self._headers, ssl=self._ssl
            )
        except aiohttp.ClientConnectorError as exc:
            error = exc.os_error
            cause = os.strerror(error.errno) if error.errno else str(error)
            raise SourceError(
                f"cannot connect to {self.name}: {cause}. Is keyledger serving its admin API "
                "there (`admin.listen` in its config)?"
            ) from exc
        except aiohttp.ClientError as exc:
            raise SourceError(f"{self._endpoint}: {exc}") from exc
        if response.status != 200:
            body = (await response.text()).strip()[:300]
            response.release()
            hint = (
                " (check --token-file or KEYLEDGER_ADMIN_TOKEN)" if response.status == 401 else ""
            )
            raise SourceError(f"{self._endpoint}: HTTP {response.status}: {body}{hint}")
        return response

    async def history(self, filt: EventFilter) -> list[Record]:
        """The events the server replays (at most MAX_REPLAY per chain from ``filt.since``)
        that ``filt`` keeps, oldest first. The connection stays open for :meth:`updates`."""
        since = filt.since.isoformat() if filt.since is not None else None
        self._response = await self._connect(since)
        found: list[Record] = []
        async for event, data in server_sent_events(self._response.content):
            if event == "replayed":
                break
            if event == "audit":
                record = self._record(data)
                if record is not None and filt.matches(record):
                    found.append(record)
            elif event == "dropped":
                raise SourceError(f"{self.name}: the server dropped the stream during the replay")
        found.sort(key=lambda r: str(r.get("time", "")))  # a supervisor replays per chain
        return found

    def _record(self, data: bytes) -> Record | None:
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        moment = record.get("time")
        if isinstance(moment, str) and (self._newest is None or moment > self._newest):
            self._newest = moment
        return record

    async def updates(self) -> AsyncIterator[list[Record]]:
        """Live events, one at a time as they come, forever; reconnecting when cut off."""
        failures = 0
        while True:
            try:
                if self._response is None:
                    self._response = await self._connect(self._newest)
                    replayed = []
                    async for event, data in server_sent_events(self._response.content):
                        if event == "replayed":
                            break
                        if event == "audit" and (record := self._record(data)) is not None:
                            replayed.append(record)
                    if replayed:
                        yield replayed
                failures = 0
                async for event, data in server_sent_events(self._response.content):
                    if event == "audit" and (record := self._record(data)) is not None:
                        yield [record]
                    elif event == "dropped":
                        self._warn(f"{self.name}: the server dropped this reader; reconnecting")
                        break
                else:
                    self._warn(f"{self.name}: the stream ended; reconnecting")
            except (SourceError, aiohttp.ClientError, ConnectionError) as exc:
                failures += 1
                self._warn(f"{self.name}: {exc}; reconnecting")
            self._drop()
            low, high = self._backoff
            await asyncio.sleep(min(high, low * 2 ** max(failures - 1, 0)))

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    async def close(self) -> None:
        self._drop()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None
