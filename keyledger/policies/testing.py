"""Test cases kept next to the policies, run by ``keyledger policy test``.

A test file is YAML with ``test`` as a word in its name (``payments_test.yaml``)::

    tests:
      - name: checkout reads its database password
        principal: svc-checkout
        groups: [payments]                    # optional: groups the identity carries
        attributes: {repository: acme/shop}   # optional: principal attributes (claims)
        action: read
        secret: aws:prod/payments/checkout/db
        context:                              # optional
          source_ip: 10.1.2.3
          at: "2026-11-24T10:00:00+01:00"     # the moment; default: now
          protocol: aws-json                  # default: aws-json, the action's usual
          version_stage: AWSCURRENT           # operation, AWSCURRENT for a plain read
        expect: allow                         # allow | deny
        rule: payments-read                   # optional: the rule that must decide;
                                              # null for the default deny

Cases run through :meth:`PolicyEngine.decide`, the proxy's own path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyledger._yaml import YamlError, did_you_mean, load_located, where, where_key
from keyledger.model import Action, SecretRef
from keyledger.policies.conditions import REQUEST_ATTRIBUTES, Context
from keyledger.policies.engine import PolicyEngine, principal_of
from keyledger.policies.loader import PolicyError
from keyledger.policies.model import Decision

__all__ = [
    "CaseResult",
    "PolicyCase",
    "as_decided",
    "default_protocol",
    "load_cases",
    "parse_moment",
    "parse_secret",
    "request_attributes",
    "run_cases",
]

_CASE_KEYS = (
    "name",
    "principal",
    "groups",
    "attributes",
    "action",
    "secret",
    "context",
    "expect",
    "rule",
)
_CONTEXT_KEYS = ("source_ip", "at", *REQUEST_ATTRIBUTES)
_ACTIONS = tuple(a.value for a in Action)

# The operation a plain AWS SDK call for each action makes (what the proxy would see).
_AWS_OPERATIONS = {
    Action.READ: "GetSecretValue",
    Action.DESCRIBE: "DescribeSecret",
    Action.LIST: "ListSecrets",
    Action.WRITE: "PutSecretValue",
    Action.ROTATE: "RotateSecret",
    Action.DELETE: "DeleteSecret",
}


# ... and the RPC a plain Google client call makes (REST and gRPC name them alike).
_GCP_OPERATIONS = {
    Action.READ: "AccessSecretVersion",
    Action.DESCRIBE: "GetSecret",
    Action.LIST: "ListSecrets",
    Action.WRITE: "AddSecretVersion",
    Action.DELETE: "DeleteSecret",
}


# ... and the Key Vault operation a plain SecretClient call makes.
_AZURE_OPERATIONS = {
    Action.READ: "GetSecret",
    Action.DESCRIBE: "GetSecretVersions",
    Action.LIST: "GetSecrets",
    Action.WRITE: "SetSecret",
    Action.DELETE: "DeleteSecret",
}


def default_protocol(backend: str) -> str:
    """The protocol a plain call on ``backend`` speaks, judged by its name: Google's REST
    for a backend named gcp or gcp-*, Key Vault's for azure or azure-*, AWS's JSON
    otherwise. A case or an explain on a backend named otherwise states its protocol
    (request: {protocol: gcp-rest})."""
    for prefix, protocol in (("gcp", "gcp-rest"), ("azure", "azure")):
        if backend == prefix or backend.startswith(f"{prefix}-"):
            return protocol
    return "aws-json"


def request_attributes(
    action: Action,
    *,
    protocol: str | None = None,
    operation: str | None = None,
    version_stage: str | None = None,
) -> dict[str, str]:
    """The request attributes the proxy would give a plain SDK call, unless stated.

    ``policy explain`` and ``policy test`` both use this, so that a rule conditioned on
    ``request:`` decides the same in both as through the proxy: protocol ``aws-json``
    unless stated (see :func:`default_protocol`), the action's usual operation, and for a
    plain AWS read the stage ``AWSCURRENT``.
    """
    protocol = protocol or "aws-json"
    attributes = {"protocol": protocol}
    if protocol in ("gcp-rest", "gcp-grpc"):
        operation = operation or _GCP_OPERATIONS.get(action)
    if protocol == "azure":
        operation = operation or _AZURE_OPERATIONS.get(action)
    if protocol == "aws-json":
        operation = operation or _AWS_OPERATIONS[action]
        if version_stage is None and operation in ("GetSecretValue", "BatchGetSecretValue"):
            version_stage = "AWSCURRENT"
    if operation:
        attributes["operation"] = operation
    if version_stage:
        attributes["version_stage"] = version_stage
    return attributes


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyCase:
    name: str
    where: str  # file:line:col of the case
    principal: str
    groups: tuple[str, ...]
    attributes: dict[str, str]
    action: Action
    secret: SecretRef
    context: Context
    expect: str  # allow | deny
    rule: str | None = None  # the rule that must decide (None: the default deny) ...
    checks_rule: bool = False  # ... when the case names one at all

    def check(self, decision: Decision) -> str | None:
        """None when the decision is the expected one, else what went wrong."""
        got = decision.effect.value
        decided_by = f"rule {decision.rule}" if decision.rule else "default deny"
        if got != self.expect:
            return f"expected {self.expect}, got {got} ({decided_by})"
        if self.checks_rule and self.rule != decision.rule:
            wanted = f"rule {self.rule}" if self.rule else "default deny"
            return f"expected {self.expect} by {wanted}, got {got} by {decided_by}"
        return None


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: PolicyCase
    decision: Decision
    failure: str | None

    @property
    def passed(self) -> bool:
        return self.failure is None


def run_cases(engine: PolicyEngine, cases: Sequence[PolicyCase]) -> list[CaseResult]:
    results = []
    for case in cases:
        principal = principal_of(case.principal, case.groups, case.attributes)
        decision = engine.decide(principal, case.action, case.secret, case.context)
        results.append(CaseResult(case, decision, case.check(decision)))
    return results


# Protocols whose stores compare names without case: their front ends lower-case a name
# before policy sees it (Key Vault's), and so must explain and test.
_CASE_INSENSITIVE = frozenset({"azure"})


def as_decided(secret: SecretRef, protocol: str) -> SecretRef:
    """``secret`` as the proxy hands it to policy for a call in ``protocol``."""
    if protocol in _CASE_INSENSITIVE:
        return SecretRef(secret.backend, secret.name.lower())
    return secret


def parse_secret(text: str) -> SecretRef:
    backend, sep, name = text.partition(":")
    if not sep or not backend or not name:
        raise ValueError(f"secret {text!r} must be written backend:name (aws:prod/db/password)")
    return SecretRef(backend, name)


def parse_moment(value: object) -> datetime:
    """An ISO 8601 moment; one without a UTC offset is read as UTC."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def load_cases(paths: Sequence[Path]) -> list[PolicyCase]:
    """Every case in the files; raise :class:`PolicyError` listing every problem."""
    problems: list[str] = []
    cases: list[PolicyCase] = []
    for path in paths:
        try:
            doc = load_located(path)
        except (YamlError, OSError, UnicodeDecodeError) as exc:
            problems.append(str(exc) if isinstance(exc, YamlError) else f"{path}: {exc}")
            continue
        items = doc.get("tests") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            at = where(doc, "tests") if isinstance(doc, dict) else f"{path}:1:1"
            problems.append(f"{at}: a policy test file needs tests: [list of cases]")
            continue
        for item in items:
            case = _read_case(item, problems)
            if case is not None:
                cases.append(case)
    if problems:
        raise PolicyError(problems)
    return cases


