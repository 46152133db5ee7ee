"""deploy/terraform/aws: the audit bucket, log group and a role allowed exactly what
keyledger calls. Parsed with python-hcl2, scanned with checkov."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from keyledger.model import Action
from keyledger.proxy.frontends.aws import OPERATIONS
from tests.deploy.conftest import KUBERNETES, ROOT, SYSTEMD, TERRAFORM, DeployTools, load_yaml

SINKS = ROOT / "keyledger" / "proxy" / "audit" / "sinks"
VAR_FILE = TERRAFORM / "examples" / "eks-irsa.tfvars"

# What one boto3 call of a sink needs from IAM.
SINK_CALL_PERMISSIONS = {
    "put_object": {"s3:PutObject"},
    "get_object_lock_configuration": {"s3:GetBucketObjectLockConfiguration"},
    "create_log_group": {"logs:CreateLogGroup"},
    "create_log_stream": {"logs:CreateLogStream"},
    "put_log_events": {"logs:PutLogEvents"},
    "put_retention_policy": {"logs:PutRetentionPolicy"},
}
# Never keyledger's (README, "Sinks"): its copies must outlive anyone holding its role.
FORBIDDEN = re.compile(
    r"s3:DeleteObject.*|s3:BypassGovernanceRetention|s3:PutBucketObjectLockConfiguration"
    r"|logs:Delete.*|logs:PutRetentionPolicy|.*\*.*"
)

DUMP_HCL = """
import json, sys
from pathlib import Path
import hcl2
options = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True,
    preserve_heredocs=False,
)
print(json.dumps({
    path.name: hcl2.load(path.open(), serialization_options=options)
    for path in sorted(Path(sys.argv[1]).glob("*.tf"))
}))
"""


@pytest.fixture(scope="module")
def hcl(tools: DeployTools) -> dict[str, Any]:
    """Every .tf file of the module, as data (python-hcl2)."""
    result = subprocess.run(
        [str(tools.tools_python), "-c", DUMP_HCL, str(TERRAFORM)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    assert set(parsed) == {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}
    return parsed


def blocks(hcl: dict[str, Any], kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Resources or data sources by (type, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for document in hcl.values():
        for block in document.get(kind, []):
            for type_name, named in block.items():
                for name, body in named.items():
                    found[(type_name, name)] = body
    return found


def named(hcl: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Variables or outputs by name."""
    return {
        name: body
        for document in hcl.values()
        for block in document.get(kind, [])
        for name, body in block.items()
    }


def locals_of(hcl: dict[str, Any]) -> dict[str, Any]:
    return {k: v for block in hcl["main.tf"]["locals"] for k, v in block.items()}


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A policy document's statements, those of its dynamic blocks included."""
    found = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        for content in dynamic["statement"]["content"]:
            found.append({**content, "dynamic": True})
    return found


def actions_of(statement: dict[str, Any], local: dict[str, Any]) -> list[str]:
    actions = statement["actions"]
    if isinstance(actions, str):
        reference = re.fullmatch(r"\$\{local\.(\w+)\}", actions)
        if reference:
            return list(local[reference[1]])
        # An expression: the literal names it may produce.
        return re.findall(r'"([a-z0-9]+:[A-Za-z*]+)"', actions)
    return list(actions)


