"""Alert rules: YAML files the platform team keeps beside its policies, read with the same
``file:line:col`` errors.

A file::

    version: 1
    rules:
      - id: demo-app-denied-repeatedly
        severity: high                    # info, low, medium, high, critical
        description: demo-app keeps asking for what it may not read
        filter: {principal: [demo-app]}   # optional: which events the rule looks at
        suppress: 10m                     # repeats of one key held back this long (15m)
        deny_burst: {count: 5, window: 1m, by: principal}

Each rule has exactly one detector (the key after the common ones): ``deny_burst``,
``rate``, ``bulk_read``, ``canary``, ``off_hours``, ``first_seen`` or ``unusual_source``;
:mod:`keyledger.alerts.detectors` says what each does. The filter takes the keys of
``audit tail``'s options (principal and secret globs, action, effect, protocol) plus
``groups`` and ``auth_method``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from keyledger._yaml import did_you_mean, where
from keyledger.alerts.model import Severity
from keyledger.policies.conditions import TimeWindows
from keyledger.policies.loader import (
    Reader,
    is_policy_test_file,
    read_documents,
    read_networks,
    read_time_windows,
)
from keyledger.proxy.audit.filters import ACTIONS, EFFECTS, EventFilter

__all__ = [
    "DETECTORS",
    "AlertRuleError",
    "AlertRules",
    "BulkRead",
    "Canary",
    "Counting",
    "Detector",
    "FirstSeen",
    "OffHours",
    "Rule",
    "UnusualSource",
    "example_rules_dir",
    "load_alert_files",
    "parse_duration",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_DURATION = re.compile(r"^([0-9]{1,7})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TOP_KEYS = ("version", "rules")
_COMMON_KEYS = ("id", "severity", "description", "filter", "suppress")
_FILTER_KEYS = ("principal", "groups", "secret", "action", "effect", "protocol", "auth_method")
FIRST_SEEN_OF = ("secret", "network", "country", "asn")
# ISO 3166-1 alpha-2, as GeoIP databases and events write a country.
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class AlertRuleError(ValueError):
    """One or more problems, each ``file:line:col: reason``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


# -- detectors, as configured ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counting:
    """``deny_burst`` (denials and failed sign-ins) and ``rate`` (every call): at least
    ``count`` events (``rate``: more than) for one key within ``window``."""

    kind: str  # deny_burst | rate
    count: int
    window: timedelta
    by: str  # deny_burst: principal | source; rate: principal | secret


@dataclass(frozen=True, slots=True)
class BulkRead:
    """One principal reading at least ``count`` distinct secrets within ``window``."""

    count: int
    window: timedelta
    kind: str = "bulk_read"


@dataclass(frozen=True, slots=True)
class Canary:
    """Any call at all on a decoy secret (globs, ``backend:name`` as policies write)."""

    secrets: tuple[str, ...]
    kind: str = "canary"


@dataclass(frozen=True, slots=True)
class OffHours:
    """A call outside the working hours (policy time windows, in their time zones)."""

    hours: TimeWindows
    kind: str = "off_hours"


@dataclass(frozen=True, slots=True)
class FirstSeen:
    """A principal with something new: a secret (``of: secret``), a source network
    (``of: network``, /24 for IPv4 and /64 for IPv6 unless told), a source country
    (``of: country``) or network owner (``of: asn``) not seen in ``learning``. Silent until
    the detector has seen ``learning`` of history (from the journal at start), so a fresh
    start does not flag everything. Country and ASN come from the events' ``request.geo``
    (GeoIP): events without it are not looked at."""

    of: str  # secret | network | country | asn
    learning: timedelta
    prefix_v4: int = 24
    prefix_v6: int = 64
    kind: str = "first_seen"


@dataclass(frozen=True, slots=True)
class UnusualSource:
    """A call from outside the networks, or from another country than those, configured
    for its principal. In each table the first glob that matches the principal decides;
    principals no glob names are not judged by it, nor are calls without a country (no
    GeoIP, or an address it does not place) by the countries."""

    networks: tuple[tuple[str, tuple[Network, ...]], ...] = ()
    countries: tuple[tuple[str, frozenset[str]], ...] = ()
    kind: str = "unusual_source"


