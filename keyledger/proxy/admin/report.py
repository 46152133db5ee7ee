"""The ``audit report`` data as JSON, for a window: all secrets, one secret, one principal.

GET /v1/report     every secret touched in the window (the filters of ``audit tail`` narrow it)
GET /v1/secret     one secret, named exactly (``name``, optionally ``backend``): its report
                   entry and its newest events
GET /v1/principal  one principal, named exactly (``id``): what it touched, from where, how
                   it signed in, and its newest calls with the rule that decided each

Secret names and principal ids may hold ``/``, ``*``, ``,`` or anything else, so the two
single-name views take them as exact query values, never as globs or path segments.
The window defaults to the last 24 hours and spans at most 31 days; reading it stops with
a 422 past :data:`WINDOW_EVENTS` events (see :func:`~.reads.in_window`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiDict

from keyledger.proxy.admin.http import (
    Window,
    check_known,
    iso,
    json_error,
    json_response,
    limit_of,
    one,
    required,
    window_of,
)
from keyledger.proxy.admin.keys import JOURNAL_DIR, READS
from keyledger.proxy.admin.query import SCAN_LINES
from keyledger.proxy.admin.reads import Busy, Found, Match, TooManyEvents, in_window, newest
from keyledger.proxy.audit.events import format_time
from keyledger.proxy.audit.filters import QUERY_PARAMETERS, effect_of, filter_from_query
from keyledger.proxy.audit.report import AccessReport, SecretActivity, build_report

__all__ = ["WINDOW_EVENTS", "add_report_routes", "call_json", "report_json"]

WINDOW_EVENTS = 1_000_000  # events of a window one answer reads at most
_DEFAULT_WINDOW, _MAX_WINDOW = timedelta(hours=24), timedelta(days=31)
_RECENT = (50, 1000)  # newest calls shown: default, most
_SOURCES_KEPT = 1000  # distinct source addresses counted per principal; the rest are "other"

Record = dict[str, Any]


def add_report_routes(app: web.Application) -> None:
    app.router.add_get("/v1/report", report)
    app.router.add_get("/v1/secret", secret)
    app.router.add_get("/v1/principal", principal)


def _window(query: Mapping[str, str]) -> Window:
    return window_of(query, datetime.now(UTC), default=_DEFAULT_WINDOW, maximum=_MAX_WINDOW)


async def _read(request: web.Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(directory, *args)`` on the admin threads; a web error answer on failure."""
    try:
        return await request.app[READS].run(fn, request.app[JOURNAL_DIR], *args, **kwargs)
    except Busy as exc:
        raise _Answer(json_error(503, str(exc), **{"Retry-After": "1"})) from None
    except TooManyEvents as exc:
        raise _Answer(json_error(422, str(exc))) from None


