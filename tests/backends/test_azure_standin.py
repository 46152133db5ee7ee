"""The Azure stand-in driven by the real azure-keyvault-secrets SDK, sync and aio, over TLS.

One threaded stand-in serves the module; each test works on names of its own. Round trips
are counted by the stand-in's :class:`~keyledger.backends.azure_standin.Traffic` (answers
by operation and status), so "one challenge per client" and "one GET per page" are checked
on the wire, not inferred.

The SDK caches Key Vault's challenge per vault host for the whole process, so each client
here starts with that cache cleared: otherwise only the module's first client would ever be
challenged.

Key Vault's error wordings asserted here were read from the service's recorded answers in
the azure-sdk-for-js repository (sdk/keyvault/keyvault-secrets/recordings/node/...).
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import http_challenge_cache  # the SDK's process-wide cache
from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient

from keyledger.backends.azure_standin import AzureStandin, ThreadedAzureStandin
from keyledger.devtls import DevTls, client_context, ensure_dev_tls, server_context

HEX32 = r"[0-9a-f]{32}"


class StaticToken:
    """A token credential that hands out ``token``, and counts how often it was asked."""

    def __init__(self, token: str = "t") -> None:
        self.token, self.calls = token, 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, int(time.time()) + 3600)


class AsyncStaticToken(StaticToken):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # type: ignore[override]
        return super().get_token(*scopes, **kwargs)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncStaticToken:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> DevTls:
    return ensure_dev_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def standin(tls: DevTls) -> Iterator[ThreadedAzureStandin]:
    with ThreadedAzureStandin(ssl_context=server_context(tls.cert, tls.key)) as server:
        yield server


def make_client(
    url: str, ca: Path, *, credential: StaticToken | None = None, **options: Any
) -> SecretClient:
    http_challenge_cache.clear()
    return SecretClient(
        vault_url=url,
        credential=credential or StaticToken(),
        connection_verify=str(ca),
        verify_challenge_resource=False,  # the challenge names vault.azure.net, not 127.0.0.1
        **options,
    )


@pytest.fixture
def client(standin: ThreadedAzureStandin, tls: DevTls) -> Iterator[SecretClient]:
    with make_client(standin.url, tls.ca_cert) as made:
        yield made


@pytest.fixture
def name() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def served(standin: AzureStandin, before: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """The answers the stand-in gave since ``before``."""
    now = standin.traffic.snapshot()
    return {k: n - before.get(k, 0) for k, n in now.items() if n != before.get(k, 0)}


class TestSecrets:
    def test_set_then_get_latest_and_by_version(
        self, client: SecretClient, standin: ThreadedAzureStandin, name: str
    ) -> None:
        """Each set is a new version; ids are the vault's URL, the name and the version."""
        first = client.set_secret(name, "one", content_type="text/plain", tags={"app": "x"})
        second = client.set_secret(name, "two")
        assert first.id is not None
        assert first.id.startswith(f"{standin.url}/secrets/{name}/")
        assert first.properties.version is not None
        assert len(first.properties.version) == 32
        assert first.properties.version != second.properties.version
        latest = client.get_secret(name)
        assert (latest.value, latest.properties.version) == ("two", second.properties.version)
        older = client.get_secret(name, first.properties.version)
        assert older.value == "one"
        assert older.properties.content_type == "text/plain"
        assert older.properties.tags == {"app": "x"}
        assert older.properties.enabled is True
        assert older.properties.created_on is not None
        assert older.properties.recovery_level == "Recoverable+Purgeable"
        assert older.properties.recoverable_days == 90

    def test_update_properties(self, client: SecretClient, name: str) -> None:
        """Properties change without a new version, latest or named; the value stays."""
        made = client.set_secret(name, "one")
        expires = made.properties.created_on.replace(year=2099)  # type: ignore[union-attr]
        updated = client.update_secret_properties(
            name, content_type="json", tags={"k": "v"}, expires_on=expires
        )
        assert updated.version == made.properties.version
        assert (updated.content_type, updated.tags, updated.expires_on) == (
            "json",
            {"k": "v"},
            expires,
        )
        named = client.update_secret_properties(name, made.properties.version, enabled=False)
        assert named.enabled is False
        assert named.content_type == "json"

    def test_a_disabled_version_is_forbidden(self, client: SecretClient, name: str) -> None:
        """403 Forbidden with Key Vault's innererror SecretDisabled, until enabled again."""
        made = client.set_secret(name, "one", enabled=False)
        with pytest.raises(HttpResponseError) as caught:
            client.get_secret(name)
        assert caught.value.status_code == 403
        assert caught.value.error is not None
        assert caught.value.error.code == "Forbidden"
        assert caught.value.error.innererror == {"code": "SecretDisabled"}
        assert "not allowed on a disabled secret" in (caught.value.error.message or "")
        client.update_secret_properties(name, made.properties.version, enabled=True)
        assert client.get_secret(name).value == "one"

    def test_a_missing_secret_is_not_found(self, client: SecretClient, name: str) -> None:
        """ResourceNotFoundError, code SecretNotFound, worded as Key Vault words it."""
        with pytest.raises(ResourceNotFoundError) as caught:
            client.get_secret(name)
        assert caught.value.error is not None
        assert caught.value.error.code == "SecretNotFound"
        assert (caught.value.error.message or "").startswith(
            f"A secret with (name/id) {name} was not found in this key vault."
        )


