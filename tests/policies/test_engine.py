"""The policy engine: default deny, explicit deny wins, bindings, groups and globs."""

from __future__ import annotations

import textwrap
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.model import Action, SecretRef
from keyledger.policies import Effect, PolicyEngine, PolicySet, load_policy_files
from keyledger.policies import principal_of as who
from keyledger.policies.model import Binding, ResourcePattern, Role, Rule
from keyledger.policies.testing import parse_secret as ref


def engine_for(tmp_path: Path, text: str) -> PolicyEngine:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return PolicyEngine(load_policy_files([path]))


LAYERED = """
    groups:
      everyone: [svc-app, svc-batch]
      payments: []  # members come from identities
    roles:
      - id: reader
        rules:
          - id: read-prod
            actions: [read, describe]
            resources: ["aws:prod/*"]
      - id: fence
        rules:
          - id: deny-payments
            effect: deny
            actions: ["*"]
            resources: ["aws:prod/payments/*"]
      - id: payments-reader
        rules:
          - id: read-payments
            actions: [read]
            resources: ["aws:prod/payments/*"]
    bindings:
      - role: reader
        principals: [svc-app]
      - role: fence
        groups: [everyone]
      - role: payments-reader
        groups: [payments]
"""


class TestDecide:
    def test_default_deny(self, tmp_path: Path) -> None:
        """A principal no rule speaks about is denied, and the reason says so."""
        engine = engine_for(tmp_path, LAYERED)

        decision = engine.decide(who("svc-stranger", ()), Action.READ, ref("aws:prod/db"))

        assert not decision.allowed
        assert decision.effect is Effect.DENY
        assert decision.rule is None
        assert "default deny" in decision.reason

    def test_allow_names_rule_and_policy_hash(self, tmp_path: Path) -> None:
        """An allowed request names the rule that allowed it and the policy version."""
        engine = engine_for(tmp_path, LAYERED)

        decision = engine.decide(who("svc-app", ()), Action.READ, ref("aws:prod/db/password"))

        assert decision.allowed
        assert decision.rule == "read-prod"
        assert decision.policy_hash == engine.policy.hash == engine.hash
        assert decision.reason == "rule read-prod allows read on aws:prod/db/password"

    def test_action_not_in_rule_is_denied(self, tmp_path: Path) -> None:
        """A rule allowing read does not allow write on the same secret."""
        engine = engine_for(tmp_path, LAYERED)

        assert not engine.decide(who("svc-app", ()), Action.WRITE, ref("aws:prod/db")).allowed

    def test_explicit_deny_from_a_group_role_beats_allow(self, tmp_path: Path) -> None:
        """A deny from a role bound through a policy group overrides a direct allow."""
        engine = engine_for(tmp_path, LAYERED)

        decision = engine.decide(who("svc-app", ()), Action.READ, ref("aws:prod/payments/key"))

        assert decision.effect is Effect.DENY
        assert decision.rule == "deny-payments"
        assert decision.policy_hash == engine.hash

    def test_explicit_deny_wins_whatever_the_order(self, tmp_path: Path) -> None:
        """Deny wins even when the allowing role is bound after the denying one."""
        engine = engine_for(tmp_path, LAYERED)

        decision = engine.decide(
            who("svc-batch", ("payments",)), Action.READ, ref("aws:prod/payments/key")
        )

        assert decision.rule == "deny-payments"
        assert not decision.allowed

    def test_principal_groups_bind_roles(self, tmp_path: Path) -> None:
        """Groups the caller's identity carries select roles bound to those groups."""
        engine = engine_for(
            tmp_path,
            """
            groups:
              payments: []
            roles:
              - id: payments-reader
                rules:
                  - id: read-payments
                    actions: [read]
                    resources: ["aws:payments/*"]
            bindings:
              - role: payments-reader
                groups: [payments]
            """,
        )
        secret = ref("aws:payments/stripe")

        assert (
            engine.decide(who("svc-x", ("payments",)), Action.READ, secret).rule == "read-payments"
        )
        assert not engine.decide(who("svc-x", ()), Action.READ, secret).allowed
        assert not engine.decide(who("svc-x", ("ops",)), Action.READ, secret).allowed

    def test_policy_file_groups_bind_roles(self, tmp_path: Path) -> None:
        """Members listed under `groups:` in a policy file get the group's roles."""
        engine = engine_for(
            tmp_path,
            """
            groups:
              payments: [svc-checkout]
            roles:
              - id: payments-reader
                rules:
                  - actions: [read]
                    resources: ["aws:payments/*"]
            bindings:
              - role: payments-reader
                groups: [payments]
            """,
        )
        secret = ref("aws:payments/stripe")

        assert engine.decide(who("svc-checkout", ()), Action.READ, secret).allowed
        assert not engine.decide(who("svc-refunds", ()), Action.READ, secret).allowed

    def test_star_binding_applies_to_everyone(self, tmp_path: Path) -> None:
        """A binding to principal `*` applies to every authenticated caller."""
        engine = engine_for(
            tmp_path,
            """
            roles:
              - id: shared
                rules:
                  - id: read-shared
                    actions: [read]
                    resources: ["aws:shared/*"]
            bindings:
              - role: shared
                principals: ["*"]
            """,
        )

        for principal in ("svc-a", "svc-b"):
            decision = engine.decide(who(principal, ()), Action.READ, ref("aws:shared/flag"))
            assert decision.rule == "read-shared"

    def test_glob_semantics(self, tmp_path: Path) -> None:
        """`*` crosses `/`, `?` is one character, the whole name must match, backends too."""
        engine = engine_for(
            tmp_path,
            """
            roles:
              - id: r
                rules:
                  - actions: [read]
                    resources: ["aws:staging/*", "aws:db-?", "*:shared/*"]
            bindings:
              - role: r
                principals: [svc]
            """,
        )

        def allowed(text: str) -> bool:
            return engine.decide(who("svc", ()), Action.READ, ref(text)).allowed

        assert allowed("aws:staging/a")
        assert allowed("aws:staging/a/b")
        assert allowed("aws:db-1")
        assert allowed("gcp:shared/x")
        assert not allowed("aws:staging")
        assert not allowed("aws:prod/staging/a")
        assert not allowed("aws:db-12")
        assert not allowed("gcp:staging/a")

    def test_groups_do_not_leak_between_calls(self, tmp_path: Path) -> None:
        """A principal's answer depends on the groups of this call, not of earlier calls."""
        engine = engine_for(tmp_path, LAYERED)
        secret = ref("aws:prod/payments/key")

        assert engine.decide(who("svc-x", ("payments",)), Action.READ, secret).allowed
        assert not engine.decide(who("svc-x", ()), Action.READ, secret).allowed
        assert engine.decide(who("svc-x", ["payments"]), Action.READ, secret).allowed

    def test_a_principal_named_like_a_group_gets_no_group_roles(self, tmp_path: Path) -> None:
        """Principal ids and group names live apart: 'group:payments' is not the group."""
        engine = engine_for(tmp_path, LAYERED)
        secret = ref("aws:prod/payments/key")

        assert not engine.decide(who("group:payments", ()), Action.READ, secret).allowed
        assert engine.decide(who("x", ("payments",)), Action.READ, secret).allowed

    def test_a_name_of_many_slashes_does_not_blow_up_memory(self, tmp_path: Path) -> None:
        """A hostile name ('/' * 20,000) is decided without building a prefix per '/':
        a lookup slices only at the prefix lengths some rule was filed under."""
        engine = engine_for(tmp_path, LAYERED)
        hostile = ref("aws:" + "/" * 20_000)

        tracemalloc.start()
        try:
            assert not engine.decide(who("svc-app", ()), Action.READ, hostile).allowed
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # One prefix per '/' would hold ~200 MB; the name itself is 20 kB.
        assert peak < 1_000_000


