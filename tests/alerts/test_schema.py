"""The alert rule JSON Schema (for editors) and the rule loader (for keyledger) agree.

The loader is the truth: the schema must accept every file the loader accepts, and reject
what it can express of what the loader rejects: unknown keys, wrong types, a rule without
an id or a severity, a rule with no detector or two, durations, counts and time windows.
Duplicate ids across files, networks and time zones stay the loader's alone.
"""

from __future__ import annotations

import importlib.resources
import json
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError

# The loader's own YAML reader: an unquoted 08:00 stays text (YAML 1.2, like
# yaml-language-server), where yaml.safe_load would read the base-60 integer 480.
from keyledger._yaml import load_located
from keyledger.alerts.rules import DETECTORS, AlertRuleError, load_alert_files, rule_files
from keyledger.alerts.testing import is_case_file
from keyledger.policies.conditions import DAY_NAMES
from keyledger.proxy.audit.filters import ACTIONS
from tests.alerts import test_engine as engine_tests
from tests.alerts import test_geoip_alerts as geoip_tests

SCHEMA_ID = "https://keyledger.dev/schemas/alerts-v1.json"
PACKAGE = Path(__file__).resolve().parents[2] / "keyledger" / "alerts"
DEMO = PACKAGE / "examples" / "demo"


def read_schema() -> dict[str, Any]:
    resource = importlib.resources.files("keyledger.alerts") / "alerts.schema.json"
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
        load_alert_files(paths)
    except AlertRuleError as exc:
        return exc.problems
    return ()


def write_rules(folder: Path, doc: Any, name: str = "alerts.yaml") -> Path:
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
    """Where a property, a map's values or a $defs entry has no description."""
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
        if key not in ("anyOf", "oneOf", "examples", "default", "defaultSnippets"):
            yield from undocumented(value, f"{at}/{key}")


def test_every_property_has_a_description() -> None:
    """Every property and $defs entry carries a description for editors to show on hover."""
    assert list(undocumented(read_schema())) == []


def test_every_detector_is_in_the_schema() -> None:
    """The schema knows the loader's detectors, each once in the exactly-one rule."""
    rule = read_schema()["$defs"]["rule"]

    assert [branch["required"] for branch in rule["oneOf"]] == [[d] for d in DETECTORS]
    assert set(DETECTORS) <= rule["properties"].keys()


# -- the shipped demo and the engine tests' rules: both accept -----------------------------


def test_the_demo_points_editors_at_the_schema(validator: Draft202012Validator) -> None:
    """demo.yaml's first line names the schema by a path that reaches it, and it passes."""
    demo = DEMO / "demo.yaml"
    first = demo.read_text(encoding="utf-8").splitlines()[0]

    assert first == "# yaml-language-server: $schema=../../alerts.schema.json"
    assert (demo.parent / first.split("=", 1)[1]).resolve() == PACKAGE / "alerts.schema.json"
    assert schema_errors(validator, load_located(demo)) == []
    assert loader_problems([demo]) == ()


def test_every_shipped_rule_file_passes_both(validator: Draft202012Validator) -> None:
    """Every rule file under examples/ (case files aside) passes the schema and loads."""
    files = rule_files(sorted(p for p in (PACKAGE / "examples").iterdir() if p.is_dir()))

    assert DEMO / "demo.yaml" in files
    assert not any(is_case_file(path) for path in files)
    for path in files:
        assert schema_errors(validator, load_located(path)) == [], path
    assert loader_problems(files) == ()


