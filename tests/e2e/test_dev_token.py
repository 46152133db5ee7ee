"""`keyledger dev token`: a workload token from the demo's OIDC issuer, used as the bearer
token by a client of Key Vault's protocol, pasted as a newcomer would."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from keyledger.proxy.dev import AZURE_VAULT, DEMO_AZURE_SECRETS
from keyledger.proxy.dev_issuer import AUDIENCE, ISSUER, KID
from tests.conftest import journal_events
from tests.e2e.test_dev_mode import paster, spawn_dev, wait_for

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")

AZURE_READ = (
    'curl -s --cacert "$KEYLEDGER_CA" -H "Authorization: Bearer {token}" '
    '"$KEYLEDGER_AZURE_VAULT_URL/secrets/{secret}/?api-version=7.4"'
)


def test_a_demo_workload_token_reads_as_its_subject(tmp_path: Path) -> None:
    """A token for subject demo-app reads what demo-app may read, by the demo policy; a
    token for another subject is refused by policy (a valid identity the policy does not
    bind); a token like the demo's but signed with another key is an auth failure. The
    events name auth method oidc, the demo issuer and the claims given."""
    now = int(time.time())
    forged = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "demo-app", "iat": now, "exp": now + 600},
        ed25519.Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": KID},
    )
    process, env, _ = spawn_dev(tmp_path)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        paste = paster(banner, tmp_path, env)

        def azure(token: str, secret: str) -> dict[str, object]:
            done = paste(AZURE_READ.format(token=token, secret=secret))
            assert done.returncode == 0, done.stderr
            answer: dict[str, object] = orjson.loads(done.stdout)
            return answer

        def token(subject: str, *claims: str) -> str:
            argv = " ".join(f"--claim {claim}" for claim in claims)
            return f"$(keyledger dev token --subject {subject} {argv})"

        allowed = azure(token("demo-app", "team=payments"), "staging-db-password")
        denied = azure(token("stranger"), "staging-db-password")
        refused = azure(forged, "staging-db-password")
        missing = paste("keyledger dev token --subject demo-app --var elsewhere")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)

    assert allowed["value"] == DEMO_AZURE_SECRETS["staging-db-password"]
    assert denied["error"] == {
        "code": "Forbidden",
        "message": "Access denied by keyledger: stranger may not GetSecret "
        f"azure:{AZURE_VAULT}/staging-db-password: no keyledger policy allows it",
    }
    assert refused["error"] == {
        "code": "Unauthorized",
        "message": "The token's signature does not verify.",
    }
    assert missing.returncode == 2
    assert "no demo OIDC issuer" in missing.stderr
    events = journal_events(tmp_path / "var" / "audit")
    access = [e for e in events if e["type"] == "access"]
    assert [
        (e["principal"]["id"], e["principal"]["auth_method"], e["decision"]["effect"])
        for e in access
    ] == [("demo-app", "oidc", "allow"), ("stranger", "oidc", "deny")]
    assert access[0]["principal"]["attributes"] == {"issuer": "dev", "team": "payments"}
    (failure,) = [e for e in events if e["type"] == "auth_failure"]
    assert failure["principal"]["auth_method"] == "oidc"
    assert failure["principal"]["attributes"] == {"issuer": "dev", "subject": "demo-app"}
    assert failure["outcome"]["code"] == "token_mismatch"
