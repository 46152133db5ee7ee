"""The Azure stand-in's store alone: Key Vault's rules on secrets, without HTTP."""

from __future__ import annotations

import orjson
import pytest

from keyledger.backends.azure_standin.errors import (
    BadParameter,
    Conflict,
    DeletedButRecoverable,
    DeletedSecretNotFound,
    InvalidName,
    MalformedBackup,
    SecretDisabled,
    SecretNotFound,
)
from keyledger.backends.azure_standin.store import MAX_VALUE_BYTES, RECOVERABLE_DAYS, Store


class Clock:
    """A settable clock, so times in the store's answers are known."""

    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Store:
    return Store(clock=clock)


class TestVersions:
    def test_each_set_makes_a_new_latest_version(self, store: Store) -> None:
        """Setting twice keeps both versions; the latest is served without a version."""
        first = store.set_secret("db", "one")
        second = store.set_secret("db", "two")
        assert first.version != second.version
        assert len(first.version) == 32
        assert int(first.version, 16) >= 0
        assert store.get_secret("db").value == "two"
        assert store.get_secret("db", first.version).value == "one"

    def test_names_are_case_insensitive_and_keep_their_first_casing(self, store: Store) -> None:
        """DB and db are one secret, shown as first set."""
        store.set_secret("Db-Password", "one")
        made = store.set_secret("db-password", "two")
        assert made.name == "Db-Password"
        assert store.get_secret("DB-PASSWORD").value == "two"

    def test_versions_are_case_insensitive(self, store: Store) -> None:
        """A version id matches whatever its letters' case."""
        made = store.set_secret("db", "one")
        assert store.get_secret("db", made.version.upper()).value == "one"

    def test_a_missing_secret_or_version_is_not_found(self, store: Store) -> None:
        """Key Vault names the secret, and the version when one was asked for."""
        with pytest.raises(SecretNotFound, match=r"\(name/id\) nope was not found"):
            store.get_secret("nope")
        store.set_secret("db", "one")
        with pytest.raises(SecretNotFound, match=r"\(name/id\) db/abc was not found"):
            store.get_secret("db", "abc")

    def test_invalid_names_are_refused(self, store: Store) -> None:
        """Only letters, digits and dashes make a name."""
        with pytest.raises(InvalidName, match="invalid name: db_password"):
            store.set_secret("db_password", "x")

    def test_a_value_past_25_kb_is_refused(self, store: Store) -> None:
        """The limit counts bytes of the UTF-8 value, not characters."""
        store.set_secret("fits", "x" * MAX_VALUE_BYTES)
        with pytest.raises(BadParameter):
            store.set_secret("too-big", "é" * (MAX_VALUE_BYTES // 2 + 1))

    def test_a_disabled_version_is_refused_but_can_be_updated(self, store: Store) -> None:
        """Getting its value is forbidden; enabling it again is an update."""
        made = store.set_secret("db", "one", enabled=False)
        with pytest.raises(SecretDisabled):
            store.get_secret("db")
        assert store.properties("db").enabled is False
        store.update_secret("db", made.version, enabled=True)
        assert store.get_secret("db").value == "one"

    def test_update_changes_only_what_is_given(self, store: Store, clock: Clock) -> None:
        """Unset fields keep their value; tags are replaced whole; updated moves on."""
        made = store.set_secret("db", "one", content_type="text", tags={"a": "1"}, expires=5)
        clock.now += 10
        updated = store.update_secret("db", tags={"b": "2"})
        assert updated.content_type == "text"
        assert updated.expires == 5
        assert updated.tags == {"b": "2"}
        assert updated.created == made.created
        assert updated.updated == made.updated + 10
        assert store.get_secret("db").value == "one"


class TestListing:
    def test_secrets_page_by_name(self, store: Store) -> None:
        """Pages resume after the marker of the last item served."""
        for name in ("c", "a", "b"):
            store.set_secret(name, "x")
        first = store.list_secrets(limit=2)
        assert [v.name for v in first.items] == ["a", "b"]
        assert first.next_marker is not None
        second = store.list_secrets(after=first.next_marker, limit=2)
        assert [v.name for v in second.items] == ["c"]
        assert second.next_marker is None

    def test_disabled_secrets_are_listed_and_deleted_ones_are_not(self, store: Store) -> None:
        """Listing shows properties, so a disabled secret is there; a deleted one moves."""
        store.set_secret("off", "x", enabled=False)
        store.set_secret("gone", "x")
        store.delete_secret("gone")
        assert [v.name for v in store.list_secrets(limit=25).items] == ["off"]
        assert [d.latest.name for d in store.list_deleted_secrets(limit=25).items] == ["gone"]

    def test_versions_page_oldest_first(self, store: Store) -> None:
        """Every version of a secret, in the order they were made."""
        made = [store.set_secret("db", str(i)).version for i in range(3)]
        first = store.list_versions("db", limit=2)
        rest = store.list_versions("db", after=first.next_marker, limit=2)
        assert [v.version for v in (*first.items, *rest.items)] == made
        assert rest.next_marker is None

    def test_versions_of_a_missing_secret_are_none(self, store: Store) -> None:
        """An empty listing, not an error."""
        assert store.list_versions("nope", limit=25).items == ()


class TestSoftDelete:
    def test_delete_keeps_the_secret_recoverable(self, store: Store, clock: Clock) -> None:
        """Deleted: gone from reads, kept for 90 days, and recoverable with every version."""
        first = store.set_secret("db", "one")
        store.set_secret("db", "two")
        deleted = store.delete_secret("db")
        assert deleted.deleted_date == int(clock.now)
        assert deleted.scheduled_purge_date == deleted.deleted_date + RECOVERABLE_DAYS * 86400
        with pytest.raises(SecretNotFound):
            store.get_secret("db")
        assert store.get_deleted_secret("db").latest.value == "two"
        assert store.recover_deleted_secret("db").value == "two"
        assert store.get_secret("db", first.version).value == "one"

    def test_a_deleted_name_cannot_be_set(self, store: Store) -> None:
        """Key Vault's conflict until the secret is recovered or purged."""
        store.set_secret("db", "one")
        store.delete_secret("db")
        with pytest.raises(DeletedButRecoverable, match="deleted but recoverable state"):
            store.set_secret("db", "two")
        store.purge_deleted_secret("db")
        assert store.set_secret("db", "two").value == "two"

    def test_missing_deleted_secrets(self, store: Store) -> None:
        """Get and purge say "Deleted Secret not found"; recover says the secret is missing."""
        with pytest.raises(DeletedSecretNotFound, match="Deleted Secret not found: db"):
            store.get_deleted_secret("db")
        with pytest.raises(DeletedSecretNotFound):
            store.purge_deleted_secret("db")
        with pytest.raises(SecretNotFound):
            store.recover_deleted_secret("db")


class TestBackup:
    def test_restore_brings_back_every_version(self, store: Store) -> None:
        """A backup carries the versions, values and properties; restore needs a free name."""
        first = store.set_secret("db", "one", tags={"a": "1"})
        store.set_secret("db", "two", content_type="text")
        blob = store.backup_secret("db")
        with pytest.raises(Conflict):
            store.restore_secret(blob)
        store.delete_secret("db")
        with pytest.raises(DeletedButRecoverable):
            store.restore_secret(blob)
        store.purge_deleted_secret("db")
        restored = store.restore_secret(blob)
        assert restored.value == "two"
        assert restored.content_type == "text"
        assert store.get_secret("db", first.version).tags == {"a": "1"}

    @pytest.mark.parametrize(
        "blob",
        [
            b"",
            b"not json",
            b"[]",
            orjson.dumps({"format": "other", "name": "db", "versions": []}),
            orjson.dumps(
                {"format": "keyledger-azure-standin-backup/1", "name": "db", "versions": []}
            ),
            orjson.dumps(
                {"format": "keyledger-azure-standin-backup/1", "name": "db", "versions": [1]}
            ),
        ],
    )
    def test_anything_but_a_backup_is_malformed(self, store: Store, blob: bytes) -> None:
        """Key Vault's "Malformed backup blob", whatever is wrong with it."""
        with pytest.raises(MalformedBackup):
            store.restore_secret(blob)

    def test_a_tampered_version_is_malformed(self, store: Store) -> None:
        """Each version's fields are checked, not only the envelope."""
        store.set_secret("db", "one")
        parsed = orjson.loads(store.backup_secret("db"))
        parsed["versions"][0]["enabled"] = "yes"
        store.delete_secret("db")
        store.purge_deleted_secret("db")
        with pytest.raises(MalformedBackup):
            store.restore_secret(orjson.dumps(parsed))
