"""The detectors: each watches the calls its rule's filter lets through and says when
something is unusual, as a :class:`Firing` (what about, why, which events).

Time is the events' own (their ``time``), never the clock's: a journal replayed
(``keyledger alerts run``, or at start to rebuild windows and baselines) fires exactly as
the live stream did. State is bounded: windows drop what has left them, and keys idle for a
whole window are forgotten.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from keyledger.alerts.model import EventRef
from keyledger.alerts.rules import (
    BulkRead,
    Canary,
    Counting,
    Detector,
    FirstSeen,
    OffHours,
    UnusualSource,
)
from keyledger.policies.conditions import parse_ip
from keyledger.proxy.audit.filters import EventFilter, effect_of

__all__ = ["Explained", "Firing", "Watcher", "watcher_for"]

# The events an alert names, at most: the count says how many there were.
MAX_REFS = 20
# Distinct keys a learning detector remembers (first_seen); the least recent go first.
MAX_LEARNED = 1_000_000


@dataclass(frozen=True, slots=True)
class Explained:
    summary: str
    events: tuple[EventRef, ...]
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Firing:
    """A detector tripped for ``key``. What to say about it is made only if the alert
    goes out: most firings of a busy key are suppressed repeats."""

    key: str
    explain: Callable[[], Explained]


class Watcher(Protocol):
    def observe(self, record: Mapping[str, Any], at: datetime) -> Firing | None: ...


def watcher_for(detector: Detector) -> Watcher:
    if isinstance(detector, Counting):
        return _Counting(detector)
    if isinstance(detector, BulkRead):
        return _BulkRead(detector)
    if isinstance(detector, Canary):
        return _Canary(detector)
    if isinstance(detector, OffHours):
        return _OffHours(detector)
    if isinstance(detector, FirstSeen):
        return _FirstSeen(detector)
    return _UnusualSource(detector)


# -- what an event says ---------------------------------------------------------------------


def _part(record: Mapping[str, Any], part: str, key: str) -> str | None:
    value = record.get(part)
    found = value.get(key) if type(value) is dict or isinstance(value, Mapping) else None
    return found if type(found) is str else None


def principal_of(record: Mapping[str, Any]) -> str:
    """The caller, or for a failed sign-in whose caller is unknown, what it claimed."""
    found = _part(record, "principal", "id")
    if found is not None:
        return found
    principal = record.get("principal")
    claimed = principal.get("attributes") if isinstance(principal, Mapping) else None
    if isinstance(claimed, Mapping):
        for name in ("access_key_id", "subject", "token_id"):
            if isinstance(claimed.get(name), str):
                return f"(unknown: {name} {claimed[name]})"
    return "(unknown)"


def secret_of(record: Mapping[str, Any]) -> str | None:
    """``backend:name``, as policies and the audit tools write a secret."""
    secret = _part(record, "resource", "secret")
    if secret is None:
        return None
    return f"{_part(record, 'resource', 'backend') or '?'}:{secret}"


def geo_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where the caller was (``request.geo``: country, asn, as_org), when GeoIP said."""
    request = record.get("request")
    geo = request.get("geo") if isinstance(request, Mapping) else None
    return geo if isinstance(geo, Mapping) else {}


def country_of(record: Mapping[str, Any]) -> str | None:
    country = geo_of(record).get("country")
    return country if type(country) is str else None


def asn_of(record: Mapping[str, Any]) -> int | None:
    asn = geo_of(record).get("asn")
    return asn if type(asn) is int else None


def calls_in(record: Mapping[str, Any]) -> int:
    """How many calls an event stands for: one, or a flood's aggregate's count."""
    detail = record.get("detail")
    if type(detail) is dict and detail.get("aggregate") is True:
        count = detail.get("count")
        if type(count) is int and count > 0:
            return count
    return 1


def _is_call(record: Mapping[str, Any]) -> bool:
    return record.get("type") in ("access", "auth_failure")


# -- detectors -------------------------------------------------------------------------------


class _Window:
    """The times of one key's events within a window, oldest first, and its latest few
    events themselves: an alert names at most MAX_REFS, made only when one goes out."""

    __slots__ = ("recent", "times", "total")

    def __init__(self) -> None:
        self.times: deque[tuple[datetime, int]] = deque()
        self.total = 0  # the calls the window holds: an aggregate event stands for many
        self.recent: deque[tuple[datetime, Mapping[str, Any]]] = deque(maxlen=MAX_REFS)

    def add(self, at: datetime, record: Mapping[str, Any], span: timedelta, weight: int) -> int:
        self.times.append((at, weight))
        self.total += weight
        self.recent.append((at, record))
        while self.times and self.times[0][0] <= at - span:
            self.total -= self.times.popleft()[1]
        return self.total

    def take_refs(self, at: datetime, span: timedelta) -> tuple[EventRef, ...]:
        """The window's latest events, and an empty window: the next alert needs a burst
        of its own."""
        refs = tuple(EventRef.of(r) for t, r in self.recent if t > at - span)
        self.times.clear()
        self.total = 0
        self.recent.clear()
        return refs


