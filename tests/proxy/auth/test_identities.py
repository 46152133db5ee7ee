"""The identity store: issued access keys, encrypted at rest in a 0600 file."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from keyledger.proxy.auth import BearerAuthenticator, IdentityError, IdentityStore
from keyledger.proxy.auth.identities import load_store_key
from keyledger.proxy.wire import WireRequest


@pytest.fixture
def key() -> bytes:
    return Fernet.generate_key()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "identities.json"


def active(store: IdentityStore) -> list[tuple[str, str]]:
    return [(i.name, i.access_key_id) for i in store if not i.revoked]


class TestIdentityStore:
    def test_file_is_private(self, path: Path, key: bytes) -> None:
        """The store file is readable and writable by its owner only, after every change."""
        store = IdentityStore(path, key)
        store.create("svc-a")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        store.rotate("svc-a")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_secret_is_not_stored_in_plaintext(self, path: Path, key: bytes) -> None:
        """The secret access key never appears in the file; the key id does."""
        issued = IdentityStore(path, key).create("svc-a")

        text = path.read_text()

        assert issued.secret_access_key not in text
        assert issued.access_key_id in text

    def test_secrets_stay_out_of_reprs(self, path: Path, key: bytes) -> None:
        """An issued key or stored identity that ends up in a log line shows no secret."""
        store = IdentityStore(path, key)
        issued = store.create("svc-a")
        (identity,) = store

        assert issued.secret_access_key not in repr(issued)
        assert identity.encrypted_secret not in repr(identity)
        assert issued.access_key_id in repr(issued)

    def test_reopen_with_the_same_key_decrypts(self, path: Path, key: bytes) -> None:
        """A restarted proxy reads back every identity and its secret."""
        issued = IdentityStore(path, key).create("svc-a", groups=("payments",))

        reopened = IdentityStore(path, key)
        identity = reopened.by_key(issued.access_key_id)

        assert identity is not None
        assert identity.name == "svc-a"
        assert identity.groups == ("payments",)
        assert reopened.secret_of(identity) == issued.secret_access_key

    def test_wrong_key_is_reported(self, path: Path, key: bytes) -> None:
        """Opening the store with another key fails with an error that points at the key."""
        issued = IdentityStore(path, key).create("svc-a")
        other = IdentityStore(path, Fernet.generate_key())
        identity = other.by_key(issued.access_key_id)
        assert identity is not None

        with pytest.raises(IdentityError, match="wrong identity store key"):
            other.secret_of(identity)

    @pytest.mark.parametrize("write", ["create", "rotate", "revoke"])
    def test_write_under_another_key_is_refused(self, path: Path, key: bytes, write: str) -> None:
        """A create, rotate or revoke under a key the store was not written with changes
        nothing and names where the key came from."""
        IdentityStore(path, key).create("svc-a")
        before = path.read_bytes()
        other = IdentityStore(
            path, Fernet.generate_key(), key_source="the env var KEYLEDGER_IDENTITY_KEY"
        )

        writes: dict[str, Callable[[], object]] = {
            "create": lambda: other.create("svc-b"),
            "rotate": lambda: other.rotate("svc-a"),
            "revoke": lambda: other.revoke("svc-a"),
        }

        with pytest.raises(IdentityError) as caught:
            writes[write]()

        assert str(caught.value) == (
            f"the identity store {path} was written with a different key than the one from "
            "the env var KEYLEDGER_IDENTITY_KEY (it cannot decrypt the key of svc-a); nothing "
            "was written. Use the key the store was written with, the one the proxy serving "
            "it uses"
        )
        assert path.read_bytes() == before
        assert active(other) == active(IdentityStore(path, key))

    def test_unwritable_folder_is_reported(self, tmp_path: Path, key: bytes) -> None:
        """A store that cannot be written (here, under a file) is an IdentityError naming it."""
        (tmp_path / "file").write_text("")
        store = IdentityStore(tmp_path / "file" / "identities.json", key)

        with pytest.raises(
            IdentityError,
            match=r"cannot write the identity store .*/file/identities.json: ",
        ):
            store.create("svc-a")

    def test_invalid_key_is_reported(self, path: Path) -> None:
        """A store key that is not a Fernet key is refused up front."""
        with pytest.raises(IdentityError, match="must be a Fernet key"):
            IdentityStore(path, b"not-a-fernet-key")

    def test_unreadable_file_is_reported(self, path: Path, key: bytes) -> None:
        """A file that is not an identity store is refused, naming the file."""
        path.parent.mkdir(parents=True)
        path.write_text('{"something": "else"}')

        with pytest.raises(IdentityError, match="not a keyledger identity store"):
            IdentityStore(path, key)

    def test_create_issues_distinct_keys(self, path: Path, key: bytes) -> None:
        """Each created identity gets its own key id and secret."""
        store = IdentityStore(path, key)
        a = store.create("svc-a")
        b = store.create("svc-b")

        assert a.access_key_id != b.access_key_id
        assert a.secret_access_key != b.secret_access_key
        assert a.access_key_id.startswith("AKKL")
        assert active(store) == [("svc-a", a.access_key_id), ("svc-b", b.access_key_id)]

    def test_create_refuses_a_second_active_key(self, path: Path, key: bytes) -> None:
        """A name with an active key cannot get a second one; rotate is the way."""
        store = IdentityStore(path, key)
        store.create("svc-a")

        with pytest.raises(IdentityError, match="already has an active key; use rotate"):
            store.create("svc-a")

    def test_create_after_revoke(self, path: Path, key: bytes) -> None:
        """Once its key is revoked, a name can be issued a fresh key."""
        store = IdentityStore(path, key)
        store.create("svc-a")
        store.revoke("svc-a")

        issued = store.create("svc-a")

        assert active(store) == [("svc-a", issued.access_key_id)]

    @pytest.mark.parametrize("name", ["", "svc a", "svc\tb", "svc\x00c"])
    def test_create_rejects_bad_names(self, path: Path, key: bytes, name: str) -> None:
        """Identity names are printable and space-free, so logs and policies stay readable."""
        with pytest.raises(IdentityError, match="must be printable with no spaces"):
            IdentityStore(path, key).create(name)

    def test_revoke_by_name_or_key(self, path: Path, key: bytes) -> None:
        """Revoking by name or by key id deactivates the key, and it stays revoked on reopen."""
        store = IdentityStore(path, key)
        a = store.create("svc-a")
        b = store.create("svc-b")

        assert [i.credential_id for i in store.revoke("svc-a")] == [a.access_key_id]
        assert [i.name for i in store.revoke(b.access_key_id)] == ["svc-b"]

        reopened = IdentityStore(path, key)
        assert active(reopened) == []
        assert {i.access_key_id for i in reopened if i.revoked} == {
            a.access_key_id,
            b.access_key_id,
        }

    def test_revoke_unknown(self, path: Path, key: bytes) -> None:
        """Revoking something that is not active is an error, not a silent no-op."""
        store = IdentityStore(path, key)
        store.create("svc-a")
        store.revoke("svc-a")

        with pytest.raises(IdentityError, match="no active identity, key or token named 'svc-a'"):
            store.revoke("svc-a")

    def test_rotate_replaces_the_key_and_keeps_groups(self, path: Path, key: bytes) -> None:
        """Rotation revokes the old key, issues a new one, and keeps the identity's groups."""
        store = IdentityStore(path, key)
        old = store.create("svc-a", groups=("payments", "ops"))

        new = store.rotate("svc-a")

        reopened = IdentityStore(path, key)
        old_identity = reopened.by_key(old.access_key_id)
        new_identity = reopened.by_key(new.access_key_id)
        assert old_identity is not None
        assert new_identity is not None
        assert old_identity.revoked
        assert not new_identity.revoked
        assert new_identity.groups == ("payments", "ops")
        assert new.name == "svc-a"
        assert new.access_key_id != old.access_key_id
        assert new.secret_access_key != old.secret_access_key
        assert reopened.secret_of(new_identity) == new.secret_access_key
        assert active(reopened) == [("svc-a", new.access_key_id)]

    def test_rotate_with_an_overlap_keeps_the_old_key_until_then(
        self, path: Path, key: bytes
    ) -> None:
        """rotate(overlap=1h) leaves the old key unrevoked with an expiry an hour out (or
        sooner, if it was to expire sooner), and records who did it; a second rotation in
        the overlap does not extend it."""
        store = IdentityStore(path, key)
        old = store.create("svc-a", by="alice@ops")

        new = store.rotate("svc-a", overlap=timedelta(hours=1), by="bob@ops")
        newest = store.rotate("svc-a", overlap=timedelta(hours=2), by="bob@ops")

        reopened = IdentityStore(path, key)
        kept, second, third = (reopened.by_key(k.access_key_id) for k in (old, new, newest))
        assert kept is not None
        assert second is not None
        assert third is not None
        assert not kept.revoked
        assert kept.expires is not None
        in_an_hour = datetime.now(UTC) + timedelta(hours=1)
        assert abs(kept.expires - in_an_hour) < timedelta(seconds=5)  # not two hours
        assert second.expires is not None
        assert second.expires > kept.expires
        assert third.expires is None
        assert (kept.created_by, third.created_by) == ("alice@ops", "bob@ops")
        assert sorted(k for _, k in active(reopened)) == sorted(
            k.access_key_id for k in (old, new, newest)
        )
        assert kept.status(in_an_hour + timedelta(seconds=5)) == "expired"

    def test_revoke_records_who_and_when(self, path: Path, key: bytes) -> None:
        store = IdentityStore(path, key)
        issued = store.create("svc-a")

        store.revoke("svc-a", by="carol@ops")

        revoked = IdentityStore(path, key).by_key(issued.access_key_id)
        assert revoked is not None
        assert revoked.revoked_by == "carol@ops"
        at = datetime.fromisoformat(revoked.revoked_at)
        assert abs(at - datetime.now(UTC)) < timedelta(seconds=5)

    def test_session_cutoffs(self, path: Path, key: bytes) -> None:
        """revoke_sessions(pattern): sessions of the principals it matches (a name or a
        glob) issued before now are revoked, later ones and other principals' are not; the
        cutoff survives a reload."""
        store = IdentityStore(path, key)
        before = datetime.now(UTC) - timedelta(minutes=5)

        store.revoke_sessions("repo:acme/shop:*", by="dave@ops")

        reopened = IdentityStore(path, key)
        after = datetime.now(UTC) + timedelta(seconds=2)
        assert reopened.sessions_revoked("repo:acme/shop:ref:refs/heads/main", before)
        assert not reopened.sessions_revoked("repo:acme/shop:ref:refs/heads/main", after)
        assert not reopened.sessions_revoked("repo:acme/web:ref:refs/heads/main", before)
        (cutoff,) = reopened.session_cutoffs()
        assert (cutoff.pattern, cutoff.by) == ("repo:acme/shop:*", "dave@ops")

    def test_rotate_unknown(self, path: Path, key: bytes) -> None:
        """Rotating a name without an active key is an error."""
        with pytest.raises(IdentityError, match="no active identity named 'svc-a'"):
            IdentityStore(path, key).rotate("svc-a")

    def test_reload_sees_changes_from_another_process(self, path: Path, key: bytes) -> None:
        """A long-running reader picks up keys that the CLI created or revoked since."""
        reader = IdentityStore(path, key)
        assert reader.reload_if_changed() is False

        issued = IdentityStore(path, key).create("svc-a")

        assert reader.reload_if_changed() is True
        assert active(reader) == [("svc-a", issued.access_key_id)]
        assert reader.reload_if_changed() is False

        IdentityStore(path, key).revoke("svc-a")

        assert reader.reload_if_changed() is True
        assert active(reader) == []

    def test_reload_after_the_file_is_removed(self, path: Path, key: bytes) -> None:
        """If the store file disappears, a reload leaves no identity active."""
        reader = IdentityStore(path, key)
        reader.create("svc-a")
        path.unlink()

        assert reader.reload_if_changed() is True
        assert active(reader) == []

    def test_own_writes_are_not_a_change(self, path: Path, key: bytes) -> None:
        """A store does not count its own saves as changes made by someone else."""
        store = IdentityStore(path, key)
        store.create("svc-a")
        store.rotate("svc-a")

        assert store.reload_if_changed() is False


