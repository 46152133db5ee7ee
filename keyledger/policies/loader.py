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
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from keyledger._yaml import YamlError, did_you_mean, load_located, where, where_key
from keyledger.model import Action
from keyledger.policies.model import Binding, Effect, PolicySet, ResourcePattern, Role, Rule

__all__ = [
    "PolicyError",
    "example_policy_dir",
    "is_policy_test_file",
    "load_policy_files",
    "resolve_policy_paths",
]

_TOP_KEYS = ("version", "groups", "roles", "bindings")
_ROLE_KEYS = ("id", "description", "rules")
_RULE_KEYS = ("id", "description", "effect", "actions", "resources")
_BINDING_KEYS = ("role", "principals", "groups", "description")
_ACTIONS = tuple(a.value for a in Action)


class PolicyError(ValueError):
    """One or more problems, each ``file:line:col: reason``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def example_policy_dir() -> Path:
    """The example policies shipped inside the package (used by ``serve --dev``)."""
    return Path(__file__).with_name("examples")


def resolve_policy_paths(patterns: Iterable[str | Path], *, base: Path | None = None) -> list[Path]:
    """Expand files, folders (``*.yaml``/``*.yml`` inside) and globs, in a stable order.

    Folders and globs skip policy test files (``test`` as a word in the name, see
    :func:`is_policy_test_file`); a file named explicitly is always taken.
    """
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if base is not None and not path.is_absolute():
            path = base / path
        if path.is_dir():
            expanded = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        elif any(c in str(path) for c in "*?["):
            expanded = sorted(Path(p) for p in glob.glob(str(path)))
        else:
            found.append(path)
            continue
        found.extend(p for p in expanded if not is_policy_test_file(p))
    return list(dict.fromkeys(found))


_TEST_WORD = re.compile(r"(^|[._-])tests?([._-]|$)")


def is_policy_test_file(path: Path) -> bool:
    """``test_prod.yaml``, ``prod.test.yaml``, ``prod-tests.yaml``: yes; ``latest.yaml``: no."""
    return _TEST_WORD.search(path.stem) is not None


class _Reader:
    """Collects every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, container: Any, key: str | int | None, reason: str) -> None:
        self.problems.append(f"{where(container, key)}: {reason}")

    def keys(self, mapping: Any, allowed: Sequence[str], what: str) -> bool:
        if not isinstance(mapping, dict):
            self.fail(mapping, None, f"{what} must be a mapping")
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


def load_policy_files(paths: Sequence[Path]) -> PolicySet:
    """Load and merge policy files; raise :class:`PolicyError` listing every problem."""
    if not paths:
        raise PolicyError(["no policy files found (check the policies: paths in your config)"])
    reader = _Reader()
    roles: dict[str, Role] = {}
    role_where: dict[str, str] = {}
    bindings: list[tuple[Binding, Any]] = []
    groups: dict[str, set[str]] = {}
    digest = hashlib.sha256()
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            reader.problems.append(f"{path}: cannot read policy file: {exc.strerror}")
            continue
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        try:
            doc = load_located(path, raw.decode("utf-8"))
        except (YamlError, UnicodeDecodeError) as exc:
            reader.problems.append(str(exc) if isinstance(exc, YamlError) else f"{path}: {exc}")
            continue
        if doc is None:
            continue
        if not reader.keys(doc, _TOP_KEYS, "a policy file"):
            continue
        if doc.get("version", 1) != 1:
            reader.fail(doc, "version", f"unsupported policy version {doc['version']!r}; use 1")
        _read_groups(reader, doc, groups)
        _read_roles(reader, path, doc, roles, role_where)
        for item in doc.get("bindings") or []:
            if reader.keys(item, _BINDING_KEYS, "a binding"):
                role = item.get("role")
                if not isinstance(role, str):
                    reader.fail(item, "role", "a binding needs role: <role id>")
                    continue
                binding = Binding(
                    role=role,
                    principals=frozenset(reader.str_list(item, "principals", "binding")),
                    groups=frozenset(reader.str_list(item, "groups", "binding")),
                )
                bindings.append((binding, item))
    for binding, item in bindings:
        if binding.role not in roles:
            reader.fail(
                item, "role", f"unknown role {binding.role!r}{did_you_mean(binding.role, roles)}"
            )
        # A binding may name a group no policy file declares: groups also come from
        # identities (and later from OIDC claims).
    if reader.problems:
        raise PolicyError(reader.problems)
    return PolicySet(
        roles=roles,
        bindings=tuple(b for b, _ in bindings),
        groups={g: frozenset(m) for g, m in groups.items()},
        hash="sha256:" + digest.hexdigest(),
        files=tuple(str(p) for p in paths),
    )