class _Keyed:
    """Per-key state, with keys idle for a whole window forgotten now and then."""

    def __init__(self, span: timedelta) -> None:
        self.span = span
        self.seen: dict[str, tuple[datetime, Any]] = {}
        self._swept: datetime | None = None

    def sweep(self, at: datetime) -> None:
        if self._swept is not None and at - self._swept < self.span:
            return
        self._swept = at
        self.seen = {k: v for k, v in self.seen.items() if at - v[0] < self.span}


class _Counting(_Keyed):
    def __init__(self, detector: Counting) -> None:
        super().__init__(detector.window)
        self.detector = detector

    def observe(self, record: Mapping[str, Any], at: datetime) -> Firing | None:
        d = self.detector
        if not _is_call(record) or (d.kind == "deny_burst" and effect_of(record) != "deny"):
            return None
        key = self._key(record)
        if key is None:
            return None
        self.sweep(at)
        window: _Window = self.seen.get(key, (at, None))[1] or _Window()
        self.seen[key] = (at, window)
        count = window.add(at, record, d.window, calls_in(record))
        if count < d.count or (d.kind == "rate" and count == d.count):
            return None
        refs = window.take_refs(at, d.window)
        what = "denials" if d.kind == "deny_burst" else "calls"
        return Firing(
            f"{d.by} {key}",
            lambda: Explained(
                f"{count} {what} for {d.by} {key} within {_span(d.window)}",
                refs,
                {"count": count, "window_s": d.window.total_seconds(), "by": d.by},
            ),
        )

    def _key(self, record: Mapping[str, Any]) -> str | None:
        by = self.detector.by
        if by == "principal":
            return principal_of(record)
        if by == "source":
            return _part(record, "request", "source_ip")
        return secret_of(record)


class _BulkRead(_Keyed):
    def __init__(self, detector: BulkRead) -> None:
        super().__init__(detector.window)
        self.detector = detector

    def observe(self, record: Mapping[str, Any], at: datetime) -> Firing | None:
        secret = secret_of(record)
        if record.get("type") != "access" or record.get("action") != "read" or secret is None:
            return None
        self.sweep(at)
        principal = principal_of(record)
        reads: OrderedDict[str, tuple[datetime, Mapping[str, Any]]]
        reads = self.seen.get(principal, (at, None))[1] or OrderedDict()
        self.seen[principal] = (at, reads)
        reads.pop(secret, None)
        reads[secret] = (at, record)
        while reads and next(iter(reads.values()))[0] <= at - self.detector.window:
            reads.popitem(last=False)
        if len(reads) < self.detector.count:
            return None
        refs = tuple(EventRef.of(r) for _, r in list(reads.values())[-MAX_REFS:])
        count = len(reads)
        reads.clear()
        window = self.detector.window
        return Firing(
            f"principal {principal}",
            lambda: Explained(
                f"{principal} read {count} distinct secrets within {_span(window)}",
                refs,
                {"distinct_secrets": count, "window_s": window.total_seconds()},
            ),
        )


class _Canary:
    def __init__(self, detector: Canary) -> None:
        self.decoys = EventFilter(secrets=frozenset(detector.secrets))

    def observe(self, record: Mapping[str, Any], at: datetime) -> Firing | None:
        if not _is_call(record) or not self.decoys.matches(record):
            return None
        principal, secret = principal_of(record), secret_of(record)

        def explain() -> Explained:
            effect = effect_of(record) or "no decision"
            return Explained(
                f"canary {secret} touched by {principal} ({record.get('action')}, {effect})",
                (EventRef.of(record),),
                {"secret": secret, "effect": effect},
            )

        return Firing(f"principal {principal} secret {secret}", explain)