Detector = Counting | BulkRead | Canary | OffHours | FirstSeen | UnusualSource
DETECTORS = (
    "deny_burst",
    "rate",
    "bulk_read",
    "canary",
    "off_hours",
    "first_seen",
    "unusual_source",
)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: Severity
    detector: Detector
    filter: EventFilter
    suppress: timedelta
    description: str = ""
    source: str = ""  # file:line:col of the rule, for messages
    # What the rule says, hashed: a reload keeps a detector's state while this is the same.
    digest: str = ""


@dataclass(frozen=True, slots=True)
class AlertRules:
    rules: tuple[Rule, ...]
    files: tuple[str, ...] = ()
    hash: str = ""

    def __iter__(self) -> Any:
        return iter(self.rules)


# -- reading ------------------------------------------------------------------------------


def parse_duration(text: object) -> timedelta | None:
    """``90s``, ``10m``, ``2h``, ``14d``, ``2w``; None when it is not one."""
    match = _DURATION.fullmatch(str(text))
    if match is None:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def load_alert_files(paths: Sequence[Path]) -> AlertRules:
    """Load alert rule files; raise :class:`AlertRuleError` listing every problem."""
    reader = Reader()
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    digest = hashlib.sha256()
    for path, doc in read_documents(paths, reader, digest, "alert rule file"):
        if not reader.keys(doc, _TOP_KEYS, "an alert rule file", f"{path}:1:1"):
            continue
        if type(doc.get("version", 1)) is not int or doc.get("version", 1) != 1:
            reader.fail(doc, "version", f"unsupported alert rule version {doc['version']!r}; use 1")
        items = doc.get("rules", [])
        if not isinstance(items, list):
            reader.fail(doc, "rules", "rules must be a list of rules")
            continue
        for index, item in enumerate(items):
            rule = _read_rule(reader, item, where(items, index))
            if rule is None:
                continue
            if rule.id in seen:
                reader.fail(item, "id", f"duplicate rule id {rule.id!r} (first at {seen[rule.id]})")
                continue
            seen[rule.id] = rule.source
            rules.append(rule)
    if reader.problems:
        raise AlertRuleError(reader.problems)
    return AlertRules(
        rules=tuple(rules),
        files=tuple(str(p) for p in paths),
        hash="sha256:" + digest.hexdigest(),
    )


def _read_rule(reader: Reader, item: Any, at: str) -> Rule | None:
    if not reader.keys(item, (*_COMMON_KEYS, *DETECTORS), "an alert rule", at):
        return None
    before = len(reader.problems)
    ident = item.get("id")
    if not isinstance(ident, str) or not _RULE_ID.fullmatch(ident):
        if "id" in item:
            reader.fail(item, "id", "a rule id is letters, digits, '.', '_' and '-'")
        else:
            reader.problems.append(f"{at}: an alert rule needs an id")
    severity = _read_severity(reader, item, at)
    suppress = parse_duration(item.get("suppress", "15m"))
    if suppress is None:
        reader.fail(item, "suppress", "suppress is a duration like 10m, 1h or 0s")
    event_filter = _read_filter(reader, item)
    named = [key for key in DETECTORS if key in item]
    detector = None
    if len(named) != 1:
        what = "none" if not named else " and ".join(named)
        reader.problems.append(
            f"{at}: an alert rule has exactly one detector ({', '.join(DETECTORS)}), not {what}"
        )
    else:
        detector = _read_detector(reader, item, named[0])
    if len(reader.problems) > before or detector is None or severity is None or suppress is None:
        return None
    assert isinstance(ident, str)
    description = item.get("description", "")
    if not isinstance(description, str):
        reader.fail(item, "description", "a rule's description is text")
        return None
    return Rule(
        id=ident,
        severity=severity,
        detector=detector,
        filter=event_filter,
        suppress=suppress,
        description=description,
        source=at,
        digest=hashlib.sha256(repr(sorted(_plain(item).items())).encode()).hexdigest(),
    )


