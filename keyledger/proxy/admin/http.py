"""The admin API's JSON edge: responses, errors, and reading a query string strictly.

Every answer is JSON (``application/json; charset=utf-8``, ``nosniff``, never cached); an
error is ``{"error": "..."}``. Names that callers chose (secrets, principals, user agents)
travel as JSON strings exactly as recorded: a console escapes them where it shows them.

A query parameter this API does not know is refused (400, with the closest known name),
so that ``?principle=x`` never silently answers for everyone.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiMapping

from keyledger.proxy.audit.events import format_time
from keyledger.proxy.audit.filters import parse_time

__all__ = [
    "HEADERS",
    "Window",
    "check_known",
    "iso",
    "json_error",
    "json_raw",
    "json_response",
    "limit_of",
    "one",
    "required",
    "window_of",
]

HEADERS = {
    "Cache-Control": "no-store",  # audit data stays off shared caches and disk caches
    "X-Content-Type-Options": "nosniff",  # a name holding markup is never sniffed as HTML
}
_CONTENT_TYPE = "application/json"

Query = MultiMapping[str] | Mapping[str, str]


def json_response(data: Any, *, status: int = 200, **headers: str) -> web.Response:
    return json_raw(orjson.dumps(data), status=status, **headers)


def json_raw(body: bytes, *, status: int = 200, **headers: str) -> web.Response:
    """``body``, already JSON (journal lines are spliced in as written, not re-encoded)."""
    return web.Response(
        body=body,
        status=status,
        content_type=_CONTENT_TYPE,
        charset="utf-8",
        headers={**HEADERS, **headers},
    )


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return json_response({"error": message}, status=status, **headers)


def iso(moment: datetime | None) -> str | None:
    """UTC, RFC 3339 with microseconds, as the journal writes times; None stays None."""
    return None if moment is None else format_time(moment)


def _values(query: Query, name: str) -> list[str]:
    getall = getattr(query, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    return [query[name]] if name in query else []


def check_known(query: Query, known: Iterable[str]) -> None:
    """ValueError naming the first parameter not in ``known``."""
    allowed = sorted(set(known))
    for name in query:
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listed = ", ".join(allowed) if allowed else "none"
            raise ValueError(f"unknown query parameter {name!r}{hint}: this takes {listed}")


def one(query: Query, name: str) -> str | None:
    """The parameter's one value, untouched (names may hold anything); None if absent."""
    values = _values(query, name)
    if len(values) > 1:
        raise ValueError(f"query parameter {name!r}: give it once, not {len(values)} times")
    return values[0] if values else None


def required(query: Query, name: str) -> str:
    value = one(query, name)
    if value is None or value == "":
        raise ValueError(f"query parameter {name!r} is required")
    return value


def limit_of(query: Query, *, default: int, maximum: int, name: str = "limit") -> int:
    text = one(query, name)
    if text is None:
        return default
    value = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= value <= maximum:
        raise ValueError(f"query parameter {name!r}: expected 1 to {maximum}, not {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Window:
    """``[since, until)``, aware UTC datetimes."""

    since: datetime
    until: datetime

    def as_json(self) -> dict[str, Any]:
        return {"since": iso(self.since), "until": iso(self.until)}


def window_of(query: Query, now: datetime, *, default: timedelta, maximum: timedelta) -> Window:
    """``since`` and ``until`` (the forms ``audit tail`` takes: RFC 3339, a date, an age like
    ``2h``); ``until`` defaults to now, ``since`` to ``default`` before ``until``."""
    moments: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        text = one(query, name)
        try:
            moments[name] = parse_time(text, now) if text is not None else None
        except ValueError as exc:
            raise ValueError(f"query parameter {name!r}: {exc}") from None
    until = moments["until"] or now
    since = moments["since"] or until - default
    if since >= until:
        raise ValueError(
            f"query parameter 'since' ({format_time(since)}) is not before 'until' "
            f"({format_time(until)}): the window is empty"
        )
    if until - since > maximum:
        days = (until - since) / timedelta(days=1)
        raise ValueError(
            f"the window since..until spans {days:.1f} days; at most {maximum.days} days "
            "are read per request (use `keyledger audit report` for more)"
        )
    return Window(since, until)
