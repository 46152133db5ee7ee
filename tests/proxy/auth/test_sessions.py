"""Sessions traded for workload tokens: sealed with a key derived from the identity key,
opened by any process holding it, never made or altered by anyone else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from keyledger.model import Principal
from keyledger.proxy.auth import BearerAuthenticator, IdentityStore, SigV4Authenticator
from keyledger.proxy.auth.sessions import BEARER_PREFIX, EXCHANGE_METHOD, METHOD, SessionSealer
from keyledger.proxy.errors import AuthError, ErrorKind
from keyledger.proxy.wire import WireRequest
from tests.proxy.auth.test_sigv4_auth import signed_wire

CALLER = Principal(
    id="repo:acme/payments:ref:refs/heads/main",
    auth_method="oidc",
    groups=("ci",),
    attributes={"issuer": "github-actions", "repository": "acme/payments"},
)


def test_a_session_opens_in_another_process_with_the_same_key() -> None:
    """What one worker issues, another (its own sealer, same identity key) opens: the
    caller, its groups and attributes, the key id, the secret and the expiry."""
    key = Fernet.generate_key()
    issued = SessionSealer(key).issue(CALLER, ttl=timedelta(minutes=15))
    opened = SessionSealer(key).open(issued.token)

    assert opened is not None
    assert opened.principal == Principal(
        id=CALLER.id, auth_method=METHOD, groups=CALLER.groups, attributes=CALLER.attributes
    )
    assert (opened.access_key_id, opened.secret_access_key, opened.expires) == (
        issued.access_key_id,
        issued.secret_access_key,
        issued.expires,
    )
    assert issued.access_key_id.startswith("ASIA")
    assert len(issued.access_key_id) == 20
    assert issued.secret_access_key not in issued.token  # sealed, not merely encoded


def test_a_session_from_another_key_or_altered_does_not_open() -> None:
    """Another deployment's identity key, a flipped character, garbage or a huge token:
    None, never an exception."""
    issued = SessionSealer(Fernet.generate_key()).issue(CALLER, ttl=timedelta(hours=1))
    sealer = SessionSealer(Fernet.generate_key())
    flipped = issued.token[:-5] + ("A" if issued.token[-5] != "A" else "B") + issued.token[-4:]

    for token in (issued.token, flipped, "", "not a token", "g" * 100_000):
        assert sealer.open(token) is None


def test_expiry_is_the_callers_to_check_and_the_method_is_kept() -> None:
    """An expired session still opens (so the refusal can name whose it was) and
    `expired` says so; a token exchange's session keeps its method, which the SigV4 and
    bearer authenticators each require of theirs."""
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    clock = [now]
    sealer = SessionSealer(Fernet.generate_key(), clock=lambda: clock[0])
    issued = sealer.issue(CALLER, ttl=timedelta(minutes=15), method=EXCHANGE_METHOD)
    opened = sealer.open(issued.token)
    assert opened is not None
    assert opened.principal.auth_method == EXCHANGE_METHOD
    assert not sealer.expired(opened)
    clock[0] = now + timedelta(minutes=15)
    assert sealer.expired(opened)


class TestAuthenticatorsTakeOnlyTheirOwn:
    """An STS session signs AWS calls and nothing else; a token exchange's session is a
    bearer token and nothing else: one cannot be replayed as the other."""

    async def test_sts_sessions_sign_and_exchange_sessions_do_not(self, tmp_path: Path) -> None:
        key = Fernet.generate_key()
        store = IdentityStore(tmp_path / "identities.json", key)
        sealer = SessionSealer(key)
        sigv4 = SigV4Authenticator(store=store, sessions=sealer)
        sts = sealer.issue(CALLER, ttl=timedelta(minutes=15))
        exchanged = sealer.issue(CALLER, ttl=timedelta(minutes=15), method=EXCHANGE_METHOD)

        signed = signed_wire(sts.access_key_id, sts.secret_access_key, token=sts.token)
        assert (await sigv4.authenticate(signed)).auth_method == METHOD
        replayed = signed_wire(
            exchanged.access_key_id, exchanged.secret_access_key, token=exchanged.token
        )
        with pytest.raises(AuthError) as refused:
            await sigv4.authenticate(replayed)
        assert refused.value.kind is ErrorKind.UNKNOWN_TOKEN

    async def test_exchange_sessions_are_bearer_tokens_and_sts_sessions_are_not(
        self, tmp_path: Path
    ) -> None:
        key = Fernet.generate_key()
        store = IdentityStore(tmp_path / "identities.json", key)
        sealer = SessionSealer(key)
        bearer = BearerAuthenticator(store=store, sessions=sealer)
        sts = sealer.issue(CALLER, ttl=timedelta(minutes=15))
        exchanged = sealer.issue(CALLER, ttl=timedelta(minutes=15), method=EXCHANGE_METHOD)

        def sent(token: str) -> WireRequest:
            return WireRequest(
                method="GET",
                path="/v1/projects/p/secrets/s/versions/latest:access",
                query=(),
                headers={"authorization": f"Bearer {BEARER_PREFIX}{token}"},
                body=b"",
                source_ip=None,
                user_agent=None,
                request_id="req-1",
            )

        caller = await bearer.authenticate(sent(exchanged.token))
        assert (caller.id, caller.auth_method) == (CALLER.id, EXCHANGE_METHOD)
        with pytest.raises(AuthError) as refused:
            await bearer.authenticate(sent(sts.token))
        assert (refused.value.kind, refused.value.method) == (
            ErrorKind.UNKNOWN_TOKEN,
            EXCHANGE_METHOD,
        )