class _OffHours:
    def __init__(self, detector: OffHours) -> None:
        self.hours = detector.hours
        # Windows are whole minutes: one verdict serves every event of a minute.
        self._minute = -1
        self._inside = False

    def observe(self, record: Mapping[str, Any], at: datetime) -> Firing | None:
        if record.get("type") != "access":
            return None
        minute = int(at.timestamp()) // 60
        if minute != self._minute:
            self._minute = minute
            self._inside = any(w.holds_at(at) for w in self.hours.windows)
        if self._inside:
            return None
        principal = principal_of(record)

        def explain() -> Explained:
            local = at.astimezone(self.hours.windows[0].zone)
            return Explained(
                f"{principal} called at {local:%a %H:%M %Z}, outside "
                f"{'; '.join(w.text for w in self.hours.windows)}",
                (EventRef.of(record),),
                {"secret": secret_of(record), "local_time": local.isoformat()},
            )

        return Firing(f"principal {principal}", explain)


class _FirstSeen:
    def __init__(self, detector: FirstSeen) -> None:
        self.detector = detector
        self.last: OrderedDict[tuple[str, str], datetime] = OrderedDict()
        self.since: datetime | None = None  # the first event this detector saw

    def observe(self, record: Mapping[str, Any], at: datetime) -> Firing | None:
        if record.get("type") != "access":
            return None
        thing = self._thing(record)
        if thing is None:
            return None
        if self.since is None or at < self.since:
            self.since = at
        principal = principal_of(record)
        pair = (principal, thing)
        before = self.last.pop(pair, None)
        self.last[pair] = at
        if len(self.last) > MAX_LEARNED:
            self.last.popitem(last=False)
        learning = self.detector.learning
        if at - self.since < learning:
            return None  # still learning what is usual
        if before is not None and at - before <= learning:
            return None
        of = self.detector.of

        def explain() -> Explained:
            last_seen = before.isoformat() if before else None
            detail: dict[str, Any]
            if of in ("secret", "network"):
                used, detail = f"used {of} {thing}", {of: thing}
            elif of == "country":
                used, detail = f"called from country {thing}", {of: thing}
            else:
                owner = geo_of(record).get("as_org")
                named = f" ({owner})" if type(owner) is str else ""
                used, detail = f"called from AS{thing}{named}", {"asn": int(thing)}
                if named:
                    detail["as_org"] = owner
            return Explained(
                f"{principal} {used}, not seen for it in {_span(learning)}",
                (EventRef.of(record),),
                {**detail, "last_seen": last_seen},
            )

        return Firing(f"principal {principal} {of} {thing}", explain)

    def _thing(self, record: Mapping[str, Any]) -> str | None:
        of = self.detector.of
        if of == "secret":
            return secret_of(record)
        if of == "country":
            return country_of(record)
        if of == "asn":
            asn = asn_of(record)
            return str(asn) if asn is not None else None
        source = _part(record, "request", "source_ip")
        ip = parse_ip(source) if source else None
        if ip is None:
            return None
        prefix = self.detector.prefix_v4 if ip.version == 4 else self.detector.prefix_v6
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class _UnusualSource:
    def __init__(self, detector: UnusualSource) -> None:
        self.networks = [
            (EventFilter(principals=frozenset({pattern})), networks)
            for pattern, networks in detector.networks
        ]
        self.countries = [
            (EventFilter(principals=frozenset({pattern})), codes)
            for pattern, codes in detector.countries
        ]

    def observe(self, record: Mapping[str, Any], at: datetime) -> Firing | None:
        if not _is_call(record):
            return None
        networks = next((n for glob, n in self.networks if glob.matches(record)), None)
        countries = next((c for glob, c in self.countries if glob.matches(record)), None)
        if networks is None and countries is None:
            return None
        source = _part(record, "request", "source_ip")
        off_network = False
        if networks is not None:
            ip = parse_ip(source) if source else None
            off_network = ip is None or not any(ip in net for net in networks)
        # A call GeoIP did not place is not judged by country.
        country = country_of(record) if countries is not None else None
        abroad = countries is not None and country is not None and country not in countries
        if not off_network and not abroad:
            return None
        principal = principal_of(record)

        def explain() -> Explained:
            where = source or "(unknown)"
            if country is not None:
                where = f"{where} ({country})"
            outside = []
            if off_network and networks is not None:
                outside.append(", ".join(str(n) for n in networks))
            if abroad and countries is not None:
                outside.append(", ".join(sorted(countries)))
            detail: dict[str, Any] = {"source_ip": source}
            if country is not None:
                detail["country"] = country
            return Explained(
                f"{principal} called from {where}, outside {' and '.join(outside)}",
                (EventRef.of(record),),
                detail,
            )

        # One key per address off the networks, one per country abroad: repeats of either
        # are suppressed together.
        key = f"source {source}" if off_network else f"country {country}"
        return Firing(f"principal {principal} {key}", explain)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
