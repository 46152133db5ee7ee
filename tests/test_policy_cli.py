"""``keyledger policy check | explain | test | schema`` as a platform team and CI use them.

Every test runs the real command line (``main(argv)``) on real policy files, and asserts the
lines a user reads and the exit status a CI job acts on. Positions in expected problem lines
are written out by hand from the YAML in the test and checked to point at the offending text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keyledger.cli import main
from keyledger.model import Action
from keyledger.policies import (
    Context,
    PolicyEngine,
    example_policy_dir,
    load_policy_files,
    principal_of,
    resolve_policy_paths,
)
from keyledger.policies.testing import parse_moment, parse_secret
from keyledger.proxy.config import BACKEND_TYPES, ConfigError, parse_config

ACME = example_policy_dir("acme")
DEMO = example_policy_dir("demo")

Capsys = pytest.CaptureFixture[str]
Result = tuple[int, list[str], str]
# The one problem line expected for the policy file at a path.
Problem = Callable[[Path], str]

# Resource globs as written in the flow lists below (a position points at the opening quote).
QUOTED_ASW = '"asw:prod/*"'
QUOTED_GCP = '"gcp:prod/*"'
QUOTED_PAYMENTS = '"aws:prod/payments/*"'


def run(capsys: Capsys, *argv: str | Path) -> Result:
    """Run ``keyledger policy ARGV`` in-process: (exit status, stdout lines, stderr)."""
    code = main(["policy", *(str(a) for a in argv)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def at(path: Path, line: int, column: int, text: str) -> str:
    """``path:line:col``, after checking that ``text`` starts there (1-based) in the file."""
    source = path.read_text(encoding="utf-8").splitlines()[line - 1]
    assert source[column - 1 :].startswith(text), (source, column, text)
    return f"{path}:{line}:{column}"


def acme_hash() -> str:
    return load_policy_files(resolve_policy_paths([ACME])).hash


def check_fails(capsys: Capsys, *argv: str | Path) -> list[str]:
    """``policy check ARGV``, which must exit 1 and count its problems on stderr: stdout lines."""
    code, out, err = run(capsys, "check", *argv)
    assert (code, err) == (1, f"{len(out)} problem(s)\n"), out
    return out


def check_ok(capsys: Capsys, *argv: str | Path) -> str:
    """``policy check ARGV``, which must exit 0 printing one line: that line."""
    code, out, _ = run(capsys, "check", *argv)
    assert (code, len(out)) == (0, 1), out
    return out[0]


def usage_error(result: Result) -> str:
    """The stderr of a command ``run`` that must exit 2 printing nothing on stdout."""
    code, out, err = result
    assert (code, out) == (2, []), out
    return err


# -- check: sets that pass --------------------------------------------------------------


class TestCheckPasses:
    def test_demo_is_the_default_and_passes(self, capsys: Capsys) -> None:
        """With no PATH, the shipped demo set is checked: exit 0 and one ok: summary line."""
        code, out, err = run(capsys, "check")
        assert code == 0
        assert len(out) == 1
        assert re.fullmatch(
            r"ok: 1 file\(s\), 1 role\(s\), 3 rule\(s\), 1 binding\(s\); "
            r"policy hash sha256:[0-9a-f]{64}",
            out[0],
        )
        assert err == f"no PATH or --config given: using the shipped demo set {DEMO}\n"

    def test_acme_passes_and_its_test_file_is_not_read_as_policy(self, capsys: Capsys) -> None:
        """The acme folder (five policy files and acme_test.yaml) checks clean: exit 0, ok:."""
        assert check_ok(capsys, ACME) == (
            f"ok: 6 file(s), 8 role(s), 13 rule(s), 8 binding(s); policy hash {acme_hash()}"
        )


# -- check: problems that stop the set from loading -------------------------------------


class TestCheckLoadProblems:
    @pytest.mark.parametrize(
        ("name", "policy", "problem"),
        [
            pytest.param(
                "app.yaml",
                """
                version: 1
                roles:
                  - id: reader
                    rules:
                      - id: read-prod
                        actions: [describe, raed]
                        resources: ["aws:prod/*"]
                bindings:
                  - role: reader
                    principals: [alice]
                """,
                lambda p: f"{at(p, 6, 29, 'raed]')}: unknown action 'raed' (did you mean 'read'?)",
                id="unknown_action_with_did_you_mean",
            ),
            pytest.param(
                "office.yaml",
                """
                roles:
                  - id: office
                    rules:
                      - id: office-read
                        actions: [read]
                        resources: ["aws:prod/*"]
                        when:
                          source_ip: [10.0.0.0/8, 10.0.0.0/33]
                bindings:
                  - role: office
                    principals: [alice]
                """,
                lambda p: (
                    f"{at(p, 8, 35, '10.0.0.0/33]')}: bad network '10.0.0.0/33': "
                    "'10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"
                ),
                id="bad_cidr",
            ),
            pytest.param(
                "payments.yaml",
                """
                groups:
                  payments: [svc-checkout]
                roles:
                  - id: reader
                    rules:
                      - id: read-payments
                        actions: [read]
                        resources: ["aws:prod/payments/*"]
                bindings:
                  - role: reader
                    groups: [payment]
                """,
                lambda p: (
                    f"{at(p, 11, 13, '[payment]')}: unknown group 'payment' (did you mean "
                    "'payments'?) (declare it under groups:, with no members if identities or OIDC "
                    "claims supply them)"
                ),
                id="unknown_group_in_a_binding",
            ),
            pytest.param(
                "app.yaml",
                """
                roles:
                  - id: reader
                    rules:
                      - id: read-prod
                        actions: [read]
                        resources: ["aws:prod/*"]
                bindings:
                  - role: reader
                    principals: [alice]
                  - role: reeder
                    principals: [bob]
                """,
                lambda p: (
                    f"{at(p, 10, 11, 'reeder')}: unknown role 'reeder' (did you mean 'reader'?)"
                ),
                id="unknown_role_in_a_binding",
            ),
            pytest.param(
                "night.yaml",
                """
                roles:
                  - id: night
                    rules:
                      - id: night-read
                        actions: [read]
                        resources: ["aws:prod/*"]
                        when:
                          time:
                            from: "22:00"
                            to: "05:00"
                            timezone: Europe/Berln
                bindings:
                  - role: night
                    principals: [job-nightly]
                """,
                lambda p: (
                    f"{at(p, 11, 23, 'Europe/Berln')}: unknown time zone 'Europe/Berln' "
                    "(e.g. Europe/Berlin)"
                ),
                id="unknown_time_zone",
            ),
            pytest.param(  # a region name that is not a zone is a problem line, not a crash
                "night.yaml",
                """
                roles:
                  - id: night
                    rules:
                      - id: night-read
                        actions: [read]
                        resources: ["aws:prod/*"]
                        when:
                          time:
                            timezone: Europe
                bindings:
                  - role: night
                    principals: [job-nightly]
                """,
                lambda p: (
                    f"{at(p, 9, 23, 'Europe')}: unknown time zone 'Europe' (e.g. Europe/Berlin)"
                ),
                id="time_zone_that_is_a_region_folder",
            ),
        ],
    )
    def test_problem_is_reported_at_the_offending_text(
        self, tmp_path: Path, capsys: Capsys, name: str, policy: str, problem: Problem
    ) -> None:
        """A policy that does not load exits 1 with one problem line at the text, and why."""
        path = write(tmp_path / name, policy)
        assert check_fails(capsys, path) == [problem(path)]

    def test_duplicate_rule_id_across_two_files(self, tmp_path: Path, capsys: Capsys) -> None:
        """A rule id used in two files is reported at the second, naming where the first is."""
        first = write(
            tmp_path / "a.yaml",
            """
            roles:
              - id: reader
                rules:
                  - id: prod-access
                    actions: [read]
                    resources: ["aws:prod/*"]
            bindings:
              - role: reader
                principals: [alice]
            """,
        )
        second = write(
            tmp_path / "b.yaml",
            """
            roles:
              - id: writer
                rules:
                  - id: prod-access
                    actions: [write]
                    resources: ["aws:prod/*"]
            bindings:
              - role: writer
                principals: [bob]
            """,
        )
        assert check_fails(capsys, tmp_path) == [
            f"{at(second, 4, 13, 'prod-access')}: duplicate rule id 'prod-access' "
            f"(first at {at(first, 4, 13, 'prod-access')})"
        ]


# -- check: sets that load but contain rules that can never matter ----------------------


SHADOW_TEMPLATE = """
roles:
  - id: app
    rules:
      - id: allow-it
        actions: {allow_actions}
        resources: {allow_resources}
      - id: deny-it
        effect: deny
        actions: {deny_actions}
        resources: {deny_resources}
{deny_extra}
bindings:
  - role: app
    principals: [svc-app]
