"""Export audit events for other tools: JSON lines, CSV, ECS or OCSF, one event at a time.

``write_export(records, fmt, out)`` reads journal records (``keyledger.audit/v1`` objects,
see DESIGN.md) and writes them to ``out`` in one of ``FORMATS``; it never holds more than one
event, so an export of a year of journals runs in constant memory.

``jsonl``
    Each record re-serialised as given, ``chain`` included, so the export can be verified.
``csv``
    A header row, then one row per event with the columns ``CSV_COLUMNS``: dotted names of
    the event's fields, ``principal.groups`` joined with ``;``, empty cells for missing
    values. Cells that a spreadsheet would run as a formula get a leading apostrophe
    (``csv_safe``): secret names and user agents are chosen by callers. Open ``out`` with
    ``newline=""``, as for any ``csv`` writer.
``ecs``
    One Elastic Common Schema 8.17.0 document per line, nested objects.
``ocsf``
    One OCSF 1.1.0 API Activity event (``class_uid`` 6003) per line.

Where the field names come from (read when this module was written):

* ECS 8.17: the field reference at https://www.elastic.co/guide/en/ecs/8.17/ (``event``,
  ``user``, ``source``, ``user_agent``, ``http``, ``rule``, ``related``, ``error``,
  ``cloud``, ``service`` field sets), the allowed values pages ``ecs-allowed-values-event-*``
  (``event.category: api`` exists since ECS 8.7.0, elastic/ecs#2147), the categorisation
  guide ``ecs-using-the-categorization-fields``, and ``schemas/*.yml`` in
  github.com/elastic/ecs.
* OCSF 1.1.0: https://schema.ocsf.io/1.1.0/classes/api_activity, and in
  github.com/ocsf/ocsf-schema ``events/application/api_activity.json``, ``categories.json``
  and ``objects/`` (``api``, ``request``, ``metadata``, ``product``, ``user``, ``group``,
  ``actor``, ``authorization``, ``policy``, ``network_endpoint``, ``http_request``,
  ``resource_details``); the 1.1.0 attribute set was cross-checked against a generated 1.1.0
  model (Synqly go-sdk ``ocsf/v110/apiactivity``).

Mapping choices:

* Both formats keep the event's own sections unchanged under ``keyledger`` (ECS
  ``keyledger.*``, OCSF ``unmapped.keyledger``): chain, resource, decision (with the policy
  hash), outcome (with the value fingerprint), detail. Nothing is lost in translation.
* ``source.ip`` / ``src_endpoint.ip`` are set only for a real IP address; a pseudonymised or
  truncated address stays in ``keyledger.request.source_ip`` alone.
* GeoIP's ``request.geo`` goes to ECS ``source.geo.country_iso_code``, ``source.as.number``
  and ``source.as.organization.name``, and to OCSF ``src_endpoint.location.country`` (1.1's
  endpoint has no autonomous system); it is kept under ``keyledger`` too, and set whatever
  became of the address.
* ECS ``event.outcome`` is the caller's point of view: an access denied by policy is a
  ``failure`` (as the ECS example "file access attempted but not successful"), and
  ``event.type`` says ``allowed`` or ``denied``. A pending change is ``unknown``.
* OCSF activities: read, describe, list -> 2 Read; write, rotate -> 3 Update; delete ->
  4 Delete; no action (a failed authentication) -> 0 Unknown; lifecycle, policy_reload,
  checkpoint and alert events -> 99 Other, with our type as ``activity_name``. Status:
  success -> 1 Success; denied, error -> 2 Failure; pending -> 99 Other ("Pending").
"""

from __future__ import annotations

import csv
import difflib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, TextIO

import orjson

from keyledger.proxy.audit.events import parse_time
from keyledger.proxy.audit.render import sanitize

__all__ = [
    "CSV_COLUMNS",
    "ECS_VERSION",
    "FORMATS",
    "OCSF_VERSION",
    "csv_safe",
    "to_ecs",
    "to_ocsf",
    "write_export",
]

FORMATS = ("jsonl", "csv", "ecs", "ocsf")
ECS_VERSION = "8.17.0"
OCSF_VERSION = "1.1.0"

CSV_COLUMNS = (
    "time",
    "id",
    "type",
    "chain.id",
    "chain.seq",
    "request.id",
    "request.protocol",
    "request.operation",
    "request.source_ip",
    "request.user_agent",
    "principal.id",
    "principal.auth_method",
    "principal.groups",
    "action",
    "resource.backend",
    "resource.secret",
    "resource.version",
    "decision.effect",
    "decision.rule",
    "decision.policy_hash",
    "decision.reason",
    "outcome.status",
    "outcome.code",
    "outcome.latency_ms",
    "outcome.version_id",
    "outcome.value_fingerprint",
    "chain.hash",
)

