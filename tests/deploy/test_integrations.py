"""docs/integrations.md: the GitHub Actions and Kubernetes examples load, validate and
agree with keyledger's config and the acme policy set they name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from keyledger.model import Action, SecretRef
from keyledger.policies import PolicyEngine, example_policy_dir, load_policy_files
from keyledger.policies.engine import principal_of
from keyledger.policies.loader import resolve_policy_paths
from keyledger.proxy.config import parse_config
from tests.deploy.conftest import ROOT, DeployTools, run

DOC = ROOT / "docs" / "integrations.md"


def yaml_blocks() -> list[Any]:
    text = DOC.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def block(key: str) -> list[Any]:
    return [b for b in yaml_blocks() if isinstance(b, dict) and key in b]


def test_the_issuers_load_as_keyledger_config(tmp_path: Path) -> None:
    """Both oidc: blocks are valid keyledger config, as the page says they work."""
    github, cluster = (
        parse_config(
            {**b, "policies": ["p"], "backends": {"aws": {"region": "eu-central-1"}}},
            base=tmp_path,
            source="integrations.md",
        ).oidc.issuers[0]
        for b in block("oidc")
    )
    assert (github.issuer, github.audiences, github.groups) == (
        "https://token.actions.githubusercontent.com",
        ("keyledger",),
        ("ci-deployers",),
    )
    assert (cluster.name, cluster.audiences, cluster.groups) == (
        "prod-cluster",
        ("keyledger",),
        ("prod-cluster",),
    )


def test_the_workflow_asks_for_keyledgers_audience_and_names_a_bound_role() -> None:
    """The job may ask for its token, asks it for the audience keyledger trusts, hands it
    to the CLI with the role the acme set binds ci-deployers to; and that caller, on main,
    is allowed its read by the set, a feature branch is not."""
    (workflow,) = block("jobs")
    assert workflow["permissions"]["id-token"] == "write"
    job = workflow["jobs"]["deploy"]
    env = job["env"]
    assert env["AWS_ENDPOINT_URL_STS"] == env["AWS_ENDPOINT_URL"]
    assert "audience=keyledger" in job["steps"][0]["run"]
    role = env["AWS_ROLE_ARN"].rsplit("/", 1)[1]
    engine = PolicyEngine(load_policy_files(resolve_policy_paths([example_policy_dir("acme")])))

    def decide(ref: str) -> bool:
        caller = principal_of(
            f"repo:acme/shop:ref:{ref}",
            ["ci-deployers"],
            {"repository": "acme/shop", "ref": ref, "issuer": "github-actions"},
        )
        assert role in {name for name, _ in engine.bindings_of(caller)}
        secret = SecretRef("aws", "prod/apps/shop/deploy")
        return engine.decide(caller, Action.READ, secret).allowed

    assert decide("refs/heads/main")
    assert not decide("refs/heads/feature")


def test_the_deployment_mounts_a_keyledger_token_where_the_sdk_reads_it() -> None:
    """The projected token's audience is the issuer's, its path is the SDK's token file,
    and the role is one the acme set binds prod-cluster to."""
    (deployment,) = block("apiVersion")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (projected,) = [v for v in spec["volumes"] if "projected" in v]
    (source,) = projected["projected"]["sources"]
    token = source["serviceAccountToken"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == projected["name"])
    assert token["audience"] == "keyledger"
    assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{mount['mountPath']}/{token['path']}"
    engine = PolicyEngine(load_policy_files(resolve_policy_paths([example_policy_dir("acme")])))
    caller = principal_of(
        f"system:serviceaccount:{deployment['metadata']['namespace']}:{spec['serviceAccountName']}",
        ["prod-cluster"],
        {"namespace": "payments", "service_account": "checkout"},
    )
    role = env["AWS_ROLE_ARN"].rsplit("/", 1)[1]
    assert role in {name for name, _ in engine.bindings_of(caller)}
    assert engine.decide(caller, Action.READ, SecretRef("aws", "prod/payments/stripe-key")).allowed


def test_the_deployment_validates_strictly(tools: DeployTools, tmp_path: Path) -> None:
    """The Deployment passes the same strict schema check as deploy/kubernetes."""
    (deployment,) = block("apiVersion")
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = run([tools.kubernetes_validate, "--strict", path])
    assert result.returncode == 0, result.stdout + result.stderr