class TestDecideAny:
    def test_listing_allowed_when_some_rule_allows_on_the_backend(self, tmp_path: Path) -> None:
        """A listing is allowed if some rule allows the action on that backend."""
        engine = engine_for(
            tmp_path,
            """
            roles:
              - id: r
                rules:
                  - id: list-staging
                    actions: [list]
                    resources: ["aws:staging/*"]
                  - id: deny-all
                    effect: deny
                    actions: [list]
                    resources: ["gcp:*"]
            bindings:
              - role: r
                principals: [svc]
            """,
        )

        decision = engine.decide_any(who("svc", ()), Action.LIST, "aws")

        assert decision.allowed
        assert decision.rule == "list-staging"
        assert decision.policy_hash == engine.hash
        assert not engine.decide_any(who("svc", ()), Action.LIST, "gcp").allowed
        assert not engine.decide_any(who("svc", ()), Action.READ, "aws").allowed
        assert not engine.decide_any(who("other", ()), Action.LIST, "aws").allowed


# -- property: decide agrees with an obviously-correct reference evaluator ----------------

PRINCIPALS = ("alice", "bob", "carol")
GROUPS = ("g1", "g2")
BACKENDS = ("aws", "gcp")
NAMES = ("a", "ab", "a/b", "b/c", "prod/x", "prod/x/y")
GLOBS = ("*", "a", "a*", "a/*", "?", "??", "prod/*", "*/c", "b?c", "*x*", "prod/x")
ACTIONS = tuple(Action)


