"""boto3 renews the credentials keyledger's STS gives it, on its own, from the same
workload token file: each renewal is a new session, on record. And a session revoked
before it expires (`identity revoke --sessions`) is refused at once, on record."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import REGION, clean_env, journal_events, running_proxy
from tests.oidc_issuer import AUDIENCE, ThreadedLocalIssuer, claims, rsa_key


@pytest.fixture
def issuer() -> Iterator[ThreadedLocalIssuer]:
    with ThreadedLocalIssuer(rsa_key("k1")) as local:
        yield local


def web_identity_env(
    monkeypatch: pytest.MonkeyPatch, proxy_url: str, token: Path, role: str = "app"
) -> None:
    """Only what the SDK reads for a web identity: no keys, STS at keyledger."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in {
        **clean_env(),
        "AWS_ENDPOINT_URL_STS": proxy_url,
        "AWS_ROLE_ARN": f"arn:aws:iam::000000000000:role/{role}",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
    }.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


def local_oidc(issuer: ThreadedLocalIssuer, session_ttl: str) -> dict[str, Any]:
    return {
        "issuers": [
            {
                "name": "local",
                "issuer": issuer.url,
                "audiences": [AUDIENCE],
                "jwks_url": issuer.jwks_url,
            }
        ],
        "session_ttl": session_ttl,
    }


def test_boto3_renews_short_sessions_by_itself(
    tmp_path: Path,
    moto_url: str,
    store: Any,
    store_credentials: None,
    issuer: ThreadedLocalIssuer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With sessions of 15 minutes (inside botocore's refresh window), boto3 trades its
    token again as it goes: every read succeeds, signed with keys of more than one session,
    and every session's issue is in the journal."""
    store.create_secret(Name="app/sts-refresh", SecretString="renewed-value")
    token = tmp_path / "token.jwt"
    token.write_text(issuer.keys[0].sign(claims(issuer.url, subject="app", lifetime=3600)))
    with running_proxy(tmp_path, moto_url, extra={"oidc": local_oidc(issuer, "15m")}) as proxy:
        web_identity_env(monkeypatch, proxy.url, token)
        client = boto3.Session(region_name=REGION).client("secretsmanager", endpoint_url=proxy.url)
        values = [
            client.get_secret_value(SecretId="app/sts-refresh")["SecretString"] for _ in range(3)
        ]

    assert values == ["renewed-value"] * 3
    events = journal_events(tmp_path / "audit")
    issued = [e for e in events if (e.get("detail") or {}).get("event") == "credentials_issued"]
    assert len(issued) >= 2
    assert len({e["detail"]["access_key_id"] for e in issued}) == len(issued)
    reads = [e for e in events if e["type"] == "access"]
    assert [e["principal"]["auth_method"] for e in reads] == ["sts-web-identity"] * 3


def test_a_revoked_session_is_refused_at_once(
    tmp_path: Path,
    moto_url: str,
    store: Any,
    store_credentials: None,
    issuer: ThreadedLocalIssuer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`keyledger identity revoke --sessions app` while boto3 holds an hour's session:
    within a second its next read is refused with the SDK's usual UnrecognizedClient
    error, recorded as an auth failure, and the cutoff is a lifecycle event; the
    token it holds cannot buy a new session either, while a token issued later can."""
    store.create_secret(Name="app/sts-revoke", SecretString="until-revoked")
    token = tmp_path / "token.jwt"
    (key,) = issuer.keys
    token.write_text(key.sign(claims(issuer.url, subject="app", lifetime=3600)))
    with running_proxy(tmp_path, moto_url, extra={"oidc": local_oidc(issuer, "1h")}) as proxy:
        web_identity_env(monkeypatch, proxy.url, token)
        client = boto3.Session(region_name=REGION).client("secretsmanager", endpoint_url=proxy.url)
        before = client.get_secret_value(SecretId="app/sts-revoke")["SecretString"]
        # What an operator runs: the CLI, on the store the proxy serves.
        config = tmp_path / "cli.yaml"
        config.write_text(
            "identities: {path: identities.json, key_file: keys/identity.key}\n"
            "policies: [policies/]\nbackends: {aws: {region: eu-central-1}}\n"
        )
        cli = [sys.executable, "-m", "keyledger", "identity", "revoke", "--sessions", "app"]
        revoked = subprocess.run(
            [*cli, "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert revoked.returncode == 0, revoked.stderr
        time.sleep(1.1)  # the proxy looks at the store once a second
        with pytest.raises(ClientError) as refused:
            client.get_secret_value(SecretId="app/sts-revoke")
        renewed = boto3.Session(region_name=REGION).client("secretsmanager", endpoint_url=proxy.url)
        with pytest.raises(ClientError) as no_new_session:
            renewed.get_secret_value(SecretId="app/sts-revoke")
        token.write_text(key.sign(claims(issuer.url, subject="app", lifetime=3600)))
        time.sleep(1.0)  # a token issued after the cutoff (iat has whole seconds)
        token.write_text(key.sign(claims(issuer.url, subject="app", lifetime=3600)))
        fresh = boto3.Session(region_name=REGION).client("secretsmanager", endpoint_url=proxy.url)
        after = fresh.get_secret_value(SecretId="app/sts-revoke")["SecretString"]

    assert before == after == "until-revoked"
    assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert "revoked" in refused.value.response["Error"]["Message"]
    assert no_new_session.value.response["Error"]["Code"] == "InvalidIdentityToken"
    events = journal_events(tmp_path / "audit")
    (cutoff,) = [e for e in events if (e.get("detail") or {}).get("event") == "sessions_revoked"]
    assert cutoff["detail"]["principals"] == "app"
    session_refused, exchange_refused = (e for e in events if e["type"] == "auth_failure")
    assert session_refused["outcome"]["code"] == "revoked_token"
    assert session_refused["principal"]["id"] == "app"
    assert exchange_refused["outcome"]["code"] == "revoked_token"
    assert exchange_refused["principal"]["attributes"]["subject"] == "app"