@pytest.fixture(scope="module")
def proxy_policy(hcl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """keyledger's policy document, its statements by Sid."""
    document = blocks(hcl, "data")[("aws_iam_policy_document", "keyledger")]
    by_sid = {s["sid"]: s for s in statements(document)}
    assert len(by_sid) == len(statements(document)), "duplicate Sid"
    return by_sid


def sink_calls(module: str, class_name: str) -> set[str]:
    """The boto3 client methods a sink class reaches for (called or passed on)."""
    tree = ast.parse((SINKS / module).read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    calls = set()
    for node in ast.walk(cls):
        if not isinstance(node, ast.Attribute):
            continue
        client = node.value
        # self._s3().put_object(...), or a local `logs = self._logs()` then logs.x
        if isinstance(client, ast.Call) and isinstance(client.func, ast.Attribute):
            if client.func.attr in ("_s3", "_logs"):
                calls.add(node.attr)
        elif isinstance(client, ast.Name) and client.id in ("s3", "logs"):
            calls.add(node.attr)
    return calls


def readme_row(title: str) -> set[str]:
    """The IAM actions a row of the README's permissions table names."""
    readme = (ROOT / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith(f"| {title} |")]
    return set(re.findall(r"`((?:s3|logs):\w+)`", row))


# -- the role's permissions ----------------------------------------------------------------


def test_secrets_manager_reads_are_exactly_what_keyledger_forwards(
    hcl: dict[str, Any], proxy_policy: dict[str, dict[str, Any]]
) -> None:
    """Every read, describe and list operation the AWS frontend serves, nothing else;
    the two that take no resource are the only ones on "*"."""
    local = locals_of(hcl)
    reads = {
        f"secretsmanager:{name}"
        for name, op in OPERATIONS.items()
        if op.action in (Action.READ, Action.DESCRIBE, Action.LIST)
    }
    scoped = proxy_policy["ReadSecrets"]
    unscoped = proxy_policy["ListSecrets"]
    assert set(actions_of(scoped, local)) | set(actions_of(unscoped, local)) == reads
    assert scoped["resources"] == "${var.secret_arns}"
    assert unscoped["resources"] == ["*"]
    assert set(actions_of(unscoped, local)) == {
        "secretsmanager:ListSecrets",
        "secretsmanager:BatchGetSecretValue",
    }
    # The README's list for a read-only deployment is covered.
    readme = (ROOT / "README.md").read_text()
    sentence = readme[readme.index("Its role needs") :].split(" for reads")[0]
    named_reads = {
        f"secretsmanager:{n}" for n in re.findall(r"`(?:secretsmanager:)?(\w+)`", sentence)
    }
    assert named_reads
    assert named_reads <= reads


def test_write_actions_are_opt_in_and_limited_to_forwarded_operations(
    hcl: dict[str, Any], proxy_policy: dict[str, dict[str, Any]]
) -> None:
    variable = named(hcl, "variable")["secret_write_actions"]
    assert variable["default"] == []
    (validation,) = variable["validation"]
    allowed = set(re.findall(r'"(secretsmanager:\w+)"', validation["condition"]))
    writes = {
        f"secretsmanager:{name}"
        for name, op in OPERATIONS.items()
        if op.action in (Action.WRITE, Action.ROTATE, Action.DELETE)
    }
    assert allowed == writes
    statement = proxy_policy["WriteSecrets"]
    assert statement["dynamic"] is True
    assert statement["resources"] == "${var.secret_arns}"


def test_sink_permissions_are_exactly_what_the_sinks_call(
    hcl: dict[str, Any], proxy_policy: dict[str, dict[str, Any]]
) -> None:
    """The S3 and CloudWatch statements grant what S3Sink and CloudWatchSink call; a new
    call in a sink fails here until the policy (and this table) know it."""
    local = locals_of(hcl)
    calls = sink_calls("s3.py", "S3Sink") | sink_calls("cloudwatch.py", "CloudWatchSink")
    unknown = calls - set(SINK_CALL_PERMISSIONS)
    assert not unknown, f"sinks call {unknown}: add their IAM actions to the module"
    needed = set().union(*(SINK_CALL_PERMISSIONS[c] for c in calls))
    if "ObjectLockRetainUntilDate" in (SINKS / "s3.py").read_text():
        needed.add("s3:PutObjectRetention")  # a PUT with a retention needs both
    # Only with cloudwatch retention_days, which no config here sets: Terraform owns it.
    needed.discard("logs:PutRetentionPolicy")
    granted = {
        action
        for sid in ("ShipAuditObjects", "CheckObjectLock", "ShipAuditLogs")
        for action in actions_of(proxy_policy[sid], local)
    }
    assert granted == needed
    for config in (KUBERNETES / "config" / "config.yaml", SYSTEMD / "config.yaml"):
        for sink in load_yaml(config)["audit"]["sinks"]:
            assert "retention_days" not in sink or sink["type"] != "cloudwatch", config


def test_sink_permissions_match_the_readme_table(
    hcl: dict[str, Any], proxy_policy: dict[str, dict[str, Any]]
) -> None:
    local = locals_of(hcl)
    s3 = set(actions_of(proxy_policy["ShipAuditObjects"], local)) | set(
        actions_of(proxy_policy["CheckObjectLock"], local)
    )
    assert s3 == readme_row("`s3` sink")
    logs = set(actions_of(proxy_policy["ShipAuditLogs"], local))
    assert logs == readme_row("`cloudwatch` sink") - {"logs:PutRetentionPolicy"}
    verifier = blocks(hcl, "data")[("aws_iam_policy_document", "verifier")]
    verify = {a for s in statements(verifier) for a in actions_of(s, local)} - {"kms:Decrypt"}
    assert verify == readme_row("`audit verify s3://`") | readme_row("`audit verify cloudwatch://`")


def test_the_role_writes_only_under_the_prefix_and_to_its_log_group(
    proxy_policy: dict[str, dict[str, Any]],
) -> None:
    assert proxy_policy["ShipAuditObjects"]["resources"] == [
        "${aws_s3_bucket.audit.arn}/${local.object_prefix}/*"
    ]
    assert proxy_policy["CheckObjectLock"]["resources"] == ["${aws_s3_bucket.audit.arn}"]
    assert proxy_policy["ShipAuditLogs"]["resources"] == [
        "${aws_cloudwatch_log_group.audit.arn}",
        "${aws_cloudwatch_log_group.audit.arn}:log-stream:*",
    ]
    decrypt = proxy_policy["DecryptSecrets"]
    assert decrypt["condition"][0]["variable"] == "kms:ViaService"


def test_the_role_can_delete_nothing_and_uses_no_wildcard_action(
    hcl: dict[str, Any], proxy_policy: dict[str, dict[str, Any]]
) -> None:
    local = locals_of(hcl)
    for sid, statement in proxy_policy.items():
        assert statement["effect"] == "Allow", sid
        for action in actions_of(statement, local):
            assert not FORBIDDEN.fullmatch(action), (sid, action)


# -- the bucket and the log group -----------------------------------------------------------


def test_bucket_has_compliance_object_lock_versioning_and_encryption(hcl: dict[str, Any]) -> None:
    resources = blocks(hcl, "resource")
    bucket = resources[("aws_s3_bucket", "audit")]
    assert bucket["object_lock_enabled"] is True
    assert bucket["force_destroy"] is False
    lock = resources[("aws_s3_bucket_object_lock_configuration", "audit")]
    (rule,) = lock["rule"]
    assert rule["default_retention"] == [
        {"mode": "COMPLIANCE", "days": "${var.object_lock_retention_days}"}
    ]
    versioning = resources[("aws_s3_bucket_versioning", "audit")]
    assert versioning["versioning_configuration"] == [{"status": "Enabled"}]
    (sse,) = resources[("aws_s3_bucket_server_side_encryption_configuration", "audit")]["rule"]
    (default,) = sse["apply_server_side_encryption_by_default"]
    assert '"AES256"' in default["sse_algorithm"]
    assert '"aws:kms"' in default["sse_algorithm"]
    block = resources[("aws_s3_bucket_public_access_block", "audit")]
    for flag in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[flag] is True, flag
    variables = named(hcl, "variable")
    assert variables["object_lock_retention_days"]["default"] == 2555


def test_bucket_policy_refuses_requests_without_tls(hcl: dict[str, Any]) -> None:
    document = blocks(hcl, "data")[("aws_iam_policy_document", "bucket")]
    (deny,) = [s for s in statements(document) if s["sid"] == "DenyInsecureTransport"]
    assert deny["effect"] == "Deny"
    assert deny["actions"] == ["s3:*"]
    assert deny["resources"] == ["${aws_s3_bucket.audit.arn}", "${aws_s3_bucket.audit.arn}/*"]
    assert deny["principals"] == [{"type": "*", "identifiers": ["*"]}]
    assert deny["condition"] == [
        {"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}
    ]
    policy = blocks(hcl, "resource")[("aws_s3_bucket_policy", "audit")]
    assert policy["policy"] == "${data.aws_iam_policy_document.bucket.json}"


def test_log_group_keeps_events_for_its_retention(hcl: dict[str, Any]) -> None:
    group = blocks(hcl, "resource")[("aws_cloudwatch_log_group", "audit")]
    assert group["retention_in_days"] == "${var.log_retention_days}"
    assert named(hcl, "variable")["log_retention_days"]["default"] >= 365


def test_trust_policy_is_an_input(hcl: dict[str, Any]) -> None:
    """The role serves IRSA, Pod Identity, EC2 and ECS alike: its trust policy is a variable."""
    role = blocks(hcl, "resource")[("aws_iam_role", "keyledger")]
    assert role["assume_role_policy"] == "${var.assume_role_policy}"
    assert "default" not in named(hcl, "variable")["assume_role_policy"]
    provider = hcl["versions.tf"]["terraform"][0]["required_providers"][0]["aws"]
    assert provider["source"] == "hashicorp/aws"


def test_every_input_and_output_is_documented(hcl: dict[str, Any]) -> None:
    readme = (TERRAFORM / "README.md").read_text()
    for kind in ("variable", "output"):
        for name, body in named(hcl, kind).items():
            assert len(body.get("description", "")) > 10, f"{kind} {name} has no description"
            assert f"| `{name}` |" in readme, f"{kind} {name} is not in README.md"
    for name, body in named(hcl, "variable").items():
        assert "type" in body, name


# -- checkov -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov(tools: DeployTools) -> Iterator[dict[str, dict[str, Any]]]:
    """checkov over the module as it is, and with the example inputs (so that every policy
    document resolves and its IAM checks run); both at once, once per session."""
    runs = {"defaults": [], "example inputs": ["--var-file", str(VAR_FILE)]}
    processes = {
        name: subprocess.Popen(
            [
                str(tools.checkov),
                "--directory",
                str(TERRAFORM),
                "--framework",
                "terraform",
                "--skip-download",
                "--output",
                "json",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for name, extra in runs.items()
    }
    reports: dict[str, dict[str, Any]] = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=180)
            assert stdout.strip(), f"checkov ({name}) printed nothing: {stderr[-2000:]}"
            reports[name] = json.loads(stdout)
        yield reports
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_checkov_finds_no_failed_check(checkov: dict[str, dict[str, Any]]) -> None:
    for name, report in checkov.items():
        summary = report["summary"]
        failed = [
            (c["check_id"], c["resource"], c["check_name"])
            for c in report["results"]["failed_checks"]
        ]
        assert summary["failed"] == 0, (name, failed)
        assert summary["parsing_errors"] == 0, name
        assert summary["passed"] >= 40, (name, summary)


def test_checkov_checks_keyledgers_iam_policy(checkov: dict[str, dict[str, Any]]) -> None:
    """With concrete inputs the IAM checks (wildcards, privilege escalation, exfiltration,
    unconstrained writes) run on keyledger's own policy document, and pass."""
    passed = {
        c["check_id"]
        for c in checkov["example inputs"]["results"]["passed_checks"]
        if c["resource"] == "aws_iam_policy_document.keyledger"
    }
    assert {
        "CKV_AWS_107",
        "CKV_AWS_108",
        "CKV_AWS_109",
        "CKV_AWS_110",
        "CKV_AWS_111",
        "CKV_AWS_356",
    } <= passed


def test_every_checkov_skip_says_why(checkov: dict[str, dict[str, Any]]) -> None:
    """Each skip is an inline #checkov:skip=ID:reason, and checkov skipped only those."""
    text = "\n".join(path.read_text() for path in sorted(TERRAFORM.glob("*.tf")))
    skips = re.findall(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?", text)
    assert skips, "no skips: then this test should say so"
    for check, reason in skips:
        assert len((reason or "").strip()) >= 30, f"{check}: give the reason inline"
    for report in checkov.values():
        skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
        assert skipped == {check for check, _ in skips}


def test_paths_in_the_module_readme_exist() -> None:
    readme = (TERRAFORM / "README.md").read_text()
    for path in re.findall(r"`((?:deploy|examples|tests)/[\w./-]+)`", readme):
        base = ROOT if not path.startswith("examples/") else TERRAFORM
        assert (base / path).exists() or (base / path.rstrip("/")).exists(), path


def test_example_inputs_set_every_variable(hcl: dict[str, Any]) -> None:
    """examples/eks-irsa.tfvars sets each input (so checkov sees every optional part)."""
    assigned = set(re.findall(r"^(\w+)\s*=", VAR_FILE.read_text(), re.MULTILINE))
    assert assigned == set(named(hcl, "variable"))