"""


def shadow_policy(
    *,
    allow_actions: str = "[read]",
    allow_resources: str = '["aws:prod/*"]',
    deny_actions: str = '["*"]',
    deny_resources: str = '["aws:prod/*"]',
    deny_extra: str = "",
) -> str:
    return SHADOW_TEMPLATE.format(
        allow_actions=allow_actions,
        allow_resources=allow_resources,
        deny_actions=deny_actions,
        deny_resources=deny_resources,
        deny_extra=textwrap.indent(deny_extra, " " * 8),
    )


class TestCheckLintFindings:
    @pytest.mark.parametrize(
        ("name", "policy", "problem"),
        [
            pytest.param(  # reported at the role's id value
                "app.yaml",
                """
                roles:
                  - id: reader
                    rules:
                      - id: read-prod
                        actions: [read]
                        resources: ["aws:prod/*"]
                  - id: orphan
                    rules:
                      - id: orphan-read
                        actions: [read]
                        resources: ["aws:staging/*"]
                      - id: orphan-list
                        actions: [list]
                        resources: ["aws:staging/*"]
                bindings:
                  - role: reader
                    principals: [alice]
                """,
                lambda p: (
                    f"{at(p, 7, 9, 'orphan')}: unreachable: role 'orphan' is bound to "
                    "nobody, so its 2 rule(s) never apply"
                ),
                id="role_bound_to_nobody",
            ),
            pytest.param(  # every request of the allow is covered by an unconditional deny
                "app.yaml",
                """
                roles:
                  - id: app
                    rules:
                      - id: app-read-payments
                        actions: [read]
                        resources: ["aws:prod/payments/*"]
                      - id: app-no-prod
                        effect: deny
                        actions: ["*"]
                        resources: ["aws:prod/*"]
                bindings:
                  - role: app
                    principals: [svc-app]
                """,
                lambda p: (
                    f"{at(p, 4, 9, 'id: app-read-payments')}: unreachable: rule "
                    "'app-read-payments' is always overridden by deny rule 'app-no-prod' "
                    f"({at(p, 7, 9, 'id: app-no-prod')})"
                ),
                id="allow_overridden_by_a_deny_in_the_same_role",
            ),
            pytest.param(  # a deny in a role bound to * overrides an allow in another role
                "org.yaml",
                """
                groups:
                  sre: [alice]
                roles:
                  - id: guardrails
                    rules:
                      - id: no-break-glass
                        effect: deny
                        actions: ["*"]
                        resources: ["aws:break-glass/*"]
                  - id: sre
                    rules:
                      - id: sre-read-break-glass
                        actions: [read]
                        resources: ["aws:break-glass/db"]
                bindings:
                  - role: guardrails
                    principals: ["*"]
                  - role: sre
                    groups: [sre]
                """,
                lambda p: (
                    f"{at(p, 12, 9, 'id: sre-read-break-glass')}: unreachable: rule "
                    "'sre-read-break-glass' is always overridden by deny rule 'no-break-glass' "
                    f"({at(p, 6, 9, 'id: no-break-glass')})"
                ),
                id="allow_overridden_by_a_deny_bound_to_everyone",
            ),
            pytest.param(  # the template used below, with an unconditional and wider deny
                "app.yaml",
                shadow_policy(),
                lambda p: (
                    f"{at(p, 4, 9, 'id: allow-it')}: unreachable: rule 'allow-it' is "
                    f"always overridden by deny rule 'deny-it' ({at(p, 7, 9, 'id: deny-it')})"
                ),
                id="shadow_template_is_reported_when_the_deny_covers_everything",
            ),
            pytest.param(
                "app.yaml",
                """
                roles:
                  - id: app
                    rules:
                      - id: app-read
                        actions: [read]
                        resources: ["aws:staging/*", "asw:prod/*"]
                bindings:
                  - role: app
                    principals: [svc-app]
                """,
                lambda p: (
                    f"{at(p, 6, 38, QUOTED_ASW)}: resource 'asw:prod/*': keyledger cannot "
                    "serve backend 'asw' (did you mean 'aws'?) (it serves: aws, azure, gcp; with "
                    "--config, the backends that config names)"
                ),
                id="resource_on_a_misspelt_backend",
            ),
        ],
    )
    def test_finding_is_reported(
        self, tmp_path: Path, capsys: Capsys, name: str, policy: str, problem: Problem
    ) -> None:
        """A rule or role that can never matter exits 1 with one problem line saying why."""
        path = write(tmp_path / name, policy)
        assert check_fails(capsys, path) == [problem(path)]

    @pytest.mark.parametrize(
        "variant",
        [
            {"deny_extra": "when:\n  source_ip: [203.0.113.0/24]\n"},
            {"deny_extra": "unless:\n  source_ip: [10.0.0.0/8]\n"},
            {"allow_resources": '["aws:prod/*", "aws:staging/*"]'},
            {"deny_resources": '["aws:prod/payments/*"]'},
            {"allow_actions": "[read, write]", "deny_actions": "[write]"},
        ],
        ids=[
            "deny-has-when",
            "deny-has-unless",
            "deny-covers-some-resources",
            "deny-glob-narrower",
            "deny-covers-some-actions",
        ],
    )
    def test_allow_that_a_deny_only_sometimes_overrides_is_not_reported(
        self, tmp_path: Path, capsys: Capsys, variant: dict[str, str]
    ) -> None:
        """An allow a deny overrides only under a condition or only in part is not unreachable."""
        path = write(tmp_path / "app.yaml", shadow_policy(**variant))
        assert check_ok(capsys, path).startswith(
            "ok: 1 file(s), 1 role(s), 2 rule(s), 1 binding(s); "
        )

    def test_deny_on_another_configured_backend_is_not_reported(
        self, tmp_path: Path, capsys: Capsys
    ) -> None:
        """A deny on a second backend the config names does not make an allow on aws
        unreachable."""
        write(tmp_path / "policies" / "app.yaml", shadow_policy(deny_resources='["eu:prod/*"]'))
        config = write(
            tmp_path / "keyledger.yaml",
            """
            policies: [policies]
            backends:
              aws: {region: us-east-1}
              eu: {type: aws, region: eu-central-1}
            """,
        )
        assert check_ok(capsys, "--config", config).startswith(
            "ok: 1 file(s), 1 role(s), 2 rule(s), 1 binding(s); "
        )

    def test_deny_held_by_only_some_of_the_allows_holders_is_not_reported(
        self, tmp_path: Path, capsys: Capsys
    ) -> None:
        """A deny bound to alice does not make an allow bound to her whole group unreachable."""
        path = write(
            tmp_path / "org.yaml",
            """
            groups:
              sre: [alice, bob]
            roles:
              - id: alice-fence
                rules:
                  - id: alice-no-prod
                    effect: deny
                    actions: ["*"]
                    resources: ["aws:prod/*"]
              - id: sre
                rules:
                  - id: sre-read-prod
                    actions: [read]
                    resources: ["aws:prod/*"]
            bindings:
              - role: alice-fence
                principals: [alice]
              - role: sre
                groups: [sre]
            """,
        )
        assert check_ok(capsys, path).startswith(
            "ok: 1 file(s), 2 role(s), 2 rule(s), 2 binding(s); "
        )

    def test_config_backends_decide_what_is_configured(
        self, tmp_path: Path, capsys: Capsys
    ) -> None:
        """With --config naming only backend aws a gcp: resource is not configured; without
        a config gcp is a backend keyledger serves, so the same policy passes."""
        policy = write(
            tmp_path / "policies" / "app.yaml",
            """
            roles:
              - id: app
                rules:
                  - id: app-read
                    actions: [read]
                    resources: ["aws:prod/*", "gcp:prod/*"]
            bindings:
              - role: app
                principals: [svc-app]
            """,
        )
        config = write(
            tmp_path / "keyledger.yaml",
            """
            policies: [policies]
            backends:
              aws: {region: eu-central-1}
            """,
        )
        assert check_fails(capsys, "--config", config) == [
            f"{at(policy, 6, 35, QUOTED_GCP)}: resource 'gcp:prod/*' matches nothing "
            "configured: no backend 'gcp' (configured: aws)"
        ]
        assert main(["policy", "check", str(policy)]) == 0

    @pytest.mark.parametrize("backend", ["vault", "hashicorp"])
    def test_backends_serve_cannot_use_are_refused_without_a_config(
        self, tmp_path: Path, capsys: Capsys, backend: str
    ) -> None:
        """Without a config, an allow or a deny on a backend serve cannot use fails the
        check."""
        path = write(
            tmp_path / "app.yaml",
            f"""
            roles:
              - id: app
                rules:
                  - id: app-read
                    actions: [read]
                    resources: ["aws:prod/*"]
                  - id: app-fence
                    effect: deny
                    actions: [read]
                    resources: ["{backend}:prod/*"]
            bindings:
              - role: app
                principals: [svc-app]
            """,
        )
        quoted = f'"{backend}:prod/*"'
        assert check_fails(capsys, path) == [
            f"{at(path, 10, 21, quoted)}: resource '{backend}:prod/*': "
            f"keyledger cannot serve backend '{backend}' (it serves: aws, azure, gcp; with "
            "--config, the backends that config names)"
        ]

    @pytest.mark.parametrize("backend", ["aws", "gcp", "azure", "vault"])
    def test_policy_check_and_serve_agree_on_the_backends_keyledger_serves(
        self, tmp_path: Path, backend: str
    ) -> None:
        """A backend type is servable for `policy check` exactly when `serve`'s config
        accepts it."""
        settings: dict[str, object] = {"type": backend}
        if backend == "azure":  # an azure backend names the vaults it serves
            settings["vaults"] = {"main": {"url": "https://main.vault.azure.net"}}
        doc = {"policies": ["policies"], "backends": {backend: settings}}
        try:
            parse_config(doc, base=tmp_path, source="test")
        except ConfigError:
            serve_accepts = False
        else:
            serve_accepts = True
        assert serve_accepts == (backend in BACKEND_TYPES)

    def test_inventory_glob_matching_no_secret(self, tmp_path: Path, capsys: Capsys) -> None:
        """With --inventory, a glob matching no listed secret is reported; a matching one is not."""
        path = write(
            tmp_path / "app.yaml",
            """
            roles:
              - id: app
                rules:
                  - id: app-read
                    actions: [read]
                    resources: ["aws:prod/db/*", "aws:prod/payments/*"]
            bindings:
              - role: app
                principals: [svc-app]
            """,
        )
        inventory = write(
            tmp_path / "inventory.txt",
            """
            # secrets in the prod account
            aws:prod/db/password

            aws:staging/api-key   # shared
            """,
        )
        assert check_fails(capsys, path, "--inventory", inventory) == [
            f"{at(path, 6, 38, QUOTED_PAYMENTS)}: resource 'aws:prod/payments/*' "
            "matches no secret in the inventory"
        ]

        write(inventory, "aws:prod/db/password\naws:prod/payments/stripe-key\n")
        assert check_ok(capsys, path, "--inventory", inventory).startswith(
            "ok: 1 file(s), 1 role(s), 1 rule(s), 1 binding(s); "
        )

    def test_missing_inventory_file_is_a_usage_error(self, tmp_path: Path, capsys: Capsys) -> None:
        """An --inventory file that does not exist exits 2 with a message, not a traceback."""
        err = usage_error(run(capsys, "check", DEMO, "--inventory", tmp_path / "nope.txt"))
        assert err.startswith("keyledger: ")
        assert "nope.txt" in err

    def test_malformed_inventory_line_is_a_usage_error(
        self, tmp_path: Path, capsys: Capsys
    ) -> None:
        """An inventory line that is not backend:name exits 2 naming the file and line."""
        inventory = write(tmp_path / "inventory.txt", "aws:prod/db/password\nprod/api-key\n")
        assert usage_error(run(capsys, "check", DEMO, "--inventory", inventory)) == (
            f"keyledger: {inventory}:2: secret 'prod/api-key' must be written backend:name "
            "(aws:prod/db/password)\n"
        )


def test_check_exits_1_for_ci_as_a_process(tmp_path: Path) -> None:
    """Run as a process (python -m keyledger), a failing check exits 1 and prints the problem."""
    path = write(
        tmp_path / "app.yaml",
        """
        roles:
          - id: app
            rules:
              - id: app-read
                actions: [read]
                resources: ["asw:prod/*"]
        bindings:
          - role: app
            principals: [svc-app]
        """,
    )
    result = subprocess.run(
        [sys.executable, "-m", "keyledger", "policy", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"{at(path, 6, 21, QUOTED_ASW)}: resource 'asw:prod/*': keyledger cannot serve "
        "backend 'asw' (did you mean 'aws'?) (it serves: aws, azure, gcp; with --config, the "
        "backends that config names)"
    ]
    assert result.stderr == "1 problem(s)\n"


# -- explain ----------------------------------------------------------------------------


TUESDAY_10 = "2026-11-24T10:00:00+01:00"  # office hours in Berlin


def explain(capsys: Capsys, request: str, *argv: str | Path) -> Result:
    """``policy explain ARGV`` for REQUEST, written ``PRINCIPAL ACTION SECRET [--option ...]``."""
    principal, action, secret, *options = request.split()
    return run(
        capsys,
        "explain",
        *argv,
        f"--principal={principal}",
        f"--action={action}",
        f"--secret={secret}",
        *options,
    )


def explain_json(capsys: Capsys, request: str, *argv: str | Path) -> tuple[int, Any]:
    """``policy explain ARGV --json`` for REQUEST: (exit status, the parsed JSON document)."""
    code, out, _ = explain(capsys, request, *argv, "--json")
    return code, json.loads("\n".join(out))


class TestExplain:
    def test_a_key_vault_name_is_decided_in_lower_case_as_the_proxy_does(
        self, capsys: Capsys
    ) -> None:
        """Key Vault's names are case-insensitive and the proxy lower-cases them before
        policy: explain decides `Prod-DB-Password` as the proxy would (allowed, like
        prod-db-password), and says which name it decided on."""
        code, doc = explain_json(capsys, "demo-app read azure:demo/Prod-DB-Password", DEMO)
        assert (code, doc["effect"], doc["rule"]) == (0, "allow", "demo-read-prod-db")
        assert (doc["request"]["secret"], doc["request"]["protocol"]) == (
            "azure:demo/prod-db-password",
            "azure",
        )
        # Another protocol keeps the name as written: AWS's names are case-sensitive.
        code, doc = explain_json(capsys, "demo-app read aws:PROD/db/password", DEMO)
        assert (code, doc["request"]["secret"]) == (3, "aws:PROD/db/password")

    def test_default_deny_shows_each_rule_and_the_failing_source_ip(self, capsys: Capsys) -> None:
        """A deny names the default deny, the roles and their bindings, and why each rule missed."""
        guard, pay = ACME / "guardrails.yaml", ACME / "payments.yaml"
        code, out, _ = explain(
            capsys,
            "svc-checkout read aws:prod/payments/stripe-key --source-ip=192.0.2.10 "
            f"--version-stage=AWSCURRENT --at={TUESDAY_10}",
            ACME,
        )
        assert code == 3
        assert out == [
            "DENY  read aws:prod/payments/stripe-key  for svc-checkout",
            "  decided by  default deny: no rule allows it",
            f"  policy      {acme_hash()}",
            f"  at          {TUESDAY_10}  from 192.0.2.10",
            "  groups      payments-services",
            "  roles       guardrails (via every principal (*)), "
            "payments-service (via group payments-services)",
            "rules considered, in order (+ applies, - does not):",
            f"  - deny  no-root-credentials                   {guard}:11:9",
            "        aws:prod/payments/stripe-key matches none of "
            "[aws:*/root-credentials, aws:break-glass/*]",
            f"  - deny  prod-changes-from-the-office-network  {guard}:17:9",
            "        action read is not in [delete, rotate, write]",
            "        unless: source_ip 192.0.2.10 not in [10.0.0.0/8, fd12:3456:789a::/48]",
            f"  - allow payments-read-current                 {pay}:10:9",
            "        when: source_ip 192.0.2.10 not in [10.20.0.0/16]",
            "        when: request.version_stage 'AWSCURRENT' matches [AWSCURRENT]",
            f"  - allow payments-describe-and-list            {pay}:19:9",
            "        action read is not in [describe, list]",
            f"  - deny  payments-no-signing-key               {pay}:24:9",
            "        aws:prod/payments/stripe-key matches none of "
            "[aws:prod/payments/card-signing-*]",
        ]

    def test_allow_names_the_deciding_rule_and_where_it_is(self, capsys: Capsys) -> None:
        """An allow names the allowing rule with its file:line:col and marks it as applying."""
        platform = ACME / "platform.yaml"
        code, out, _ = explain(
            capsys,
            f"alice rotate aws:prod/payments/stripe-key --source-ip=10.1.2.3 --at={TUESDAY_10}",
            ACME,
        )
        assert code == 0
        assert out[0] == "ALLOW  rotate aws:prod/payments/stripe-key  for alice"
        assert out[1] == (
            f"  decided by  rule platform-manage-prod-in-office-hours ({platform}:14:9)"
        )
        assert out[4:6] == [
            "  groups      platform-admins",
            "  roles       guardrails (via every principal (*)), "
            "platform-admin (via group platform-admins)",
        ]
        assert out[-2:] == [
            f"  + allow platform-manage-prod-in-office-hours  {platform}:14:9",
            "        when: time Tue 2026-11-24 10:00 CET within mon-fri 07:00-19:00 Europe/Berlin",
        ]
        assert "        unless: source_ip 10.1.2.3 in [10.0.0.0/8, fd12:3456:789a::/48]" in out

    def test_explicit_deny_names_the_denying_rule(self, capsys: Capsys) -> None:
        """A deny by a rule names that rule, applying over an allow that applies too."""
        guard = ACME / "guardrails.yaml"
        code, out, _ = explain(
            capsys,
            f"alice write aws:prod/payments/stripe-key --source-ip=203.0.113.9 --at={TUESDAY_10}",
            ACME,
        )
        assert code == 3
        assert out[0] == "DENY  write aws:prod/payments/stripe-key  for alice"
        assert out[1] == f"  decided by  rule prod-changes-from-the-office-network ({guard}:17:9)"
        index = out.index(f"  + deny  prod-changes-from-the-office-network  {guard}:17:9")
        assert out[index + 1] == (
            "        unless: source_ip 203.0.113.9 not in [10.0.0.0/8, fd12:3456:789a::/48]"
        )
        assert any(
            line.startswith("  + allow platform-manage-prod-in-office-hours") for line in out
        )

    def test_json_output(self, capsys: Capsys) -> None:
        """--json prints one JSON document: effect, rule, policy hash and every rule's verdict."""
        code, data = explain_json(
            capsys,
            "repo:acme/shop:ref:refs/heads/main read aws:prod/apps/shop/deploy "
            "--group=ci-deployers --attr=repository=acme/shop --attr=ref=refs/heads/main "
            "--at=2026-11-24T10:00:00Z",
            ACME,
        )
        assert code == 0
        assert data["effect"] == "allow"
        assert data["rule"] == "deploy-read-app-config"
        assert data["policy_hash"] == acme_hash()
        assert data["request"]["at"] == "2026-11-24T10:00:00+00:00"
        assert data["request"]["protocol"] == "aws-json"
        assert data["roles"] == [
            {"role": "deployer", "via": "group ci-deployers"},
            {"role": "guardrails", "via": "every principal (*)"},
        ]
        assert {r["id"]: r["applies"] for r in data["rules"]} == {
            "deploy-read-app-config": True,
            "deploy-no-forks": False,
            "no-root-credentials": False,
            "prod-changes-from-the-office-network": False,
        }
        assert data["rules"][0]["source"] == f"{ACME / 'ci.yaml'}:11:9"

    def test_json_deny_exits_3(self, capsys: Capsys) -> None:
        """--json keeps the exit status: 3 with effect deny and rule null for a default deny."""
        code, data = explain_json(capsys, "carol read aws:prod/payments/stripe-key", ACME)
        assert code == 3
        assert (data["effect"], data["rule"]) == ("deny", None)

    @pytest.mark.parametrize(
        ("request_", "effect", "rule"),
        [
            (
                f"alice rotate aws:prod/payments/stripe-key --source-ip=10.1.2.3 --at={TUESDAY_10}",
                "allow",
                "platform-manage-prod-in-office-hours",
            ),
            (
                "alice write aws:prod/payments/stripe-key --source-ip=203.0.113.9 "
                f"--at={TUESDAY_10}",
                "deny",
                "prod-changes-from-the-office-network",
            ),
            (
                "alice read aws:prod/db/password --source-ip=10.1.2.3 "
                "--at=2026-11-28T10:00:00+01:00",
                "deny",
                None,
            ),
            (
                f"alice read aws:prod/root-credentials --source-ip=10.1.2.3 --at={TUESDAY_10}",
                "deny",
                "no-root-credentials",
            ),
            (
                "svc-checkout read aws:prod/payments/stripe-key --source-ip=10.20.4.17 "
                f"--version-stage=AWSCURRENT --at={TUESDAY_10}",
                "allow",
                "payments-read-current",
            ),
            (
                "svc-refunds read aws:prod/payments/card-signing-2026 --source-ip=10.20.4.17 "
                f"--version-stage=AWSCURRENT --at={TUESDAY_10}",
                "deny",
                "payments-no-signing-key",
            ),
            (
                "job-nightly-ledger read aws:prod/payments/ledger-export-key "
                "--at=2026-11-28T03:00:00+01:00",
                "allow",
                "ledger-read-at-night",
            ),
            (
                f"job-nightly-ledger read aws:prod/payments/ledger-export-key --at={TUESDAY_10}",
                "deny",
                None,
            ),
            (
                "dave read aws:prod/db/password --group=on-call --at=2026-11-28T03:00:00+01:00",
                "allow",
                "on-call-read-prod",
            ),
            (
                "repo:evil/shop:ref:refs/heads/main read aws:prod/apps/shop/deploy "
                "--group=ci-deployers --attr=repository=evil/shop --attr=ref=refs/heads/main "
                f"--at={TUESDAY_10}",
                "deny",
                "deploy-no-forks",
            ),
        ],
    )
    def test_explain_decides_as_the_engine_does(
        self, capsys: Capsys, request_: str, effect: str, rule: str | None
    ) -> None:
        """explain's decision and exit status are those PolicyEngine.decide gives the proxy."""
        code, data = explain_json(capsys, request_, ACME)
        assert (data["effect"], data["rule"]) == (effect, rule)
        assert code == (0 if effect == "allow" else 3)

        principal, action, secret, *rest = request_.split()
        options: dict[str, list[str]] = {}
        for arg in rest:
            key, _, value = arg.partition("=")
            options.setdefault(key, []).append(value)
        attributes = dict(a.partition("=")[::2] for a in options.get("--attr", []))
        request = {"protocol": "aws-json"}
        if "--version-stage" in options:
            request["version_stage"] = options["--version-stage"][0]
        decision = PolicyEngine(load_policy_files(resolve_policy_paths([ACME]))).decide(
            principal_of(principal, options.get("--group", []), attributes),
            Action(action),
            parse_secret(secret),
            Context(
                source_ip=next(iter(options.get("--source-ip", [])), None),
                at=parse_moment(options["--at"][0]),
                request=request,
            ),
        )
        assert (decision.effect.value, decision.rule) == (data["effect"], data["rule"])
        assert decision.policy_hash == data["policy_hash"]

    def test_attr_and_group_take_effect(self, capsys: Capsys) -> None:
        """A CI principal is allowed only with its group and both claims; any one missing denies."""
        ci = f"repo:acme/shop:ref:refs/heads/main read aws:prod/apps/shop/deploy --at={TUESDAY_10}"
        repo = "--attr=repository=acme/shop"
        ref = "--attr=ref=refs/heads/main"
        group = "--group=ci-deployers"

        code, out, _ = explain(capsys, ci, ACME, repo, ref, group)
        assert code == 0
        assert out[0] == (
            "ALLOW  read aws:prod/apps/shop/deploy  for repo:acme/shop:ref:refs/heads/main"
        )
        assert out[1] == f"  decided by  rule deploy-read-app-config ({ACME / 'ci.yaml'}:11:9)"
        assert "        when: principal.ref 'refs/heads/main' matches [refs/heads/main]" in out

        code, out, _ = explain(capsys, ci, ACME, repo, group)
        assert code == 3
        assert out[1] == "  decided by  default deny: no rule allows it"
        assert "        when: principal.ref is not set (wanted refs/heads/main)" in out

        code, out, _ = explain(capsys, ci, ACME, repo, ref)
        assert code == 3
        assert out[4:6] == [
            "  groups      (none)",
            "  roles       guardrails (via every principal (*))",
        ]

    def test_bad_source_ip_is_a_usage_error(self, capsys: Capsys) -> None:
        """A --source-ip that is not an address exits 2 with a message, not a silent 'not in'."""
        request = "svc-checkout read aws:prod/payments/stripe-key --source-ip=10.20.4.300"
        assert usage_error(explain(capsys, request, ACME)) == (
            "keyledger: '10.20.4.300' does not appear to be an IPv4 or IPv6 address\n"
        )

    def test_policy_that_does_not_load_exits_1(self, tmp_path: Path, capsys: Capsys) -> None:
        """explain on a broken policy prints its problems and exits 1, not a decision."""
        path = write(
            tmp_path / "app.yaml",
            """
            roles:
              - id: app
                rules:
                  - actions: [raed]
                    resources: ["aws:prod/*"]
            """,
        )
        code, out, _ = explain(capsys, "a read aws:prod/x", path)
        assert code == 1
        assert out == [f"{at(path, 4, 19, 'raed]')}: unknown action 'raed' (did you mean 'read'?)"]

    def test_demo_is_the_default(self, capsys: Capsys) -> None:
        """With no PATH, explain decides against the shipped demo policy."""
        code, out, _ = explain(capsys, "demo-app read aws:staging/k")
        assert code == 0
        assert out[1] == (f"  decided by  rule demo-read-staging ({DEMO / 'demo.yaml'}:10:9)")

    def test_principal_with_no_roles(self, capsys: Capsys) -> None:
        """A principal no binding names is denied by default, and explain says it holds no role."""
        code, out, _ = explain(capsys, "stranger read aws:staging/k")
        assert code == 3
        assert out[0] == "DENY  read aws:staging/k  for stranger"
        assert out[1] == "  decided by  default deny: no rule allows it"
        assert out[4:] == [
            "  groups      (none)",
            "  roles       (none: no binding names this principal or its groups)",
        ]

    def test_request_attributes_reach_the_request(self, capsys: Capsys) -> None:
        """--protocol, --operation and --version-stage are part of the request explain decides."""
        code, data = explain_json(
            capsys,
            "demo-app read aws:staging/k --protocol=aws-query --operation=GetSecretValue "
            "--version-stage=AWSPREVIOUS",
        )
        assert code == 0
        request = data["request"]
        assert (request["protocol"], request["operation"], request["version_stage"]) == (
            "aws-query",
            "GetSecretValue",
            "AWSPREVIOUS",
        )

    @pytest.mark.parametrize(
        ("secret", "protocol", "operation"),
        [
            ("gcp:keyledger-demo/db", "gcp-rest", "AccessSecretVersion"),
            ("gcp-eu:shop/db", "gcp-rest", "AccessSecretVersion"),
            ("aws:staging/k", "aws-json", "GetSecretValue"),
        ],
    )
    def test_a_plain_call_speaks_its_clouds_protocol(
        self, capsys: Capsys, secret: str, protocol: str, operation: str
    ) -> None:
        """Without --protocol, a read on a gcp backend is decided as Google's REST client's
        AccessSecretVersion, as the proxy would see it, and one on aws as GetSecretValue."""
        code, data = explain_json(capsys, f"demo-app read {secret}")

        assert code in (0, 3)
        assert (data["request"]["protocol"], data["request"]["operation"]) == (
            protocol,
            operation,
        )

    def test_bad_attr_is_a_usage_error(self, capsys: Capsys) -> None:
        """An --attr without '=' exits 2 and says how to write it."""
        err = usage_error(explain(capsys, "demo-app read aws:staging/k --attr=repository"))
        assert err.endswith("keyledger: --attr 'repository' must be written name=value\n")


