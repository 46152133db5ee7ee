"""Read policy YAML files into a :class:`PolicySet`, or say exactly what is wrong where.

File format (version 1)::

    version: 1
    groups:
      payments: [svc-checkout, svc-refunds]
    roles:
      - id: app-reader
        rules:
          - id: read-staging              # optional; derived from the role and position
            effect: allow                 # allow (default) | deny
            actions: [read, describe]     # read describe list write rotate delete, or "*"
            resources: ["aws:staging/*"]  # backend:name-glob
    bindings:
      - role: app-reader
        principals: [demo-app]
        groups: [payments]
"""

from __future__ import annotations

import glob
import hashlib
import ipaddress
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import time
from pathlib import Path
from typing import Any

import yaml

from keyledger._yaml import YamlError, did_you_mean, load_located, where, where_key
from keyledger.model import Action
from keyledger.policies.conditions import (
    DAY_NAMES,
    REQUEST_ATTRIBUTES,
    AttributeMatch,
    Condition,
    SourceNetworks,
    TimeWindow,
    TimeWindows,
)
from keyledger.policies.model import Binding, Effect, PolicySet, ResourcePattern, Role, Rule

__all__ = [
    "PolicyError",
    "example_policy_dir",
    "is_policy_test_file",
    "load_policy_files",
    "load_policy_set",
    "resolve_all_paths",
    "resolve_policy_paths",
    "resolve_test_paths",
]

_TOP_KEYS = ("version", "groups", "roles", "bindings")
_ROLE_KEYS = ("id", "description", "rules")
_RULE_KEYS = ("id", "description", "effect", "actions", "resources", "when", "unless")
_BINDING_KEYS = ("role", "principals", "groups", "description")
_CONDITION_KEYS = ("source_ip", "time", "principal", "request")
_TIME_KEYS = ("days", "from", "to", "timezone")
_ACTIONS = tuple(a.value for a in Action)
_BACKEND_NAME = re.compile(r"^(\*|[a-z][a-z0-9_-]*)$")