def _plain(value: Any) -> Any:
    """A located YAML value as plain data, for hashing what a rule says."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read_severity(reader: Reader, item: Any, at: str) -> Severity | None:
    if "severity" not in item:
        reader.problems.append(f"{at}: an alert rule needs a severity")
        return None
    text = str(item["severity"])
    choices = [s.value for s in Severity]
    if text not in choices:
        reader.fail(
            item,
            "severity",
            f"unknown severity {text!r}{did_you_mean(text, choices)}; one of {', '.join(choices)}",
        )
        return None
    return Severity(text)


def _read_filter(reader: Reader, item: Any) -> EventFilter:
    block = item.get("filter")
    if block is None or not reader.keys(
        block, _FILTER_KEYS, "a rule's filter", where(item, "filter")
    ):
        return EventFilter()
    values = {key: reader.str_list(block, key, "filter") for key in _FILTER_KEYS}
    for key, allowed in (("action", ACTIONS), ("effect", EFFECTS)):
        for value in values[key]:
            if value not in allowed:
                reader.fail(
                    block,
                    key,
                    f"unknown {key} {value!r}{did_you_mean(value, allowed)}; one of "
                    f"{', '.join(allowed)}",
                )
                values[key] = []
    return EventFilter(
        principals=frozenset(values["principal"]),
        groups=frozenset(values["groups"]),
        secrets=frozenset(values["secret"]),
        actions=frozenset(values["action"]),
        effects=frozenset(values["effect"]),
        protocols=frozenset(values["protocol"]),
        auth_methods=frozenset(values["auth_method"]),
    )


def _read_detector(reader: Reader, item: Any, kind: str) -> Detector | None:
    block = item[kind]
    if kind == "canary":
        if not reader.keys(block, ("secrets",), "canary", where(item, kind)):
            return None
        secrets = reader.str_list(block, "secrets", "canary")
        if not secrets:
            reader.fail(block, "secrets", "canary needs the decoy secrets (aws:prod/decoy)")
            return None
        return Canary(tuple(secrets))
    if kind == "off_hours":
        if not reader.keys(block, ("hours",), "off_hours", where(item, kind)):
            return None
        if "hours" not in block:
            reader.fail(item, kind, "off_hours needs hours: the working-hours windows")
            return None
        hours = read_time_windows(reader, block, "hours")
        return OffHours(hours) if hours is not None else None
    if kind == "unusual_source":
        return _read_unusual_source(reader, item, block)
    if kind == "first_seen":
        keys = ("of", "learning", "prefix_v4", "prefix_v6")
        if not reader.keys(block, keys, "first_seen", where(item, kind)):
            return None
        of = str(block.get("of", "secret"))
        if of not in FIRST_SEEN_OF:
            reader.fail(
                block,
                "of",
                f"first_seen is of secret, network, country or asn, not {of!r}"
                f"{did_you_mean(of, FIRST_SEEN_OF)}",
            )
        learning = _duration(reader, block, "learning", "14d")
        prefixes = [
            _int(reader, block, name, default, 0, top)
            for name, default, top in (("prefix_v4", 24, 32), ("prefix_v6", 64, 128))
        ]
        if learning is None or None in prefixes or of not in FIRST_SEEN_OF:
            return None
        return FirstSeen(of, learning, int(prefixes[0] or 0), int(prefixes[1] or 0))
    # deny_burst, rate, bulk_read: a count within a window.
    ways = {"deny_burst": ("principal", "source"), "rate": ("principal", "secret")}
    keys = ("count", "window", *(("by",) if kind in ways else ()))
    if not reader.keys(block, keys, kind, where(item, kind)):
        return None
    count = _int(reader, block, "count", None, 1, 1_000_000)
    window = _duration(reader, block, "window", None)
    by = str(block.get("by", "principal"))
    if kind in ways and by not in ways[kind]:
        reader.fail(block, "by", f"{kind} counts by {' or '.join(ways[kind])}, not {by!r}")
        return None
    if count is None or window is None:
        return None
    if kind == "bulk_read":
        return BulkRead(count, window)
    return Counting(kind, count, window, by)


def _read_unusual_source(reader: Reader, item: Any, block: Any) -> UnusualSource | None:
    keys = ("networks", "countries")
    if not reader.keys(block, keys, "unusual_source", where(item, "unusual_source")):
        return None
    if not any(key in block for key in keys):
        reader.fail(
            item,
            "unusual_source",
            "unusual_source needs networks: {principal glob: [networks]}, countries: "
            "{principal glob: [countries]}, or both",
        )
        return None
    tables = {}
    for key, example in (("networks", "[networks]"), ("countries", "[DE, FR]")):
        table = block.get(key, {})
        if not isinstance(table, dict) or (key in block and not table):
            reader.fail(
                item, "unusual_source", f"unusual_source needs {key}: {{principal glob: {example}}}"
            )
            return None
        tables[key] = table
    networks: list[tuple[str, tuple[Network, ...]]] = []
    for pattern in tables["networks"]:
        found = read_networks(reader, tables["networks"], pattern, "unusual_source.networks")
        if found is not None:
            networks.append((str(pattern), found))
    countries: list[tuple[str, frozenset[str]]] = []
    for pattern in tables["countries"]:
        codes = _read_countries(reader, tables["countries"], pattern)
        if codes is not None:
            countries.append((str(pattern), codes))
    if len(networks) < len(tables["networks"]) or len(countries) < len(tables["countries"]):
        return None
    return UnusualSource(tuple(networks), tuple(countries))


def _read_countries(reader: Reader, table: Any, pattern: str) -> frozenset[str] | None:
    """``table[pattern]``: one country code or a list (``DE``, ``[DE, FR]``)."""
    before = len(reader.problems)
    codes = reader.str_list(table, pattern, "unusual_source.countries")
    if len(reader.problems) > before:
        return None
    if not codes:
        reader.fail(table, pattern, f"{pattern} needs at least one country (DE)")
        return None
    value = table[pattern]
    bad = False
    for index, code in enumerate(codes):
        if not _COUNTRY.fullmatch(code):
            at = where(value, index) if isinstance(value, list) else where(table, pattern)
            reader.problems.append(
                f"{at}: bad country {code!r}: a country is its ISO 3166-1 alpha-2 code, two "
                "upper-case letters (DE, US, GB)"
            )
            bad = True
    return None if bad else frozenset(codes)


def _duration(reader: Reader, block: Any, key: str, default: str | None) -> timedelta | None:
    if key not in block and default is not None:
        return parse_duration(default)
    if key not in block:
        reader.fail(block, None, f"{key} is required (a duration like 1m, 10m, 14d)")
        return None
    found = parse_duration(block[key])
    if found is None or found <= timedelta():
        reader.fail(block, key, f"{key} is a duration like 1m, 10m or 14d, not {block[key]!r}")
        return None
    return found


def _int(
    reader: Reader, block: Any, key: str, default: int | None, low: int, high: int
) -> int | None:
    value = block.get(key, default)
    if value is None:
        reader.fail(block, None, f"{key} is required (a whole number)")
        return None
    if type(value) is not int or not low <= value <= high:
        reader.fail(block, key, f"{key} is a whole number from {low} to {high}, not {value!r}")
        return None
    return value


def example_rules_dir(name: str = "demo") -> Path:
    """An example rule set shipped inside the package: ``demo`` is what ``serve --dev``
    loads."""
    return Path(__file__).with_name("examples") / name


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """The rule files ``paths`` name: files as given, folders' ``*.yaml`` but not those
    with ``test`` as a word in their name (rule cases live beside the rules)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p for p in sorted(path.glob("*.y*ml")) if not is_policy_test_file(p) and p.is_file()
            )
        else:
            found.append(path)
    return found