def _read_groups(reader: _Reader, doc: dict[str, Any], groups: dict[str, set[str]]) -> None:
    section = doc.get("groups") or {}
    if not isinstance(section, dict):
        reader.fail(doc, "groups", "groups must map a group name to a list of principals")
        return
    for name in section:
        groups.setdefault(name, set()).update(reader.str_list(section, name, "groups"))


def _read_roles(
    reader: _Reader,
    path: Path,
    doc: dict[str, Any],
    roles: dict[str, Role],
    role_where: dict[str, str],
) -> None:
    section = doc.get("roles") or []
    if not isinstance(section, list):
        reader.fail(doc, "roles", "roles must be a list")
        return
    for item in section:
        if not reader.keys(item, _ROLE_KEYS, "a role"):
            continue
        role_id = item.get("id")
        if not isinstance(role_id, str) or not role_id:
            reader.fail(item, "id", "a role needs id: <name>")
            continue
        if role_id in roles:
            reader.fail(
                item, "id", f"duplicate role id {role_id!r} (first at {role_where[role_id]})"
            )
            continue
        role_where[role_id] = where(item, "id")
        rules_raw = item.get("rules") or []
        if not isinstance(rules_raw, list):
            reader.fail(item, "rules", "rules must be a list")
            continue
        rules = [_read_rule(reader, path, role_id, i, r) for i, r in enumerate(rules_raw)]
        ids = [r.id for r in rules if r is not None]
        for rule_id in {i for i in ids if ids.count(i) > 1}:
            reader.fail(item, "rules", f"duplicate rule id {rule_id!r} in role {role_id!r}")
        roles[role_id] = Role(id=role_id, rules=tuple(r for r in rules if r is not None))


def _read_rule(reader: _Reader, path: Path, role: str, index: int, item: Any) -> Rule | None:
    if not reader.keys(item, _RULE_KEYS, "a rule"):
        return None
    ok = True
    effect_raw = item.get("effect", "allow")
    try:
        effect = Effect(effect_raw)
    except ValueError:
        reader.fail(item, "effect", f"effect must be allow or deny, not {effect_raw!r}")
        ok = False
        effect = Effect.DENY
    actions: set[Action] = set()
    for action in reader.str_list(item, "actions", "rule"):
        if action == "*":
            actions.update(Action)
        elif action in _ACTIONS:
            actions.add(Action(action))
        else:
            reader.fail(
                item, "actions", f"unknown action {action!r}{did_you_mean(action, _ACTIONS)}"
            )
            ok = False
    if not actions and ok:
        reader.fail(item, None, "a rule needs at least one action")
        ok = False
    resources: list[ResourcePattern] = []
    for text in reader.str_list(item, "resources", "rule"):
        try:
            resources.append(ResourcePattern.parse(text))
        except ValueError as exc:
            reader.fail(item, "resources", str(exc))
            ok = False
    if not resources and ok:
        reader.fail(item, None, "a rule needs at least one resource")
        ok = False
    rule_id = item.get("id") or f"{path.stem}/{role}/{index}"
    if not isinstance(rule_id, str):
        reader.fail(item, "id", "rule id must be a string")
        ok = False
    if not ok:
        return None
    return Rule(
        id=str(rule_id),
        role=role,
        effect=effect,
        actions=frozenset(actions),
        resources=tuple(resources),
        source=where(item),
    )