class TestListing:
    def test_secrets_page_through_next_links(
        self, client: SecretClient, standin: ThreadedAzureStandin, name: str
    ) -> None:
        """Seven secrets two to a page: every one seen, one GET per page, no more."""
        standin.seed({f"{name}-{i}": str(i) for i in range(7)})
        before = standin.traffic.snapshot()
        listed = [p.name for p in client.list_properties_of_secrets(max_page_size=2)]
        assert sorted(n for n in listed if n and n.startswith(name)) == [
            f"{name}-{i}" for i in range(7)
        ]
        # The client's first request is its challenge; then one GET per page.
        assert served(standin, before) == {
            ("GetSecrets", 401): 1,
            ("GetSecrets", 200): math.ceil(len(listed) / 2),
        }

    def test_listed_secrets_have_no_value_and_no_version(
        self, client: SecretClient, name: str
    ) -> None:
        """The listing shows properties only; disabled secrets are listed too."""
        client.set_secret(name, "one", enabled=False, content_type="text")
        (found,) = [p for p in client.list_properties_of_secrets() if p.name == name]
        assert found.version is None
        assert found.enabled is False
        assert found.content_type == "text"

    def test_versions_page_through_next_links(self, client: SecretClient, name: str) -> None:
        """Every version, each with its id and version, over pages of two."""
        made = [client.set_secret(name, str(i)).properties.version for i in range(5)]
        listed = client.list_properties_of_secret_versions(name, max_page_size=2)
        assert sorted(p.version or "" for p in listed) == sorted(v or "" for v in made)


class TestSoftDelete:
    def test_delete_recover_and_purge(self, client: SecretClient, name: str) -> None:
        """Deleted secrets leave the vault, can be listed, recovered, or purged for good."""
        made = client.set_secret(name, "one")
        deleted = client.begin_delete_secret(name).result()
        assert deleted.recovery_id == f"{client.vault_url}/deletedsecrets/{name}"
        assert deleted.id == made.id
        assert deleted.deleted_date is not None
        assert deleted.scheduled_purge_date is not None
        assert (deleted.scheduled_purge_date - deleted.deleted_date).days == 90
        with pytest.raises(ResourceNotFoundError):
            client.get_secret(name)
        assert client.get_deleted_secret(name).properties.version == made.properties.version
        assert name in {d.name for d in client.list_deleted_secrets(max_page_size=2)}

        recovered = client.begin_recover_deleted_secret(name).result()
        assert recovered.version == made.properties.version
        assert client.get_secret(name).value == "one"

        poller = client.begin_delete_secret(name)
        poller.wait()
        client.purge_deleted_secret(name)
        with pytest.raises(ResourceNotFoundError) as caught:
            client.get_deleted_secret(name)
        assert caught.value.error is not None
        assert caught.value.error.message == f"Deleted Secret not found: {name}"
        assert client.set_secret(name, "again").value == "again"

    def test_a_deleted_name_cannot_be_set(self, client: SecretClient, name: str) -> None:
        """ResourceExistsError: 409 Conflict, innererror ObjectIsDeletedButRecoverable."""
        client.set_secret(name, "one")
        client.begin_delete_secret(name).wait()
        with pytest.raises(ResourceExistsError) as caught:
            client.set_secret(name, "two")
        assert caught.value.error is not None
        assert caught.value.error.code == "Conflict"
        assert caught.value.error.innererror == {"code": "ObjectIsDeletedButRecoverable"}


