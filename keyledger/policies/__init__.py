"""The policy engine: pure and synchronous; never imports ``keyledger.proxy`` or aiohttp."""

from keyledger.policies.conditions import Context
from keyledger.policies.engine import Explanation, PolicyEngine, RuleVerdict, principal_of
from keyledger.policies.loader import (
    PolicyError,
    example_policy_dir,
    load_policy_files,
    load_policy_set,
    resolve_policy_paths,
)
from keyledger.policies.model import Decision, Effect, PolicySet, Rule

__all__ = [
    "Context",
    "Decision",
    "Effect",
    "Explanation",
    "PolicyEngine",
    "PolicyError",
    "PolicySet",
    "Rule",
    "RuleVerdict",
    "example_policy_dir",
    "load_policy_files",
    "load_policy_set",
    "principal_of",
    "resolve_policy_paths",
]
