"""Rule cases kept next to the alert rules, run by ``keyledger alerts test``: events in,
expected alerts out.

A case file is YAML with ``test`` in its name (``demo_test.yaml``), beside the rule files
(which are the folder's other ``*.yaml``)::

    start: "2026-03-02T10:00:00Z"      # when each case starts (default: this Monday 10:00 UTC)
    defaults:                          # what every event says unless it says otherwise
      principal: demo-app
    cases:
      - name: five denials within a minute are a burst
        start: "2026-03-02T10:00:00Z"  # optional, this case's own start
        defaults: {effect: deny}       # optional, this case's own defaults
        events:
          - {at: +0s, secret: "aws:prod/payments/key"}
          - {at: +10s, repeat: 4, every: 5s}   # four events: +10s, +15s, +20s, +25s
        expect:
          - rule: demo-app-denied-repeatedly
            key: principal demo-app
            events: [0, 1, 2, 3, 4]    # optional: the triggering events, by index (0 first)
            suppressed: 0              # optional: repeats held back before it
      - name: a single denial is not
        events: [{effect: deny}]
        expect: []                     # silence

An event's keys, each with its default: ``at`` (``+30s``, ``+1h30m``: after the case's
start; or a time, ``2026-03-07T12:00:00Z``; default: the moment of the event before, or
the start), ``type`` (``access``, or ``auth_failure`` for a failed sign-in), ``principal``
(``test-app``; ``null``: a failed sign-in nobody was recognised for), ``groups`` (none),
``attributes`` (none), ``auth_method`` (``sigv4``), ``secret`` (``aws:app/secret``,
``backend:name``), ``action`` (``read``), ``effect`` (``allow``), ``source_ip``
(``10.0.0.5``), ``country``, ``asn`` and ``as_org`` (none: where GeoIP placed the caller,
``request.geo``), ``protocol`` (by the backend, as ``policy test`` has it), and ``repeat`` /
``every`` to write one event several times. A failed sign-in has no action, no decision
(it counts as a denial) and, unless the event names one, no secret. Events are built as the
journal writes them (sealed onto a chain of their own), and must not go back in time:
a journal is replayed oldest first.

Each case runs through a fresh :class:`~keyledger.alerts.engine.AlertEngine` holding every
rule loaded, so ``expect`` lists every alert the events raise, in the order they fire.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from keyledger._yaml import YamlError, did_you_mean, load_located, where, where_key
from keyledger.alerts.engine import AlertEngine
from keyledger.alerts.model import Alert
from keyledger.alerts.rules import AlertRuleError, AlertRules, parse_duration, rule_files
from keyledger.model import Action
from keyledger.policies.loader import Reader, is_policy_test_file
from keyledger.policies.testing import (
    default_protocol,
    parse_moment,
    parse_secret,
    request_attributes,
)
from keyledger.proxy.audit.chain import ChainState, seal
from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    GeoInfo,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    ResourceInfo,
    Status,
)
from keyledger.proxy.audit.filters import ACTIONS, EFFECTS

__all__ = [
    "DEFAULT_START",
    "AlertCase",
    "CaseResult",
    "ExpectedAlert",
    "is_case_file",
    "load_cases",
    "misnamed_rule_files",
    "run_cases",
    "split_paths",
]

DEFAULT_START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, in working hours
CHAIN = "case"  # the chain a case's events are sealed onto

_FILE_KEYS = ("start", "defaults", "cases")
_CASE_KEYS = ("name", "start", "defaults", "events", "expect")
_FIELD_KEYS = (
    "type",
    "principal",
    "groups",
    "attributes",
    "auth_method",
    "secret",
    "action",
    "effect",
    "source_ip",
    "country",
    "asn",
    "as_org",
    "protocol",
)
_EVENT_KEYS = ("at", *_FIELD_KEYS, "repeat", "every")
_EXPECT_KEYS = ("rule", "key", "events", "suppressed")
_TYPES = (EventType.ACCESS.value, EventType.AUTH_FAILURE.value)
_DEFAULTS: dict[str, Any] = {
    "type": "access",
    "principal": "test-app",
    "groups": (),
    "attributes": {},
    "auth_method": "sigv4",
    "secret": "aws:app/secret",
    "action": "read",
    "effect": "allow",
    "source_ip": "10.0.0.5",
}
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_OFFSET = re.compile(r"^\+((?:[0-9]{1,7}[smhdw])+)$")
_OFFSET_PART = re.compile(r"([0-9]{1,7})([smhdw])")
_MAX_REPEAT = 10_000


# -- what a case is -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectedAlert:
    rule: str
    key: str
    events: tuple[int, ...] | None = None  # the triggering events' indexes, when checked
    suppressed: int | None = None  # when checked
    where: str = ""  # file:line:col of the expectation

    def text(self) -> str:
        parts = [self.rule, self.key]
        if self.events is not None:
            parts.append(f"events {list(self.events)}")
        if self.suppressed is not None:
            parts.append(f"suppressed {self.suppressed}")
        return "  ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertCase:
    name: str
    where: str  # file:line:col of the case
    start: datetime
    records: tuple[dict[str, Any], ...]  # the events, as the journal holds them
    expect: tuple[ExpectedAlert, ...]

    def index_of(self, event_id: str) -> int | None:
        for index, record in enumerate(self.records):
            if record["id"] == event_id:
                return index
        return None

    def describe(self, alert: Alert) -> str:
        """One fired alert in the terms a case is written in: indexes and offsets."""
        indexes = [self.index_of(ref.id) for ref in alert.events]
        return (
            f"{alert.rule}  {alert.key}  events {indexes}  suppressed {alert.suppressed}  "
            f"at {_offset_text(alert.time - self.start)}"
        )

    def check(self, fired: Sequence[Alert], known_rules: Iterable[str]) -> str | None:
        """None when ``fired`` is what the case expects, else what went wrong (lines)."""
        known = list(known_rules)
        for expected in self.expect:
            if expected.rule not in known:
                return (
                    f"{expected.where}: no rule {expected.rule!r} among the rules loaded"
                    f"{did_you_mean(expected.rule, known)}"
                )
        wrong = _first_difference(self, self.expect, fired)
        if wrong is None:
            return None
        lines = [wrong, "expected:"]
        lines += [f"  {e.text()}" for e in self.expect] or ["  (no alert)"]
        lines.append("fired:")
        lines += [f"  {self.describe(a)}" for a in fired] or ["  (no alert)"]
        return "\n".join(lines)


def _first_difference(
    case: AlertCase, expect: Sequence[ExpectedAlert], fired: Sequence[Alert]
) -> str | None:
    for number, (wanted, alert) in enumerate(zip(expect, fired, strict=False), 1):
        if (wanted.rule, wanted.key) != (alert.rule, alert.key):
            return (
                f"alert {number}: expected {wanted.rule} for {wanted.key!r}, "
                f"{alert.rule} fired for {alert.key!r}"
            )
        indexes = tuple(case.index_of(ref.id) for ref in alert.events)
        if wanted.events is not None and wanted.events != indexes:
            return (
                f"alert {number} ({alert.rule}): expected events {list(wanted.events)}, "
                f"it names {list(indexes)}"
            )
        if wanted.suppressed is not None and wanted.suppressed != alert.suppressed:
            return (
                f"alert {number} ({alert.rule}): expected suppressed {wanted.suppressed}, "
                f"got {alert.suppressed}"
            )
    if len(expect) != len(fired):
        return f"expected {len(expect)} alert(s), {len(fired)} fired"
    return None


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: AlertCase
    fired: tuple[Alert, ...]
    failure: str | None

    @property
    def passed(self) -> bool:
        return self.failure is None


def run_cases(rules: AlertRules, cases: Sequence[AlertCase]) -> list[CaseResult]:
    """Each case through a fresh engine holding every rule."""
    known = [rule.id for rule in rules]
    results = []
    for case in cases:
        engine = AlertEngine(rules)
        fired = tuple(alert for record in case.records for alert in engine.feed(record))
        results.append(CaseResult(case, fired, case.check(fired, known)))
    return results


# -- which files ------------------------------------------------------------------------------


def is_case_file(path: Path) -> bool:
    """A case file: ``test`` as a word in its name (``demo_test.yaml``, not
    ``latest.yaml``), as policy test files are told apart."""
    return is_policy_test_file(path)


def split_paths(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """The rule files and the case files that ``paths`` name: a folder's ``*.yaml`` are
    cases when ``test`` is in their name, rules otherwise; a file named is a case file
    when ``test`` is in its name."""
    paths = list(paths)
    cases: list[Path] = []
    for path in paths:
        if path.is_dir():
            cases.extend(p for p in sorted(path.glob("*.y*ml")) if is_case_file(p) and p.is_file())
        elif is_case_file(path):
            cases.append(path)
    rules = rule_files(p for p in paths if p.is_dir() or not is_case_file(p))
    return rules, cases


def misnamed_rule_files(paths: Iterable[Path]) -> list[str]:
    """Case files (by name) in the folders named that hold ``rules:``: left out of the rules
    by their name, their rules would go unloaded without a word."""
    problems = []
    for folder in (p for p in paths if p.is_dir()):
        for path in sorted(folder.glob("*.y*ml")):
            if not is_case_file(path) or not path.is_file():
                continue
            try:
                doc = load_located(path)
            except (YamlError, OSError, UnicodeDecodeError):
                continue  # not rules, whatever it is; `alerts test` reports it
            if isinstance(doc, dict) and "rules" in doc:
                problems.append(
                    f"{where_key(doc, 'rules')}: named as a rule case file ('test' in its "
                    "name), so its rules are not loaded: rename it"
                )
    return problems


# -- reading case files -----------------------------------------------------------------------


def load_cases(paths: Sequence[Path]) -> list[AlertCase]:
    """Every case in the files; raise :class:`AlertRuleError` listing every problem."""
    reader = Reader()
    cases: list[AlertCase] = []
    for path in paths:
        try:
            doc = load_located(path)
        except (YamlError, OSError, UnicodeDecodeError) as exc:
            if isinstance(exc, YamlError):
                reader.problems.append(str(exc))
            else:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                reader.problems.append(f"{path}: cannot read rule cases: {reason}")
            continue
        cases.extend(_read_file(reader, path, doc))
    if reader.problems:
        raise AlertRuleError(reader.problems)
    return cases


def _read_file(reader: Reader, path: Path, doc: Any) -> list[AlertCase]:
    if not isinstance(doc, dict) or "cases" not in doc:
        hint = ""
        if isinstance(doc, dict) and "tests" in doc:
            hint = " (tests: is how a policy test file lists its cases)"
        if isinstance(doc, dict) and "rules" in doc:
            hint = " (this file holds rules: rename it, 'test' in the name marks case files)"
        reader.problems.append(f"{path}:1:1: a rule case file needs cases: [list of cases]{hint}")
        return []
    reader.keys(doc, _FILE_KEYS, "a rule case file")
    start = _read_start(reader, doc, DEFAULT_START)
    defaults = _read_defaults(reader, doc)
    items = doc["cases"]
    if not isinstance(items, list):
        reader.fail(doc, "cases", "cases must be a list of cases")
        return []
    found = []
    for index, item in enumerate(items):
        case = _read_case(reader, item, where(items, index), start, defaults)
        if case is not None:
            found.append(case)
    return found


def _read_start(reader: Reader, block: Any, default: datetime | None) -> datetime | None:
    if "start" not in block:
        return default
    try:
        return parse_moment(block["start"])
    except ValueError:
        reader.fail(
            block, "start", f"start is a time like 2026-03-02T10:00:00Z, not {block['start']!r}"
        )
        return None


def _read_defaults(reader: Reader, block: Any) -> dict[str, Any] | None:
    if "defaults" not in block:
        return {}
    defaults = block["defaults"]
    if not reader.keys(defaults, _FIELD_KEYS, "defaults", where(block, "defaults")):
        return None
    return _read_fields(reader, defaults)


def _read_case(
    reader: Reader,
    item: Any,
    at: str,
    file_start: datetime | None,
    file_defaults: dict[str, Any] | None,
) -> AlertCase | None:
    if not reader.keys(item, _CASE_KEYS, "a rule case", at):
        return None
    before = len(reader.problems)
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        if "name" in item:
            reader.fail(item, "name", "a case's name is text")
        else:
            reader.problems.append(f"{at}: a rule case needs a name")
    start = _read_start(reader, item, file_start)
    case_defaults = _read_defaults(reader, item)
    events = item.get("events")
    if not isinstance(events, list) or not events:
        where_ = where(item, "events") if "events" in item else at
        reader.problems.append(f"{where_}: a rule case needs events: [list of events]")
        events = []
    expect = item.get("expect")
    if not isinstance(expect, list):
        where_ = where(item, "expect") if "expect" in item else at
        reader.problems.append(
            f"{where_}: a rule case needs expect: [the alerts it raises], or expect: [] for none"
        )
        expect = []
    if start is None or file_defaults is None or case_defaults is None:
        return None
    defaults = {**_DEFAULTS, **file_defaults, **case_defaults}
    records = _read_events(reader, events, start, defaults)
    expected = [_read_expected(reader, e, where(expect, i), records) for i, e in enumerate(expect)]
    if len(reader.problems) > before or records is None:
        return None
    assert isinstance(name, str)
    return AlertCase(
        name=name,
        where=at,
        start=start,
        records=tuple(records),
        expect=tuple(e for e in expected if e is not None),
    )


def _read_events(
    reader: Reader, items: list[Any], start: datetime, defaults: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """The events, expanded (``repeat``) and sealed onto a chain, or None after a problem."""
    before = len(reader.problems)
    state = ChainState(CHAIN)
    records: list[dict[str, Any]] = []
    moment, previous = start, None
    for index, item in enumerate(items):
        if not reader.keys(item, _EVENT_KEYS, "an event", where(items, index)):
            continue
        given = _read_fields(reader, item)
        if "at" in item:
            moment = _read_at(reader, item, start) or moment
        if previous is not None and moment < previous:
            reader.fail(
                item,
                "at" if "at" in item else None,
                f"this event is earlier ({_offset_text(moment - start)}) than the one before "
                f"({_offset_text(previous - start)}): a journal is replayed oldest first",
            )
        repeat = _read_count(reader, item)
        every = parse_duration(item.get("every", "0s"))
        if every is None:
            reader.fail(item, "every", f"every is a duration like 10s or 1m, not {item['every']!r}")
            every = timedelta()
        times = [moment + n * every for n in range(repeat or 1)]
        previous = moment = times[-1]
        failed_sign_in = (given or {}).get("type", defaults["type"]) == EventType.AUTH_FAILURE
        if failed_sign_in:
            for key in ("action", "effect"):
                if key in item:
                    reader.fail(
                        item,
                        key,
                        f"a failed sign-in has no {key}: it is refused before policy (and "
                        "counts as a denial)",
                    )
        if given is None or repeat is None or len(reader.problems) > before:
            continue
        if failed_sign_in:
            # What policy would have said, and the secret, are not a failed sign-in's.
            fields = {k: v for k, v in defaults.items() if k not in ("action", "effect", "secret")}
        else:
            fields = dict(defaults)
        fields.update(given)
        for time in times:
            event = _event(fields, time, len(records))
            line, state = seal(event.to_record(), state)
            records.append(orjson.loads(line))
    return None if len(reader.problems) > before else records


def _read_fields(reader: Reader, block: Any) -> dict[str, Any] | None:
    """The event fields ``block`` sets, checked; None after a problem."""
    before = len(reader.problems)
    out: dict[str, Any] = {}
    for key in ("type", "action", "effect"):
        if key not in block:
            continue
        allowed = {"type": _TYPES, "action": ACTIONS, "effect": EFFECTS}[key]
        value = block[key]
        if value not in allowed:
            text = str(value)
            reader.fail(
                block,
                key,
                f"unknown {key} {text!r}{did_you_mean(text, allowed)}; one of {', '.join(allowed)}",
            )
        out[key] = value
    for key in ("auth_method", "protocol"):
        if key in block:
            if not isinstance(block[key], str) or not block[key]:
                reader.fail(block, key, f"{key} is text (sigv4, aws-json, ...)")
            out[key] = block[key]
    if "principal" in block:
        if not isinstance(block["principal"], str | None):
            reader.fail(block, "principal", "principal is an id, or null for nobody recognised")
        out["principal"] = block["principal"]
    if "groups" in block:
        out["groups"] = tuple(reader.str_list(block, "groups", "an event"))
    if "attributes" in block:
        attributes = block["attributes"]
        if not isinstance(attributes, dict) or not all(
            isinstance(v, str) for v in attributes.values()
        ):
            reader.fail(block, "attributes", "attributes map names to text (claims, key ids)")
        else:
            out["attributes"] = dict(attributes)
    if "secret" in block:
        try:
            out["secret"] = str(parse_secret(str(block["secret"])))
        except ValueError as exc:
            reader.fail(block, "secret", str(exc))
    if "source_ip" in block:
        source = block["source_ip"]
        try:
            if source is not None:
                ipaddress.ip_address(str(source))
            out["source_ip"] = None if source is None else str(source)
        except ValueError:
            reader.fail(block, "source_ip", f"source_ip is an IP address, not {source!r}")
    if "country" in block:
        country = block["country"]
        if country is not None and not (isinstance(country, str) and _COUNTRY.fullmatch(country)):
            reader.fail(block, "country", f"country is a code like DE or US, not {country!r}")
        out["country"] = country
    if "asn" in block:
        asn = block["asn"]
        if asn is not None and (type(asn) is not int or asn < 0):
            reader.fail(block, "asn", f"asn is a network owner's number (3320), not {asn!r}")
        out["asn"] = asn
    if "as_org" in block:
        if not isinstance(block["as_org"], str | None):
            reader.fail(block, "as_org", "as_org is the network owner's name")
        out["as_org"] = block["as_org"]
    return None if len(reader.problems) > before else out


def _read_at(reader: Reader, item: Any, start: datetime) -> datetime | None:
    raw = item["at"]
    match = _OFFSET.fullmatch(raw) if isinstance(raw, str) else None
    if match is not None:
        return start + sum(
            (parse_duration(f"{n}{unit}") or timedelta() for n, unit in _OFFSET_PART.findall(raw)),
            timedelta(),
        )
    try:
        return parse_moment(raw)
    except (ValueError, TypeError):
        reader.fail(
            item,
            "at",
            f"at is an offset from the case's start (+30s, +1h30m) or a time "
            f"(2026-03-07T12:00:00Z), not {raw!r}",
        )
        return None


def _read_count(reader: Reader, item: Any) -> int | None:
    repeat = item.get("repeat", 1)
    if type(repeat) is not int or not 1 <= repeat <= _MAX_REPEAT:
        reader.fail(item, "repeat", f"repeat is a whole number from 1 to {_MAX_REPEAT}")
        return None
    return repeat


def _event(fields: Mapping[str, Any], time: datetime, index: int) -> AuditEvent:
    """One event as the proxy records it."""
    secret = parse_secret(fields["secret"]) if fields.get("secret") else None
    protocol = fields.get("protocol") or default_protocol(secret.backend if secret else "aws")
    failed = fields["type"] == EventType.AUTH_FAILURE
    action = Action(fields.get("action", "read"))
    operation = request_attributes(action, protocol=protocol).get("operation", action.value)
    request = RequestInfo(
        id=f"req-{index}",
        protocol=protocol,
        operation=operation,
        source_ip=fields["source_ip"],
        user_agent=None,
        geo=_geo(fields),
    )
    principal = PrincipalInfo(
        id=fields["principal"],
        auth_method=fields["auth_method"],
        groups=tuple(fields["groups"]),
        attributes=fields["attributes"],
    )
    resource = ResourceInfo(backend=secret.backend, secret=secret.name) if secret else None
    if failed:
        return AuditEvent(
            type=EventType.AUTH_FAILURE,
            time=time,
            id=f"ev{index}",
            request=request,
            principal=principal,
            resource=resource,
            outcome=Outcome(
                status=Status.DENIED,
                code="signature_mismatch" if fields["principal"] else "unknown_access_key",
            ),
        )
    allowed = fields["effect"] == "allow"
    return AuditEvent(
        type=EventType.ACCESS,
        time=time,
        id=f"ev{index}",
        request=request,
        principal=principal,
        action=action.value,
        resource=resource,
        decision=DecisionInfo(
            effect=fields["effect"], rule=None, policy_hash=None, reason="rule case"
        ),
        outcome=Outcome(status=Status.SUCCESS if allowed else Status.DENIED),
    )


def _geo(fields: Mapping[str, Any]) -> GeoInfo | None:
    """``request.geo`` as GeoIP would have recorded it; None when the event names none."""
    found = {key: fields.get(key) for key in ("country", "asn", "as_org")}
    return GeoInfo(**found) if any(v is not None for v in found.values()) else None


def _read_expected(
    reader: Reader, item: Any, at: str, records: list[dict[str, Any]] | None
) -> ExpectedAlert | None:
    if not reader.keys(item, _EXPECT_KEYS, "an expected alert", at):
        return None
    before = len(reader.problems)
    for key in ("rule", "key"):
        if not isinstance(item.get(key), str):
            what = "the rule's id" if key == "rule" else "what it is about (principal demo-app)"
            if key in item:
                reader.fail(item, key, f"{key} is text: {what}")
            else:
                reader.problems.append(f"{at}: an expected alert needs {key}: {what}")
    events = None
    if "events" in item:
        raw = item["events"]
        count = len(records) if records is not None else None
        if not isinstance(raw, list) or not all(type(i) is int and i >= 0 for i in raw):
            reader.fail(item, "events", "events are the indexes of the triggering events (0 first)")
        elif count is not None and any(i >= count for i in raw):
            reader.fail(
                item, "events", f"the case has {count} event(s): indexes go from 0 to {count - 1}"
            )
        else:
            events = tuple(raw)
    suppressed = item.get("suppressed")
    if "suppressed" in item and (type(suppressed) is not int or suppressed < 0):
        reader.fail(item, "suppressed", "suppressed is a count: 0 or more")
    if len(reader.problems) > before:
        return None
    return ExpectedAlert(
        rule=item["rule"], key=item["key"], events=events, suppressed=suppressed, where=at
    )


def _offset_text(delta: timedelta) -> str:
    """``+1h30m``, ``+0s``; a negative offset as ``-`` and the same."""
    sign = "-" if delta < timedelta() else "+"
    seconds = abs(delta.total_seconds())
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    fraction = seconds - int(seconds)
    if whole or fraction or not parts:
        parts.append(f"{whole + fraction:g}s")
    return sign + "".join(parts)