_Writer = Callable[[Mapping[str, Any]], object]
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_PRODUCT = "keyledger"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def write_export(records: Iterable[Mapping[str, Any]], fmt: str, out: TextIO) -> int:
    """Write ``records`` to ``out`` as ``fmt`` (one of ``FORMATS``); return how many."""
    write = _writer(fmt, out)
    count = 0
    for record in records:
        write(record)
        count += 1
    return count


def _writer(fmt: str, out: TextIO) -> _Writer:
    if fmt == "jsonl":
        return lambda record: out.write(_json_line(record))
    if fmt == "csv":
        return _csv_writer(out)
    if fmt == "ecs":
        return lambda record: out.write(_json_line(to_ecs(record)))
    if fmt == "ocsf":
        return lambda record: out.write(_json_line(to_ocsf(record)))
    close = difflib.get_close_matches(fmt, FORMATS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown export format {fmt!r}{hint}; choose one of: {', '.join(FORMATS)}")


def _json_line(document: Mapping[str, Any]) -> str:
    return orjson.dumps(document, default=_plain).decode() + "\n"


def _plain(value: object) -> object:
    # orjson serialises dicts only; records read by other code may be any Mapping.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot export a {type(value).__name__}")


# -- CSV ----------------------------------------------------------------------------------

# OWASP "CSV injection": spreadsheets run a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(text: str) -> str:
    """``text`` as a spreadsheet will show it, never run it: formula starts get an apostrophe.

    Control characters are escaped too (:func:`sanitize`): a CSV is often read with ``cat``.
    """
    text = sanitize(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_writer(out: TextIO) -> _Writer:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    return lambda record: writer.writerow([_cell(_dotted(record, c)) for c in CSV_COLUMNS])


def _cell(value: Any) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value  # numbers never start a formula; keep them numbers
    if isinstance(value, list | tuple):
        return csv_safe(";".join(str(item) for item in value))
    if isinstance(value, Mapping):
        return csv_safe(orjson.dumps(value, default=_plain).decode())
    return csv_safe(str(value))


# -- reading a record that may miss any part ----------------------------------------------


def _part(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = record.get(name)
    return value if isinstance(value, Mapping) else _EMPTY


def _dotted(record: Mapping[str, Any], name: str) -> Any:
    section, _, leaf = name.partition(".")
    return _part(record, section).get(leaf) if leaf else record.get(section)


def _ip(value: Any) -> str | None:
    """``value`` if it is an IP address a SIEM can index, else None (pseudonym, prefix...)."""
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    # A zone ("fe80::1%eth0") is local to the proxy host and not an indexable address.
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return None
    return value


def _put(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested ``document``; None and empty lists are left out."""
    if value is None or value == []:
        return
    *parents, leaf = dotted.split(".")
    target = document
    for name in parents:
        target = target.setdefault(name, {})
    target[leaf] = value


def _keyledger(record: Mapping[str, Any]) -> dict[str, Any]:
    """The event's own sections, unchanged; ``id`` and ``time`` have standard homes."""
    return {k: v for k, v in record.items() if k not in ("id", "time") and v is not None}


def _geo(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """``request.geo`` (GeoIP: country, asn, as_org), each value only of its own type."""
    geo = request.get("geo")
    if not isinstance(geo, Mapping):
        return _EMPTY
    kinds = {"country": str, "asn": int, "as_org": str}
    return {key: value for key, kind in kinds.items() if type(value := geo.get(key)) is kind}


def _reason(record: Mapping[str, Any]) -> Any:
    return _part(record, "decision").get("reason") or _part(record, "detail").get("reason")


def _groups(principal: Mapping[str, Any]) -> list[str]:
    groups = principal.get("groups")
    return [str(g) for g in groups] if isinstance(groups, list | tuple) else []


# -- ECS ----------------------------------------------------------------------------------

_ECS_CATEGORY = {
    "access": ["api"],
    "auth_failure": ["authentication"],
    "policy_reload": ["configuration"],
    "lifecycle": ["process"],
    # checkpoint, alert: no ECS category fits, and ECS says to leave it empty then.
}
_ECS_ACTION_TYPE = {
    "read": "access",
    "describe": "access",
    "list": "access",
    "write": "change",
    "rotate": "change",
    "delete": "deletion",
}
_ECS_OUTCOME = {"success": "success", "denied": "failure", "error": "failure", "pending": "unknown"}
_ECS_LIFECYCLE_TYPE = {"start": "start", "stop": "end"}
_ECS_CLOUDS = frozenset({"aws", "gcp", "azure"})


def to_ecs(record: Mapping[str, Any]) -> dict[str, Any]:
    """One journal record as an ECS 8.x document (nested objects)."""
    kind = record.get("type")
    request, principal = _part(record, "request"), _part(record, "principal")
    outcome, backend = _part(record, "outcome"), _part(record, "resource").get("backend")
    ip, user = _ip(request.get("source_ip")), principal.get("id")
    doc: dict[str, Any] = {}
    _put(doc, "@timestamp", record.get("time"))
    _put(doc, "ecs.version", ECS_VERSION)
    _put(doc, "event.kind", "alert" if kind == "alert" else "event")
    _put(doc, "event.category", _ECS_CATEGORY.get(str(kind)))
    _put(doc, "event.type", _ecs_types(record))
    _put(doc, "event.action", request.get("operation") or record.get("action") or kind)
    _put(doc, "event.outcome", _ecs_outcome(record))
    _put(doc, "event.id", record.get("id"))
    _put(doc, "event.module", _PRODUCT)
    _put(doc, "event.dataset", f"{_PRODUCT}.audit")
    _put(doc, "event.provider", _PRODUCT)
    _put(doc, "event.reason", _reason(record))
    _put(doc, "event.duration", _nanoseconds(outcome.get("latency_ms")))
    _put(doc, "service.type", _PRODUCT)
    _put(doc, "user.id", user)
    _put(doc, "user.group.name", _groups(principal))
    _put(doc, "source.ip", ip)
    geo = _geo(request)
    _put(doc, "source.geo.country_iso_code", geo.get("country"))
    _put(doc, "source.as.number", geo.get("asn"))
    _put(doc, "source.as.organization.name", geo.get("as_org"))
    _put(doc, "user_agent.original", request.get("user_agent"))
    _put(doc, "http.request.id", request.get("id"))
    _put(doc, "rule.name", _part(record, "decision").get("rule"))
    _put(doc, "error.code", outcome.get("code") if outcome.get("status") == "error" else None)
    _put(doc, "cloud.provider", _cloud(request, backend))
    _put(doc, "related.user", [user] if user else None)
    _put(doc, "related.ip", [ip] if ip else None)
    _put(doc, "keyledger", _keyledger(record))
    return doc


def _cloud(request: Mapping[str, Any], backend: Any) -> str | None:
    """The cloud a call went to, by its wire protocol (aws-json, gcp-rest, ...): a backend's
    name is the operator's to choose ("aws-eu", "payments")."""
    cloud = str(request.get("protocol") or "").split("-", 1)[0]
    if cloud in _ECS_CLOUDS:
        return cloud
    return str(backend) if str(backend) in _ECS_CLOUDS else None


def _ecs_types(record: Mapping[str, Any]) -> list[str]:
    kind = record.get("type")
    if kind == "auth_failure":
        return ["start"]
    if kind == "policy_reload":
        return ["change"]
    if kind == "lifecycle":
        return [_ECS_LIFECYCLE_TYPE.get(str(_part(record, "detail").get("event")), "info")]
    if kind != "access":
        return []
    action_type = _ECS_ACTION_TYPE.get(str(record.get("action")))
    types = [action_type] if action_type else []
    effect = _part(record, "decision").get("effect")
    if effect == "deny" or _part(record, "outcome").get("status") == "denied":
        types.append("denied")
    elif effect == "allow":
        types.append("allowed")
    return types


def _ecs_outcome(record: Mapping[str, Any]) -> str | None:
    status = _part(record, "outcome").get("status")
    if status is None and record.get("type") == "auth_failure":
        return "failure"
    return _ECS_OUTCOME.get(str(status))


def _nanoseconds(latency_ms: Any) -> int | None:
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, int | float):
        return None
    return round(latency_ms * 1_000_000)  # ECS event.duration is in nanoseconds


# -- OCSF ---------------------------------------------------------------------------------

_OCSF_CLASS, _OCSF_CATEGORY = 6003, 6
_OCSF_ACTIVITY = {"read": 2, "describe": 2, "list": 2, "write": 3, "rotate": 3, "delete": 4}
_OCSF_ACTIVITY_NAME = {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_OCSF_STATUS = {
    "success": (1, "Success"),
    "denied": (2, "Failure"),
    "error": (2, "Failure"),
    "pending": (99, "Pending"),  # 99 Other: the source's word goes in ``status``
}
_OCSF_DECISION = {"allow": "allowed", "deny": "denied"}


def to_ocsf(record: Mapping[str, Any]) -> dict[str, Any]:
    """One journal record as an OCSF 1.1 API Activity event."""
    kind = record.get("type")
    request, principal = _part(record, "request"), _part(record, "principal")
    outcome, chain = _part(record, "outcome"), _part(record, "chain")
    activity, activity_name = _ocsf_activity(record)
    status_id, status = _ocsf_status(record)
    latency = outcome.get("latency_ms")
    doc: dict[str, Any] = {}
    _put(doc, "activity_id", activity)
    _put(doc, "activity_name", activity_name)
    _put(doc, "category_uid", _OCSF_CATEGORY)
    _put(doc, "category_name", "Application Activity")
    _put(doc, "class_uid", _OCSF_CLASS)
    _put(doc, "class_name", "API Activity")
    _put(doc, "type_uid", _OCSF_CLASS * 100 + activity)
    _put(doc, "type_name", f"API Activity: {_OCSF_ACTIVITY_NAME[activity]}")
    # Alerts ask for a look; every other event is a plain record of what happened.
    _put(doc, "severity_id", 3 if kind == "alert" else 1)
    _put(doc, "severity", "Medium" if kind == "alert" else "Informational")
    _put(doc, "time", _epoch_ms(record.get("time")))
    _put(doc, "status_id", status_id)
    _put(doc, "status", status)
    _put(doc, "status_code", outcome.get("code"))
    _put(doc, "status_detail", _reason(record))
    _put(doc, "duration", round(latency) if isinstance(latency, int | float) else None)
    _put(doc, "actor.user.uid", principal.get("id"))
    _put(doc, "actor.user.groups", [{"name": g} for g in _groups(principal)])
    _put(doc, "actor.authorizations", _ocsf_authorizations(record))
    _put(doc, "api.operation", request.get("operation") or record.get("action") or kind)
    _put(doc, "api.request.uid", request.get("id"))
    _put(doc, "api.service.name", _part(record, "resource").get("backend"))
    _put(doc, "src_endpoint.ip", _ip(request.get("source_ip")))
    geo = _geo(request)
    # OCSF 1.1's endpoint has a location but no autonomous system: the ASN stays in
    # unmapped (keyledger.request.geo).
    _put(doc, "src_endpoint.location.country", geo.get("country"))
    _put(doc, "http_request.user_agent", request.get("user_agent"))
    _put(doc, "resources", _ocsf_resources(record))
    _put(doc, "metadata.version", OCSF_VERSION)
    _put(doc, "metadata.product.name", _PRODUCT)
    _put(doc, "metadata.product.vendor_name", _PRODUCT)
    _put(doc, "metadata.uid", record.get("id"))
    _put(doc, "metadata.original_time", record.get("time"))
    _put(doc, "metadata.correlation_uid", request.get("id"))  # a pending change and its outcome
    _put(doc, "metadata.log_name", chain.get("id"))  # the journal: one chain per replica
    _put(doc, "metadata.log_provider", _PRODUCT)
    _put(doc, "metadata.sequence", chain.get("seq"))
    _put(doc, "unmapped.keyledger", _keyledger(record))
    return doc


def _ocsf_activity(record: Mapping[str, Any]) -> tuple[int, str]:
    kind, action = record.get("type"), record.get("action")
    if kind not in ("access", "auth_failure"):
        return 99, str(kind)
    if action is None:
        return 0, _OCSF_ACTIVITY_NAME[0]
    if (activity := _OCSF_ACTIVITY.get(str(action))) is not None:
        return activity, _OCSF_ACTIVITY_NAME[activity]
    return 99, str(action)


def _ocsf_status(record: Mapping[str, Any]) -> tuple[int, str]:
    status = _part(record, "outcome").get("status")
    if status is None and record.get("type") == "auth_failure":
        return 2, "Failure"
    return _OCSF_STATUS.get(str(status), (0, "Unknown"))


def _ocsf_authorizations(record: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    decision = _part(record, "decision")
    if not decision:
        return None
    result: dict[str, Any] = {}
    effect = decision.get("effect")
    _put(result, "decision", _OCSF_DECISION.get(str(effect), effect))
    # The rule that decided, within the policy set whose hash identifies it exactly.
    _put(result, "policy.name", decision.get("rule"))
    _put(result, "policy.uid", decision.get("policy_hash"))
    return [result]


def _ocsf_resources(record: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    resource, outcome = _part(record, "resource"), _part(record, "outcome")
    backend, secret = resource.get("backend"), resource.get("secret")
    if secret is None:
        return None
    item: dict[str, Any] = {"name": secret, "type": "secret"}
    # Names are unique within one store; keyledger may front several.
    _put(item, "uid", f"{backend}:{secret}" if backend else secret)
    _put(item, "version", outcome.get("version_id") or resource.get("version"))
    return [item]


def _epoch_ms(value: Any) -> int | None:
    moment = parse_time(value)
    return None if moment is None else (moment - _EPOCH) // timedelta(milliseconds=1)
