"""Evaluate a policy set: pure, synchronous, and cheap per request.

:meth:`PolicyEngine.decide` never scans the whole set. Rules are filed once, at load, by
action and backend, then under the exact name they name or under the fixed prefix of
their glob up to a ``/`` (``prod/payments/*`` under ``prod/payments/``). A decision looks
up the few buckets a secret's name can fall in (the name itself, and its prefixes that
some rule was filed under) and keeps the rules of the roles the principal holds.

:meth:`PolicyEngine.explain` answers the same question the slow way, rule by rule, and
says why each rule did or did not apply. Both use the same predicates on :class:`Rule`,
and a property test holds them to the same answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from keyledger.model import Action, Principal, SecretRef
from keyledger.policies.conditions import Context
from keyledger.policies.model import Decision, Effect, PolicySet, ResourcePattern, Rule

__all__ = ["Explanation", "PolicyEngine", "RuleVerdict"]

_CACHE_LIMIT = 100_000
# What a decision depends on once its rule is known: the rule (by identity: the engine
# holds every rule it decides by, so none is collected and its id reused), the action, and
# the secret, or for a whole backend ("any", backend).
_DecisionKey = tuple[object, ...]
_NOW = Context()  # at=None: the moment of the call, read once per decision


class _Bucket:
    """The rules of one (action, backend): by the exact name they name, or by the fixed
    prefix of their glob; ``lengths`` are the prefix lengths in use, so a lookup slices a
    name only where some rule could be filed (never once per ``/`` of a hostile name)."""

    def __init__(self) -> None:
        self.exact: dict[str, list[Rule]] = {}
        self.prefixed: dict[str, list[Rule]] = {}
        self.lengths: tuple[int, ...] = ()

    def add(self, rule: Rule, resource: ResourcePattern) -> None:
        if resource.literal:
            self.exact.setdefault(resource.glob, []).append(rule)
        else:
            self.prefixed.setdefault(resource.prefix, []).append(rule)

    def seal(self) -> None:
        self.lengths = tuple(sorted({len(p) for p in self.prefixed}))

    def candidates(self, name: str) -> Iterator[Rule]:
        if name.endswith("/*"):
            # Every secret under a prefix: a deny filed anywhere below it may apply.
            for rules in (*self.exact.values(), *self.prefixed.values()):
                yield from rules
            return
        yield from self.exact.get(name, ())
        for length in self.lengths:
            if length > len(name):
                break
            # Prefixes end in "/" (or are empty): only a cut after a "/" can be one.
            if length == 0 or name[length - 1] == "/":
                yield from self.prefixed.get(name[:length], ())


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """One rule considered for a decision, and what was found about each of its parts."""

    rule: Rule
    applies: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    groups: tuple[str, ...]  # the principal's groups: its own and those policies give it
    roles: tuple[tuple[str, str], ...]  # (role, how it is bound: "principal x", "group y")
    verdicts: tuple[RuleVerdict, ...]  # every rule of those roles, in order


class PolicyEngine:
    """Decisions over one immutable :class:`PolicySet`."""

    def __init__(self, policy: PolicySet) -> None:
        self.policy = policy
        self._rules = policy.rules
        self._index: dict[tuple[Action, str], _Bucket] = {}
        # For the listing gate: the allow rules of each action, in written order.
        self._allows: dict[Action, list[Rule]] = {}
        for rule in self._rules:
            for action in rule.actions:
                for res in rule.resources:
                    self._index.setdefault((action, res.backend), _Bucket()).add(rule, res)
                if rule.effect is Effect.ALLOW:
                    self._allows.setdefault(action, []).append(rule)
        for bucket in self._index.values():
            bucket.seal()
        self._gate_cache: dict[tuple[frozenset[str], Action, str], tuple[Rule, ...]] = {}
        self._decisions: dict[_DecisionKey, Decision] = {}
        # The policy groups each principal is listed in, inverted once.
        self._member_of: dict[str, list[str]] = {}
        for group, members in policy.groups.items():
            for member in members:
                self._member_of.setdefault(member, []).append(group)
        self._roles_cache: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}

    @property
    def hash(self) -> str:
        return self.policy.hash

    # -- who holds which roles --------------------------------------------------------

    def groups_of(self, principal: Principal) -> tuple[str, ...]:
        """The principal's own groups and the policy groups that list it."""
        extra = self._member_of.get(principal.id, ())
        return tuple(dict.fromkeys((*principal.groups, *extra)))

    def bindings_of(self, principal: Principal) -> list[tuple[str, str]]:
        """(role, why): every role bound to the principal, in binding order."""
        groups = set(self.groups_of(principal))
        found: list[tuple[str, str]] = []
        for b in self.policy.bindings:
            if principal.id in b.principals:
                found.append((b.role, f"principal {principal.id}"))
            elif "*" in b.principals:
                found.append((b.role, "every principal (*)"))
            elif via := sorted(b.groups & groups):
                found.append((b.role, f"group {via[0]}"))
        return found

    def roles_of(self, principal: Principal) -> frozenset[str]:
        """The roles :meth:`bindings_of` lists, cached per (principal, groups)."""
        key = (principal.id, principal.groups)
        roles = self._roles_cache.get(key)
        if roles is None:
            roles = frozenset(role for role, _ in self.bindings_of(principal))
            if len(self._roles_cache) >= _CACHE_LIMIT:
                # Drop the oldest entry, not all: a busy proxy must not fall off a cliff.
                del self._roles_cache[next(iter(self._roles_cache))]
            self._roles_cache[key] = roles
        return roles

    # -- decisions --------------------------------------------------------------------

    def decide(
        self, principal: Principal, action: Action, ref: SecretRef, ctx: Context = _NOW
    ) -> Decision:
        """Allow only if some rule allows and no rule denies; default deny.

        Among the rules that apply, the first written deny decides, else the first allow.
        """
        roles = self.roles_of(principal)
        ctx = _pinned(ctx)
        deny: Rule | None = None
        allow: Rule | None = None
        for backend in (ref.backend, "*"):
            bucket = self._index.get((action, backend))
            if bucket is None:
                continue
            for rule in bucket.candidates(ref.name):
                best = deny if rule.effect is Effect.DENY else allow
                if (
                    (best is None or rule.order < best.order)
                    and rule.role in roles
                    and rule.applies(principal, action, ref, ctx)
                ):
                    if rule.effect is Effect.DENY:
                        deny = rule
                    else:
                        allow = rule
        return self._decision(action, ref, deny or allow)

    def explain(
        self, principal: Principal, action: Action, ref: SecretRef, ctx: Context = _NOW
    ) -> Explanation:
        """The decision :meth:`decide` makes, and every rule considered on the way."""
        bindings = self.bindings_of(principal)
        roles = {role for role, _ in bindings}
        ctx = _pinned(ctx)
        verdicts: list[RuleVerdict] = []
        deny: Rule | None = None
        allow: Rule | None = None
        for rule in self._rules:
            if rule.role not in roles:
                continue
            verdict = _verdict(rule, principal, action, ref, ctx)
            verdicts.append(verdict)
            if verdict.applies:
                if rule.effect is Effect.DENY:
                    deny = deny or rule
                else:
                    allow = allow or rule
        return Explanation(
            decision=self._decision(action, ref, deny or allow),
            groups=self.groups_of(principal),
            roles=tuple(dict.fromkeys(bindings)),
            verdicts=tuple(verdicts),
        )

    def decide_any(
        self, principal: Principal, action: Action, backend: str, ctx: Context = _NOW
    ) -> Decision:
        """May the principal ``action`` anything at all on ``backend``? (for listings)

        Individual results are still filtered one by one with :meth:`decide`.
        """
        ctx = _pinned(ctx)
        rule = next(
            (
                rule
                for rule in self._gate_candidates(self.roles_of(principal), action, backend)
                if rule.conditions_hold(principal, ctx)
            ),
            None,
        )
        key: _DecisionKey = ("any", id(rule) if rule is not None else None, action, backend)
        return self._decisions.get(key) or self._remember(
            key, self._gate_allows(rule, action, backend)
        )

    def _gate_allows(self, rule: Rule | None, action: Action, backend: str) -> Decision:
        if rule is None:
            return Decision(
                effect=Effect.DENY,
                rule=None,
                policy_hash=self.policy.hash,
                reason=f"no rule allows {action} on anything in {backend} (default deny)",
            )
        return Decision(
            effect=Effect.ALLOW,
            rule=rule.id,
            policy_hash=self.policy.hash,
            reason=f"rule {rule.id} allows {action} on some of {backend}; "
            "results are filtered per secret",
        )

    def _remember(self, key: _DecisionKey, decision: Decision) -> Decision:
        """Keep a decision's value: the same few secrets are decided by the same rules on
        every request, and formatting the reason cost more than the rules."""
        if len(self._decisions) >= _CACHE_LIMIT:
            del self._decisions[next(iter(self._decisions))]
        self._decisions[key] = decision
        return decision

    def _gate_candidates(
        self, roles: frozenset[str], action: Action, backend: str
    ) -> tuple[Rule, ...]:
        """The allow rules of these roles for the action on the backend, in written order;
        the same few role sets come back on every request, so the list is kept."""
        key = (roles, action, backend)
        found = self._gate_cache.get(key)
        if found is None:
            found = tuple(
                rule
                for rule in self._allows.get(action, ())
                if rule.role in roles and any(r.backend in ("*", backend) for r in rule.resources)
            )
            if len(self._gate_cache) >= _CACHE_LIMIT:
                del self._gate_cache[next(iter(self._gate_cache))]
            self._gate_cache[key] = found
        return found

    def _decision(self, action: Action, ref: SecretRef, rule: Rule | None) -> Decision:
        key = (id(rule) if rule is not None else None, action, ref)
        return self._decisions.get(key) or self._remember(key, self._made(action, ref, rule))

    def _made(self, action: Action, ref: SecretRef, rule: Rule | None) -> Decision:
        if rule is None:
            return Decision(
                effect=Effect.DENY,
                rule=None,
                policy_hash=self.policy.hash,
                reason=f"no rule allows {action} on {ref} (default deny)",
            )
        verb = "denies" if rule.effect is Effect.DENY else "allows"
        return Decision(
            effect=rule.effect,
            rule=rule.id,
            policy_hash=self.policy.hash,
            reason=f"rule {rule.id} {verb} {action} on {ref}",
        )


