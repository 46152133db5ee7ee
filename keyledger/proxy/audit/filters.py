"""Which audit events a reader wants: one filter for ``audit tail/export/report`` and the stream.

An :class:`EventFilter` is built once -- from command-line options
(:func:`add_filter_arguments`, :func:`filter_from_args`) or from the admin stream's query
string (:func:`filter_from_query`) -- and then asked about every record, so
:meth:`EventFilter.matches` does no parsing: globs are compiled to one regex per kind and
times are compared as the journal's fixed-width UTC strings.

Within a kind the values are alternatives (``--action read --action list``: either);
across kinds all must hold. An event without the field asked about does not match (a
lifecycle event has no secret, so ``--secret`` leaves it out).
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from keyledger.model import Action
from keyledger.proxy.audit.events import EventType, format_time

__all__ = [
    "ACTIONS",
    "EFFECTS",
    "QUERY_PARAMETERS",
    "TYPES",
    "EventFilter",
    "add_filter_arguments",
    "effect_of",
    "filter_from_args",
    "filter_from_query",
    "parse_time",
]

ACTIONS = tuple(a.value for a in Action)
EFFECTS = ("allow", "deny")
TYPES = tuple(t.value for t in EventType)
# The stream's query parameters this module reads; the handler owns any others.
QUERY_PARAMETERS = frozenset(
    {"principal", "secret", "action", "effect", "protocol", "type", "since", "until"}
)

_AGE = re.compile(r"^(\d{1,9})\s*([smhdw])$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TIME_HELP = "an RFC 3339 time (2026-11-23T10:00:00Z), a date (2026-11-23) or an age (15m, 2h, 7d)"


def effect_of(record: Mapping[str, Any]) -> str | None:
    """The policy effect an event records: its decision's, and ``deny`` for failed sign-ins.

    ``None`` when nothing was decided (a lifecycle event, a request that could not be read).
    """
    decision = record.get("decision")
    if _is_mapping(decision):
        effect = decision.get("effect")
        if type(effect) is str:
            return effect
    if record.get("type") == EventType.AUTH_FAILURE:
        return "deny"
    return None


def _field(record: Mapping[str, Any], part: str, key: str) -> str | None:
    value = record.get(part)
    if _is_mapping(value):
        found = value.get(key)
        if type(found) is str:
            return found
    return None


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # A parsed line's objects are dicts: the plain type check first spares the ABC's
    # (a replay of a million events asks several times per event).
    return type(value) is dict or isinstance(value, Mapping)


def _globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for all patterns; fnmatch semantics, case-sensitive, ``*`` crosses ``/``."""
    parts = sorted(set(patterns))
    if not parts:
        return None
    return re.compile("|".join(fnmatch.translate(p) for p in parts))


def _check_choices(kind: str, values: frozenset[str], allowed: tuple[str, ...]) -> None:
    for value in sorted(values):
        if value not in allowed:
            raise ValueError(_not_one_of(kind, value, allowed))