class _Answer(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


# -- every secret -------------------------------------------------------------------------


async def report(request: web.Request) -> web.Response:
    query = request.query
    try:
        check_known(query, QUERY_PARAMETERS)
        window = _window(query)
        # since/until are the window's; the other filters narrow the events counted.
        rest = MultiDict((k, v) for k, v in query.items() if k not in ("since", "until"))
        filt = filter_from_query(rest, window.until)
    except ValueError as exc:
        return json_error(400, str(exc))
    try:
        built = await _read(request, _report_of, window, filt.matches)
    except _Answer as answer:
        return answer.response
    return json_response(report_json(built, window))


def _report_of(directory: Path, window: Window, match: Match) -> AccessReport:
    return build_report(_records(directory, window, match))


def _records(directory: Path, window: Window, match: Match) -> Iterator[Record]:
    since, until = format_time(window.since), format_time(window.until)
    return in_window(directory, match, since=since, until=until, budget=WINDOW_EVENTS)


def report_json(built: AccessReport, window: Window) -> dict[str, Any]:
    """The report with explicit names; times as UTC strings, histograms beside buckets."""
    return {
        "window": window.as_json(),
        "first": iso(built.first),
        "last": iso(built.last),
        "records": built.records,
        "events": built.events,
        "bucket": built.bucket,
        "buckets": [iso(b) for b in built.buckets],
        "histogram": list(built.histogram),
        "secrets": [_secret_json(s) for s in built.secrets],
    }


def _secret_json(s: SecretActivity) -> dict[str, Any]:
    return {
        "backend": s.backend,
        "secret": s.secret,
        "events": s.events,
        "allowed": s.allowed,
        "denied": s.denied,
        "errors": s.errors,
        "unresolved": s.unresolved,
        "first": iso(s.first),
        "last": iso(s.last),
        "actions": dict(s.actions),
        "histogram": list(s.histogram),
        "principals": [
            {
                "principal": p.principal,
                "events": p.events,
                "allowed": p.allowed,
                "denied": p.denied,
                "errors": p.errors,
                "first": iso(p.first),
                "last": iso(p.last),
            }
            for p in s.principals
        ],
    }


# -- one secret ---------------------------------------------------------------------------


def _part(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = record.get(name)
    return value if isinstance(value, dict) else {}


def _secret_match(name: str, backend: str | None) -> Match:
    def match(record: Record) -> bool:
        resource = _part(record, "resource")
        return resource.get("secret") == name and (
            backend is None or resource.get("backend") == backend
        )

    return match


async def secret(request: web.Request) -> web.Response:
    query = request.query
    try:
        check_known(query, {"name", "backend", "since", "until", "limit"})
        name, backend = required(query, "name"), one(query, "backend")
        window = _window(query)
        limit = limit_of(query, default=_RECENT[0], maximum=_RECENT[1])
    except ValueError as exc:
        return json_error(400, str(exc))
    match = _secret_match(name, backend)
    try:
        built = await _read(request, _report_of, window, match)
        found = await _recent(request, window, match, limit)
    except _Answer as answer:
        return answer.response
    recent = [call_json(r) for r, _ in found.events]
    body = report_json(built, window)
    return json_response(
        {
            "secret": name,
            "backend": backend,
            **body,
            "recent": recent,
            "recent_complete": found.complete,
        }
    )


async def _recent(request: web.Request, window: Window, match: Match, limit: int) -> Found:
    """The newest ``limit`` matching events of the window, newest first."""
    until = format_time(window.until)

    def in_it(record: Record) -> bool:
        return _time(record) < until and match(record)

    found: Found = await _read(
        request, newest, in_it, limit, since=format_time(window.since), budget=SCAN_LINES
    )
    return found


def _time(record: Mapping[str, Any]) -> str:
    time = record.get("time")
    return time if isinstance(time, str) else ""


def call_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """One call in a line: who, what, from where, and what decided it (at the time)."""
    link, request = _part(record, "chain"), _part(record, "request")
    who, resource = _part(record, "principal"), _part(record, "resource")
    decision, outcome = _part(record, "decision"), _part(record, "outcome")
    return {
        "chain": link.get("id"),
        "seq": link.get("seq"),
        "id": record.get("id"),
        "time": record.get("time"),
        "type": record.get("type"),
        "principal": who.get("id"),
        "auth_method": who.get("auth_method"),
        "action": record.get("action"),
        "backend": resource.get("backend"),
        "secret": resource.get("secret"),
        "source_ip": request.get("source_ip"),
        "protocol": request.get("protocol"),
        "operation": request.get("operation"),
        "effect": effect_of(record),
        "rule": decision.get("rule"),
        "policy_hash": decision.get("policy_hash"),
        "reason": decision.get("reason"),
        "status": outcome.get("status"),
        "code": outcome.get("code"),
    }


# -- one principal ------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    events: int = 0
    first: str | None = None
    last: str | None = None

    def add(self, moment: str) -> None:
        self.events += 1
        if moment:
            self.first = moment if self.first is None else min(self.first, moment)
            self.last = moment if self.last is None else max(self.last, moment)

    def as_json(self) -> dict[str, Any]:
        return {"events": self.events, "first": self.first, "last": self.last}


@dataclass(slots=True)
class _Principal:
    """What one principal's events in the window add up to, besides the report."""

    sources: dict[str | None, _Seen] = field(default_factory=dict)
    other_sources: _Seen = field(default_factory=_Seen)
    countries: dict[str | None, str | None] = field(default_factory=dict)  # by source
    auth_methods: dict[str | None, _Seen] = field(default_factory=dict)
    effects: Counter[str] = field(default_factory=Counter)

    def feed(self, records: Iterator[Record]) -> Iterator[Record]:
        for record in records:
            request, moment = _part(record, "request"), _time(record)
            source = request.get("source_ip")
            source = source if isinstance(source, str) else None
            if source in self.sources or len(self.sources) < _SOURCES_KEPT:
                self.sources.setdefault(source, _Seen()).add(moment)
                country = _part(request, "geo").get("country")
                self.countries.setdefault(source, country if isinstance(country, str) else None)
            else:
                self.other_sources.add(moment)
            method = _part(record, "principal").get("auth_method")
            method = method if isinstance(method, str) else None
            self.auth_methods.setdefault(method, _Seen()).add(moment)
            self.effects[effect_of(record) or "none"] += 1
            yield record


def _principal_match(principal_id: str) -> Match:
    def match(record: Record) -> bool:
        return _part(record, "principal").get("id") == principal_id

    return match


def _principal_of(directory: Path, window: Window, match: Match) -> tuple[AccessReport, _Principal]:
    tally = _Principal()
    built = build_report(tally.feed(_records(directory, window, match)))
    return built, tally


async def principal(request: web.Request) -> web.Response:
    query = request.query
    try:
        check_known(query, {"id", "since", "until", "limit"})
        principal_id = required(query, "id")
        window = _window(query)
        limit = limit_of(query, default=_RECENT[0], maximum=_RECENT[1])
    except ValueError as exc:
        return json_error(400, str(exc))
    match = _principal_match(principal_id)
    try:
        built, tally = await _read(request, _principal_of, window, match)
        found = await _recent(request, window, match, limit)
    except _Answer as answer:
        return answer.response
    body = report_json(built, window)
    secrets = [
        {k: v for k, v in s.items() if k != "principals"} for s in body["secrets"]
    ]  # every entry is this principal's alone
    sources = [
        {"source_ip": ip, "country": tally.countries.get(ip), **seen.as_json()}
        for ip, seen in sorted(tally.sources.items(), key=lambda kv: -kv[1].events)
    ]
    return json_response(
        {
            "principal": principal_id,
            "window": body["window"],
            "events": sum(tally.effects.values()),
            "effects": dict(sorted(tally.effects.items())),
            "bucket": body["bucket"],
            "buckets": body["buckets"],
            "histogram": body["histogram"],
            "secrets": secrets,
            "sources": sources,
            "other_sources": tally.other_sources.as_json(),
            "auth_methods": [
                {"auth_method": m, **seen.as_json()}
                for m, seen in sorted(tally.auth_methods.items(), key=lambda kv: -kv[1].events)
            ],
            "recent": [call_json(r) for r, _ in found.events],
            "recent_complete": found.complete,
        }
    )