def glob_matches(pattern: str, name: str) -> bool:
    """`*` is any run of characters (`/` included), `?` exactly one; everything else literal."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(glob_matches(rest, name[i:]) for i in range(len(name) + 1))
    return bool(name) and head in ("?", name[0]) and glob_matches(rest, name[1:])


@dataclass(frozen=True)
class SpecRule:
    id: str
    role: str
    allow: bool
    actions: frozenset[Action]
    resources: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Spec:
    rules: tuple[SpecRule, ...]
    bindings: tuple[tuple[str, frozenset[str], frozenset[str]], ...]
    groups: dict[str, frozenset[str]]

    def policy(self) -> PolicySet:
        roles = {
            role: Role(
                id=role,
                rules=tuple(
                    Rule(
                        id=r.id,
                        role=role,
                        effect=Effect.ALLOW if r.allow else Effect.DENY,
                        actions=r.actions,
                        resources=tuple(ResourcePattern.parse(f"{b}:{g}") for b, g in r.resources),
                        source="test",
                    )
                    for r in self.rules
                    if r.role == role
                ),
            )
            for role in ROLES
        }
        return PolicySet(
            roles=roles,
            bindings=tuple(Binding(role=r, principals=p, groups=g) for r, p, g in self.bindings),
            groups=self.groups,
            hash="sha256:property",
            files=(),
        )

    def bound_rules(self, principal: str, groups: Iterable[str]) -> list[SpecRule]:
        member_of = set(groups) | {g for g, ms in self.groups.items() if principal in ms}
        roles = {
            role
            for role, principals, bound_groups in self.bindings
            if principal in principals or "*" in principals or member_of & bound_groups
        }
        return [r for r in self.rules if r.role in roles]

    def applying(
        self, principal: str, groups: Iterable[str], action: Action, backend: str, name: str
    ) -> list[SpecRule]:
        return [
            r
            for r in self.bound_rules(principal, groups)
            if action in r.actions
            and any(b in ("*", backend) and glob_matches(g, name) for b, g in r.resources)
        ]


ROLES = ("r0", "r1", "r2")


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    raw_rules = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ROLES),
                st.booleans(),
                st.frozensets(st.sampled_from(ACTIONS), min_size=1),
                st.lists(
                    st.tuples(st.sampled_from(("aws", "gcp", "*")), st.sampled_from(GLOBS)),
                    min_size=1,
                    max_size=3,
                ),
            ),
            max_size=8,
        )
    )
    rules = tuple(
        SpecRule(id=f"rule-{i}", role=role, allow=allow, actions=actions, resources=tuple(res))
        for i, (role, allow, actions, res) in enumerate(raw_rules)
    )
    bindings = tuple(
        draw(
            st.lists(
                st.tuples(
                    st.sampled_from(ROLES),
                    st.frozensets(st.sampled_from((*PRINCIPALS, "*"))),
                    st.frozensets(st.sampled_from(GROUPS)),
                ),
                max_size=4,
            )
        )
    )
    groups = draw(
        st.dictionaries(st.sampled_from(GROUPS), st.frozensets(st.sampled_from(PRINCIPALS)))
    )
    return Spec(rules=rules, bindings=bindings, groups=groups)


requests = st.tuples(
    st.sampled_from(PRINCIPALS),
    st.frozensets(st.sampled_from(GROUPS)),
    st.sampled_from(ACTIONS),
    st.sampled_from(BACKENDS),
    st.sampled_from(NAMES),
)


class TestDecideProperty:
    @settings(max_examples=200, deadline=None)
    @given(spec=specs(), request=st.lists(requests, min_size=1, max_size=5))
    def test_allow_iff_some_allow_applies_and_no_deny_applies(
        self, spec: Spec, request: list[tuple[str, frozenset[str], Action, str, str]]
    ) -> None:
        """Every decision follows the language's definition and names a rule that applies."""
        engine = PolicyEngine(spec.policy())
        for principal, groups, action, backend, name in request:
            decision = engine.decide(who(principal, groups), action, SecretRef(backend, name))
            applying = spec.applying(principal, groups, action, backend, name)
            allows = {r.id for r in applying if r.allow}
            denies = {r.id for r in applying if not r.allow}

            assert decision.allowed == (bool(allows) and not denies)
            assert decision.policy_hash == "sha256:property"
            if denies:
                assert decision.rule in denies
            elif allows:
                assert decision.rule in allows
            else:
                assert decision.rule is None

    @settings(max_examples=100, deadline=None)
    @given(spec=specs(), request=requests)
    def test_decide_any_iff_some_bound_allow_covers_the_backend(
        self, spec: Spec, request: tuple[str, frozenset[str], Action, str, str]
    ) -> None:
        """A listing is allowed exactly when a bound allow rule grants the action on the backend."""
        principal, groups, action, backend, _ = request
        engine = PolicyEngine(spec.policy())

        decision = engine.decide_any(who(principal, groups), action, backend)

        candidates = {
            r.id
            for r in spec.bound_rules(principal, groups)
            if r.allow and action in r.actions and any(b in ("*", backend) for b, _ in r.resources)
        }
        assert decision.allowed == bool(candidates)
        if candidates:
            assert decision.rule in candidates
        else:
            assert decision.rule is None