# -- test -------------------------------------------------------------------------------


APP_POLICY = """
roles:
  - id: app
    rules:
      - id: app-read-staging
        actions: [read]
        resources: ["aws:staging/*"]
      - id: app-no-secrets
        effect: deny
        actions: ["*"]
        resources: ["aws:staging/secret-*"]
bindings:
  - role: app
    principals: [svc-app]
"""

PASSING_CASES = """
tests:
  - name: the app reads staging
    principal: svc-app
    action: read
    secret: aws:staging/api-key
    expect: allow
    rule: app-read-staging

  - name: the app never reads a secret-* name
    principal: svc-app
    action: read
    secret: aws:staging/secret-token
    expect: deny
    rule: app-no-secrets
"""


def with_failing_case(action: str) -> str:
    """PASSING_CASES and a third case, at line 16, wrongly expecting ACTION on staging allowed."""
    return (
        PASSING_CASES
        + f"""
  - name: the app {action}s staging
    principal: svc-app
    action: {action}
    secret: aws:staging/api-key
    expect: allow
"""
    )


def app_with_tests(tmp_path: Path, cases: str) -> Path:
    """APP_POLICY as app.yaml and CASES as app_test.yaml in TMP_PATH: the test file's path."""
    write(tmp_path / "app.yaml", APP_POLICY)
    return write(tmp_path / "app_test.yaml", cases)