class TestBackup:
    def test_backup_and_restore_every_version(self, client: SecretClient, name: str) -> None:
        """A backup restores every version, values and all, once the name is free."""
        first = client.set_secret(name, "one")
        client.set_secret(name, "two", content_type="text")
        backup = client.backup_secret(name)
        with pytest.raises(ResourceExistsError):
            client.restore_secret_backup(backup)
        client.begin_delete_secret(name).wait()
        client.purge_deleted_secret(name)
        restored = client.restore_secret_backup(backup)
        assert (restored.name, restored.content_type) == (name, "text")
        assert client.get_secret(name).value == "two"
        assert client.get_secret(name, first.properties.version).value == "one"
        assert len(list(client.list_properties_of_secret_versions(name))) == 2

    def test_a_malformed_backup_is_refused(self, client: SecretClient) -> None:
        """400 with Key Vault's code "Malformed backup blob"."""
        with pytest.raises(HttpResponseError) as caught:
            client.restore_secret_backup(b"\x00" * 64)
        assert caught.value.status_code == 400
        assert caught.value.error is not None
        assert caught.value.error.code == "Malformed backup blob"


class TestAuthentication:
    def test_one_challenge_per_client_then_tokens(
        self, standin: ThreadedAzureStandin, tls: DevTls, name: str
    ) -> None:
        """The first request is challenged once; the token it earns is sent from then on."""
        credential = StaticToken()
        before = standin.traffic.snapshot()
        with make_client(standin.url, tls.ca_cert, credential=credential) as client:
            client.set_secret(name, "one")
            client.get_secret(name)
            client.get_secret(name)
        assert served(standin, before) == {
            ("SetSecret", 401): 1,
            ("SetSecret", 200): 1,
            ("GetSecret", 200): 2,
        }
        assert credential.calls == 1

    def test_another_token_is_refused(self, tls: DevTls) -> None:
        """With a token set, any other is a ClientAuthenticationError; the right one works."""
        context = server_context(tls.cert, tls.key)
        with ThreadedAzureStandin(ssl_context=context, token="right") as strict:
            strict.seed({"db": "x"})
            with (
                make_client(strict.url, tls.ca_cert, credential=StaticToken("wrong")) as client,
                pytest.raises(ClientAuthenticationError) as caught,
            ):
                client.get_secret("db")
            assert caught.value.error is not None
            assert caught.value.error.code == "Unauthorized"
            with make_client(strict.url, tls.ca_cert, credential=StaticToken("right")) as client:
                assert client.get_secret("db").value == "x"

    @pytest.mark.parametrize("authorization", [None, "Basic dTpw", "Bearer ", "PoP abc"])
    def test_the_challenge_names_the_authority_and_resource(
        self, standin: ThreadedAzureStandin, tls: DevTls, authorization: str | None
    ) -> None:
        """A request without a bearer token gets Key Vault's 401, its body and its challenge."""
        # A raw request below the SDK's auth policy; the URL is the stand-in's own https one.
        request = urllib.request.Request(f"{standin.url}/secrets?api-version=7.6")  # noqa: S310
        if authorization is not None:
            request.add_header("Authorization", authorization)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, context=client_context(tls.ca_cert))  # noqa: S310
        assert caught.value.code == 401
        assert caught.value.headers["WWW-Authenticate"] == (
            'Bearer authorization="https://login.microsoftonline.com/keyledger-standin",'
            ' resource="https://vault.azure.net"'
        )
        assert orjson.loads(caught.value.read()) == {
            "error": {
                "code": "Unauthorized",
                "message": "AKV10000: Request is missing a Bearer or PoP token.",
            }
        }


@pytest.mark.parametrize("api_version", ["7.0", "7.6", "2025-07-01", None])
def test_api_versions(
    standin: ThreadedAzureStandin, tls: DevTls, name: str, api_version: str | None
) -> None:
    """Old, current and the SDK's default versions all work end to end."""
    options: dict[str, Any] = {"api_version": api_version} if api_version else {}
    with make_client(standin.url, tls.ca_cert, **options) as client:
        made = client.set_secret(name, "one")
        assert client.get_secret(name, made.properties.version).value == "one"
        assert name in {p.name for p in client.list_properties_of_secrets()}


