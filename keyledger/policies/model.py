"""The policy language, as immutable values.

A policy set is roles (lists of rules), bindings (who holds which role) and groups (named
sets of principals). A rule allows or denies some actions on resources written
``backend:name-glob``. Explicit deny beats allow; no matching allow means deny.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from keyledger.model import Action

__all__ = ["Binding", "Decision", "Effect", "PolicySet", "ResourcePattern", "Role", "Rule"]


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    """``backend:glob``; ``*`` and ``?`` match any character, ``/`` included (as in IAM)."""

    text: str
    backend: str
    glob: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> ResourcePattern:
        backend, sep, glob = text.partition(":")
        if not sep or not backend or not glob:
            raise ValueError(f"resource {text!r} must be written backend:name (aws:prod/*)")
        return cls(text, backend, glob, re.compile(fnmatch.translate(glob)))

    def matches(self, backend: str, name: str) -> bool:
        return (self.backend in ("*", backend)) and self.regex.match(name) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    id: str
    role: str
    effect: Effect
    actions: frozenset[Action]
    resources: tuple[ResourcePattern, ...]
    source: str  # file:line:col, for explanations

    def applies(self, action: Action, backend: str, name: str) -> bool:
        return action in self.actions and any(r.matches(backend, name) for r in self.resources)


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    id: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    role: str
    principals: frozenset[str]
    groups: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySet:
    roles: Mapping[str, Role]
    bindings: tuple[Binding, ...]
    groups: Mapping[str, frozenset[str]]
    hash: str  # "sha256:<hex>" over every file's name and bytes
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    effect: Effect
    rule: str | None
    policy_hash: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW
