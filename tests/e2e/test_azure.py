"""Azure Key Vault's own clients, unmodified, through keyledger to Key Vault stand-ins.

A service points ``SecretClient(vault_url=...)`` (sync and aio) at keyledger over HTTPS and
gives it a token credential handing out a keyledger-issued bearer token. keyledger answers
Key Vault's challenge, authorises with policy, forwards to the vault the request is for (by
Host name, path prefix or default) and records one audit event per call before answering.

Here keyledger runs in-process (``make_app`` on a TLS socket, one per test) in front of two
stand-in vaults: ``demo`` (the default) and ``payments`` (Host ``payments.kv.test`` or path
``/payments``); the challenge names the resource ``https://kv.test``. One group of tests runs
a real ``keyledger serve --config`` process (HTTPS data plane and admin API).

What the tests count on the wire is read below the SDK's authentication policy
(:class:`~tests.e2e.azure_helpers.WireLog`), so a challenge or a retry is seen, not assumed.
The SDK caches Key Vault's challenge per host for the whole process; every test starts with
that cache empty, so each client's first request is its challenge, as in a new service.
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import http_challenge_cache  # the SDK's process-wide cache
from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient

from keyledger.backends.azure_standin import ThreadedAzureStandin
from keyledger.devtls import DevTls, ensure_dev_tls, server_context
from keyledger.proxy.auth import IdentityStore
from keyledger.proxy.config import parse_config
from tests.conftest import write_proxy_files
from tests.e2e.azure_helpers import (
    AsyncStaticToken,
    PinnedResolver,
    ServedProcess,
    StaticToken,
    TlsProxy,
    WireLog,
    audited_once,
    serve,
)

VAULT_HOST = "payments.kv.test"
RESOURCE = "https://kv.test"

POLICY = """\
version: 1
roles:
  - id: app
    rules:
      - id: app-secrets
        actions: [read, describe, list, write, delete]
        resources: ["azure:demo/app-*", "azure:payments/app-*"]
      - id: app-no-denied
        effect: deny
        actions: ["*"]
        resources: ["azure:demo/app-denied*"]
  - id: vault-admin
    rules:
      - id: admin-whole-vault
        actions: [read, describe, list, write, delete]
        resources: ["azure:demo/*"]
bindings:
  - role: app
    principals: [app, revoked, late]
  - role: vault-admin
    principals: [admin]
"""


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> DevTls:
    """A CA and one server certificate, for keyledger and the stand-ins alike."""
    names = (VAULT_HOST, "localhost", "127.0.0.1")
    return ensure_dev_tls(tmp_path_factory.mktemp("tls"), names=names)


@pytest.fixture(scope="module")
def demo(tls: DevTls) -> Iterator[ThreadedAzureStandin]:
    """The real vault behind ``demo``; each test works on names of its own."""
    with ThreadedAzureStandin(ssl_context=server_context(tls.cert, tls.key)) as vault:
        yield vault


@pytest.fixture(scope="module")
def payments(tls: DevTls) -> Iterator[ThreadedAzureStandin]:
    """The real vault behind ``payments``."""
    with ThreadedAzureStandin(ssl_context=server_context(tls.cert, tls.key)) as vault:
        yield vault


@pytest.fixture(autouse=True)
def sdk_as_a_new_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CA override from the machine (requests would prefer it to connection_verify),
    and no challenge cached by an earlier test."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    http_challenge_cache.clear()


@pytest.fixture
def name() -> str:
    return f"app-{uuid.uuid4().hex[:12]}"


def azure_backend(tls: DevTls, demo: str, payments: str) -> dict[str, Any]:
    return {
        "type": "azure",
        "credentials": "standin",
        "ca_file": str(tls.ca_cert),
        "vaults": {
            "demo": {"url": demo, "default": True},
            "payments": {"url": payments, "hosts": [VAULT_HOST], "path": "/payments"},
        },
    }


@dataclass
class Served:
    """keyledger in-process over TLS, the tokens it issued, and clients for them."""

    proxy: TlsProxy
    tokens: dict[str, str]
    ca: Path
    late_expires: datetime  # when the token of "late" expires

    def client(
        self, who: str = "app", *, url: str | None = None, wire: WireLog | None = None, **kw: Any
    ) -> SecretClient:
        """A sync SecretClient holding ``who``'s token; ``wire`` records its responses."""
        options: dict[str, Any] = {"verify_challenge_resource": False, **kw}
        if wire is not None:
            options["raw_response_hook"] = wire
        return SecretClient(
            vault_url=url or self.proxy.url,
            credential=StaticToken(self.tokens[who]),
            connection_verify=str(self.ca),
            **options,
        )

    def aio_client(
        self, who: str = "app", *, url: str | None = None, wire: WireLog | None = None, **kw: Any
    ) -> AsyncSecretClient:
        """An aio SecretClient holding ``who``'s token; ``wire`` records its responses."""
        options: dict[str, Any] = {"verify_challenge_resource": False, **kw}
        if wire is not None:
            options["raw_response_hook"] = wire
        return AsyncSecretClient(
            vault_url=url or self.proxy.url,
            credential=AsyncStaticToken(self.tokens[who]),
            connection_verify=str(self.ca),
            **options,
        )


