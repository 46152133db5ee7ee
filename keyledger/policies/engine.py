"""Evaluate a policy set: pure, synchronous, and cheap per request.

The rules that can apply to a principal depend only on its id and groups, so they are
gathered once per (principal, groups) and cached; a decision then scans only that
principal's rules, never the whole set.
"""

from __future__ import annotations

from collections.abc import Iterable

from keyledger.model import Action, SecretRef
from keyledger.policies.model import Decision, Effect, PolicySet, Rule

__all__ = ["PolicyEngine"]

_CACHE_LIMIT = 10_000


class PolicyEngine:
    """Decisions over one immutable :class:`PolicySet`."""

    def __init__(self, policy: PolicySet) -> None:
        self.policy = policy
        self._rules_cache: dict[tuple[str, frozenset[str]], tuple[Rule, ...]] = {}

    @property
    def hash(self) -> str:
        return self.policy.hash

    def rules_for(self, principal: str, groups: Iterable[str] = ()) -> tuple[Rule, ...]:
        """Every rule of every role bound to the principal or one of its groups."""
        key = (principal, frozenset(groups))
        found = self._rules_cache.get(key)
        if found is not None:
            return found
        member_of = set(key[1])
        member_of.update(g for g, members in self.policy.groups.items() if principal in members)
        roles = [
            b.role
            for b in self.policy.bindings
            if principal in b.principals or "*" in b.principals or b.groups & member_of
        ]
        seen: set[str] = set()
        rules: list[Rule] = []
        for role in roles:
            if role not in seen:
                seen.add(role)
                rules.extend(self.policy.roles[role].rules)
        result = tuple(rules)
        if len(self._rules_cache) >= _CACHE_LIMIT:
            self._rules_cache.clear()
        self._rules_cache[key] = result
        return result

    def decide(
        self, principal: str, groups: Iterable[str], action: Action, ref: SecretRef
    ) -> Decision:
        """Allow only if some rule allows and no rule denies; default deny."""
        allowed_by: Rule | None = None
        for rule in self.rules_for(principal, groups):
            if not rule.applies(action, ref.backend, ref.name):
                continue
            if rule.effect is Effect.DENY:
                return Decision(
                    effect=Effect.DENY,
                    rule=rule.id,
                    policy_hash=self.policy.hash,
                    reason=f"rule {rule.id} denies {action} on {ref}",
                )
            if allowed_by is None:
                allowed_by = rule
        if allowed_by is not None:
            return Decision(
                effect=Effect.ALLOW,
                rule=allowed_by.id,
                policy_hash=self.policy.hash,
                reason=f"rule {allowed_by.id} allows {action} on {ref}",
            )
        return Decision(
            effect=Effect.DENY,
            rule=None,
            policy_hash=self.policy.hash,
            reason=f"no rule allows {action} on {ref} (default deny)",
        )

    def decide_any(
        self, principal: str, groups: Iterable[str], action: Action, backend: str
    ) -> Decision:
        """May the principal ``action`` anything at all on ``backend``? (for listings)

        Individual results are still filtered one by one with :meth:`decide`.
        """
        for rule in self.rules_for(principal, groups):
            on_backend = any(r.backend in ("*", backend) for r in rule.resources)
            if rule.effect is Effect.ALLOW and action in rule.actions and on_backend:
                return Decision(
                    effect=Effect.ALLOW,
                    rule=rule.id,
                    policy_hash=self.policy.hash,
                    reason=f"rule {rule.id} allows {action} on some of {backend}; "
                    "results are filtered per secret",
                )
        return Decision(
            effect=Effect.DENY,
            rule=None,
            policy_hash=self.policy.hash,
            reason=f"no rule allows {action} on anything in {backend} (default deny)",
        )