def _pinned(ctx: Context) -> Context:
    """One moment for a whole decision: every time condition sees the same clock."""
    return ctx if ctx.at is not None else replace(ctx, at=datetime.now(UTC))


def _verdict(
    rule: Rule, principal: Principal, action: Action, ref: SecretRef, ctx: Context
) -> RuleVerdict:
    """Check every part of a rule (not just up to the first miss), saying what each saw."""
    reasons: list[str] = []
    applies = True
    if action not in rule.actions:
        applies = False
        reasons.append(f"action {action} is not in [{', '.join(sorted(rule.actions))}]")
    if not rule.names(ref):
        applies = False
        patterns = ", ".join(r.text for r in rule.resources)
        reasons.append(f"{ref} matches none of [{patterns}]")
    for cond in rule.when:
        if not cond.holds(principal, ctx):
            applies = False
        reasons.append("when: " + cond.explain(principal, ctx))
    for cond in rule.unless:
        if cond.holds(principal, ctx):
            applies = False
        reasons.append("unless: " + cond.explain(principal, ctx))
    if applies and not (rule.when or rule.unless):
        reasons.append(f"{action} on {ref} is covered")
    return RuleVerdict(rule, applies, tuple(reasons))


def principal_of(
    principal_id: str, groups: Iterable[str] = (), attributes: Mapping[str, str] | None = None
) -> Principal:
    """A principal as the CLI and tests describe one (auth method ``policy``)."""
    return Principal(
        id=principal_id,
        auth_method="policy",
        groups=tuple(groups),
        attributes=dict(attributes or {}),
    )
