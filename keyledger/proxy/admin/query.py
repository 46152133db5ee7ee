"""Events for the console: the newest that match a filter, one by its place, the alerts.

GET /v1/events               newest first; the filters of ``audit tail`` and the stream
GET /v1/events/{chain}/{seq} one event, exactly as the journal holds it
GET /v1/alerts               the ``alert`` events of a window, most severe first, each with
                             the events that triggered it

Reads run on the admin API's own threads (:class:`~.reads.ReadPool`) with the bounds
of :mod:`.reads`; see docs/admin-api.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from keyledger.alerts.model import Severity
from keyledger.proxy.admin.http import (
    check_known,
    json_error,
    json_raw,
    json_response,
    limit_of,
    one,
    window_of,
)
from keyledger.proxy.admin.keys import JOURNAL_DIR, READS
from keyledger.proxy.admin.reads import Busy, find, newest
from keyledger.proxy.audit.events import format_time
from keyledger.proxy.audit.filters import QUERY_PARAMETERS, EventFilter, filter_from_query

__all__ = ["SCAN_LINES", "add_query_routes", "seq_param"]

SCAN_LINES = 1_000_000  # lines one answer reads at most, shared among the chains
_EVENTS_LIMIT = (100, 1000)  # default, most
_ALERTS_LIMIT = (100, 1000)
_ALERTS_WINDOW = (timedelta(days=7), timedelta(days=31))  # default, most
_TRIGGERS_SHOWN = 10  # triggering events resolved per alert; the rest stay references
_RANK = {s.value: rank for rank, s in enumerate(Severity)}  # info 0 .. critical 4


def add_query_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/events/{chain}/{seq}", event)
    app.router.add_get("/v1/alerts", alerts)


def seq_param(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) < 1:
        raise ValueError(f"seq must be a positive whole number, not {text!r}")
    return int(text)


async def events(request: web.Request) -> web.Response:
    query = request.query
    try:
        check_known(query, {*QUERY_PARAMETERS, "limit"})
        filt = filter_from_query(query, datetime.now(UTC))
        limit = limit_of(query, default=_EVENTS_LIMIT[0], maximum=_EVENTS_LIMIT[1])
    except ValueError as exc:
        return json_error(400, str(exc))
    since = format_time(filt.since) if filt.since else None
    try:
        found = await request.app[READS].run(
            newest, request.app[JOURNAL_DIR], filt.matches, limit, since=since, budget=SCAN_LINES
        )
    except Busy as exc:
        return json_error(503, str(exc), **{"Retry-After": "1"})
    lines = b",".join(line for _, line in found.events)
    rest = orjson.dumps(
        {
            "count": len(found.events),
            "limit": limit,
            "complete": found.complete,
            "scanned": found.scanned,
        }
    )
    # The journal's lines as written: one object each, never re-encoded.
    return json_raw(b'{"events":[' + lines + b"]," + rest[1:])


async def event(request: web.Request) -> web.Response:
    chain = request.match_info["chain"]
    try:
        seq = seq_param(request.match_info["seq"])
        check_known(request.query, ())
    except ValueError as exc:
        return json_error(400, str(exc))
    try:
        found = await request.app[READS].run(find, request.app[JOURNAL_DIR], {chain: {seq}})
    except Busy as exc:
        return json_error(503, str(exc), **{"Retry-After": "1"})
    line = found.get((chain, seq))
    if line is None:
        return json_error(404, f"no event {seq} in chain {chain!r}")
    return json_raw(line)


# -- alerts -------------------------------------------------------------------------------


def _severities(query: Mapping[str, str]) -> frozenset[str]:
    text = one(query, "severity")
    if text is None:
        return frozenset()
    wanted = frozenset(part.strip() for part in text.split(",") if part.strip())
    for name in sorted(wanted):
        if name not in _RANK:
            raise ValueError(
                f"query parameter 'severity': unknown severity {name!r}: use one of "
                + ", ".join(_RANK)
            )
    return wanted


def _detail(record: Mapping[str, Any]) -> Mapping[str, Any]:
    detail = record.get("detail")
    return detail if isinstance(detail, dict) else {}


async def alerts(request: web.Request) -> web.Response:
    query = request.query
    try:
        check_known(query, {"since", "until", "severity", "limit"})
        window = window_of(
            query, datetime.now(UTC), default=_ALERTS_WINDOW[0], maximum=_ALERTS_WINDOW[1]
        )
        severities = _severities(query)
        limit = limit_of(query, default=_ALERTS_LIMIT[0], maximum=_ALERTS_LIMIT[1])
        filt = EventFilter(types=frozenset({"alert"}), since=window.since, until=window.until)
    except ValueError as exc:
        return json_error(400, str(exc))

    def match(record: dict[str, Any]) -> bool:
        return filt.matches(record) and (
            not severities or _detail(record).get("severity") in severities
        )

    reads, directory = request.app[READS], request.app[JOURNAL_DIR]
    try:
        found = await reads.run(
            newest, directory, match, limit, since=format_time(window.since), budget=SCAN_LINES
        )
        wanted: dict[str, set[int]] = {}
        for record, _ in found.events:
            for ref in _refs(record)[:_TRIGGERS_SHOWN]:
                wanted.setdefault(ref[0], set()).add(ref[1])
        triggers = await reads.run(find, directory, wanted)
    except Busy as exc:
        return json_error(503, str(exc), **{"Retry-After": "1"})
    shown = [_alert_json(record, triggers) for record, _ in found.events]
    # Most severe first; within a severity, newest first (``found`` is newest first).
    shown.sort(key=lambda a: -_RANK.get(str(a["severity"]), -1))
    return json_response(
        {
            "window": window.as_json(),
            "alerts": shown,
            "count": len(shown),
            "limit": limit,
            "complete": found.complete,
            "scanned": found.scanned,
        }
    )


def _refs(record: Mapping[str, Any]) -> list[tuple[str, int]]:
    refs = []
    for ref in _detail(record).get("events") or ():
        if isinstance(ref, dict) and isinstance(ref.get("chain"), str):
            seq = ref.get("seq")
            if type(seq) is int:
                refs.append((ref["chain"], seq))
    return refs


def _alert_json(
    record: Mapping[str, Any], triggers: Mapping[tuple[str, int], bytes]
) -> dict[str, Any]:
    detail = _detail(record)
    chain = record.get("chain")
    link: Mapping[str, Any] = chain if isinstance(chain, dict) else {}
    resolved = set(_refs(record)[:_TRIGGERS_SHOWN])
    events = []
    for ref in detail.get("events") or ():
        if not isinstance(ref, dict):
            continue
        place = (ref.get("chain"), ref.get("seq"))
        line = triggers.get(place) if place in resolved else None
        events.append({**ref, "event": orjson.loads(line) if line is not None else None})
    return {
        "chain": link.get("id"),
        "seq": link.get("seq"),
        "id": record.get("id"),
        "time": record.get("time"),
        "rule": detail.get("rule"),
        "severity": detail.get("severity"),
        "detector": detail.get("detector"),
        "key": detail.get("key"),
        "summary": detail.get("summary"),
        "suppressed": detail.get("suppressed"),
        "detail": detail.get("detail"),
        "events": events,
    }