# Rules the engine's tests run, imported where they are module constants, else copied.
ENGINE_RULES = {
    "deny_burst": engine_tests.DENY_BURST,
    "deny_burst by source": engine_tests.DENY_BURST.replace("by: principal", "by: source"),
    "bulk_read": engine_tests.TestBulkRead.TEXT,
    "off_hours": engine_tests.TestOffHours.TEXT,
    "first_seen": engine_tests.TestFirstSeen.TEXT,
    "first_seen of network": engine_tests.TestFirstSeen.TEXT.replace(
        "of: secret, learning: 14d", "of: network, learning: 1d"
    ),
    "rate": """
        version: 1
        rules:
          - id: scraper
            severity: medium
            rate: {count: 3, window: 1m, by: secret}
    """,
    "canary": """
        version: 1
        rules:
          - id: decoy
            severity: critical
            suppress: 0s
            canary: {secrets: ["aws:prod/db/admin-password-old"]}
    """,
    "unusual_source": """
        version: 1
        rules:
          - id: where-from
            severity: high
            suppress: 0s
            unusual_source:
              networks:
                "svc-*": [10.0.0.0/8, "2001:db8::/32"]
    """,
    "first_seen of country": geoip_tests.FIRST_COUNTRY,
    "first_seen of asn": geoip_tests.FIRST_ASN,
    "unusual_source countries": geoip_tests.COUNTRIES,
    "unusual_source networks and countries": geoip_tests.BOTH,
    "filter on groups and auth_method": """
        version: 1
        rules:
          - id: ci-denials
            severity: low
            filter: {groups: [ci], auth_method: [oidc]}
            deny_burst: {count: 1, window: 1m}
    """,
}


@pytest.mark.parametrize("text", ENGINE_RULES.values(), ids=ENGINE_RULES.keys())
def test_the_engine_tests_rules_pass_both(
    validator: Draft202012Validator, tmp_path: Path, text: str
) -> None:
    """The rule files the engine is tested with are valid for the schema and the loader."""
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")

    assert schema_errors(validator, load_located(path)) == []
    assert loader_problems([path]) == ()


EVERY_FEATURE = """\
version: 1
rules:
  - id: burst.by-source_1
    severity: info
    description: every key of a rule, and a filter with every key
    filter:
      principal: ["svc-*", demo-app]
      groups: ci
      secret: "aws:prod/*"
      action: [read, describe, list, write, rotate, delete]
      effect: deny
      protocol: [aws-json, gcp-rest]
      auth_method: sigv4
    suppress: 9999999w
    deny_burst: {count: 1000000, window: 1s, by: source}
  - id: runaway
    severity: low
    filter:
    suppress: 0s
    rate: {count: 1, window: 1m}
  - id: collector
    severity: medium
    filter: {}
    bulk_read: {count: 20, window: 10m}
  - id: decoy
    severity: critical
    description: the retired admin password, a decoy
    canary: {secrets: "aws:prod/decoy"}
  - id: nights
    severity: high
    off_hours:
      hours:
        - {days: mon-fri, from: "7:30", to: 19:00, timezone: Europe/Berlin}
        - {days: [sat, fri-mon], from: 22:00, to: 05:00, timezone: America/New_York}
        - {days: "mon, wed,thu-fri", to: "24:00"}
        - {}
  - id: all-day
    severity: low
    off_hours: {hours: {}}
  - id: new-secret
    severity: low
    first_seen: {}
  - id: new-network
    severity: low
    first_seen: {of: network, learning: 2w, prefix_v4: 0, prefix_v6: 128}
  - id: new-country
    severity: medium
    first_seen: {of: country, learning: 30d}
  - id: new-owner
    severity: low
    first_seen: {of: asn}
  - id: where-from
    severity: high
    unusual_source:
      networks:
        "svc-*": [10.0.0.0/8, "2001:db8::/32", 192.0.2.7]
        demo-app: 127.0.0.1
      countries:
        "svc-*": [DE, FR]
        "repo:acme/*": US
  - id: from-home
    severity: high
    unusual_source:
      countries: {"*": [GB]}
"""


def test_document_using_every_feature_passes_both(
    validator: Draft202012Validator, tmp_path: Path
) -> None:
    """A file using every key of the format is accepted by the schema and the loader."""
    path = tmp_path / "every-feature.yaml"
    path.write_text(EVERY_FEATURE, encoding="utf-8")

    assert schema_errors(validator, load_located(path)) == []
    rules = load_alert_files([path])
    assert [r.detector.kind for r in rules] == [
        "deny_burst",
        "rate",
        "bulk_read",
        "canary",
        "off_hours",
        "off_hours",
        "first_seen",
        "first_seen",
        "first_seen",
        "first_seen",
        "unusual_source",
        "unusual_source",
    ]


