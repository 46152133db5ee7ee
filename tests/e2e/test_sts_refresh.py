"""boto3 renews the credentials keyledger's STS gives it, on its own, from the same
workload token file: each renewal is a new session, on record."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGION, clean_env, journal_events, running_proxy
from tests.oidc_issuer import AUDIENCE, ThreadedLocalIssuer, claims, rsa_key


@pytest.fixture
def issuer() -> Iterator[ThreadedLocalIssuer]:
    with ThreadedLocalIssuer(rsa_key("k1")) as local:
        yield local


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
    oidc = {
        "issuers": [
            {
                "name": "local",
                "issuer": issuer.url,
                "audiences": [AUDIENCE],
                "jwks_url": issuer.jwks_url,
            }
        ],
        "session_ttl": "15m",
    }
    with running_proxy(tmp_path, moto_url, extra={"oidc": oidc}) as proxy:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        for name, value in {
            **clean_env(),
            "AWS_ENDPOINT_URL_STS": proxy.url,
            "AWS_ROLE_ARN": "arn:aws:iam::000000000000:role/app",
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        }.items():
            if name.startswith("AWS_"):
                monkeypatch.setenv(name, value)
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
