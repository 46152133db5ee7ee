"""What `policy check` finds in sets that load: findings a reviewer would miss."""

from __future__ import annotations

import textwrap
from pathlib import Path

from keyledger.model import SecretRef
from keyledger.policies import load_policy_files
from keyledger.policies.lint import lint


def findings(tmp_path: Path, text: str, **options: object) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    policy = load_policy_files([path])
    options.setdefault("backends", ["aws"])
    found = lint(policy, **options)  # type: ignore[arg-type]
    return [str(f).removeprefix(f"{path}:") for f in found]


class TestPrincipals:
    def test_a_glob_in_principals_is_reported(self, tmp_path: Path) -> None:
        """`principals: [svc-*]` binds nobody but a principal literally named svc-*."""
        text = """
            roles:
              - id: r
                rules:
                  - {id: a, actions: [read], resources: ["aws:x"]}
            bindings:
              - role: r
                principals: [svc-*, "*", app]
        """
        assert findings(tmp_path, text) == [
            "7:17: principal 'svc-*' is matched exactly, not as a glob "
            "(bind a group instead, or '*' for everyone)"
        ]


class TestInventory:
    TEXT = """
        roles:
          - id: r
            rules:
              - {id: read-app, actions: [read], resources: ["aws:app/*"]}
              - {id: read-typo, actions: [read], resources: ["aws:ap/*"]}
              - {id: fence-future, effect: deny, actions: ["*"], resources: ["aws:vault/*"]}
        bindings:
          - role: r
            principals: [app]
    """

    def test_only_allows_must_match_an_existing_secret(self, tmp_path: Path) -> None:
        """An allow matching no secret is a typo; a deny may fence off what is not there yet."""
        inventory = {SecretRef("aws", "app/db")}

        assert findings(tmp_path, self.TEXT, inventory=inventory) == [
            "5:54: resource 'aws:ap/*' matches no secret in the inventory"
        ]


class TestFailsOpen:
    def test_conditions_on_missing_attributes_that_let_calls_through(self, tmp_path: Path) -> None:
        """A deny's `when:` and an allow's `unless:` on an attribute that can be missing
        are reported; the fail-closed forms (deny + unless, allow + when) are not."""
        text = """
            roles:
              - id: r
                rules:
                  - id: deny-previous
                    effect: deny
                    actions: [read]
                    resources: ["aws:app/*"]
                    when: {request: {version_stage: AWSPREVIOUS}}
                  - id: read-unless-fork
                    actions: [read]
                    resources: ["aws:app/*"]
                    unless: {principal: {fork: "true"}}
                  - id: fence
                    effect: deny
                    actions: [read]
                    resources: ["aws:app/*"]
                    unless: {principal: {repository: "acme/*"}}
                  - id: grant
                    actions: [read]
                    resources: ["aws:app/*"]
                    when: {request: {version_stage: AWSCURRENT}}
            bindings:
              - role: r
                principals: [app]
        """
        assert findings(tmp_path, text) == [
            "4:9: fails open: deny rule 'deny-previous' has when: request.version_stage, "
            "which does not hold when the attribute is missing, so the deny then does not "
            "apply; fence with deny + unless:, grant with allow + when:",
            "9:9: fails open: allow rule 'read-unless-fork' has unless: principal.fork, "
            "which does not hold when the attribute is missing, so the allow then applies; "
            "fence with deny + unless:, grant with allow + when:",
        ]


class TestOrder:
    def test_a_path_with_a_colon_is_fine(self, tmp_path: Path) -> None:
        """Findings in a folder whose name holds ':' are listed, not a crash."""
        folder = tmp_path / "team:a"
        folder.mkdir()
        assert findings(
            folder,
            """
            roles:
              - id: unbound
                rules:
                  - {id: x, actions: [read], resources: ["aws:x"]}
            """,
        ) == ["2:9: unreachable: role 'unbound' is bound to nobody, so its 1 rule(s) never apply"]


class TestCaseInsensitiveBackends:
    def test_capitals_on_a_key_vault_backend_never_match(self, tmp_path: Path) -> None:
        """Key Vault's names reach policy in lower case, so a rule written with capitals
        would silently never apply (a deny that fences nothing): reported with the fix.
        The same glob on a case-sensitive store is fine."""
        text = """
            roles:
              - id: r
                rules:
                  - id: fence
                    effect: deny
                    actions: [read]
                    resources: ["kv:payments/Stripe-*", "aws:Prod/*", "kv:payments/ok-*"]
            bindings:
              - role: r
                principals: [app]
        """
        assert findings(tmp_path, text, backends=["aws", "kv"], lower_case=["kv"]) == [
            "7:21: resource 'kv:payments/Stripe-*' never matches: names on backend 'kv' are "
            "case-insensitive and reach policy in lower case (write kv:payments/stripe-*)"
        ]