class TestWire:
    """What the SDK does not show: raw answers through the SDK's own pipeline."""

    @pytest.mark.parametrize(
        ("url", "status", "code"),
        [
            ("/secrets?api-version=6.9", 400, "BadParameter"),
            ("/secrets/bad_name?api-version=7.6", 400, "BadParameter"),
            ("/secrets?api-version=7.6&maxresults=26", 400, "BadParameter"),
            ("/secrets?api-version=7.6&maxresults=0", 400, "BadParameter"),
            ("/secrets?api-version=7.6&$skiptoken=bogus", 400, "BadParameter"),
            ("/keys?api-version=7.6", 404, "NotFound"),
        ],
    )
    def test_refusals(self, client: SecretClient, url: str, status: int, code: str) -> None:
        """Bad parameters and unknown paths answer Key Vault's error JSON."""
        response = client.send_request(HttpRequest("GET", url))
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.json()["error"]["code"] == code

    def test_an_unknown_version_is_named(self, client: SecretClient) -> None:
        """Key Vault's wording, with the latest version it knows."""
        response = client.send_request(HttpRequest("GET", "/secrets?api-version=6.9"))
        assert response.json()["error"]["message"] == (
            "The specified version (6.9) is not recognized. Consider using the latest"
            " supported version (2026-04-01)."
        )

    def test_a_method_a_path_does_not_take(self, client: SecretClient) -> None:
        """405, with the methods it does take."""
        response = client.send_request(HttpRequest("POST", "/secrets?api-version=7.6"))
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET"

    def test_ids_use_the_host_the_request_was_sent_to(
        self, client: SecretClient, name: str
    ) -> None:
        """A proxy forwarding with its own Host sees ids under it."""
        client.set_secret(name, "one")
        response = client.send_request(
            HttpRequest("GET", f"/secrets/{name}/", headers={"Host": "vault.test:8443"})
        )
        assert response.json()["id"].startswith(f"https://vault.test:8443/secrets/{name}/")

    def test_answers_carry_key_vault_headers(self, client: SecretClient) -> None:
        """A request id each, and the client's own id echoed."""
        response = client.send_request(
            HttpRequest("GET", "/secrets", headers={"x-ms-client-request-id": "mine"})
        )
        assert response.status_code == 200
        assert response.headers["x-ms-client-request-id"] == "mine"
        assert len(response.headers["x-ms-request-id"]) == 36
        assert "x-ms-keyvault-service-version" in response.headers

    def test_purge_answers_no_content(self, client: SecretClient, name: str) -> None:
        """204 without a body."""
        client.set_secret(name, "one")
        client.begin_delete_secret(name).wait()
        response = client.send_request(HttpRequest("DELETE", f"/deletedsecrets/{name}"))
        assert (response.status_code, response.content) == (204, b"")

    def test_request_bodies_are_bounded(self, client: SecretClient) -> None:
        """Past a mebibyte, a body is refused before it is parsed."""
        response = client.send_request(
            HttpRequest("PUT", "/secrets/big", json={"value": "x" * (1 << 20)})
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "RequestEntityTooLarge"

    def test_a_value_past_25_kb_is_refused(self, client: SecretClient, name: str) -> None:
        """Key Vault's limit on a value is 25 KB."""
        with pytest.raises(HttpResponseError) as caught:
            client.set_secret(name, "x" * (25 * 1024 + 1))
        assert caught.value.status_code == 400


@pytest.fixture
async def async_standin(tls: DevTls) -> AsyncIterator[AzureStandin]:
    async with AzureStandin(ssl_context=server_context(tls.cert, tls.key)) as server:
        yield server


async def test_the_aio_client(async_standin: AzureStandin, tls: DevTls, name: str) -> None:
    """The aio SDK against the stand-in on the test's own loop: the same surface."""
    http_challenge_cache.clear()
    async with (
        AsyncStaticToken() as credential,
        AsyncSecretClient(
            vault_url=async_standin.url,
            credential=credential,
            connection_verify=str(tls.ca_cert),
            verify_challenge_resource=False,
        ) as client,
    ):
        first = await client.set_secret(name, "one")
        await client.set_secret(name, "two")
        assert (await client.get_secret(name)).value == "two"
        assert (await client.get_secret(name, first.properties.version)).value == "one"
        await client.update_secret_properties(name, content_type="text")
        assert [p.name async for p in client.list_properties_of_secrets(max_page_size=1)] == [name]
        versions = [p async for p in client.list_properties_of_secret_versions(name)]
        assert len(versions) == 2
        backup = await client.backup_secret(name)
        deleted = await client.delete_secret(name)
        assert deleted.recovery_id is not None
        assert (await client.get_deleted_secret(name)).name == name
        assert [d.name async for d in client.list_deleted_secrets()] == [name]
        await client.recover_deleted_secret(name)
        assert (await client.get_secret(name)).value == "two"
        await client.delete_secret(name)
        await client.purge_deleted_secret(name)
        with pytest.raises(ResourceNotFoundError):
            await client.get_deleted_secret(name)
        restored = await client.restore_secret_backup(backup)
        assert restored.content_type == "text"
        assert (await client.get_secret(name)).value == "two"