def passing_lines(cases: Path) -> list[str]:
    """The PASS lines of PASSING_CASES, which start the test file CASES."""
    return [
        f"PASS  {at(cases, 2, 5, 'name: the app reads')}  the app reads staging",
        f"PASS  {at(cases, 9, 5, 'name: the app never')}  the app never reads a secret-* name",
    ]


class TestPolicyTest:
    def test_a_gcp_case_is_decided_as_googles_client_calls(
        self, tmp_path: Path, capsys: Capsys
    ) -> None:
        """A case on a gcp: secret, stating no request, is decided as Google's REST client's
        AccessSecretVersion: a rule conditioned on that protocol and operation applies."""
        write(
            tmp_path / "gcp.yaml",
            """
            roles:
              - id: app
                rules:
                  - id: app-read-over-rest
                    actions: [read]
                    resources: ["gcp:keyledger-demo/*"]
                    when:
                      request: {protocol: gcp-rest, operation: AccessSecretVersion}
            bindings:
              - role: app
                principals: [svc-app]
            """,
        )
        write(
            tmp_path / "gcp_test.yaml",
            """
            tests:
              - principal: svc-app
                action: read
                secret: gcp:keyledger-demo/db
                expect: allow
                rule: app-read-over-rest
            """,
        )

        code, out, _ = run(capsys, "test", str(tmp_path))

        assert code == 0, out
        assert out[-1] == "1 passed, 0 failed (1 file(s))"

    @pytest.mark.parametrize(
        ("argv", "count"), [([str(ACME)], 26), ([], 12)], ids=["acme", "demo-default"]
    )
    def test_shipped_tests_pass(self, capsys: Capsys, argv: list[str], count: int) -> None:
        """The shipped acme and demo tests pass: a PASS line per case, 'N passed, 0 failed'."""
        code, out, _ = run(capsys, "test", *argv)
        assert code == 0
        assert out[-1] == f"{count} passed, 0 failed (1 file(s))"
        assert len([line for line in out if line.startswith("PASS  ")]) == count
        assert not [line for line in out if line.startswith("FAIL")]

    @pytest.mark.parametrize(
        ("cases", "expected"),
        [
            pytest.param(  # FAIL, file:line:col and name, then the reason
                with_failing_case("write"),
                lambda c: [
                    *passing_lines(c),
                    f"FAIL  {at(c, 16, 5, 'name: the app writes')}  the app writes staging",
                    "      expected allow, got deny (default deny)",
                    "2 passed, 1 failed (1 file(s))",
                ],
                id="wrong_expectation_fails",
            ),
            pytest.param(  # another rule, or the default, gives the same effect
                """
                tests:
                  - name: pinned to the wrong rule
                    principal: svc-app
                    action: read
                    secret: aws:staging/secret-token
                    expect: deny
                    rule: app-read-staging
                  - name: pinned to the default deny
                    principal: svc-app
                    action: read
                    secret: aws:staging/secret-token
                    expect: deny
                    rule: null
                """,
                lambda c: [
                    f"FAIL  {at(c, 2, 5, 'name: pinned to the wrong')}  pinned to the wrong rule",
                    "      expected deny by rule app-read-staging, got deny by rule app-no-secrets",
                    f"FAIL  {at(c, 8, 5, 'name: pinned to the default')}  "
                    "pinned to the default deny",
                    "      expected deny by default deny, got deny by rule app-no-secrets",
                    "0 passed, 2 failed (1 file(s))",
                ],
                id="wrong_rule_fails_although_the_effect_is_right",
            ),
            pytest.param(  # an unknown key or action, as file:line:col: reason
                """
                tests:
                  - name: a typo in a key
                    principal: svc-app
                    action: read
                    secret: aws:staging/api-key
                    expcet: allow
                  - name: a typo in an action
                    principal: svc-app
                    action: raed
                    secret: aws:staging/api-key
                    expect: allow
                """,
                lambda c: [
                    f"{at(c, 6, 5, 'expcet')}: unknown key 'expcet' in a test case "
                    "(did you mean 'expect'?)",
                    f"{at(c, 2, 5, 'name: a typo in a key')}: a test case needs expect: <text>",
                    f"{at(c, 9, 13, 'raed')}: unknown action 'raed' (did you mean 'read'?)",
                ],
                id="malformed_cases_are_reported_with_positions",
            ),
        ],
    )
    def test_failing_or_malformed_cases_exit_1(
        self, tmp_path: Path, capsys: Capsys, cases: str, expected: Callable[[Path], list[str]]
    ) -> None:
        """Cases that fail or do not parse print what and where (the test file's line:col)."""
        path = app_with_tests(tmp_path, cases)
        code, out, _ = run(capsys, "test", tmp_path)
        assert (code, out) == (1, expected(path))

    def test_folder_without_test_files(self, tmp_path: Path, capsys: Capsys) -> None:
        """A folder with policies but no test files exits 1 and says what it looked for."""
        write(tmp_path / "app.yaml", APP_POLICY)
        code, out, _ = run(capsys, "test", tmp_path)
        assert code == 1
        assert out == ["no policy test files found (YAML files with 'test' in their name)"]

    def test_quiet_prints_only_failures_and_the_summary(
        self, tmp_path: Path, capsys: Capsys
    ) -> None:
        """-q drops the PASS lines and keeps each FAIL with its reason, and the summary."""
        cases = app_with_tests(tmp_path, with_failing_case("delete"))
        code, out, _ = run(capsys, "test", "-q", tmp_path)
        assert code == 1
        assert out == [
            f"FAIL  {at(cases, 16, 5, 'name: the app deletes')}  the app deletes staging",
            "      expected allow, got deny (default deny)",
            "2 passed, 1 failed (1 file(s))",
        ]

        write(cases, PASSING_CASES)
        code, out, _ = run(capsys, "test", "--quiet", tmp_path)
        assert code == 0
        assert out == ["2 passed, 0 failed (1 file(s))"]

    def test_explicit_policy_and_test_files(self, tmp_path: Path, capsys: Capsys) -> None:
        """policy test a.yaml a_test.yaml loads a.yaml as the policy and runs a_test.yaml."""
        policy = write(tmp_path / "a.yaml", APP_POLICY)
        cases = write(tmp_path / "a_test.yaml", PASSING_CASES)
        write(tmp_path / "broken.yaml", "roles: [oops\n")  # not named, so not read
        code, out, _ = run(capsys, "test", policy, cases)
        assert code == 0
        assert out == [*passing_lines(cases), "2 passed, 0 failed (1 file(s))"]

    def test_glob_finds_policy_and_test_files(self, tmp_path: Path, capsys: Capsys) -> None:
        """A glob PATH picks policies and test files alike, each from the files it matches."""
        app_with_tests(tmp_path, PASSING_CASES)
        code, out, _ = run(capsys, "test", "-q", tmp_path / "app*.yaml")
        assert code == 0
        assert out == ["2 passed, 0 failed (1 file(s))"]

    def test_policy_that_does_not_load(self, tmp_path: Path, capsys: Capsys) -> None:
        """When the policies do not load, no case runs: the problems print and the exit is 1."""
        path = write(tmp_path / "app.yaml", APP_POLICY.replace("[read]", "[raed]"))
        write(tmp_path / "app_test.yaml", PASSING_CASES)
        code, out, _ = run(capsys, "test", tmp_path)
        assert code == 1
        assert out == [f"{at(path, 5, 19, 'raed]')}: unknown action 'raed' (did you mean 'read'?)"]


# -- schema and help --------------------------------------------------------------------


def test_schema_is_json_schema_2020_12(capsys: Capsys) -> None:
    """policy schema prints a JSON document declaring JSON Schema draft 2020-12."""
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads("\n".join(out))
    assert isinstance(schema, dict)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(
    ("verb", "options"),
    [
        ("check", "--config --inventory PATH file:line:col"),
        (
            "explain",
            "--principal --action --secret --group --attr --source-ip --at --protocol "
            "--operation --version-stage --json",
        ),
        ("test", "-q --quiet --config PATH"),
        ("schema", "JSON Schema yaml-language-server"),
    ],
)
def test_help(capsys: Capsys, verb: str, options: str) -> None:
    """--help of each policy verb exits 0 and names its key options."""
    with pytest.raises(SystemExit) as exit_:
        main(["policy", verb, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert out.startswith(f"usage: keyledger policy {verb}")
    for option in options.split():
        assert option in out, option