@pytest.fixture
def served(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tls: DevTls,
    demo: ThreadedAzureStandin,
    payments: ThreadedAzureStandin,
) -> Iterator[Served]:
    """keyledger for this test alone (its own journal), with tokens for app and admin, a
    revoked one, one about to expire, one it never issued and a forged one; a test's
    indirect parameter gives config sections to add."""
    doc = write_proxy_files(tmp_path, policy=POLICY)
    del doc["admin"]
    doc.update(getattr(request, "param", {}))
    doc["backends"] = {"azure": azure_backend(tls, demo.url, payments.url)}
    doc["frontends"] = {"azure": {"resource": RESOURCE}}
    config = parse_config(doc, base=tmp_path, source="test")
    assert config.identities.key_file is not None
    store = IdentityStore(config.identities.path, config.identities.key_file.read_bytes())
    issued = {who: store.create_token(who) for who in ("app", "admin", "revoked")}
    store.revoke(issued["revoked"].token_id)
    late = store.create_token("late", lifetime=timedelta(seconds=1))
    tokens = {who: token.token for who, token in issued.items()}
    app_secret = tokens["app"].removeprefix(issued["app"].token_id + "_")
    tokens |= {
        "late": late.token,
        "unknown": f"kltok_{'a' * 12}_{secrets.token_urlsafe(32)}",
        "forged": f"{issued['app'].token_id}_{'A' if app_secret[0] != 'A' else 'B'}"
        f"{app_secret[1:]}",
    }
    proxy = TlsProxy(config, server_context(tls.cert, tls.key))
    proxy.start()
    try:
        assert late.expires is not None
        yield Served(proxy, tokens, tls.ca_cert, late.expires)
    finally:
        proxy.stop()


def operations(proxy: TlsProxy, wire: WireLog) -> Counter[str]:
    """Each call the client made, by operation, once every call is checked audited once."""
    return Counter(audited_once(proxy.calls(), wire).values())


def seed(vault: ThreadedAzureStandin, prefix: str, count: int) -> list[str]:
    """``count`` secrets named ``{prefix}-{i}`` set in ``vault`` directly (not through
    keyledger); returns their names."""
    names = [f"{prefix}-{i}" for i in range(count)]
    vault.seed({n: f"value-{n}" for n in names})
    return names


