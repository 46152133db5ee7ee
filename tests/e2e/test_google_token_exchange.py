"""Google's clients with an `external_account` credential file whose token_url is
keyledger's /v1/token: a workload token traded for a keyledger bearer token (RFC 8693), as
google-auth does it unchanged, against `keyledger serve --dev`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import google.auth.exceptions
import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth import identity_pool
from google.cloud import secretmanager

from keyledger.proxy.dev import DEMO_GCP_SECRETS, GCP_PROJECT
from tests.conftest import journal_events
from tests.e2e.test_dev_mode import dev_env, paster, spawn_dev, wait_for

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def credential_file(folder: Path, endpoint: str, token_file: Path) -> Path:
    """An identity-pool credential file, as a platform's setup writes one; the audience
    names no Google project, so google-auth asks Google nothing."""
    path = folder / "google-workload.json"
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": "keyledger",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": f"{endpoint}/v1/token",
                "credential_source": {"file": str(token_file)},
            }
        )
    )
    return path


def test_an_external_account_credential_reads_through_keyledger(tmp_path: Path) -> None:
    """The GAPIC REST client, given only the credential file, reads what demo-app may read
    and is refused the rest; a forged subject token fails the exchange (google-auth's
    OAuthError, invalid_grant) with an auth_failure on record. The exchange is a credentials_issued
    event, and each call names auth method token-exchange."""
    process, env, _ = spawn_dev(tmp_path)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        paste = paster(banner, tmp_path, env)
        token_file = tmp_path / "token.jwt"
        made = paste(f"keyledger dev token --subject demo-app > {token_file}")
        assert made.returncode == 0, made.stderr
        endpoint = dev_env(tmp_path, "KEYLEDGER_GCP_ENDPOINT=")["KEYLEDGER_GCP_ENDPOINT"]

        def client(token: Path) -> secretmanager.SecretManagerServiceClient:
            # The credential type's own loader: load_credentials_from_file warns about
            # files from untrusted sources.
            credentials = identity_pool.Credentials.from_file(  # type: ignore[no-untyped-call]
                str(credential_file(tmp_path, endpoint, token)), scopes=SCOPES
            )
            return secretmanager.SecretManagerServiceClient(
                transport="rest",
                credentials=credentials,
                client_options=ClientOptions(api_endpoint=endpoint),
            )

        def name(secret: str) -> str:
            return f"projects/{GCP_PROJECT}/secrets/{secret}/versions/latest"

        sm = client(token_file)
        read = sm.access_secret_version(name=name("staging-db-password")).payload.data
        with pytest.raises(exceptions.Forbidden):
            sm.access_secret_version(name=name("prod-payments-api-key"))
        forged = tmp_path / "forged.jwt"
        forged.write_text(token_file.read_text().strip()[:-8] + "AAAAAAAA")
        with pytest.raises(google.auth.exceptions.OAuthError, match="invalid_grant"):
            client(forged).access_secret_version(name=name("staging-db-password"))
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)

    assert read.decode() == DEMO_GCP_SECRETS["staging-db-password"]
    events = journal_events(tmp_path / "var" / "audit")
    issued = [e for e in events if (e.get("detail") or {}).get("event") == "credentials_issued"]
    assert [(e["request"]["protocol"], e["principal"]["id"]) for e in issued] == [
        ("oauth-token-exchange", "demo-app")
    ]
    access = [e for e in events if e["type"] == "access"]
    assert [(e["principal"]["auth_method"], e["decision"]["effect"]) for e in access] == [
        ("token-exchange", "allow"),
        ("token-exchange", "deny"),
    ]
    (failure,) = [e for e in events if e["type"] == "auth_failure"]
    assert (failure["request"]["protocol"], failure["outcome"]["code"]) == (
        "oauth-token-exchange",
        "token_mismatch",
    )