def _read_case(item: Any, problems: list[str]) -> PolicyCase | None:
    before = len(problems)

    def fail(container: Any, key: str | None, reason: str) -> None:
        problems.append(f"{where(container, key)}: {reason}")

    if not isinstance(item, dict):
        fail(item, None, "a test case must be a mapping")
        return None
    for key in item:
        if key not in _CASE_KEYS:
            problems.append(
                f"{where_key(item, key)}: unknown key {key!r} in a test case"
                f"{did_you_mean(key, _CASE_KEYS)}"
            )
    for key in ("principal", "action", "secret", "expect"):
        if not isinstance(item.get(key), str):
            fail(item, key if key in item else None, f"a test case needs {key}: <text>")
    action = item.get("action")
    if isinstance(action, str) and action not in _ACTIONS:
        fail(item, "action", f"unknown action {action!r}{did_you_mean(action, _ACTIONS)}")
    if not isinstance(item.get("rule", ""), str | None):
        fail(item, "rule", "rule must be a rule id, or null for the default deny")
    if item.get("expect") not in (None, "allow", "deny"):
        fail(item, "expect", f"expect must be allow or deny, not {item['expect']!r}")
    secret = None
    if isinstance(item.get("secret"), str):
        try:
            secret = parse_secret(item["secret"])
        except ValueError as exc:
            fail(item, "secret", str(exc))
    groups = item.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        fail(item, "groups", "groups must be a list of group names")
    attributes = item.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        fail(item, "attributes", "attributes must map names to text values")
    context = _read_context(item, problems)
    if len(problems) > before or secret is None or context is None:
        return None
    name = item.get("name") or f"{item['principal']} {action} {secret}"
    request = context.request
    protocol = request.get("protocol") or default_protocol(secret.backend)
    context = replace(
        context,
        request=request_attributes(
            Action(str(action)),
            protocol=protocol,
            operation=request.get("operation"),
            version_stage=request.get("version_stage"),
        ),
    )
    secret = as_decided(secret, protocol)
    return PolicyCase(
        name=str(name),
        where=where(item),
        principal=item["principal"],
        groups=tuple(groups),
        attributes=dict(attributes),
        action=Action(str(action)),
        secret=secret,
        context=context,
        expect=item["expect"],
        rule=item.get("rule"),
        checks_rule="rule" in item,
    )


def _read_context(item: Any, problems: list[str]) -> Context | None:
    raw = item.get("context") or {}
    if not isinstance(raw, dict):
        problems.append(f"{where(item, 'context')}: context must be a mapping")
        return None
    ok = True
    for key in raw:
        if key not in _CONTEXT_KEYS:
            problems.append(
                f"{where_key(raw, key)}: unknown key {key!r} in a test context"
                f"{did_you_mean(key, _CONTEXT_KEYS)}"
            )
            ok = False
    at = None
    if "at" in raw:
        try:
            at = parse_moment(raw["at"])
        except ValueError:
            problems.append(f"{where(raw, 'at')}: at must be an ISO 8601 time, not {raw['at']!r}")
            ok = False
    if not ok:
        return None
    source_ip = raw.get("source_ip")
    return Context(
        source_ip=str(source_ip) if source_ip is not None else None,
        at=at,
        request={k: str(raw[k]) for k in REQUEST_ATTRIBUTES if k in raw},
    )