class TestSyncClient:
    def test_a_secrets_whole_life(
        self, served: Served, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """Set, get latest and by version, list versions, update, soft delete, get and list
        the deleted, recover: each call audited once, and every id the SDK sees is
        keyledger's URL, never the vault's."""
        wire = WireLog()
        with served.client(wire=wire) as client:
            first = client.set_secret(name, "one")
            second = client.set_secret(name, "two", content_type="text/plain")
            latest = client.get_secret(name)
            older = client.get_secret(name, first.properties.version)
            versions = list(client.list_properties_of_secret_versions(name, max_page_size=1))
            updated = client.update_secret_properties(name, tags={"team": "payments"})
            deleted = client.begin_delete_secret(name).result()
            with pytest.raises(ResourceNotFoundError):
                client.get_secret(name)
            got_deleted = client.get_deleted_secret(name)
            listed_deleted = [d.name for d in client.list_deleted_secrets(max_page_size=2)]
            recovered = client.begin_recover_deleted_secret(name).result()
            after_recovery = client.get_secret(name)

        assert (latest.value, older.value, after_recovery.value) == ("two", "one", "two")
        assert latest.properties.version == second.properties.version
        assert latest.properties.content_type == "text/plain"
        assert {v.version for v in versions} == {
            first.properties.version,
            second.properties.version,
        }
        assert updated.tags == {"team": "payments"}
        assert updated.version == second.properties.version
        assert deleted.recovery_id == f"{served.proxy.url}/deletedsecrets/{name}"
        assert got_deleted.properties.version == second.properties.version
        assert name in listed_deleted
        assert recovered.version == second.properties.version
        for secret in (first, latest, older, after_recovery):
            assert secret.id is not None
            assert secret.id.startswith(f"{served.proxy.url}/secrets/{name}/")
        for props in (latest.properties, updated, recovered, got_deleted.properties, *versions):
            assert props.vault_url == served.proxy.url
        assert f":{demo.port}" not in repr([s.url for s in wire.seen])
        done = operations(served.proxy, wire)
        assert done["SetSecret"] == 2
        assert done["GetSecretVersions"] == 2  # a page each
        assert done["UpdateSecret"] == done["DeleteSecret"] == 1
        assert done["RecoverDeletedSecret"] == 1
        assert done["GetDeletedSecrets"] >= 1
        assert done["GetDeletedSecret"] >= 1  # the delete poller's, and ours

    def test_a_listing_is_one_audited_call_per_page(
        self, served: Served, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """Seven secrets two to a page: every one seen, none policy hides, and one
        GetSecrets event for each page the SDK fetched."""
        mine = seed(demo, name, 7)
        hidden = [f"app-denied-{name}", f"other-{name}"]
        demo.seed(dict.fromkeys(hidden, "hidden"))
        wire = WireLog()
        with served.client(wire=wire) as client:
            pages = [
                list(page) for page in client.list_properties_of_secrets(max_page_size=2).by_page()
            ]

        listed = [p.name for page in pages for p in page]
        assert set(mine) <= set(listed)
        assert not set(hidden) & set(listed)
        assert len(pages) >= 5  # nine secrets at least, two to a page
        assert operations(served.proxy, wire) == {"GetSecrets": len(pages)}
        for page in pages:
            for props in page:
                assert props.vault_url == served.proxy.url

    def test_backup_and_restore_needs_the_whole_vault(
        self, served: Served, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """A backup is a read of the secret; its restore writes a secret named only inside
        the blob, so it takes write on azure:demo/*: refused (403) for app, which may write
        app-* only, and done for admin; a restore over a secret that exists is Key Vault's
        409, ResourceExistsError."""
        wire = WireLog()
        with (
            served.client(wire=wire) as app,
            served.client("admin", wire=wire) as admin,
        ):
            first = app.set_secret(name, "one")
            app.set_secret(name, "two")
            backup = app.backup_secret(name)
            with pytest.raises(ResourceExistsError) as exists:
                admin.restore_secret_backup(backup)
            app.begin_delete_secret(name).wait()
            admin.purge_deleted_secret(name)
            with pytest.raises(HttpResponseError) as refused:
                app.restore_secret_backup(backup)
            with pytest.raises(ResourceNotFoundError):
                app.get_secret(name)  # nothing was restored
            restored = admin.restore_secret_backup(backup)
            latest = app.get_secret(name)
            older = app.get_secret(name, first.properties.version)

        assert exists.value.status_code == 409
        assert refused.value.status_code == 403
        assert refused.value.error is not None
        assert refused.value.error.code == "Forbidden"
        assert (restored.name, restored.vault_url) == (name, served.proxy.url)
        assert (latest.value, older.value) == ("two", "one")
        done = operations(served.proxy, wire)
        assert done["BackupSecret"] == 1
        assert done["RestoreSecret"] == 3
        restores = [
            e
            for e in served.proxy.events("access")
            if e["request"]["operation"] == "RestoreSecret" and e["outcome"]["status"] != "pending"
        ]
        assert [
            (e["principal"]["id"], e["resource"]["secret"], e["outcome"]["status"])
            for e in restores
        ] == [
            ("admin", "demo/*", "error"),
            ("app", "demo/*", "denied"),
            ("admin", "demo/*", "success"),
        ]

    def test_purge(self, served: Served, demo: ThreadedAzureStandin, name: str) -> None:
        """Delete then purge_deleted_secret: the purge answers 204, the secret is gone for
        good, and the purge is recorded as the success it was."""
        wire = WireLog()
        with served.client(wire=wire, retry_total=0) as client:
            client.set_secret(name, "one")
            client.begin_delete_secret(name).wait()
            client.purge_deleted_secret(name)
            with pytest.raises(ResourceNotFoundError):
                client.get_deleted_secret(name)

        assert operations(served.proxy, wire)["PurgeDeletedSecret"] == 1
        (purge,) = [
            e
            for e in served.proxy.events("access")
            if e["request"]["operation"] == "PurgeDeletedSecret"
            and e["outcome"]["status"] != "pending"
        ]
        assert purge["outcome"]["status"] == "success"


async def test_the_aio_client_through_keyledger(
    served: Served, demo: ThreadedAzureStandin, name: str
) -> None:
    """The aio SecretClient: the same life (set, get latest and by version, paged listing,
    versions, update, delete, get and list the deleted, recover, backup and restore) and
    twenty reads at once, each call audited once, ids on keyledger's URL."""
    mine = seed(demo, f"{name}-listed", 7)
    wire = WireLog()
    async with (
        served.aio_client(wire=wire) as client,
        served.aio_client("admin", wire=wire) as admin,
    ):
        first = await client.set_secret(name, "one")
        second = await client.set_secret(name, "two")
        latest = await client.get_secret(name)
        older = await client.get_secret(name, first.properties.version)
        pages = 0
        listed: list[str | None] = []
        async for page in client.list_properties_of_secrets(max_page_size=2).by_page():
            pages += 1
            listed += [p.name async for p in page]
        versions = [v async for v in client.list_properties_of_secret_versions(name)]
        updated = await client.update_secret_properties(name, content_type="text/plain")
        backup = await client.backup_secret(name)
        deleted = await client.delete_secret(name)
        got_deleted = await client.get_deleted_secret(name)
        listed_deleted = [d.name async for d in client.list_deleted_secrets()]
        recovered = await client.recover_deleted_secret(name)
        with pytest.raises(ResourceExistsError):
            await admin.restore_secret_backup(backup)
        await client.delete_secret(name)
        demo.store.purge_deleted_secret(name)  # purging through keyledger: see test_purge
        with pytest.raises(HttpResponseError) as refused:
            await client.restore_secret_backup(backup)
        restored = await admin.restore_secret_backup(backup)
        after = await client.get_secret(name)
        together = await asyncio.gather(*(client.get_secret(name) for _ in range(20)))

    assert (latest.value, older.value, after.value) == ("two", "one", "two")
    assert {t.value for t in together} == {"two"}
    assert latest.properties.version == second.properties.version
    assert set(mine) <= set(listed)
    assert {v.version for v in versions} == {first.properties.version, second.properties.version}
    assert updated.content_type == "text/plain"
    assert deleted.recovery_id == f"{served.proxy.url}/deletedsecrets/{name}"
    assert got_deleted.name == name
    assert name in listed_deleted
    assert recovered.version == second.properties.version
    assert refused.value.status_code == 403
    assert restored.content_type == "text/plain"
    for props in (latest.properties, older.properties, updated, recovered, restored):
        assert props.vault_url == served.proxy.url
        assert props.id is not None
        assert props.id.startswith(f"{served.proxy.url}/secrets/{name}")
    done = operations(served.proxy, wire)
    assert done["GetSecrets"] == pages
    assert (done["SetSecret"], done["BackupSecret"], done["RestoreSecret"]) == (2, 1, 3)
    assert done["GetSecret"] >= 3 + 20  # and the recover poller's
    assert (done["UpdateSecret"], done["DeleteSecret"], done["RecoverDeletedSecret"]) == (1, 2, 1)


class TestErrorsAsTheSdkRaisesThem:
    def test_a_missing_secret_is_resource_not_found(self, served: Served, name: str) -> None:
        """A secret policy allows but the vault lacks: ResourceNotFoundError with Key
        Vault's SecretNotFound, recorded once as that error."""
        wire = WireLog()
        with served.client(wire=wire) as client, pytest.raises(ResourceNotFoundError) as caught:
            client.get_secret(name)

        assert caught.value.error is not None
        assert caught.value.error.code == "SecretNotFound"
        assert operations(served.proxy, wire) == {"GetSecret": 1}
        (event,) = served.proxy.calls()
        assert (event["decision"]["effect"], event["outcome"]["code"]) == (
            "allow",
            "SecretNotFound",
        )

    @pytest.mark.parametrize("asked", [str.lower, str.upper], ids=["as-set", "upper-case"])
    def test_a_policy_denial_is_403_forbidden_and_not_retried(
        self, served: Served, demo: ThreadedAzureStandin, name: str, asked: Any
    ) -> None:
        """A read policy denies: HttpResponseError 403, code Forbidden, sent once (403 is
        not a status the SDK retries), recorded once, and no value in the error; asking
        in other letters' case changes nothing (Key Vault's names are case-insensitive)."""
        denied = f"app-denied-{name}"
        value = f"denied-value-{uuid.uuid4().hex}"
        demo.seed({denied: value})
        wire = WireLog()
        with served.client(wire=wire) as client, pytest.raises(HttpResponseError) as caught:
            client.get_secret(asked(denied))

        assert caught.value.status_code == 403
        assert caught.value.error is not None
        assert caught.value.error.code == "Forbidden"
        assert value not in str(caught.value)
        assert [s.status for s in wire.seen] == [401, 403]  # the challenge, then one try
        assert operations(served.proxy, wire) == {"GetSecret": 1}
        (event,) = served.proxy.calls()
        assert event["decision"]["rule"] == "app-no-denied"
        assert event["outcome"]["status"] == "denied"
        assert event["outcome"]["value_fingerprint"] is None

    @pytest.mark.parametrize(
        ("who", "reason"),
        [
            ("unknown", "unknown_token"),
            ("forged", "token_mismatch"),
            ("revoked", "revoked_token"),
            ("late", "token_expired"),
        ],
    )
    def test_a_refused_token_is_client_authentication_error(
        self, served: Served, name: str, who: str, reason: str
    ) -> None:
        """A token keyledger never issued, a forged one, a revoked one and an expired one:
        ClientAuthenticationError, nothing served, and one auth_failure event saying why
        (the challenge before it is no failure)."""
        if who == "late":
            wait = (served.late_expires - datetime.now(UTC)).total_seconds()
            time.sleep(max(0.0, wait) + 0.05)
        wire = WireLog()
        with (
            served.client(who, wire=wire) as client,
            pytest.raises(ClientAuthenticationError) as refused,
        ):
            client.get_secret(name)

        assert [s.status for s in wire.seen] == [401, 401]  # the challenge, the refusal
        audited_once(served.proxy.calls(), wire)
        (event,) = served.proxy.calls()
        assert event["type"] == "auth_failure"
        assert event["outcome"]["code"] == reason
        assert served.tokens[who] not in str(event)
        assert served.tokens[who] not in str(refused.value)

    def test_a_name_in_soft_delete_is_resource_exists(self, served: Served, name: str) -> None:
        """Setting a name whose secret is deleted but recoverable: Key Vault's 409,
        ResourceExistsError, recorded as that error."""
        wire = WireLog()
        with served.client(wire=wire) as client:
            client.set_secret(name, "one")
            client.begin_delete_secret(name).wait()
            with pytest.raises(ResourceExistsError) as caught:
                client.set_secret(name, "two")

        assert caught.value.status_code == 409
        assert caught.value.error is not None
        assert caught.value.error.code == "Conflict"
        operations(served.proxy, wire)
        last = served.proxy.calls()[-1]
        assert (last["request"]["operation"], last["outcome"]["status"]) == ("SetSecret", "error")

    @pytest.mark.parametrize(
        "served", [{"limits": {"rate": {"per_principal": 1, "burst_s": 2}}}], indirect=True
    )
    def test_past_its_rate_limit_a_caller_gets_429_and_the_sdk_waits(
        self, served: Served, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """Past limits.rate.per_principal: 429 Throttled with Retry-After; without retries
        the SDK raises it, with its default retries it waits as told and is served."""
        demo.seed({name: "throttled-value"})
        wire = WireLog()
        with served.client(wire=wire, retry_total=0) as client:
            served_now = [client.get_secret(name).value for _ in range(2)]
            with pytest.raises(HttpResponseError) as caught:
                client.get_secret(name)
        with served.client(wire=wire) as patient:
            waited = patient.get_secret(name).value

        assert served_now == ["throttled-value"] * 2
        assert caught.value.status_code == 429
        assert caught.value.error is not None
        assert caught.value.error.code == "Throttled"
        assert waited == "throttled-value"
        # the challenge, two reads, the one refused, then the patient client's 429 and read
        assert [s.status for s in wire.seen] == [401, 200, 200, 429, 429, 200]
        throttled = [c for c in served.proxy.calls() if c["outcome"]["code"] == "throttled"]
        assert len(throttled) == 2


class TestCache:
    @pytest.mark.parametrize(
        "served", [{"cache": {"rules": [{"secrets": "azure:demo/*", "ttl": "60s"}]}}], indirect=True
    )
    def test_a_cached_read_is_recorded_and_a_new_value_is_seen_at_once(
        self, served: Served, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """The second GetSecret is a hit, recorded as the first but for outcome.cache, its
        ids still keyledger's URL; SetSecret through keyledger is read at once; the bypass
        header asks the store."""
        demo.seed({name: "one"})
        with served.client() as client:
            first, again = client.get_secret(name), client.get_secret(name)
            client.set_secret(name, "two")
            after = client.get_secret(name).value
            bypassed = client.get_secret(name, headers={"x-keyledger-cache": "bypass"}).value

        reads = [c for c in served.proxy.calls() if c["request"]["operation"] == "GetSecret"]
        assert (first.value, again.value, after, bypassed) == ("one", "one", "two", "two")
        assert again.id == first.id
        assert again.id is not None
        assert again.id.startswith(served.proxy.url)
        assert [r["outcome"].get("cache") for r in reads] == ["miss", "hit", "miss", "miss"]
        assert reads[0]["outcome"]["value_fingerprint"] == reads[1]["outcome"]["value_fingerprint"]


class TestChallenge:
    def test_the_challenge_is_answered_counted_and_not_audited(
        self, served: Served, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """A new client's first request carries no token and gets Key Vault's 401
        challenge: no event (it is no call and no failure), counted as `challenged`; the
        request sent again with the token is audited once, and later ones go straight."""
        demo.seed({name: "v"})
        wire = WireLog()
        with served.client(wire=wire) as client:
            client.get_secret(name)
            client.get_secret(name)

        assert [(s.status, s.request_id is None) for s in wire.seen] == [
            (401, True),
            (200, False),
            (200, False),
        ]
        assert operations(served.proxy, wire) == {"GetSecret": 2}
        assert served.proxy.events("auth_failure") == []
        labels = {"protocol": "azure", "operation": "GetSecret"}
        assert served.proxy.requests_total(**labels, effect="none", status="challenged") == 1
        assert served.proxy.requests_total(**labels, effect="allow", status="success") == 2

    def test_a_refused_token_is_sent_twice_once_the_challenge_is_cached(
        self, served: Served, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """A client whose process already holds the challenge sends its token at once;
        refused, it takes the 401 as a new challenge and tries once more, as against Key
        Vault: two requests, so two auth_failure events, and then the SDK gives up."""
        demo.seed({name: "v"})
        with served.client() as good:
            good.get_secret(name)  # caches the challenge for keyledger's host
        wire = WireLog()
        with (
            served.client("revoked", wire=wire) as client,
            pytest.raises(ClientAuthenticationError),
        ):
            client.get_secret(name)

        assert [(s.status, s.request_id is None) for s in wire.seen] == [
            (401, False),
            (401, False),
        ]
        failures = served.proxy.events("auth_failure")
        assert [e["outcome"]["code"] for e in failures] == ["revoked_token"] * 2
        assert {e["request"]["id"] for e in failures} == set(wire.request_ids)


class TestVaultRouting:
    async def test_the_sdk_verifies_the_challenge_resource_by_default(
        self,
        served: Served,
        payments: ThreadedAzureStandin,
        demo: ThreadedAzureStandin,
        name: str,
    ) -> None:
        """With verify_challenge_resource left on, a vault reached as payments.kv.test
        works (the challenge names https://kv.test), ids name that host; the same client
        settings on keyledger's IP address are refused by the SDK itself, before a token
        or a secret moves."""
        resolver = PinnedResolver({VAULT_HOST: ("127.0.0.1", served.proxy.port)})
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver)
        ) as session:
            # The transport's own TLS settings: a client's connection_verify is not used
            # by a transport it is given.
            transport = AioHttpTransport(
                session=session, session_owner=False, connection_verify=str(served.ca)
            )
            wire = WireLog()
            async with AsyncSecretClient(
                vault_url=f"https://{VAULT_HOST}",
                credential=AsyncStaticToken(served.tokens["app"]),
                transport=transport,
                retry_total=0,
                raw_response_hook=wire,
            ) as client:
                made = await client.set_secret(name, "by-host")
                got = await client.get_secret(name)

        assert got.value == "by-host"
        assert got.properties.vault_url == f"https://{VAULT_HOST}"
        assert made.id is not None
        assert made.id.startswith(f"https://{VAULT_HOST}/secrets/{name}/")
        assert payments.store.get_secret(name).value == "by-host"  # the host's vault
        assert operations(served.proxy, wire) == {"SetSecret": 1, "GetSecret": 1}
        assert {e["resource"]["secret"] for e in served.proxy.calls()} == {f"payments/{name}"}

        http_challenge_cache.clear()
        before = len(served.proxy.calls())
        outside = WireLog()
        demo.seed({name: "not-for-you"})
        async with AsyncSecretClient(
            vault_url=served.proxy.url,
            credential=AsyncStaticToken(served.tokens["app"]),
            connection_verify=str(served.ca),
            raw_response_hook=outside,
        ) as client:
            with pytest.raises(ValueError, match=r"challenge resource 'kv\.test' does not match"):
                await client.get_secret(name)

        assert [(s.status, s.request_id) for s in outside.seen] == [(401, None)]
        assert len(served.proxy.calls()) == before

    def test_a_vault_by_path_prefix(
        self,
        served: Served,
        payments: ThreadedAzureStandin,
        demo: ThreadedAzureStandin,
        name: str,
    ) -> None:
        """vault_url https://keyledger/payments reaches the payments vault: get, set, paged
        listings of secrets, versions and deleted secrets (nextLink keeps the prefix, so
        every page stays in that vault) and soft delete work. Ids are written without the
        prefix, on keyledger's scheme://host:port, because the SDK parses an id as exactly
        /secrets/{name}[/{version}]: a secret's vault_url is then keyledger's root (the
        default vault), so build clients from the configured URL, not from ids."""
        mine = seed(payments, name, 5)
        demo.seed({f"{name}-demo": "demo-only"})
        wire = WireLog()
        with served.client(url=f"{served.proxy.url}/payments", wire=wire) as client:
            got = client.get_secret(mine[0])
            client.set_secret(f"{name}-new", "first")
            made = client.set_secret(f"{name}-new", "through-prefix")
            pages = [list(p) for p in client.list_properties_of_secrets(max_page_size=2).by_page()]
            versions = list(
                client.list_properties_of_secret_versions(f"{name}-new", max_page_size=1)
            )
            deleted = client.begin_delete_secret(f"{name}-new").result()
            in_bin = [d.name for d in client.list_deleted_secrets(max_page_size=1)]

        assert got.value == f"value-{mine[0]}"
        assert got.id == f"{served.proxy.url}/secrets/{mine[0]}/{got.properties.version}"
        assert got.properties.vault_url == served.proxy.url
        assert made.id is not None
        assert made.id.startswith(f"{served.proxy.url}/secrets/{name}-new/")
        assert payments.store.get_deleted_secret(f"{name}-new").latest.value == "through-prefix"
        assert deleted.recovery_id == f"{served.proxy.url}/deletedsecrets/{name}-new"
        listed = [p.name for page in pages for p in page]
        assert set(mine) <= set(listed)
        assert f"{name}-demo" not in listed  # the default vault's
        assert len(pages) >= 3
        assert len(versions) == 2
        assert f"{name}-new" in in_bin
        pages_followed = [s.url for s in wire.seen if "$skiptoken=" in s.url]
        assert len(pages_followed) >= 4  # listing, versions and the deleted: each paged
        assert all(u.startswith(f"{served.proxy.url}/payments/") for u in pages_followed)
        done = operations(served.proxy, wire)
        assert done["GetSecrets"] == len(pages)
        assert done["GetSecretVersions"] == 2
        assert {
            e["resource"]["secret"] for e in served.proxy.calls() if e["resource"]["secret"]
        } == {f"payments/{mine[0]}", f"payments/{name}-new"}


@pytest.fixture(scope="module")
def serve_process(
    tmp_path_factory: pytest.TempPathFactory,
    tls: DevTls,
    demo: ThreadedAzureStandin,
    payments: ThreadedAzureStandin,
) -> Iterator[ServedProcess]:
    """One `keyledger serve --config` for the module, with `tls: {cert, key}` (the data
    plane itself over HTTPS), tokens for app and ops made with `keyledger identity`."""
    served = serve(
        tmp_path_factory.mktemp("serve"),
        {
            "tls": {"cert": str(tls.cert), "key": str(tls.key)},
            "backends": {"azure": azure_backend(tls, demo.url, payments.url)},
            "frontends": {"azure": {"resource": RESOURCE}},
        },
        policy=POLICY.replace("[app, revoked", "[app, ops"),
        identities=("app", "ops"),
        ca=tls.ca_cert,
    )
    yield served
    assert served.stop() == 0


class TestServeProcess:
    def test_no_value_in_a_log_line_an_event_an_error_or_a_metric(
        self, serve_process: ServedProcess, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """A canary value set through the SDK and read back, and another one policy
        refuses, appear in no log line of keyledger's, no audit event, no error the
        caller gets and no /metrics output; every call is audited once, and the
        challenge is counted as challenged."""
        canary = f"canary-{uuid.uuid4().hex}"
        refused_canary = f"canary-{uuid.uuid4().hex}"
        demo.seed({f"app-denied-{name}": refused_canary})
        before = len(serve_process.events())
        wire = WireLog()
        with serve_process.client(wire=wire) as client:
            client.set_secret(name, canary)
            read = client.get_secret(name)
            with pytest.raises(HttpResponseError) as refused:
                client.get_secret(f"app-denied-{name}")
            with pytest.raises(ResourceNotFoundError) as missing:
                client.get_secret(f"{name}-missing")
        metrics = serve_process.metrics()
        events = serve_process.events()[before:]

        assert read.value == canary
        assert read.properties.vault_url == serve_process.url
        assert refused.value.status_code == 403
        done = Counter(audited_once(events, wire).values())
        assert done == {"SetSecret": 1, "GetSecret": 3}
        assert [e["outcome"]["value_fingerprint"] is not None for e in events][-3:] == [
            True,
            False,
            False,
        ]
        assert 'operation="SetSecret",protocol="azure",status="challenged"' in metrics
        logged = serve_process.log.read_text()
        assert f"demo/{name}" in logged  # the calls are logged, by name ...
        journal = b"".join(p.read_bytes() for p in serve_process.journal.iterdir() if p.is_file())
        for text in (logged, metrics, str(refused.value), str(missing.value), journal.decode()):
            assert canary not in text  # ... but no value is
            assert refused_canary not in text

    def test_a_token_revoked_with_the_cli_stops_working_without_a_restart(
        self, serve_process: ServedProcess, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """`keyledger identity revoke TOKEN_ID` while keyledger runs: within moments the
        token is refused (ClientAuthenticationError) and that refusal is one
        auth_failure event, revoked_token, naming the identity."""
        demo.seed({name: "v"})
        with serve_process.client("ops") as client:
            assert client.get_secret(name).value == "v"
        serve_process.cli("identity", "revoke", serve_process.token_ids["ops"])
        before = len(serve_process.events())
        deadline = time.monotonic() + 10
        while True:
            http_challenge_cache.clear()  # each try as a new client: one request with a token
            with serve_process.client("ops") as client:
                try:
                    client.get_secret(name)
                except ClientAuthenticationError:
                    break
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.1)

        events = serve_process.events()[before:]
        failures = [e for e in events if e["type"] == "auth_failure"]
        assert [e["outcome"]["code"] for e in failures] == ["revoked_token"]
        assert failures[0]["principal"]["id"] == "ops"
        assert events[-1] == failures[0]

    def test_no_value_while_the_journal_cannot_be_written(
        self, serve_process: ServedProcess, demo: ThreadedAzureStandin, name: str
    ) -> None:
        """Fail closed: while keyledger cannot write its journal (the kernel refuses
        writes past its size, as on a full disk), a read is refused 503
        ServiceUnavailable, every retry the SDK makes too, and no value leaves; once
        the journal can be written, reads are served again."""
        value = f"guarded-{uuid.uuid4().hex}"
        demo.seed({name: value})
        (segment,) = [p for p in serve_process.journal.iterdir() if p.suffix == ".jsonl"]
        pid = serve_process.process.pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (segment.stat().st_size, hard))
        wire = WireLog()
        try:
            with (
                serve_process.client(wire=wire, retry_total=2, retry_backoff_factor=0.01) as c,
                pytest.raises(HttpResponseError) as refused,
            ):
                c.get_secret(name)
            size = segment.stat().st_size
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
        with serve_process.client() as client:
            served_after = client.get_secret(name).value

        assert refused.value.status_code == 503
        assert refused.value.error is not None
        assert refused.value.error.code == "ServiceUnavailable"
        assert value not in str(refused.value)
        assert [s.status for s in wire.seen] == [401, 503, 503, 503]  # retried, never served
        assert not set(wire.request_ids) & {e["request"]["id"] for e in serve_process.events()}
        assert served_after == value
        assert segment.stat().st_size > size  # written again once it could be
        assert "journal_write_failed" in serve_process.log.read_text()
