"""AWS callers with a workload token and no keys: AWS_ROLE_ARN and
AWS_WEB_IDENTITY_TOKEN_FILE, with AWS_ENDPOINT_URL_STS pointing at keyledger, as the
unmodified AWS CLI and boto3 read them, against `keyledger serve --dev`."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from keyledger.proxy.dev import DEMO_ROLE_ARN, DEMO_SECRETS
from tests.conftest import journal_events
from tests.e2e.test_dev_mode import dev_env, paster, spawn_dev, wait_for

WEB_IDENTITY = (
    'env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_ROLE_ARN="{role}" '
    "AWS_WEB_IDENTITY_TOKEN_FILE={token} "
)


def test_the_aws_cli_and_boto3_trade_a_workload_token_for_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The banner's lines work as pasted. With only a token file from the demo issuer, the
    AWS CLI and boto3 read what
    demo-app may read and are denied the rest; a role the policy does not bind to the
    caller, or a forged token, is refused by STS itself. Every exchange is audited, and
    every read names auth method sts-web-identity."""
    process, env, _ = spawn_dev(tmp_path)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        paste = paster(banner, tmp_path, env)
        printed = re.search(
            r"^  (keyledger dev token --subject demo-app > .*?staging/db/password)$",
            banner,
            re.M | re.S,
        )
        assert printed is not None, banner
        as_printed = paste(printed.group(1))
        token_file = tmp_path / "token.jwt"
        made = paste(f"keyledger dev token --subject demo-app > {token_file}")
        assert made.returncode == 0, made.stderr
        cli = WEB_IDENTITY.format(role="$KEYLEDGER_DEMO_ROLE_ARN", token=token_file)
        read = paste(
            cli + "aws secretsmanager get-secret-value --secret-id staging/db/password "
            "--query SecretString --output text"
        )
        denied = paste(
            cli + "aws secretsmanager get-secret-value --secret-id prod/payments/api-key"
        )
        other_role = WEB_IDENTITY.format(
            role="arn:aws:iam::000000000000:role/admin", token=token_file
        )
        refused = paste(
            other_role + "aws secretsmanager get-secret-value --secret-id staging/db/password"
        )
        forged_file = tmp_path / "forged.jwt"
        forged_file.write_text(token_file.read_text()[:-20] + "A" * 19 + "\n")
        forged = paste(
            WEB_IDENTITY.format(role="$KEYLEDGER_DEMO_ROLE_ARN", token=forged_file)
            + "aws secretsmanager get-secret-value --secret-id staging/db/password"
        )
        # boto3, in this process: only what the SDK reads from the environment.
        endpoints = dev_env(tmp_path, "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {
            **endpoints,
            "AWS_ROLE_ARN": DEMO_ROLE_ARN,
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }.items():
            monkeypatch.setenv(name, value)
        client = boto3.Session().client("secretsmanager")
        boto3_read = client.get_secret_value(SecretId="staging/db/password")["SecretString"]
        with pytest.raises(ClientError) as boto3_denied:
            client.get_secret_value(SecretId="prod/payments/api-key")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)

    assert as_printed.returncode == 0, as_printed.stderr
    assert DEMO_SECRETS["staging/db/password"] in as_printed.stdout
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == DEMO_SECRETS["staging/db/password"]
    assert "AccessDeniedException" in denied.stderr, denied.stderr
    assert "AssumeRoleWithWebIdentity operation: Not authorized" in refused.stderr, refused.stderr
    assert "(InvalidIdentityToken)" in forged.stderr, forged.stderr
    assert boto3_read == DEMO_SECRETS["staging/db/password"]
    assert boto3_denied.value.response["Error"]["Code"] == "AccessDeniedException"
    events = journal_events(tmp_path / "var" / "audit")
    issued = [e for e in events if (e.get("detail") or {}).get("event") == "credentials_issued"]
    # The CLI may keep its credentials for its second call (its own cache); boto3 trades.
    assert {e["principal"]["id"] for e in issued} == {"demo-app"}
    assert len(issued) >= 2
    assert issued[0]["detail"]["role"] == "demo-app"
    assert "secret" not in str(issued[0]["detail"]).lower()
    reads = [e for e in events if e["type"] == "access"]
    assert [(e["principal"]["auth_method"], e["decision"]["effect"]) for e in reads] == [
        ("sts-web-identity", "allow"),  # as printed
        *[("sts-web-identity", "allow"), ("sts-web-identity", "deny")] * 2,
    ]
    failures = [e["outcome"]["code"] for e in events if e["type"] == "auth_failure"]
    assert sorted(failures) == ["role_not_bound", "token_mismatch"]