def test_an_empty_file_passes_both(validator: Draft202012Validator, tmp_path: Path) -> None:
    """An empty file (a placeholder) is no rules, for both."""
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")

    assert schema_errors(validator, load_located(path)) == []
    assert loader_problems([path]) == ()


# -- broken documents: both reject them ------------------------------------------------------

DROP = object()  # as a value in a change: remove the key


def changed(base: dict[str, Any], changes: Mapping[str, object] | None) -> dict[str, Any]:
    out = dict(base)
    for key, value in (changes or {}).items():
        if value is DROP:
            del out[key]
        else:
            out[key] = value
    return out


def rules_doc(
    *, top: Mapping[str, object] | None = None, rule: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """A valid one-rule file, with some keys of the file or of its rule changed."""
    the_rule = changed(
        {"id": "burst", "severity": "high", "deny_burst": {"count": 5, "window": "1m"}}, rule
    )
    return changed({"version": 1, "rules": [the_rule]}, top)


def detector(kind: str, block: object) -> dict[str, Any]:
    """The one-rule file with its detector replaced."""
    return rules_doc(rule={"deny_burst": DROP, kind: block})


def filtered(block: object) -> dict[str, Any]:
    return rules_doc(rule={"filter": block})


def hours(block: object) -> dict[str, Any]:
    return detector("off_hours", {"hours": block})


RULE = "rules/0"
FILTER = f"{RULE}/filter"
HOURS = f"{RULE}/off_hours/hours"

# id: (document, where the schema must report an error, what the loader must say)
INVALID = {
    "unknown-top-key": (rules_doc(top={"rule": []}), "", "unknown key 'rule' in an alert rule"),
    "top-list": (["id"], "", "an alert rule file must be a mapping"),
    "v2": (rules_doc(top={"version": 2}), "version", "unsupported alert rule version 2"),
    "rules-map": (rules_doc(top={"rules": {"id": "x"}}), "rules", "rules must be a list"),
    "rules-null": (rules_doc(top={"rules": None}), "rules", "rules must be a list"),
    "rule-text": (rules_doc(top={"rules": ["burst"]}), RULE, "an alert rule must be a mapping"),
    "no-id": (rules_doc(rule={"id": DROP}), RULE, "an alert rule needs an id"),
    "id-with-space": (rules_doc(rule={"id": "my rule"}), f"{RULE}/id", "a rule id is letters"),
    "id-dash-first": (rules_doc(rule={"id": "-x"}), f"{RULE}/id", "a rule id is letters"),
    "id-number": (rules_doc(rule={"id": 7}), f"{RULE}/id", "a rule id is letters"),
    "id-too-long": (rules_doc(rule={"id": "x" * 129}), f"{RULE}/id", "a rule id is letters"),
    "no-severity": (rules_doc(rule={"severity": DROP}), RULE, "an alert rule needs a severity"),
    "severity-typo": (
        rules_doc(rule={"severity": "hihg"}),
        f"{RULE}/severity",
        "unknown severity 'hihg' (did you mean 'high'?)",
    ),
    "severity-upper": (
        rules_doc(rule={"severity": "HIGH"}),
        f"{RULE}/severity",
        "unknown severity 'HIGH'",
    ),
    "unknown-rule-key": (
        rules_doc(rule={"threshold": 5}),
        RULE,
        "unknown key 'threshold' in an alert rule",
    ),
    "detector-typo": (
        rules_doc(rule={"deny_burst": DROP, "deny_burts": {"count": 1, "window": "1m"}}),
        RULE,
        "unknown key 'deny_burts' in an alert rule (did you mean 'deny_burst'?)",
    ),
    "no-detector": (rules_doc(rule={"deny_burst": DROP}), RULE, "exactly one detector"),
    "two-detectors": (
        rules_doc(rule={"canary": {"secrets": ["aws:x"]}}),
        RULE,
        "exactly one detector (deny_burst, rate, bulk_read, canary, off_hours, first_seen, "
        "unusual_source), not deny_burst and canary",
    ),
    "suppress-soon": (
        rules_doc(rule={"suppress": "soon"}),
        f"{RULE}/suppress",
        "suppress is a duration",
    ),
    "suppress-number": (rules_doc(rule={"suppress": 10}), f"{RULE}/suppress", "suppress is a"),
    "suppress-fraction": (rules_doc(rule={"suppress": "1.5h"}), f"{RULE}/suppress", "suppress"),
    "suppress-8-digits": (
        rules_doc(rule={"suppress": "12345678s"}),
        f"{RULE}/suppress",
        "suppress is a duration",
    ),
    "suppress-unit-typo": (rules_doc(rule={"suppress": "10min"}), f"{RULE}/suppress", "suppress"),
    "filter-list": (filtered(["demo-app"]), FILTER, "a rule's filter must be a mapping"),
    "filter-unknown-key": (
        filtered({"principals": ["x"]}),
        FILTER,
        "unknown key 'principals' in a rule's filter (did you mean 'principal'?)",
    ),
    "filter-type": (filtered({"type": ["access"]}), FILTER, "unknown key 'type' in a rule's"),
    "filter-since": (filtered({"since": "7d"}), FILTER, "unknown key 'since' in a rule's"),
    "filter-action-reed": (
        filtered({"action": ["reed"]}),
        f"{FILTER}/action",
        "unknown action 'reed' (did you mean 'read'?)",
    ),
    "filter-action-star": (filtered({"action": "*"}), f"{FILTER}/action", "unknown action '*'"),
    "filter-effect-denied": (
        filtered({"effect": "denied"}),
        f"{FILTER}/effect",
        "unknown effect 'denied'",
    ),
    "filter-principal-number": (
        filtered({"principal": [1]}),
        f"{FILTER}/principal/0",
        "filter.principal must be a list of strings",
    ),
    "filter-groups-null": (
        filtered({"groups": None}),
        f"{FILTER}/groups",
        "filter.groups must be a list of strings",
    ),
    "burst-not-mapping": (detector("deny_burst", 5), f"{RULE}/deny_burst", "must be a mapping"),
    "burst-no-count": (
        detector("deny_burst", {"window": "1m"}),
        f"{RULE}/deny_burst",
        "count is required",
    ),
    "burst-no-window": (
        detector("deny_burst", {"count": 5}),
        f"{RULE}/deny_burst",
        "window is required",
    ),
    "burst-count-0": (
        detector("deny_burst", {"count": 0, "window": "1m"}),
        f"{RULE}/deny_burst/count",
        "count is a whole number from 1 to 1000000, not 0",
    ),
    "burst-count-too-big": (
        detector("deny_burst", {"count": 1_000_001, "window": "1m"}),
        f"{RULE}/deny_burst/count",
        "count is a whole number from 1 to 1000000",
    ),
    "burst-count-text": (
        detector("deny_burst", {"count": "5", "window": "1m"}),
        f"{RULE}/deny_burst/count",
        "count is a whole number",
    ),
    "burst-count-yes": (
        detector("deny_burst", {"count": True, "window": "1m"}),
        f"{RULE}/deny_burst/count",
        "count is a whole number",
    ),
    "burst-window-0s": (
        detector("deny_burst", {"count": 5, "window": "0s"}),
        f"{RULE}/deny_burst/window",
        "window is a duration like 1m, 10m or 14d, not '0s'",
    ),
    "burst-window-000m": (
        detector("deny_burst", {"count": 5, "window": "000m"}),
        f"{RULE}/deny_burst/window",
        "window is a duration like 1m, 10m or 14d, not '000m'",
    ),
    "burst-by-secret": (
        detector("deny_burst", {"count": 5, "window": "1m", "by": "secret"}),
        f"{RULE}/deny_burst/by",
        "deny_burst counts by principal or source, not 'secret'",
    ),
    "burst-unknown-key": (
        detector("deny_burst", {"count": 5, "window": "1m", "per": "source"}),
        f"{RULE}/deny_burst",
        "unknown key 'per' in deny_burst",
    ),
    "rate-by-source": (
        detector("rate", {"count": 5, "window": "1m", "by": "source"}),
        f"{RULE}/rate/by",
        "rate counts by principal or secret, not 'source'",
    ),
    "bulk-read-by": (
        detector("bulk_read", {"count": 5, "window": "1m", "by": "principal"}),
        f"{RULE}/bulk_read",
        "unknown key 'by' in bulk_read",
    ),
    "canary-no-secrets": (detector("canary", {}), f"{RULE}/canary", "canary needs the decoy"),
    "canary-empty": (
        detector("canary", {"secrets": []}),
        f"{RULE}/canary/secrets",
        "canary needs the decoy secrets",
    ),
    "canary-list": (detector("canary", ["aws:x"]), f"{RULE}/canary", "canary must be a mapping"),
    "canary-secret-key": (
        detector("canary", {"secret": ["aws:x"]}),
        f"{RULE}/canary",
        "unknown key 'secret' in canary (did you mean 'secrets'?)",
    ),
    "off-hours-no-hours": (
        detector("off_hours", {}),
        f"{RULE}/off_hours",
        "off_hours needs hours",
    ),
    "off-hours-null": (detector("off_hours", None), f"{RULE}/off_hours", "must be a mapping"),
    "hours-empty": (hours([]), HOURS, "hours needs at least one window"),
    "hours-null": (hours(None), HOURS, "a time window must be a mapping"),
    "hours-funday": (hours({"days": "mon-funday"}), f"{HOURS}/days", "unknown day 'funday'"),
    "hours-7am": (hours({"from": "7am"}), f"{HOURS}/from", "from must be a time of day HH:MM"),
    "hours-to-12-60": (hours({"to": "12:60"}), f"{HOURS}/to", "not '12:60'"),
    "hours-from-24-00": (hours({"from": "24:00"}), f"{HOURS}/from", "not '24:00'"),
    "hours-window-key": (hours({"day": "mon"}), HOURS, "unknown key 'day' in a time window"),
    "hours-list-item-key": (
        hours([{"days": "mon"}, {"tz": "UTC"}]),
        f"{HOURS}/1",
        "unknown key 'tz' in a time window",
    ),
    "first-seen-of-user": (
        detector("first_seen", {"of": "user"}),
        f"{RULE}/first_seen/of",
        "first_seen is of secret, network, country or asn, not 'user'",
    ),
    "first-seen-learning-0d": (
        detector("first_seen", {"learning": "0d"}),
        f"{RULE}/first_seen/learning",
        "learning is a duration like 1m, 10m or 14d, not '0d'",
    ),
    "first-seen-prefix-33": (
        detector("first_seen", {"of": "network", "prefix_v4": 33}),
        f"{RULE}/first_seen/prefix_v4",
        "prefix_v4 is a whole number from 0 to 32",
    ),
    "first-seen-prefix-v6-negative": (
        detector("first_seen", {"prefix_v6": -1}),
        f"{RULE}/first_seen/prefix_v6",
        "prefix_v6 is a whole number from 0 to 128",
    ),
    "first-seen-window": (
        detector("first_seen", {"window": "14d"}),
        f"{RULE}/first_seen",
        "unknown key 'window' in first_seen",
    ),
    "first-seen-null": (detector("first_seen", None), f"{RULE}/first_seen", "must be a mapping"),
    "unusual-source-empty": (
        detector("unusual_source", {"networks": {}}),
        f"{RULE}/unusual_source/networks",
        "unusual_source needs networks",
    ),
    "unusual-source-list": (
        detector("unusual_source", {"networks": ["10.0.0.0/8"]}),
        f"{RULE}/unusual_source/networks",
        "unusual_source needs networks",
    ),
    "unusual-source-no-network": (
        detector("unusual_source", {"networks": {"svc-*": []}}),
        f"{RULE}/unusual_source/networks/svc-*",
        "svc-* needs at least one network",
    ),
    "first-seen-of-city": (
        detector("first_seen", {"of": "city"}),
        f"{RULE}/first_seen/of",
        "first_seen is of secret, network, country or asn, not 'city'",
    ),
    "unusual-source-nothing": (
        detector("unusual_source", {}),
        f"{RULE}/unusual_source",
        "unusual_source needs networks: {principal glob: [networks]}, countries:",
    ),
    "unusual-source-countries-empty": (
        detector("unusual_source", {"countries": {}}),
        f"{RULE}/unusual_source/countries",
        "unusual_source needs countries",
    ),
    "unusual-source-countries-list": (
        detector("unusual_source", {"countries": ["DE"]}),
        f"{RULE}/unusual_source/countries",
        "unusual_source needs countries",
    ),
    "unusual-source-country-lower-case": (
        detector("unusual_source", {"countries": {"svc-*": ["DE", "de"]}}),
        f"{RULE}/unusual_source/countries/svc-*/1",
        "bad country 'de'",
    ),
    "unusual-source-country-alpha-3": (
        detector("unusual_source", {"countries": {"svc-*": "DEU"}}),
        f"{RULE}/unusual_source/countries/svc-*",
        "bad country 'DEU'",
    ),
    "unusual-source-no-country": (
        detector("unusual_source", {"countries": {"svc-*": []}}),
        f"{RULE}/unusual_source/countries/svc-*",
        "svc-* needs at least one country",
    ),
    "unusual-source-country-number": (
        detector("unusual_source", {"countries": {"svc-*": [49]}}),
        f"{RULE}/unusual_source/countries/svc-*/0",
        "unusual_source.countries.svc-* must be a list of strings",
    ),
    "unusual-source-cidrs": (
        detector("unusual_source", {"cidrs": {"svc-*": "10.0.0.0/8"}}),
        f"{RULE}/unusual_source",
        "unknown key 'cidrs' in unusual_source",
    ),
}


def test_table_base_document_passes_both(validator: Draft202012Validator, tmp_path: Path) -> None:
    """The document the broken cases are made from is itself valid, for schema and loader."""
    path = write_rules(tmp_path, rules_doc())

    assert schema_errors(validator, load_located(path)) == []
    assert loader_problems([path]) == ()


@pytest.mark.parametrize(("doc", "schema_at", "loader_says"), INVALID.values(), ids=INVALID.keys())
def test_broken_document_is_rejected_by_both(
    validator: Draft202012Validator,
    tmp_path: Path,
    doc: Any,
    schema_at: str,
    loader_says: str,
) -> None:
    """The schema and the loader both reject the document, each at the broken part."""
    path = write_rules(tmp_path, doc)

    parsed = load_located(path)
    errors = list(flatten(list(validator.iter_errors(parsed))))
    problems = loader_problems([path])

    assert schema_at in {path_of(e) for e in errors}, schema_errors(validator, parsed)
    assert any(loader_says in p for p in problems), problems


# -- generated valid documents: both accept them ---------------------------------------------

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")
NETWORKS = ("10.0.0.0/8", "192.0.2.7", "0.0.0.0/0", "fd12::/16", "2001:db8::/32")
COUNTRIES = ("DE", "FR", "US", "GB", "JP")
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)
durations = st.tuples(st.integers(0, 9_999_999), st.sampled_from("smhdw")).map(
    lambda n_unit: f"{n_unit[0]}{n_unit[1]}"
)
positive = st.tuples(st.integers(1, 9_999_999), st.sampled_from("smhdw")).map(
    lambda n_unit: f"{n_unit[0]}{n_unit[1]}"
)


