"""The policy JSON Schema (for editors) and the policy loader (for keyledger) agree.

The loader is the truth: the schema must accept every file the loader accepts, and reject
what it can express of what the loader rejects. Cross-file checks (unknown roles and groups,
duplicate ids), networks and time zones stay the loader's alone.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError

# The loader's own YAML reader: it reads an unquoted 22:00 as text (YAML 1.2, like
# yaml-language-server) where yaml.safe_load would give the base-60 integer 1320.
from keyledger._yaml import load_located
from keyledger.model import Action
from keyledger.policies.conditions import DAY_NAMES, REQUEST_ATTRIBUTES
from keyledger.policies.loader import (
    PolicyError,
    example_policy_dir,
    is_policy_test_file,
    load_policy_files,
)

SCHEMA_ID = "https://keyledger.dev/schemas/policy-v1.json"
EXAMPLES = example_policy_dir().parent


def read_schema() -> dict[str, Any]:
    resource = importlib.resources.files("keyledger.policies") / "policy.schema.json"
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(read_schema())


def flatten(
    errors: Iterator[ValidationError] | Sequence[ValidationError],
) -> Iterator[ValidationError]:
    """Every error, and every error inside an anyOf/oneOf that explains it."""
    for error in errors:
        yield error
        yield from flatten(error.context or [])


def path_of(error: ValidationError) -> str:
    return "/".join(str(part) for part in error.absolute_path)


def schema_errors(validator: Draft202012Validator, doc: Any) -> list[str]:
    return [f"/{path_of(e)}: {e.message}" for e in validator.iter_errors(doc)]


def loader_problems(paths: Sequence[Path]) -> tuple[str, ...]:
    try:
        load_policy_files(paths)
    except PolicyError as exc:
        return exc.problems
    return ()


def write_policy(folder: Path, doc: Any, name: str = "policy.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


# -- the schema itself ----------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    """The shipped schema is itself a valid draft 2020-12 schema with the documented $id."""
    schema = read_schema()

    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == SCHEMA_ID
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def undocumented(node: Any, at: str = "#") -> Iterator[str]:
    """Where a property, a map's values or a $defs entry has no description.

    The branches of an ``anyOf`` only add constraints to properties documented elsewhere.
    """
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from undocumented(item, f"{at}/{index}")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("properties", "$defs"):
            for name, sub in value.items():
                if isinstance(sub, dict) and "description" not in sub:
                    yield f"{at}/{key}/{name}"
        elif (
            key == "additionalProperties"
            and isinstance(value, dict)
            and not {"description", "$ref"} & value.keys()
        ):
            yield f"{at}/{key}"
        if key not in ("anyOf", "examples", "default", "defaultSnippets"):
            yield from undocumented(value, f"{at}/{key}")


def test_every_property_has_a_description() -> None:
    """Every property and $defs entry carries a description for editors to show on hover."""
    assert list(undocumented(read_schema())) == []


# -- shipped examples and a document using every feature -----------------------------------


def example_files() -> list[Path]:
    return sorted(
        path
        for path in EXAMPLES.rglob("*")
        if path.suffix in (".yaml", ".yml") and path.is_file() and not is_policy_test_file(path)
    )


def example_sets() -> dict[str, list[Path]]:
    """Example files by set: the folder under examples/ they live in ("." for loose files)."""
    sets: dict[str, list[Path]] = {}
    for path in example_files():
        parts = path.relative_to(EXAMPLES).parts
        sets.setdefault(parts[0] if len(parts) > 1 else ".", []).append(path)
    return sets


def test_examples_are_discovered() -> None:
    """The example scan finds the demo policy and leaves policy test files out."""
    found = [path.relative_to(EXAMPLES).as_posix() for path in example_files()]

    assert "demo/demo.yaml" in found
    assert not any(is_policy_test_file(Path(name)) for name in found)


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_file_matches_schema(validator: Draft202012Validator, path: Path) -> None:
    """A policy file shipped under examples/ validates against the schema."""
    assert schema_errors(validator, load_located(path)) == []


@pytest.mark.parametrize("name", sorted(example_sets()))
def test_example_set_loads(name: str) -> None:
    """An example policy set (all the files of one folder) loads without a problem."""
    assert loader_problems(example_sets()[name]) == ()


EVERY_FEATURE = """\
version: 1
groups:
  payments-services: [svc-checkout, svc-refunds]
  auditors: carol                 # one member, no list
  on-call: []                     # members come from identities
  ci-deployers:                   # ... or from OIDC tokens