class TestFollowingOffTheLoop:
    async def test_a_slow_store_read_does_not_stall_the_event_loop(
        self, tmp_path: Path, key: bytes
    ) -> None:
        """While a changed store file is being read (a FIFO its writer holds back), the
        event loop goes on serving; the request that noticed the change is then decided by
        the new contents."""
        path = tmp_path / "identities.json"
        IdentityStore(path, key).create_token("svc-old")
        authenticator = BearerAuthenticator(store=IdentityStore(path, key), reload_interval=0)
        staged = tmp_path / "next.json"  # the store's next version, as the CLI writes it
        shutil.copy(path, staged)
        issued = IdentityStore(staged, key).create_token("svc-new")
        contents = staged.read_bytes()
        os.mkfifo(tmp_path / "fifo")
        os.replace(tmp_path / "fifo", path)
        opened, release = threading.Event(), threading.Event()

        def write() -> None:
            with path.open("wb") as pipe:  # open returns once the reader has its end open
                opened.set()
                release.wait(5)  # held back until the loop shows it is free (or 5 s)
                pipe.write(contents)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        request = asyncio.create_task(
            authenticator.authenticate(
                WireRequest(
                    method="GET",
                    path="/v1/projects/p/secrets/s",
                    query=(),
                    headers={"authorization": f"Bearer {issued.token}"},
                    body=b"",
                    source_ip="127.0.0.1",
                    user_agent="test",
                    request_id="req-1",
                )
            )
        )
        await asyncio.to_thread(opened.wait, 5)
        # This line runs on the loop: reached while the read is still waiting, or not at all.
        loop_ran_while_reading = opened.is_set() and not request.done()
        release.set()
        principal = await request
        writer.join(5)

        assert loop_ran_while_reading
        assert principal.id == "svc-new"


