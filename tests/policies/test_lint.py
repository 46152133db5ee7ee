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
    found = lint(policy, backends=["aws"], **options)  # type: ignore[arg-type]
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