def one_or_list(values: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str | list[str]]:
    """The list, or (for one value) sometimes the bare value: `x` means `[x]`."""
    return values.flatmap(lambda vs: st.sampled_from([vs, vs[0]]) if len(vs) == 1 else st.just(vs))


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    window: dict[str, Any] = {}
    if draw(st.booleans()):
        day = st.sampled_from(DAY_NAMES) | st.tuples(
            st.sampled_from(DAY_NAMES), st.sampled_from(DAY_NAMES)
        ).map("-".join)
        window["days"] = draw(st.lists(day, min_size=1, max_size=3) | day)
    start = draw(st.none() | st.tuples(st.integers(0, 23), st.integers(0, 59)))
    end = draw(st.none() | st.tuples(st.integers(0, 23), st.integers(0, 59)))
    if (start or (0, 0)) == (end or (24, 0)):  # an empty window: the loader says so
        end = None
    for key, clock in (("from", start), ("to", end)):
        if clock is not None:
            window[key] = f"{clock[0]:02d}:{clock[1]:02d}"
    if draw(st.booleans()):
        window["timezone"] = draw(st.sampled_from(ZONES))
    return window


@st.composite
def detectors(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(DETECTORS))
    block: dict[str, Any] = {}
    if kind in ("deny_burst", "rate", "bulk_read"):
        block = {"count": draw(st.integers(1, 1_000_000)), "window": draw(positive)}
        ways = {"deny_burst": ["principal", "source"], "rate": ["principal", "secret"]}
        if kind in ways and draw(st.booleans()):
            block["by"] = draw(st.sampled_from(ways[kind]))
    elif kind == "canary":
        block = {"secrets": draw(one_or_list(st.lists(texts, min_size=1, max_size=3)))}
    elif kind == "off_hours":
        block = {"hours": draw(windows() | st.lists(windows(), min_size=1, max_size=3))}
    elif kind == "first_seen":
        for key, value in (
            ("of", st.sampled_from(["secret", "network", "country", "asn"])),
            ("learning", positive),
            ("prefix_v4", st.integers(0, 32)),
            ("prefix_v6", st.integers(0, 128)),
        ):
            if draw(st.booleans()):
                block[key] = draw(value)
    else:
        networks = one_or_list(st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=3))
        countries = one_or_list(st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=3))
        tables = draw(st.sampled_from([("networks",), ("countries",), ("networks", "countries")]))
        for table, values in (("networks", networks), ("countries", countries)):
            if table in tables:
                block[table] = draw(st.dictionaries(texts, values, min_size=1, max_size=3))
    return kind, block


