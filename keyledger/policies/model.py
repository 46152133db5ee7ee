"""The policy language, as immutable values.

A policy set is roles (lists of rules), bindings (who holds which role) and groups (named
sets of principals). A rule allows or denies some actions on resources written
``backend:name-glob``, optionally only under conditions. Explicit deny beats allow; no
matching allow means deny.
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from keyledger.model import Action, Principal, SecretRef
from keyledger.policies.conditions import Condition, Context

__all__ = ["Binding", "Decision", "Effect", "PolicySet", "ResourcePattern", "Role", "Rule"]

_WILDCARDS = frozenset("*?[")


@functools.lru_cache(maxsize=4096)
def _glob_regex(glob: str) -> re.Pattern[str]:
    # Large sets repeat globs (aws:*, prod/*): compile each once.
    return re.compile(fnmatch.translate(glob))


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    """``backend:glob``; ``*`` and ``?`` match any character, ``/`` included (as in IAM)."""

    text: str
    backend: str
    glob: str
    # None for a glob without wildcards (most rules name one secret): compared as text.
    regex: re.Pattern[str] | None = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> ResourcePattern:
        backend, sep, glob = text.partition(":")
        if not sep or not backend or not glob:
            raise ValueError(f"resource {text!r} must be written backend:name (aws:prod/*)")
        wild = any(c in _WILDCARDS for c in glob)
        return cls(text, backend, glob, _glob_regex(glob) if wild else None)

    def matches(self, backend: str, name: str) -> bool:
        if self.backend not in ("*", backend):
            return False
        return name == self.glob if self.regex is None else self.regex.match(name) is not None

    @property
    def literal(self) -> bool:
        """True when the glob names exactly one secret."""
        return self.regex is None

    def may_match_under(self, backend: str, prefix: str) -> bool:
        """Some name starting with ``prefix`` could match: the glob's fixed start and the
        prefix agree as far as both go."""
        if self.backend not in ("*", backend):
            return False
        cut = next((i for i, c in enumerate(self.glob) if c in _WILDCARDS), len(self.glob))
        fixed = self.glob[:cut]
        return fixed.startswith(prefix) or prefix.startswith(fixed)

    @property
    def prefix(self) -> str:
        """The fixed start of every name the glob can match, cut after a ``/``.

        ``prod/pay*`` -> ``prod/``; ``*`` -> ``""``. The engine files rules under it.
        """
        cut = next((i for i, c in enumerate(self.glob) if c in _WILDCARDS), len(self.glob))
        return self.glob[: self.glob.rfind("/", 0, cut) + 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    id: str
    role: str
    effect: Effect
    actions: frozenset[Action]
    resources: tuple[ResourcePattern, ...]
    when: tuple[Condition, ...] = ()  # all must hold
    unless: tuple[Condition, ...] = ()  # none may hold
    order: int = 0  # position in the whole set: among matching rules, the first decides
    source: str = ""  # file:line:col, for explanations
    # file:line:col of each resource, for `policy check` findings about one of them.
    resource_sources: tuple[str, ...] = field(default=(), compare=False)

    def covers(self, action: Action, ref: SecretRef) -> bool:
        """The action and the secret are this rule's, conditions aside.

        For a ref that stands for every secret under a prefix (``vault/*``), an allow must
        cover the whole prefix (its glob matches ``vault/*`` itself), and a deny covers it
        as soon as it could match any one secret there: a deny on part is a deny of all.
        """
        return action in self.actions and self.names(ref)

    def names(self, ref: SecretRef) -> bool:
        """The secret is one of this rule's resources (see :meth:`covers` for ``vault/*``)."""
        under = ref.under
        if under is not None and self.effect is Effect.DENY:
            return any(r.may_match_under(ref.backend, under) for r in self.resources)
        return any(r.matches(ref.backend, ref.name) for r in self.resources)

    def conditions_hold(self, principal: Principal, ctx: Context) -> bool:
        return all(c.holds(principal, ctx) for c in self.when) and not any(
            c.holds(principal, ctx) for c in self.unless
        )

    def applies(self, principal: Principal, action: Action, ref: SecretRef, ctx: Context) -> bool:
        return self.covers(action, ref) and self.conditions_hold(principal, ctx)


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    id: str
    rules: tuple[Rule, ...]
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    role: str
    principals: frozenset[str]
    groups: frozenset[str]
    source: str = ""  # file:line:col


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySet:
    roles: Mapping[str, Role]
    bindings: tuple[Binding, ...]
    groups: Mapping[str, frozenset[str]]
    hash: str  # "sha256:<hex>" over every file's name and bytes
    files: tuple[str, ...]
    # Every rule, in the order the set was written (derived once, here).
    rules: tuple[Rule, ...] = field(init=False)

    def __post_init__(self) -> None:
        ordered = sorted((r for role in self.roles.values() for r in role.rules), key=_order)
        object.__setattr__(self, "rules", tuple(ordered))


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    effect: Effect
    rule: str | None
    policy_hash: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @property
    def explicit(self) -> bool:
        """Denied by a rule, not by default."""
        return self.effect is Effect.DENY and self.rule is not None


def _order(rule: Rule) -> int:
    return rule.order
