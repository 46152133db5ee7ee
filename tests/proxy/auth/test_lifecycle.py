"""Credentials issued and revoked, on record in the journal: what `keyledger identity`
changes, the running proxy writes down, once, never with a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet

from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.auth.identities import IdentityStore
from keyledger.proxy.auth.lifecycle import IdentityRecorder
from tests.conftest import journal_events


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = Journal(directory=tmp_path / "audit", chain_id="ids", fsync=False)
    await journal.start()
    try:
        yield journal
    finally:
        await journal.close()


def changes(tmp_path: Path) -> list[tuple[Any, ...]]:
    return [
        (
            e["detail"]["event"],
            e["principal"]["id"],
            e["detail"]["credential"],
            e["detail"].get("found_at_start", False),
        )
        for e in journal_events(tmp_path / "audit", "lifecycle")
        if str(e["detail"]["event"]).startswith("identity_")
    ]


async def test_issues_and_revocations_are_recorded_once(tmp_path: Path, journal: Journal) -> None:
    """What exists at the first start is recorded as found; then each key or token created
    and each one revoked, once, also across a restart (a new recorder on the same folder),
    and two workers looking at once record a change once."""
    key = Fernet.generate_key()
    cli = IdentityStore(tmp_path / "identities.json", key)  # what `keyledger identity` edits
    cli.create("svc-old")
    proxy_store = IdentityStore(tmp_path / "identities.json", key)
    recorder = IdentityRecorder(store=proxy_store, journal=journal, folder=tmp_path / "audit")

    assert await recorder.check() == 1
    issued = cli.create("svc-new", groups=("payments",))
    token = cli.create_token("svc-new")
    cli.revoke("svc-old")
    assert await recorder.check() == 3
    assert await recorder.check() == 0  # nothing new
    restarted = IdentityRecorder(
        store=IdentityStore(tmp_path / "identities.json", key),
        journal=journal,
        folder=tmp_path / "audit",
    )
    assert await restarted.check() == 0  # already on record
    cli.revoke(token.token_id)
    other_worker = IdentityRecorder(
        store=IdentityStore(tmp_path / "identities.json", key),
        journal=journal,
        folder=tmp_path / "audit",
    )
    assert await other_worker.check() + await restarted.check() == 1

    assert changes(tmp_path) == [
        ("identity_issued", "svc-old", "access_key", True),
        ("identity_issued", "svc-new", "access_key", False),  # second look: by identity
        ("identity_issued", "svc-new", "token", False),
        ("identity_revoked", "svc-old", "access_key", False),
        ("identity_revoked", "svc-new", "token", False),
    ]
    raw = b"".join(p.read_bytes() for p in (tmp_path / "audit").glob("*.jsonl"))
    assert issued.secret_access_key.encode() not in raw
    assert token.token.encode() not in raw
    new_key = next(
        e
        for e in journal_events(tmp_path / "audit", "lifecycle")
        if e["detail"].get("credential_id") == issued.access_key_id
    )
    assert new_key["detail"]["groups"] == ["payments"]
    recorded = orjson.loads((tmp_path / "audit" / ".identities.recorded.json").read_bytes())
    assert recorded[token.token_id]["revoked"] is True


async def test_overlaps_cutoffs_and_who_did_it_are_recorded(
    tmp_path: Path, journal: Journal
) -> None:
    """rotate --overlap is an identity_retiring event with the time the old key stops; a
    revocation names who ran it and when; revoke --sessions is a sessions_revoked event
    naming the principals and the cutoff; each once."""
    key = Fernet.generate_key()
    cli = IdentityStore(tmp_path / "identities.json", key)
    old = cli.create("svc-a", by="alice@ops")
    recorder = IdentityRecorder(
        store=IdentityStore(tmp_path / "identities.json", key),
        journal=journal,
        folder=tmp_path / "audit",
    )
    await recorder.check()

    new = cli.rotate("svc-a", overlap=timedelta(hours=1), by="bob@ops")
    cli.revoke(new.access_key_id, by="carol@ops")
    cutoff = cli.revoke_sessions("repo:acme/shop:*", by="dave@ops")
    assert await recorder.check() == 4
    assert await recorder.check() == 0

    details = [e["detail"] for e in journal_events(tmp_path / "audit", "lifecycle")]
    first = details[0]
    # One look's events come in identity order, then by credential id (random here).
    (sessions,) = [d for d in details if d["event"] == "sessions_revoked"]
    (retiring,) = [d for d in details if d["event"] == "identity_retiring"]
    (issued,) = [d for d in details[1:] if d["event"] == "identity_issued"]
    (revoked,) = [d for d in details if d["event"] == "identity_revoked"]
    assert len(details) == 5
    assert (first["event"], first["by"]) == ("identity_issued", "alice@ops")
    assert retiring["event"] == "identity_retiring"
    assert retiring["credential_id"] == old.access_key_id
    stops = datetime.fromisoformat(retiring["expires"])
    assert abs(stops - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(seconds=5)
    assert (issued["event"], issued["credential_id"], issued["by"]) == (
        "identity_issued",
        new.access_key_id,
        "bob@ops",
    )
    assert (revoked["event"], revoked["by"]) == ("identity_revoked", "carol@ops")
    assert abs(datetime.fromisoformat(revoked["at"]) - datetime.now(UTC)) < timedelta(seconds=5)
    assert sessions == {
        "event": "sessions_revoked",
        "principals": "repo:acme/shop:*",
        "issued_before": cutoff.before.isoformat(),
        "by": "dave@ops",
    }


async def test_one_identitys_changes_read_in_the_order_its_credentials_were_issued(
    tmp_path: Path, journal: Journal
) -> None:
    """A key issued yesterday retires before its successor appears, whatever their ids."""
    import json

    key = Fernet.generate_key()
    path = tmp_path / "identities.json"
    cli = IdentityStore(path, key)
    cli.create("svc-a")
    recorder = IdentityRecorder(
        store=IdentityStore(path, key), journal=journal, folder=tmp_path / "audit"
    )
    await recorder.check()
    doc = json.loads(path.read_text())
    doc["identities"][0]["created"] = "2026-12-06T09:00:00+00:00"  # as if issued yesterday
    path.write_text(json.dumps(doc))
    IdentityStore(path, key).rotate("svc-a", overlap=timedelta(hours=1))

    assert await recorder.check() == 2
    details = [e["detail"]["event"] for e in journal_events(tmp_path / "audit", "lifecycle")]
    assert details[-2:] == ["identity_retiring", "identity_issued"]
