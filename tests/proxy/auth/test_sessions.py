"""Sessions traded for workload tokens: sealed with a key derived from the identity key,
opened by any process holding it, never made or altered by anyone else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet

from keyledger.model import Principal
from keyledger.proxy.auth.sessions import EXCHANGE_METHOD, METHOD, SessionSealer

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