class TestLoadStoreKey:
    def test_from_file(self, tmp_path: Path, key: bytes) -> None:
        """The key file may end with a newline, as editors and `echo` leave it."""
        key_file = tmp_path / "identity.key"
        key_file.write_bytes(key + b"\n")

        assert load_store_key(env=None, file=key_file) == key

    def test_from_env(self, monkeypatch: pytest.MonkeyPatch, key: bytes) -> None:
        """Without a key file, the named environment variable holds the key."""
        monkeypatch.setenv("KEYLEDGER_TEST_IDENTITY_KEY", key.decode())

        assert load_store_key(env="KEYLEDGER_TEST_IDENTITY_KEY", file=None) == key

    def test_missing_file(self, tmp_path: Path) -> None:
        """A key file that cannot be read is named in the error."""
        with pytest.raises(IdentityError, match="cannot read identity key file"):
            load_store_key(env=None, file=tmp_path / "absent.key")

    def test_nothing_configured_explains_the_fix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no key anywhere, the error says how to make one."""
        monkeypatch.delenv("KEYLEDGER_TEST_IDENTITY_KEY", raising=False)

        with pytest.raises(IdentityError, match=r"Fernet\.generate_key"):
            load_store_key(env="KEYLEDGER_TEST_IDENTITY_KEY", file=None)