@st.composite
def rule_files_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid rule file: ids unique, each rule with one valid detector."""
    rules = []
    for number in range(draw(st.integers(0, 4))):
        kind, block = draw(detectors())
        rule: dict[str, Any] = {
            "id": f"rule-{number}",
            "severity": draw(st.sampled_from(["info", "low", "medium", "high", "critical"])),
        }
        if draw(st.booleans()):
            rule["description"] = draw(texts)
        if draw(st.booleans()):
            rule["suppress"] = draw(durations)
        if draw(st.booleans()):
            values = one_or_list(st.lists(texts, max_size=3))
            rule["filter"] = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "principal": values,
                        "groups": values,
                        "secret": values,
                        "action": one_or_list(st.lists(st.sampled_from(ACTIONS), max_size=3)),
                        "effect": one_or_list(st.lists(st.sampled_from(["allow", "deny"]))),
                        "protocol": values,
                        "auth_method": values,
                    },
                )
            )
        rule[kind] = block
        rules.append(rule)
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["version"] = 1
    if bool(rules) or draw(st.booleans()):
        doc["rules"] = rules
    return doc


@settings(max_examples=60, deadline=None)
@given(doc=rule_files_docs())
def test_generated_valid_rule_files_pass_both(
    validator: Draft202012Validator, tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any]
) -> None:
    """On generated valid files, the schema and the loader both accept, so they agree."""
    path = write_rules(tmp_path_factory.mktemp("generated"), doc)

    assert (schema_errors(validator, load_located(path)), loader_problems([path])) == ([], ())
