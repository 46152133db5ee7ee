"""What ``policy check`` finds beyond a load error: rules that can never matter.

A policy set that loads can still be wrong in ways a reviewer misses: a role nobody holds,
an allow that a broader deny always overrides, a resource on a backend this proxy does not
serve, a glob that matches no secret the team has. The proxy logs these as warnings when
it loads a set; ``policy check`` fails on them, so CI does.

Every finding is sound: it is reported only when it is certainly true (glob coverage is
decided for literal names and ``prefix*`` globs only, never guessed for the rest).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from keyledger._yaml import did_you_mean
from keyledger.model import SecretRef
from keyledger.policies.conditions import AttributeMatch
from keyledger.policies.model import Binding, Effect, PolicySet, ResourcePattern, Rule

__all__ = ["Finding", "lint"]


@dataclass(frozen=True, slots=True)
class Finding:
    where: str  # file:line:col
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def lint(
    policy: PolicySet,
    *,
    backends: Collection[str],
    inventory: Collection[SecretRef] | None = None,
    configured: bool = True,
    lower_case: Collection[str] = (),
) -> list[Finding]:
    """Findings in file order. ``backends`` are the configured backend names, or with
    ``configured=False`` (no config at hand) the backends keyledger can serve at all;
    ``inventory``, when given, the secrets that exist (to find globs matching none);
    ``lower_case``, the backends whose names reach policy in lower case (Key Vault's)."""
    findings: list[Finding] = []
    bound = {b.role for b in policy.bindings}
    for role in policy.roles.values():
        if role.id not in bound and role.rules:
            findings.append(
                Finding(
                    role.source,
                    f"unreachable: role {role.id!r} is bound to nobody, so its "
                    f"{len(role.rules)} rule(s) never apply",
                )
            )
    for binding in policy.bindings:
        for principal in sorted(binding.principals):
            if principal != "*" and any(c in principal for c in "*?["):
                findings.append(
                    Finding(
                        binding.source,
                        f"principal {principal!r} is matched exactly, not as a glob "
                        "(bind a group instead, or '*' for everyone)",
                    )
                )
    rules = policy.rules
    denies = [r for r in rules if r.effect is Effect.DENY and not (r.when or r.unless)]
    for rule in rules:
        if rule.role in bound and rule.effect is Effect.ALLOW:
            shadow = next((d for d in denies if _overrides(policy, d, rule)), None)
            if shadow is not None:
                findings.append(
                    Finding(
                        rule.source,
                        f"unreachable: rule {rule.id!r} is always overridden by deny rule "
                        f"{shadow.id!r} ({shadow.source})",
                    )
                )
        findings.extend(_fails_open(rule))
        # A deny may fence off secrets that do not exist yet: only allows must match some.
        known = inventory if rule.effect is Effect.ALLOW else None
        for resource, where in zip(rule.resources, _sources(rule), strict=True):
            problem = _resource_problem(resource, backends, known, configured=configured)
            if (
                problem is None
                and resource.backend in lower_case
                and resource.glob.lower() != (resource.glob)
            ):
                problem = (
                    f"resource {resource.text!r} never matches: names on backend "
                    f"{resource.backend!r} are case-insensitive and reach policy in lower "
                    f"case (write {resource.backend}:{resource.glob.lower()})"
                )
            if problem:
                findings.append(Finding(where, problem))
    return sorted(findings, key=_file_order)


def _fails_open(rule: Rule) -> Iterable[Finding]:
    """An attribute can be missing (a read by VersionId has no stage, a caller may lack a
    claim), and then its condition does not hold: a deny's `when:` or an allow's `unless:`
    on it then lets the call through."""
    block, name = (rule.when, "when") if rule.effect is Effect.DENY else (rule.unless, "unless")
    for cond in block:
        if isinstance(cond, AttributeMatch):
            verb = "deny" if rule.effect is Effect.DENY else "allow"
            yield Finding(
                rule.source,
                f"fails open: {verb} rule {rule.id!r} has {name}: {cond.scope}.{cond.key}, "
                f"which does not hold when the attribute is missing, so the {verb} then "
                f"{'does not apply' if verb == 'deny' else 'applies'}; fence with deny + "
                "unless:, grant with allow + when:",
            )


def _sources(rule: Rule) -> Iterable[str]:
    return rule.resource_sources or [rule.source] * len(rule.resources)


def _resource_problem(
    resource: ResourcePattern,
    backends: Collection[str],
    inventory: Collection[SecretRef] | None,
    *,
    configured: bool,
) -> str | None:
    if resource.backend != "*" and resource.backend not in backends:
        names = ", ".join(sorted(backends)) or "none"
        hint = did_you_mean(resource.backend, backends)
        if not configured:
            return (
                f"resource {resource.text!r}: keyledger cannot serve backend "
                f"{resource.backend!r}{hint} (it serves: {names}; with --config, the "
                "backends that config names)"
            )
        return (
            f"resource {resource.text!r} matches nothing configured: no backend "
            f"{resource.backend!r}{hint} (configured: {names})"
        )
    if inventory is not None and not any(
        resource.matches(ref.backend, ref.name) for ref in inventory
    ):
        return f"resource {resource.text!r} matches no secret in the inventory"
    return None


def _overrides(policy: PolicySet, deny: Rule, allow: Rule) -> bool:
    """The unconditional ``deny`` applies to every request ``allow`` could allow."""
    return (
        allow.actions <= deny.actions
        and all(any(_covers(d, a) for d in deny.resources) for a in allow.resources)
        and _holders_included(policy, allow.role, deny.role)
    )


def _covers(outer: ResourcePattern, inner: ResourcePattern) -> bool:
    """Every name ``inner`` matches, ``outer`` matches (decided only where certain)."""
    if outer.backend not in ("*", inner.backend):
        return False
    if outer.glob == inner.glob:
        return True
    stem = outer.glob[:-1]
    if outer.glob.endswith("*") and not any(c in "*?[" for c in stem):
        # `prefix*` matches every name that starts with prefix: `*` crosses `/`.
        return inner.glob.startswith(stem)
    return False


def _holders_included(policy: PolicySet, role: str, other: str) -> bool:
    """Everyone who holds ``role`` certainly holds ``other``."""
    if role == other:
        return True
    held: list[Binding] = [b for b in policy.bindings if b.role == other]
    if any("*" in b.principals for b in held):
        return True
    principals = set().union(*(b.principals for b in held))
    groups = set().union(*(b.groups for b in held))
    # A principal listed in a policy group holds the group's roles too.
    principals |= {p for g in groups for p in policy.groups.get(g, ())}
    return all(
        b.principals <= principals and b.groups <= groups for b in policy.bindings if b.role == role
    )


def _file_order(finding: Finding) -> tuple[str, int, int]:
    path, line, column = [*finding.where.rsplit(":", 2), "", ""][:3]  # paths may hold ":"
    if line.isdigit() and column.isdigit():
        return path, int(line), int(column)
    return finding.where, 0, 0