def _not_one_of(kind: str, value: str, allowed: tuple[str, ...]) -> str:
    message = f"unknown {kind} {value!r}: use one of {', '.join(allowed)}"
    close = difflib.get_close_matches(value, allowed, n=1)
    return f"{message} (did you mean {close[0]!r}?)" if close else message


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which events to keep; the default (empty) filter keeps every event.

    ``principals`` and ``secrets`` are shell-style globs (``svc-*``, ``prod/*``; ``*``
    crosses ``/``, matching is case-sensitive). A secret pattern is tried against the
    secret's name and against ``backend:name`` (``aws:prod/*``), as policies write it.
    ``since`` is inclusive and ``until`` exclusive, so consecutive windows never overlap.
    """

    principals: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    effects: frozenset[str] = frozenset()
    protocols: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()  # the caller is in one of these (names, not globs)
    auth_methods: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    # Decided once, here, so that matches() only compares.
    _principal_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _secret_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _since: str | None = field(init=False, repr=False, compare=False)
    _until: str | None = field(init=False, repr=False, compare=False)
    _everything: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "principals",
            "secrets",
            "actions",
            "effects",
            "protocols",
            "types",
            "groups",
            "auth_methods",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"EventFilter.{name} takes a set of strings, not one string")
            object.__setattr__(self, name, frozenset(value))
        _check_choices("action", self.actions, ACTIONS)
        _check_choices("effect", self.effects, EFFECTS)
        _check_choices("event type", self.types, TYPES)
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"EventFilter.{name} must be an aware datetime, got {moment}")
        object.__setattr__(self, "_principal_re", _globs(self.principals))
        object.__setattr__(self, "_secret_re", _globs(self.secrets))
        object.__setattr__(self, "_since", format_time(self.since) if self.since else None)
        object.__setattr__(self, "_until", format_time(self.until) if self.until else None)
        object.__setattr__(
            self,
            "_everything",
            not (
                self.principals
                or self.secrets
                or self.actions
                or self.effects
                or self.protocols
                or self.types
                or self.groups
                or self.auth_methods
                or self.since
                or self.until
            ),
        )

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` (one parsed journal line) passes every condition."""
        if self._everything:
            return True
        if self.types:
            kind = record.get("type")
            if not isinstance(kind, str) or kind not in self.types:
                return False
        if self._since is not None or self._until is not None:
            # Fixed-width UTC strings ("2026-11-23T21:55:01.123456Z") sort as times do.
            time = record.get("time")
            if not isinstance(time, str):
                return False
            if self._since is not None and time < self._since:
                return False
            if self._until is not None and time >= self._until:
                return False
        if self.actions:
            action = record.get("action")
            if not isinstance(action, str) or action not in self.actions:
                return False
        if self.effects and effect_of(record) not in self.effects:
            return False
        if self.protocols and _field(record, "request", "protocol") not in self.protocols:
            return False
        if self.auth_methods and _field(record, "principal", "auth_method") not in (
            self.auth_methods
        ):
            return False
        if self.groups:
            principal = record.get("principal")
            groups = principal.get("groups") if isinstance(principal, Mapping) else None
            if not isinstance(groups, list) or not any(
                isinstance(g, str) and g in self.groups for g in groups
            ):
                return False
        if self._principal_re is not None:
            principal = _field(record, "principal", "id")
            if principal is None or self._principal_re.match(principal) is None:
                return False
        if self._secret_re is not None:
            secret = _field(record, "resource", "secret")
            if secret is None:
                return False
            if self._secret_re.match(secret) is None:
                backend = _field(record, "resource", "backend")
                if backend is None or self._secret_re.match(f"{backend}:{secret}") is None:
                    return False
        return True


def parse_time(text: str, now: datetime) -> datetime:
    """An aware datetime from a time, a date or an age (``90s``, ``15m``, ``2h``, ``7d``).

    Accepts RFC 3339 / ISO 8601 (``2026-11-23T10:00:00Z``, ``2026-11-23T10:00+02:00``,
    ``2026-11-23``; no offset means UTC), ``now``, and an age meaning that long before
    ``now`` (``s``, ``m``, ``h``, ``d``, ``w``).
    """
    if now.utcoffset() is None:
        now = now.replace(tzinfo=UTC)
    cleaned = text.strip()
    if not cleaned:
        raise ValueError(f"an empty time: use {_TIME_HELP}")
    if cleaned.lower() == "now":
        return now
    age = _AGE.match(cleaned.lower())
    if age is not None:
        amount, unit = int(age[1]), age[2]
        try:
            return now - timedelta(**{_AGE_UNITS[unit]: amount})
        except OverflowError:
            raise ValueError(f"{text!r} is further back than any time can be") from None
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use {_TIME_HELP}") from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


# -- command line -----------------------------------------------------------------------


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--principal``, ``--secret``, ``--action``, ``--effect``, ``--protocol``,
    ``--type``, ``--since`` and ``--until`` (read back by :func:`filter_from_args`)."""
    group = parser.add_argument_group(
        "which events",
        "Repeat an option for alternatives (--action read --action list); different "
        "options must all hold. Without any, every event is shown.",
    )
    group.add_argument(
        "--principal",
        action="append",
        metavar="ID",
        help="who made the call: an identity or a glob (svc-*)",
    )
    group.add_argument(
        "--secret",
        action="append",
        metavar="GLOB",
        help="a secret name or glob; '*' crosses '/' (prod/*, aws:prod/db/*)",
    )
    group.add_argument(
        "--action", action="append", choices=ACTIONS, help="what the call did to the secret"
    )
    group.add_argument(
        "--effect",
        action="append",
        choices=EFFECTS,
        help="what policy decided; failed sign-ins count as deny",
    )
    group.add_argument(
        "--protocol",
        action="append",
        metavar="NAME",
        help="the wire protocol the call came in on (aws-json, ...)",
    )
    group.add_argument(
        "--type", action="append", choices=TYPES, help="the kind of event (default: all kinds)"
    )
    group.add_argument(
        "--since", metavar="TIME", help=f"events at or after TIME: {_TIME_HELP}; UTC unless given"
    )
    group.add_argument("--until", metavar="TIME", help="events before TIME (same forms as --since)")


def filter_from_args(args: argparse.Namespace, now: datetime) -> EventFilter:
    """The filter the options of :func:`add_filter_arguments` ask for.

    Raises ValueError naming the option (``--since: ...``) for the caller to report, e.g.
    with ``parser.error``.
    """
    values: dict[str, list[str]] = {
        name: list(getattr(args, name, None) or [])
        for name in ("principal", "secret", "action", "effect", "protocol", "type")
    }
    times = {name: getattr(args, name, None) for name in ("since", "until")}
    return _build(values, times, now, label="--{}")


# -- HTTP stream ------------------------------------------------------------------------


def filter_from_query(query: Mapping[str, str], now: datetime) -> EventFilter:
    """The filter a stream request's query string asks for.

    ``query`` is a plain mapping or a multidict (aiohttp's ``request.query``); a parameter
    may be repeated (``?action=read&action=list``) or list values separated by commas
    (``?action=read,list``). Other parameters are ignored (see ``QUERY_PARAMETERS``).
    Raises ValueError naming the bad parameter.
    """
    values = {
        name: _query_values(query, name)
        for name in ("principal", "secret", "action", "effect", "protocol", "type")
    }
    times: dict[str, str | None] = {}
    for name in ("since", "until"):
        given = _query_values(query, name)
        if len(given) > 1:
            raise ValueError(f"query parameter {name!r}: give one time, not {len(given)}")
        times[name] = given[0] if given else None
    return _build(values, times, now, label="query parameter {!r}")


def _query_values(query: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(query, "getall", None)
    if getall is not None:
        raw: list[str] = list(getall(name, []))
    else:
        raw = [query[name]] if name in query else []
    return [part.strip() for value in raw for part in value.split(",") if part.strip()]


def _build(
    values: Mapping[str, list[str]],
    times: Mapping[str, str | None],
    now: datetime,
    *,
    label: str,
) -> EventFilter:
    closed = {"action": ("action", ACTIONS), "effect": ("effect", EFFECTS), "type": ("type", TYPES)}
    for name, (kind, allowed) in closed.items():
        for value in values[name]:
            if value not in allowed:
                raise ValueError(f"{label.format(name)}: {_not_one_of(kind, value, allowed)}")
    moments: dict[str, datetime | None] = {}
    for name, text in times.items():
        try:
            moments[name] = parse_time(text, now) if text is not None else None
        except ValueError as exc:
            raise ValueError(f"{label.format(name)}: {exc}") from None
    since, until = moments["since"], moments["until"]
    if since is not None and until is not None and since > until:
        raise ValueError(
            f"{label.format('since')} ({format_time(since)}) is after "
            f"{label.format('until')} ({format_time(until)}): no event can match"
        )
    return EventFilter(
        principals=frozenset(values["principal"]),
        secrets=frozenset(values["secret"]),
        actions=frozenset(values["action"]),
        effects=frozenset(values["effect"]),
        protocols=frozenset(values["protocol"]),
        types=frozenset(values["type"]),
        since=since,
        until=until,
    )
