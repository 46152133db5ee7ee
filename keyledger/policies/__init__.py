"""The policy engine: pure and synchronous; never imports ``keyledger.proxy`` or aiohttp."""

from keyledger.policies.engine import PolicyEngine
from keyledger.policies.loader import (
    PolicyError,
    example_policy_dir,
    load_policy_files,
    resolve_policy_paths,
)
from keyledger.policies.model import Decision, Effect, PolicySet, Rule

__all__ = [
    "Decision",
    "Effect",
    "PolicyEngine",
    "PolicyError",
    "PolicySet",
    "Rule",
    "example_policy_dir",
    "load_policy_files",
    "resolve_policy_paths",
]