class PolicyError(ValueError):
    """One or more problems, each ``file:line:col: reason``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def example_policy_dir(name: str = "demo") -> Path:
    """An example policy set shipped inside the package.

    ``demo`` is what ``serve --dev`` loads; ``acme`` is a realistic company-sized set.
    """
    return Path(__file__).with_name("examples") / name


def resolve_policy_paths(patterns: Iterable[str | Path]) -> list[Path]:
    """The policy files among files, folders (``*.yaml``/``*.yml`` inside) and globs.

    Folders and globs skip policy test files (``test`` as a word in the name, see
    :func:`is_policy_test_file`); a file named explicitly is always taken.
    """
    return _expand(patterns, keep=lambda path, named: named or not is_policy_test_file(path))


def resolve_test_paths(patterns: Iterable[str | Path]) -> list[Path]:
    """The policy test files among (or in the folders of) the same patterns."""
    return _expand(patterns, keep=lambda path, named: is_policy_test_file(path))


def resolve_all_paths(patterns: Iterable[str | Path]) -> list[Path]:
    """Every YAML file the patterns name, policies and tests (what a watcher watches)."""
    return _expand(patterns, keep=lambda path, named: True)


def load_policy_set(patterns: Iterable[str | Path]) -> PolicySet:
    """Load the policy files the patterns name, as the proxy and every CLI verb do.

    A file a folder or glob skipped as a test file, but which holds policy, is an error:
    skipping it silently would drop its rules (a deny among them) unnoticed.
    """
    patterns = list(patterns)
    paths = resolve_policy_paths(patterns)
    misnamed = [
        f"{path}: named as a test file ('test' as a word), so it is not loaded as policy, "
        "but it holds roles, bindings or groups: rename it"
        for path in resolve_test_paths(patterns)
        if path not in paths and _holds_policy(path)
    ]
    try:
        policy = load_policy_files(paths)
    except PolicyError as exc:
        raise PolicyError([*misnamed, *exc.problems]) from None
    if misnamed:
        raise PolicyError(misnamed)
    return policy


def _holds_policy(path: Path) -> bool:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # its own problem, for `policy test` to report
    return isinstance(doc, dict) and any(k in doc for k in ("roles", "bindings", "groups"))


def _expand(patterns: Iterable[str | Path], *, keep: Callable[[Path, bool], bool]) -> list[Path]:
    """The YAML files the patterns name that ``keep(path, named_explicitly)`` accepts,
    once each, in a stable order."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            expanded = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        elif any(c in str(path) for c in "*?["):
            expanded = sorted(Path(p) for p in glob.glob(str(path)))
        else:
            found.extend([path] if keep(path, True) else [])
            continue
        found.extend(p for p in expanded if keep(p, False))
    return list(dict.fromkeys(found))


_TEST_WORD = re.compile(r"(^|[._-])tests?([._-]|$)")


def is_policy_test_file(path: Path) -> bool:
    """``test_prod.yaml``, ``prod.test.yaml``, ``prod-tests.yaml``: yes; ``latest.yaml``: no."""
    return _TEST_WORD.search(path.stem) is not None


class Reader:
    """Collects every problem instead of stopping at the first (``file:line:col: reason``);
    the alert rule loader reads with it too."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, container: Any, key: str | int | None, reason: str) -> None:
        self.problems.append(f"{where(container, key)}: {reason}")

    def keys(self, mapping: Any, allowed: Sequence[str], what: str, at: str | None = None) -> bool:
        """Report unknown keys; False if ``mapping`` is not one (``at``: where it is)."""
        if not isinstance(mapping, dict):
            self.problems.append(f"{at or where(mapping)}: {what} must be a mapping")
            return False
        for key in mapping:
            if key not in allowed:
                self.problems.append(
                    f"{where_key(mapping, key)}: unknown key {key!r} in {what}"
                    f"{did_you_mean(key, allowed)}"
                )
        return True

    def str_list(self, mapping: dict[str, Any], key: str, what: str) -> list[str]:
        value = mapping.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(mapping, key, f"{what}.{key} must be a list of strings")
            return []
        return list(value)


def read_documents(
    paths: Sequence[Path], reader: Reader, digest: Any, what: str
) -> Iterator[tuple[Path, Any]]:
    """Each file's YAML, positions kept; a file that cannot be read or parsed is a problem
    of ``reader``'s, an empty one is skipped. ``digest`` takes every file's name and bytes
    (the set's hash)."""
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            reader.problems.append(f"{path}: cannot read {what}: {exc.strerror}")
            continue
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        try:
            doc = load_located(path, raw.decode("utf-8"))
        except (YamlError, UnicodeDecodeError) as exc:
            reader.problems.append(str(exc) if isinstance(exc, YamlError) else f"{path}: {exc}")
            continue
        if doc is not None:
            yield path, doc


def load_policy_files(paths: Sequence[Path]) -> PolicySet:
    """Load and merge policy files; raise :class:`PolicyError` listing every problem."""
    if not paths:
        raise PolicyError(["no policy files found (folders and globs skip *test*.yaml files)"])
    reader = Reader()
    merged = _Merged()
    bindings: list[tuple[Binding, Any]] = []
    digest = hashlib.sha256()
    for path, doc in read_documents(paths, reader, digest, "policy file"):
        if not reader.keys(doc, _TOP_KEYS, "a policy file", f"{path}:1:1"):
            continue
        if type(doc.get("version", 1)) is not int or doc.get("version", 1) != 1:
            reader.fail(doc, "version", f"unsupported policy version {doc['version']!r}; use 1")
        _read_groups(reader, doc, merged)
        _read_roles(reader, path, doc, merged)
        bindings.extend(_read_bindings(reader, doc))
    for binding, item in bindings:
        if binding.role not in merged.roles:
            hint = did_you_mean(binding.role, merged.roles)
            reader.fail(item, "role", f"unknown role {binding.role!r}{hint}")
        for group in sorted(binding.groups - merged.groups.keys()):
            reader.fail(
                item,
                "groups",
                f"unknown group {group!r}{did_you_mean(group, merged.groups)} (declare it under "
                "groups:, with no members if identities or OIDC claims supply them)",
            )
    if reader.problems:
        raise PolicyError(reader.problems)
    return PolicySet(
        roles=merged.roles,
        bindings=tuple(b for b, _ in bindings),
        groups={g: frozenset(m) for g, m in merged.groups.items()},
        hash="sha256:" + digest.hexdigest(),
        files=tuple(str(p) for p in paths),
    )


class _Merged:
    """What the files declared so far, and where, for duplicate errors."""

    def __init__(self) -> None:
        self.roles: dict[str, Role] = {}
        self.groups: dict[str, frozenset[str]] = {}
        self.first_at: dict[tuple[str, str], str] = {}  # (kind, id) -> file:line:col
        self.rules = 0

    def claim(self, reader: Reader, kind: str, ident: str, container: Any, key: str) -> bool:
        """Record where ``ident`` is declared; False (and a problem) if it already was."""
        first = self.first_at.get((kind, ident))
        if first is not None:
            reader.fail(container, key, f"duplicate {kind} {ident!r} (first at {first})")
            return False
        self.first_at[(kind, ident)] = where(container, key)
        return True


def _read_groups(reader: Reader, doc: dict[str, Any], merged: _Merged) -> None:
    section = {} if doc.get("groups") is None else doc["groups"]
    if not isinstance(section, dict):
        reader.fail(doc, "groups", "groups must map a group name to a list of principals")
        return
    for name in section:
        members = reader.str_list(section, name, "groups") if section[name] is not None else []
        if merged.claim(reader, "group", name, section, name):
            merged.groups[name] = frozenset(members)


def _read_bindings(reader: Reader, doc: dict[str, Any]) -> list[tuple[Binding, Any]]:
    section = [] if doc.get("bindings") is None else doc["bindings"]
    if not isinstance(section, list):
        reader.fail(doc, "bindings", "bindings must be a list")
        return []
    found = []
    for i, item in enumerate(section):
        if not reader.keys(item, _BINDING_KEYS, "a binding", where(section, i)):
            continue
        role = item.get("role")
        if not isinstance(role, str):
            reader.fail(item, "role", "a binding needs role: <role id>")
            continue
        principals = reader.str_list(item, "principals", "binding")
        groups = reader.str_list(item, "groups", "binding")
        if not principals and not groups:
            reader.fail(item, None, "a binding needs principals: or groups:")
            continue
        binding = Binding(
            role=role,
            principals=frozenset(principals),
            groups=frozenset(groups),
            source=where(item, "principals") if principals else where(item),
        )
        found.append((binding, item))
    return found


def _read_roles(reader: Reader, path: Path, doc: dict[str, Any], merged: _Merged) -> None:
    section = [] if doc.get("roles") is None else doc["roles"]
    if not isinstance(section, list):
        reader.fail(doc, "roles", "roles must be a list")
        return
    for i, item in enumerate(section):
        if not reader.keys(item, _ROLE_KEYS, "a role", where(section, i)):
            continue
        role_id = item.get("id")
        if not isinstance(role_id, str) or not role_id:
            reader.fail(item, "id", "a role needs id: <name>")
            continue
        if not merged.claim(reader, "role id", role_id, item, "id"):
            continue
        rules_raw = [] if item.get("rules") is None else item["rules"]
        if not isinstance(rules_raw, list):
            reader.fail(item, "rules", "rules must be a list")
            continue
        rules: list[Rule] = []
        for index, raw in enumerate(rules_raw):
            rule = _read_rule(
                reader, path, role_id, index, raw, merged.rules, where(rules_raw, index)
            )
            merged.rules += 1
            if rule is not None and merged.claim(reader, "rule id", rule.id, raw, "id"):
                rules.append(rule)
        merged.roles[role_id] = Role(id=role_id, rules=tuple(rules), source=where(item, "id"))


def _read_rule(
    reader: Reader, path: Path, role: str, index: int, item: Any, order: int, at: str
) -> Rule | None:
    if not reader.keys(item, _RULE_KEYS, "a rule", at):
        return None
    before = len(reader.problems)
    effect_raw = item.get("effect", "allow")
    try:
        effect = Effect(effect_raw)
    except ValueError:
        reader.fail(item, "effect", f"effect must be allow or deny, not {effect_raw!r}")
        effect = Effect.DENY
    actions: set[Action] = set()
    action_texts = reader.str_list(item, "actions", "rule")
    action_sources = _item_positions(item, "actions", len(action_texts))
    for action, action_at in zip(action_texts, action_sources, strict=True):
        if action == "*":
            actions.update(Action)
        elif action in _ACTIONS:
            actions.add(Action(action))
        else:
            hint = did_you_mean(action, _ACTIONS)
            reader.problems.append(f"{action_at}: unknown action {action!r}{hint}")
    resources: list[ResourcePattern] = []
    texts = reader.str_list(item, "resources", "rule")
    resource_sources = _item_positions(item, "resources", len(texts))
    for text, at in zip(texts, resource_sources, strict=True):
        try:
            pattern = ResourcePattern.parse(text)
        except ValueError as exc:
            reader.problems.append(f"{at}: {exc}")
            continue
        if not _BACKEND_NAME.fullmatch(pattern.backend):
            reader.problems.append(
                f"{at}: resource {text!r}: {pattern.backend!r} is not a backend name "
                "(like aws, or a backend name from your config)"
            )
            continue
        resources.append(pattern)
    if len(reader.problems) == before:
        if not actions:
            reader.fail(item, None, "a rule needs at least one action")
        if not resources:
            reader.fail(item, None, "a rule needs at least one resource")
    when = _read_conditions(reader, item, "when")
    unless = _read_conditions(reader, item, "unless")
    rule_id = item.get("id", f"{path.stem}/{role}/{index}")
    if not isinstance(rule_id, str) or not rule_id:
        reader.fail(item, "id", "a rule id must be a non-empty string")
    if len(reader.problems) > before:
        return None
    return Rule(
        id=rule_id,
        role=role,
        effect=effect,
        actions=frozenset(actions),
        resources=tuple(resources),
        when=when,
        unless=unless,
        order=order,
        source=where(item),
        resource_sources=tuple(resource_sources),
    )


def _item_positions(item: Any, key: str, count: int) -> list[str]:
    """Where each element of ``item[key]`` is (a single string counts as one element)."""
    value = item.get(key)
    if isinstance(value, list):
        return [where(value, i) for i in range(count)]
    return [where(item, key)] * count


# -- conditions --------------------------------------------------------------------------


def _read_conditions(reader: Reader, rule: Any, key: str) -> tuple[Condition, ...]:
    block = rule.get(key)
    if block is None:
        return ()
    if not reader.keys(block, _CONDITION_KEYS, f"{key}:", where(rule, key)):
        return ()
    if not block:
        reader.fail(rule, key, f"an empty {key}: block; remove it or add a condition")
        return ()
    found: list[Condition] = []
    if "source_ip" in block:
        found.extend(_read_networks(reader, block))
    if "time" in block:
        found.extend(_read_time(reader, block))
    for scope in ("principal", "request"):
        if scope in block:
            found.extend(_read_attributes(reader, block, scope))
    return tuple(found)


def _read_networks(reader: Reader, block: Any) -> list[Condition]:
    networks = read_networks(reader, block, "source_ip", "when")
    return [SourceNetworks(networks)] if networks is not None else []


def read_networks(
    reader: Reader, block: Any, key: str, what: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
    """``block[key]``: one network or a list (``10.0.0.0/8``); None after a problem."""
    texts = reader.str_list(block, key, what)
    networks = []
    for text, at in zip(texts, _item_positions(block, key, len(texts)), strict=True):
        try:
            networks.append(_as_client_sees(ipaddress.ip_network(text)))
        except ValueError as exc:
            reader.problems.append(f"{at}: bad network {text!r}: {exc}")
    if not texts:
        reader.fail(block, key, f"{key} needs at least one network (10.0.0.0/8)")
    if len(networks) < len(texts) or not networks:
        return None
    return tuple(networks)


def _as_client_sees(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``::ffff:10.0.0.0/104`` as ``10.0.0.0/8``: callers' IPv4-mapped addresses are read
    as IPv4 (see conditions.parse_ip), so a mapped network must be too, or never match."""
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


def _read_time(reader: Reader, block: Any) -> list[Condition]:
    windows = read_time_windows(reader, block, "time")
    return [windows] if windows is not None else []


def read_time_windows(reader: Reader, block: Any, key: str) -> TimeWindows | None:
    """``block[key]``: one time window or a list (days, from, to, timezone); None after a
    problem."""
    raw = block[key]
    items = raw if isinstance(raw, list) else [raw]
    windows = []
    for i, item in enumerate(items):
        window = _read_window(reader, item, where(raw, i) if raw is items else where(block, key))
        windows.append(window)  # every window is read, so every problem is reported
    if None in windows:
        return None
    if not windows:
        reader.fail(block, key, f"{key} needs at least one window")
        return None
    return TimeWindows(tuple(w for w in windows if w is not None))


def _read_window(reader: Reader, item: Any, at: str) -> TimeWindow | None:
    if not reader.keys(item, _TIME_KEYS, "a time window", at):
        return None
    before = len(reader.problems)
    days = _read_days(reader, item)
    start = _read_clock(reader, item, "from", "00:00")
    end = _read_clock(reader, item, "to", "24:00")
    zone_name = item.get("timezone", "UTC")
    zone = None
    try:
        zone = zoneinfo.ZoneInfo(str(zone_name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a region folder such as "Europe" names a directory, not a zone.
        reader.fail(item, "timezone", f"unknown time zone {zone_name!r} (e.g. Europe/Berlin)")
    if start is not None and start == end:
        reader.fail(item, "to", "an empty time window: from and to are the same")
    if len(reader.problems) > before or zone is None or start is None or days is None:
        return None
    days_text = item.get("days", "every day")
    if isinstance(days_text, list):
        days_text = ",".join(str(d) for d in days_text)
    text = f"{days_text} {start:%H:%M}-{item.get('to', '24:00')} {zone_name}"
    return TimeWindow(days=days, start=start, end=end, zone=zone, text=text)


def _read_days(reader: Reader, item: Any) -> frozenset[int] | None:
    raw = item.get("days", "mon-sun")
    parts = raw if isinstance(raw, list) else str(raw).split(",")
    days: set[int] = set()
    for part in (str(p).strip().lower() for p in parts):
        first, dash, last = part.partition("-")
        if first not in DAY_NAMES or (dash and last not in DAY_NAMES):
            bad = last if first in DAY_NAMES else first
            reader.fail(
                item,
                "days",
                f"unknown day {bad!r}{did_you_mean(bad, DAY_NAMES)}; use mon..sun or "
                "ranges like mon-fri",
            )
            return None
        lo, hi = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days.update(range(lo, hi + 1) if lo <= hi else [*range(lo, 7), *range(hi + 1)])
    if not days:
        reader.fail(item, "days", "days needs at least one day (mon..sun, or a range mon-fri)")
        return None
    return frozenset(days)


def _read_clock(reader: Reader, item: Any, key: str, default: str) -> time | None:
    """``HH:MM``; ``to`` may be ``24:00`` (end of day), returned as None."""
    text = str(item.get(key, default))
    match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", text)
    if match and key == "to" and text == "24:00":
        return None
    if match and int(match[1]) < 24 and int(match[2]) < 60:
        return time(int(match[1]), int(match[2]))
    reader.fail(item, key, f"{key} must be a time of day HH:MM, not {text!r}")
    return None


def _read_attributes(reader: Reader, block: Any, scope: str) -> list[Condition]:
    section = block[scope]
    if not isinstance(section, dict) or not section:
        reader.fail(block, scope, f"{scope} must map attribute names to values")
        return []
    found: list[Condition] = []
    for key in section:
        if scope == "request" and key not in REQUEST_ATTRIBUTES:
            reader.problems.append(
                f"{where_key(section, key)}: unknown request attribute {key!r}"
                f"{did_you_mean(key, REQUEST_ATTRIBUTES)}; one of {', '.join(REQUEST_ATTRIBUTES)}"
            )
            continue
        values = reader.str_list(section, key, scope)
        if not values:
            reader.fail(section, key, f"{scope}.{key} needs at least one value")
            continue
        found.append(AttributeMatch.of(scope, key, tuple(values)))
    return found