roles:
  - id: payments-service
    description: What the payments services may do.
    rules:
      - id: payments-read-current
        description: Current versions, from the VPC or GitHub Actions, in the week.
        effect: allow
        actions: [read, describe]
        resources: ["aws:prod/payments/*", "vault-eu_2:payments/[ab]?", "*:shared/*"]
        when:
          source_ip: [10.20.0.0/16, "fd12:3456:789a::/48", 192.0.2.7]
          time:
            - {days: mon-fri, from: "7:30", to: "19:00", timezone: Europe/Berlin}
            - {days: [sat, fri-mon], from: 22:00, to: 05:00, timezone: America/New_York}
            - {days: "mon, wed,thu-fri", to: "24:00"}
            - {}
          principal:
            repository: "acme/*"
            ref: [refs/heads/main, "refs/tags/v*"]
          request:
            protocol: aws-json
            operation: [GetSecretValue, DescribeSecret]
            version_stage: AWSCURRENT
        unless:
          source_ip: 10.20.99.0/24
          time: {days: sun, from: "02:00", to: "03:00", timezone: UTC}
      - actions: list                   # one action, no list; no id: derived
        resources: "aws:prod/payments/*"
        when:
      - id: payments-no-signing-key
        effect: deny
        actions: ["*"]
        resources: ["aws:prod/payments/card-signing-*"]
  - id: auditor
    rules:
      - id: auditor-describe-all
        actions: [describe, list]
        resources: ["*:*"]
  - id: placeholder
    description: No rules yet.
    rules: []
bindings:
  - role: payments-service
    groups: [payments-services]
    description: The payments team's services.
  - role: auditor
    principals: carol
    groups: auditors
  - role: auditor
    principals: []
    groups: [on-call, ci-deployers]
  - role: payments-service
    principals: ["*"]
  - role: placeholder
    principals: [nobody]
    groups: []