class TestEverySecretUnder:
    """A call that may touch any secret under a prefix (a Key Vault restore, `vault/*`):
    allowed only by a rule covering the whole prefix, and denied by any deny that could
    match one secret there."""

    TEXT = """
        roles:
          - id: r
            rules:
              - {id: vault, actions: [write], resources: ["azure:demo/*"]}
              - {id: part, actions: [write], resources: ["azure:other/staging-*"]}
              - {id: fence, effect: deny, actions: [write], resources: ["azure:demo/prod-*"]}
              - {id: one, effect: deny, actions: [write], resources: ["azure:third/db"]}
              - {id: third, actions: [write], resources: ["azure:third/*"]}
              - {id: fourth, actions: [write], resources: ["azure:fourth/*"]}
        bindings:
          - role: r
            principals: [app]
    """

    def test_decisions(self, tmp_path: Path) -> None:
        engine = engine_for(tmp_path, self.TEXT)

        def decided(name: str) -> tuple[Effect, str | None]:
            decision = engine.decide(who("app"), Action.WRITE, ref(name))
            explained = engine.explain(who("app"), Action.WRITE, ref(name)).decision
            assert explained == decision  # the slow way agrees
            return decision.effect, decision.rule

        # A deny on part of the vault denies the whole; one on another vault does not.
        assert decided("azure:demo/*") == (Effect.DENY, "fence")
        assert decided("azure:third/*") == (Effect.DENY, "one")  # a literal name under it
        assert decided("azure:fourth/*") == (Effect.ALLOW, "fourth")
        # An allow on part of a vault is not an allow of all of it.
        assert decided("azure:other/*") == (Effect.DENY, None)
        # Single secrets are decided as ever.
        assert decided("azure:demo/staging-db") == (Effect.ALLOW, "vault")
        assert decided("azure:demo/prod-db") == (Effect.DENY, "fence")