"""


def test_document_using_every_feature_passes_both(
    validator: Draft202012Validator, tmp_path: Path
) -> None:
    """A document using every feature of the format is accepted by the schema and the loader."""
    path = tmp_path / "every-feature.yaml"
    path.write_text(EVERY_FEATURE, encoding="utf-8")

    assert schema_errors(validator, load_located(path)) == []
    policy = load_policy_files([path])
    assert [r.id for r in policy.rules] == [
        "payments-read-current",
        "every-feature/payments-service/1",
        "payments-no-signing-key",
        "auditor-describe-all",
    ]
    assert len(policy.rules[0].when) == 7  # source_ip, time, 2 principal and 3 request
    assert policy.groups["ci-deployers"] == frozenset()


# -- invalid documents: both reject them ---------------------------------------------------

DROP = object()  # as a value in a change: remove the key


def changed(base: dict[str, Any], changes: Mapping[str, object] | None) -> dict[str, Any]:
    out = dict(base)
    for key, value in (changes or {}).items():
        if value is DROP:
            del out[key]
        else:
            out[key] = value
    return out


def policy(
    *,
    top: Mapping[str, object] | None = None,
    role: Mapping[str, object] | None = None,
    rule: Mapping[str, object] | None = None,
    binding: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """A valid one-rule policy, with some keys of one part changed (DROP removes a key)."""
    the_rule = changed({"id": "read", "actions": ["read"], "resources": ["aws:staging/*"]}, rule)
    the_role = changed({"id": "reader", "rules": [the_rule]}, role)
    the_binding = changed({"role": "reader", "principals": ["app"]}, binding)
    return changed({"version": 1, "roles": [the_role], "bindings": [the_binding]}, top)


def when(conditions: object) -> dict[str, Any]:
    return policy(rule={"when": conditions})


RULE = "roles/0/rules/0"
WHEN = f"{RULE}/when"

# id: (document, where the schema must report an error, what the loader must say)
INVALID = {
    "unknown-top-key": (policy(top={"rules": []}), "", "unknown key 'rules' in a policy file"),
    "v2": (policy(top={"version": 2}), "version", "unsupported policy version 2"),
    "roles-map": (policy(top={"roles": {"id": "reader"}}), "roles", "roles must be a list"),
    "group-3": (policy(top={"groups": {"ops": 3}}), "groups/ops", "groups.ops must be a list"),
    "role-without-id": (policy(role={"id": DROP}), "roles/0", "a role needs id"),
    "role-empty-id": (policy(role={"id": ""}), "roles/0/id", "a role needs id"),
    "unknown-role-key": (policy(role={"rule": []}), "roles/0", "unknown key 'rule' in a role"),
    "unknown-rule-key": (policy(rule={"priority": 1}), RULE, "unknown key 'priority' in a rule"),
    "rule-empty-id": (policy(rule={"id": ""}), f"{RULE}/id", "a rule id must be"),
    "reed": (policy(rule={"actions": ["reed"]}), f"{RULE}/actions/0", "unknown action 'reed'"),
    "reed-1": (policy(rule={"actions": "reed"}), f"{RULE}/actions", "unknown action 'reed'"),
    "no-actions": (policy(rule={"actions": []}), f"{RULE}/actions", "at least one action"),
    "actions-missing": (policy(rule={"actions": DROP}), RULE, "at least one action"),
    "effect-permit": (policy(rule={"effect": "permit"}), f"{RULE}/effect", "not 'permit'"),
    "resource-without-backend": (
        policy(rule={"resources": ["prod/*"]}),
        f"{RULE}/resources/0",
        "resource 'prod/*' must be written backend:name",
    ),
    "resource-without-name": (
        policy(rule={"resources": "aws:"}),
        f"{RULE}/resources",
        "resource 'aws:' must be written backend:name",
    ),
    "resource-uppercase-backend": (
        policy(rule={"resources": ["AWS:prod/*"]}),
        f"{RULE}/resources/0",
        "'AWS' is not a backend name",
    ),
    "no-res": (policy(rule={"resources": []}), f"{RULE}/resources", "at least one resource"),
    "when-unknown-key": (when({"ip": "10.0.0.0/8"}), WHEN, "unknown key 'ip' in when:"),
    "unless-unknown-key": (
        policy(rule={"unless": {"source_ips": []}}),
        f"{RULE}/unless",
        "unknown key 'source_ips' in unless:",
    ),
    "when-list": (policy(rule={"when": ["source_ip"]}), WHEN, "when: must be a mapping"),
    "source-ip-empty": (when({"source_ip": []}), f"{WHEN}/source_ip", "at least one network"),
    "time-7am": (
        when({"time": {"from": "7am"}}),
        f"{WHEN}/time/from",
        "from must be a time of day HH:MM, not '7am'",
    ),
    "from-24-00": (
        when({"time": {"from": "24:00"}}),
        f"{WHEN}/time/from",
        "from must be a time of day HH:MM, not '24:00'",
    ),
    "to-12-60": (when({"time": {"to": "12:60"}}), f"{WHEN}/time/to", "not '12:60'"),
    "to-seconds": (when({"time": {"to": "09:00:00"}}), f"{WHEN}/time/to", "not '09:00:00'"),
    "day-funday": (
        when({"time": {"days": "mon-funday"}}),
        f"{WHEN}/time/days",
        "unknown day 'funday'",
    ),
    "day-list-item-with-comma": (
        when({"time": [{"days": ["mon,wed"]}]}),
        f"{WHEN}/time/0/days/0",
        "unknown day 'mon,wed'",
    ),
    "day-double-range": (
        when({"time": {"days": "mon-tue-wed"}}),
        f"{WHEN}/time/days",
        "unknown day 'tue-wed'",
    ),
    "window-unknown-key": (
        when({"time": {"day": "mon"}}),
        f"{WHEN}/time",
        "unknown key 'day' in a time window",
    ),
    "time-empty": (when({"time": []}), f"{WHEN}/time", "at least one window"),
    "principal-empty": (
        when({"principal": {}}),
        f"{WHEN}/principal",
        "principal must map attribute names to values",
    ),
    "principal-no-values": (
        when({"principal": {"repository": []}}),
        f"{WHEN}/principal/repository",
        "principal.repository needs at least one value",
    ),
    "unknown-request-attribute": (
        when({"request": {"method": "GET"}}),
        f"{WHEN}/request",
        "unknown request attribute 'method'",
    ),
    "request-value-number": (
        when({"request": {"operation": [1]}}),
        f"{WHEN}/request/operation/0",
        "request.operation must be a list of strings",
    ),
    "binding-no-role": (policy(binding={"role": DROP}), "bindings/0", "a binding needs role"),
    "binding-nobody": (
        policy(binding={"principals": DROP}),
        "bindings/0",
        "a binding needs principals: or groups:",
    ),
    "binding-empty-lists": (
        policy(binding={"principals": [], "groups": []}),
        "bindings/0",
        "a binding needs principals: or groups:",
    ),
    "binding-unknown-key": (
        policy(binding={"principal": "app"}),
        "bindings/0",
        "unknown key 'principal' in a binding",
    ),
}


def test_table_base_document_passes_both(validator: Draft202012Validator, tmp_path: Path) -> None:
    """The document the invalid cases are made from is itself valid, for schema and loader."""
    path = write_policy(tmp_path, policy())

    assert schema_errors(validator, load_located(path)) == []
    assert loader_problems([path]) == ()


@pytest.mark.parametrize(("doc", "schema_at", "loader_says"), INVALID.values(), ids=INVALID.keys())
def test_invalid_document_is_rejected_by_both(
    validator: Draft202012Validator,
    tmp_path: Path,
    doc: dict[str, Any],
    schema_at: str,
    loader_says: str,
) -> None:
    """The schema and the loader both reject the document, each at the broken part."""
    path = write_policy(tmp_path, doc)

    parsed = load_located(path)
    errors = list(flatten(list(validator.iter_errors(parsed))))
    problems = loader_problems([path])

    assert schema_at in {path_of(e) for e in errors}, schema_errors(validator, parsed)
    assert any(loader_says in p for p in problems), problems


# -- generated valid documents: both accept them -------------------------------------------

ACTION_WORDS = (*(a.value for a in Action), "*")
BACKENDS = ("aws", "*", "gcp", "vault-eu_2")
NETWORKS = ("10.0.0.0/8", "10.20.0.0/16", "192.0.2.7", "0.0.0.0/0", "fd12::/16", "2001:db8::/32")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Etc/GMT+5")

# Free text where the format allows any: principal ids, globs, attribute names and values.
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)


def one_or_list(values: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str | list[str]]:
    """The list, or (for one value) sometimes the bare value: `x` means `[x]`."""
    return values.flatmap(lambda vs: st.sampled_from([vs, vs[0]]) if len(vs) == 1 else st.just(vs))


day_or_range = st.sampled_from(DAY_NAMES) | st.tuples(
    st.sampled_from(DAY_NAMES), st.sampled_from(DAY_NAMES)
).map("-".join)
days = st.lists(day_or_range, min_size=1, max_size=3) | st.tuples(
    st.lists(day_or_range, min_size=1, max_size=3), st.sampled_from([",", ", ", " ,"])
).map(lambda parts_sep: parts_sep[1].join(parts_sep[0]))


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    window: dict[str, Any] = {}
    if draw(st.booleans()):
        window["days"] = draw(days)
    start = draw(st.none() | st.tuples(st.integers(0, 23), st.integers(0, 59)))
    end = draw(st.none() | st.tuples(st.integers(0, 24), st.integers(0, 59)))
    end = (24, 0) if end and end[0] == 24 else end
    if (start or (0, 0)) == (end or (24, 0)):  # an empty window: the loader says so
        end = None
    for key, clock in (("from", start), ("to", end)):
        if clock is not None:
            hour = f"{clock[0]}" if draw(st.booleans()) else f"{clock[0]:02d}"
            window[key] = f"{hour}:{clock[1]:02d}"
    if draw(st.booleans()):
        window["timezone"] = draw(st.sampled_from(ZONES))
    return window


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    block: dict[str, Any] = {}
    if draw(st.booleans()):
        block["source_ip"] = draw(one_or_list(st.lists(st.sampled_from(NETWORKS), min_size=1)))
    if draw(st.booleans()):
        block["time"] = draw(windows() | st.lists(windows(), min_size=1, max_size=3))
    values = one_or_list(st.lists(texts, min_size=1, max_size=3))
    if draw(st.booleans()):
        block["principal"] = draw(st.dictionaries(texts, values, min_size=1, max_size=2))
    if draw(st.booleans()):
        attributes = st.sampled_from(REQUEST_ATTRIBUTES)
        block["request"] = draw(st.dictionaries(attributes, values, min_size=1))
    return block or None  # an empty block is an error for both


@st.composite
def rules(draw: st.DrawFn, rule_id: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule["id"] = rule_id
    if draw(st.booleans()):
        rule["effect"] = draw(st.sampled_from(["allow", "deny"]))
    rule["actions"] = draw(one_or_list(st.lists(st.sampled_from(ACTION_WORDS), min_size=1)))
    resources = st.tuples(st.sampled_from(BACKENDS), texts).map(":".join)
    rule["resources"] = draw(one_or_list(st.lists(resources, min_size=1, max_size=3)))
    for key in ("when", "unless"):
        block = draw(conditions())
        if block is not None or draw(st.booleans()):
            rule[key] = block
    return rule


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid policy file: ids unique, and bindings naming only declared roles and groups."""
    group_names = draw(st.lists(texts, unique=True, max_size=3))
    members = st.none() | one_or_list(st.lists(texts, max_size=3))
    roles = [
        {
            "id": f"role-{r}",
            "rules": [draw(rules(f"rule-{r}-{i}")) for i in range(draw(st.integers(0, 3)))],
        }
        for r in range(draw(st.integers(0, 3)))
    ]
    bindings = []
    for role in draw(st.lists(st.sampled_from([r["id"] for r in roles]))) if roles else []:
        binding: dict[str, Any] = {"role": role}
        principals = draw(st.lists(texts | st.just("*"), max_size=3))
        groups = draw(st.lists(st.sampled_from(group_names), max_size=3)) if group_names else []
        if not principals and not groups:
            principals = ["*"]
        for key, names in (("principals", principals), ("groups", groups)):
            if bool(names) or draw(st.booleans()):
                binding[key] = draw(one_or_list(st.just(names))) if names else names
        bindings.append(binding)
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["version"] = 1
    if bool(group_names) or draw(st.booleans()):
        doc["groups"] = {name: draw(members) for name in group_names} or None
    if bool(roles) or draw(st.booleans()):
        doc["roles"] = roles
    if bool(bindings) or draw(st.booleans()):
        doc["bindings"] = bindings
    return doc


@settings(max_examples=50, deadline=None)
@given(doc=policies())
def test_generated_valid_policies_pass_both(
    validator: Draft202012Validator, tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any]
) -> None:
    """On generated valid documents, the schema and the loader both accept, so they agree."""
    path = write_policy(tmp_path_factory.mktemp("generated"), doc)

    assert (schema_errors(validator, load_located(path)), loader_problems([path])) == ([], ())
