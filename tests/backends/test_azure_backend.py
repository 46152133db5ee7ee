"""The Azure backend: vault URLs moved onto the caller's, Key Vault's errors as backend
error kinds, and AzureBackend against the Key Vault stand-in over TLS (a lent aiohttp
session trusting only the stand-in's CA, as the app lends it).

The stand-in shares one vault across the module, so each test works on names of its own.
Callers reach the vault as ``https://kv.keyledger.test:8443/payments``: nothing the backend
hands back may name the stand-in's own address.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from aiohttp import web
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import DefaultAzureCredential

from keyledger.backends import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
)
from keyledger.backends.azure import AzureBackend, AzureSettings
from keyledger.backends.azure._credentials import STANDIN_TOKEN
from keyledger.backends.azure._errors import error_parts, map_error
from keyledger.backends.azure._links import VaultLinks
from keyledger.backends.azure_standin import AzureStandin, ThreadedAzureStandin
from keyledger.backends.errors import (
    StoreCredentialsError,
    StoreCredentialsMissing,
    StoreCredentialsRefused,
)
from keyledger.devtls import DevTls, ensure_dev_tls, server_context
from keyledger.model import Action, SecretItem, SecretRef, SecretRequest
from keyledger.proxy.http_client import AiohttpTransport

BACKEND = "azure-test"
REAL = "https://acme-payments.vault.azure.net"
CALLER = "https://kv.keyledger.test:8443"  # how callers reach keyledger
PREFIX = "/payments"  # the vault's path prefix there
API = (("api-version", "7.6"),)
VALUE = "azure-canary-value-8d2e"  # must not appear where values never go
OTHERS_TOKEN = "a-token-keyledger-does-not-have"


class TestVaultLinks:
    links = VaultLinks(REAL, CALLER, CALLER + PREFIX)

    @pytest.mark.parametrize(
        "url",
        [
            f"{REAL}/secrets/db/0123abcd",
            "https://acme-payments.vault.azure.net:443/secrets/db/0123abcd",
            "https://ACME-payments.vault.azure.net/secrets/db/0123abcd",
        ],
    )
    def test_an_id_on_the_real_vault_is_written_on_the_callers_url(self, url: str) -> None:
        """A secret's id (with or without Key Vault's default port) names the vault as the
        caller reached it, so the SDK parses its name and version as usual."""
        assert self.links.id(url) == f"{CALLER}/secrets/db/0123abcd"

    def test_a_vault_configured_with_its_port_matches_ids_without_one(self) -> None:
        """``https://vault:443`` in the settings and ``https://vault/...`` in answers are
        the same vault."""
        links = VaultLinks(REAL + ":443", CALLER, CALLER)

        assert links.id(f"{REAL}/secrets/db") == f"{CALLER}/secrets/db"

    @pytest.mark.parametrize(
        "url",
        [
            "https://other.vault.azure.net/secrets/db",
            "https://evil-acme-payments.vault.azure.net/secrets/db",
            "http://acme-payments.vault.azure.net/secrets/db",
            "https://acme-payments.vault.azure.net:8443/secrets/db",
            "https://example.com/?next=https://acme-payments.vault.azure.net/secrets/db",
        ],
    )
    def test_a_url_elsewhere_is_left_alone(self, url: str) -> None:
        """Only URLs into the vault itself move: another host, scheme or port stays as the
        store wrote it."""
        assert self.links.id(url) == url
        assert self.links.link(url) == url

    def test_every_link_of_an_answer_moves(self) -> None:
        """ids, kid and recoveryId move onto the caller's scheme and host; nextLink keeps
        the vault's path prefix, so following it comes back to the same vault."""
        body = {
            "value": [
                {"id": f"{REAL}/secrets/a", "kid": f"{REAL}/keys/a/1"},
                {"id": f"{REAL}/deletedsecrets/b", "recoveryId": f"{REAL}/deletedsecrets/b"},
                "not an item",
            ],
            "nextLink": f"{REAL}/secrets?api-version=7.6&$skiptoken=abc&maxresults=2",
            "id": f"{REAL}/secrets/c/1",
        }

        moved = self.links.body(body)

        assert moved == {
            "value": [
                {"id": f"{CALLER}/secrets/a", "kid": f"{CALLER}/keys/a/1"},
                {
                    "id": f"{CALLER}/deletedsecrets/b",
                    "recoveryId": f"{CALLER}/deletedsecrets/b",
                },
                "not an item",
            ],
            "nextLink": f"{CALLER}{PREFIX}/secrets?api-version=7.6&$skiptoken=abc&maxresults=2",
            "id": f"{CALLER}/secrets/c/1",
        }
        assert body["id"] == f"{REAL}/secrets/c/1"  # a copy: the store's answer is untouched

    @pytest.mark.parametrize("body", [None, [], "text", 7])
    def test_an_answer_that_is_not_an_object_is_left_as_it_is(self, body: Any) -> None:
        """A purge's empty answer, or anything unexpected, passes through unchanged."""
        assert self.links.body(body) == body

    def test_a_message_names_the_callers_vault_not_the_real_one(self) -> None:
        """Key Vault's messages may name the vault by URL or by host; callers read
        keyledger's instead."""
        message = f"Secret {REAL}/secrets/db not found; vault acme-payments.vault.azure.net is busy"

        text = self.links.text(message)

        assert "acme-payments.vault.azure.net" not in text
        assert f"{CALLER}/secrets/db" in text
        assert "vault kv.keyledger.test:8443 is busy" in text


class TestMapError:
    def test_401_is_keyledgers_identity_refused(self) -> None:
        """A 401 from the vault is about keyledger's own token: the caller did nothing
        wrong, and the vault's words stay out of what the caller reads."""
        error = map_error(401, "Unauthorized", None, "AKV10032: Invalid issuer from vault")

        assert isinstance(error, StoreCredentialsRefused)
        assert "AKV10032" not in error.message

    @pytest.mark.parametrize("inner", ["SecretDisabled", "SecretNotYetValid", "SecretExpired"])
    def test_403_about_the_secrets_state_is_the_callers_to_know(self, inner: str) -> None:
        """A disabled, not-yet-valid or expired secret is Key Vault's 403 Forbidden, passed
        on with its code: not keyledger's identity trouble."""
        error = map_error(403, "Forbidden", inner, "Operation get is not allowed")

        assert not isinstance(error, StoreCredentialsError)
        assert (error.code, error.status, error.message) == (
            "Forbidden",
            403,
            "Operation get is not allowed",
        )

    @pytest.mark.parametrize("inner", ["ForbiddenByPolicy", "ForbiddenByRbac", None])
    def test_403_about_who_asks_is_keyledgers_identity_refused(self, inner: str | None) -> None:
        """A 403 about the identity (an access policy, RBAC, or no reason) is keyledger's
        own identity lacking access."""
        error = map_error(403, "Forbidden", inner, "The user does not have secrets get permission")

        assert isinstance(error, StoreCredentialsRefused)
        assert "permission" not in error.message

    @pytest.mark.parametrize(
        ("status", "code", "kind", "expected_code"),
        [
            (404, "SecretNotFound", SecretNotFound, "SecretNotFound"),
            (404, None, SecretNotFound, "NotFound"),
            (409, "Conflict", BackendConflict, "Conflict"),
            (409, None, BackendConflict, "Conflict"),
            (429, None, BackendUnavailable, "Throttled"),
            (429, "Throttled", BackendUnavailable, "Throttled"),
            (500, "InternalServerError", BackendUnavailable, "InternalServerError"),
            (503, "ServiceUnavailable", BackendUnavailable, "ServiceUnavailable"),
            (400, "BadParameter", InvalidBackendRequest, "BadParameter"),
            (405, "MethodNotAllowed", BackendError, "MethodNotAllowed"),
        ],
    )
    def test_each_status_is_its_kind_with_the_vaults_code_and_status(
        self, status: int, code: str | None, kind: type[BackendError], expected_code: str
    ) -> None:
        """Not found, conflict, throttling, outages and bad parameters each become their
        kind, keeping Key Vault's code (or its usual one) and status for the front end."""
        error = map_error(status, code, None, "the vault says")

        assert type(error) is kind
        assert (error.code, error.status, error.message) == (
            expected_code,
            status,
            "the vault says",
        )

    @pytest.mark.parametrize(
        ("body", "parts"),
        [
            (
                {"error": {"code": "Forbidden", "message": "m", "innererror": {"code": "X"}}},
                ("Forbidden", "X", "m"),
            ),
            ({"error": {"code": 7, "message": None, "innererror": "x"}}, (None, None, "")),
            ({"error": "text"}, (None, None, "")),
            (None, (None, None, "")),
            ([], (None, None, "")),
        ],
    )
    def test_error_parts_reads_key_vaults_error_or_nothing(
        self, body: Any, parts: tuple[str | None, str | None, str]
    ) -> None:
        """Key Vault's {"error": {code, message, innererror: {code}}}; anything else is
        read as nothing rather than failing."""
        assert error_parts(body) == parts


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> DevTls:
    return ensure_dev_tls(tmp_path_factory.mktemp("azure-tls"))


@pytest.fixture(scope="module")
def standin(tls: DevTls) -> Iterator[ThreadedAzureStandin]:
    with ThreadedAzureStandin(ssl_context=server_context(tls.cert, tls.key)) as server:
        yield server


@pytest.fixture(scope="module")
def strict_standin(tls: DevTls) -> Iterator[ThreadedAzureStandin]:
    """A vault that accepts only a token keyledger does not have."""
    context = server_context(tls.cert, tls.key)
    with ThreadedAzureStandin(ssl_context=context, token=OTHERS_TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def no_ca_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the CA a test gives is trusted: the machine's CA overrides must not decide."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
async def transport(tls: DevTls) -> AsyncIterator[AiohttpTransport]:
    """The session the app lends the backend: started before it, closed after it."""
    lent = AiohttpTransport(timeout_s=5, ca_file=tls.ca_cert, decompress=False)
    await lent.start()
    yield lent
    await lent.close()


async def started(transport: AiohttpTransport, url: str, **settings: Any) -> AzureBackend:
    backend = AzureBackend(
        AzureSettings(name=BACKEND, vaults={"payments": url}, **settings), http=transport
    )
    await backend.start()
    return backend


@pytest.fixture
async def backend(
    transport: AiohttpTransport, standin: ThreadedAzureStandin
) -> AsyncIterator[AzureBackend]:
    made = await started(transport, standin.url, credentials="standin", timeout_s=5)
    yield made
    await made.close()


@pytest.fixture
def name() -> str:
    """A secret name of the test's own, in mixed case (Key Vault's names are not)."""
    return f"Db-{uuid.uuid4().hex[:10]}"


def call(
    operation: str,
    name: str | None = None,
    *,
    version: str | None = None,
    body: Any = None,
    query: tuple[tuple[str, str], ...] = API,
    vault: str = "payments",
    ref: SecretRef | None = None,
) -> SecretRequest:
    """A request as the Azure front end makes it, authorised on ``ref`` (by default the
    secret as policy names it)."""
    if ref is None and name is not None:
        ref = SecretRef(BACKEND, f"{vault}/{name.lower()}")
    return SecretRequest(
        action=Action.READ,
        ref=ref,
        operation=operation,
        params={
            "vault": vault,
            "name": name,
            "version": version,
            "query": query,
            "body": body,
            "id_base_url": CALLER,
            "base_url": CALLER + PREFIX,
        },
    )


class TestRefusedBeforeSending:
    @pytest.mark.parametrize(
        "request_",
        [
            call("GetSecret", "db", ref=SecretRef(BACKEND, "payments/other")),
            call("GetSecret", "db", ref=SecretRef(BACKEND, "team/db")),
            call("DeleteSecret", "db", ref=SecretRef(BACKEND, "payments/*")),
            call("GetSecret", "db", vault="team"),
            call("FetchEverything", "db"),
        ],
        ids=["other-name", "other-vault", "wildcard", "unknown-vault", "unknown-operation"],
    )
    async def test_a_call_the_backend_cannot_vouch_for_sends_nothing(
        self, backend: AzureBackend, standin: ThreadedAzureStandin, request_: SecretRequest
    ) -> None:
        """A call authorised on another secret than the one it names (or for a vault or an
        operation the backend does not serve) is refused before any request leaves."""
        before = standin.traffic.snapshot()

        with pytest.raises(InvalidBackendRequest):
            await backend.call(request_)

        assert standin.traffic.snapshot() == before


def the_item(items: tuple[SecretItem, ...]) -> SecretItem:
    (item,) = items
    return item


class TestItems:
    async def test_a_read_names_the_secret_in_lower_case_with_its_version_and_value(
        self, backend: AzureBackend, standin: ThreadedAzureStandin, name: str
    ) -> None:
        """GetSecret's item is the secret as policy names it (lower case), the version
        served and its value (to fingerprint); the answer's id names the caller's vault."""
        version = standin.seed({name: VALUE})[name]

        result = await backend.call(call("GetSecret", name, version=""))

        item = the_item(result.items)
        assert item.ref == SecretRef(BACKEND, f"payments/{name.lower()}")
        assert (item.version_id, item.value) == (version, VALUE.encode())
        assert result.data["status"] == 200
        assert result.data["body"]["id"] == f"{CALLER}/secrets/{name}/{version}"
        assert VALUE not in repr(result)
        assert VALUE not in repr(item)

    async def test_only_a_get_or_a_set_carries_a_value(
        self, backend: AzureBackend, name: str
    ) -> None:
        """Along a secret's life every answer names it, but only GetSecret and SetSecret
        hand over a value: a backup's blob, for one, is never fingerprinted as served."""
        steps = [
            call("SetSecret", name, body={"value": VALUE}),
            call("GetSecret", name, version=""),
            call("UpdateSecret", name, version="", body={"contentType": "text/plain"}),
            call("GetSecretVersions", name),
            call("BackupSecret", name),
            call("DeleteSecret", name),
            call("GetDeletedSecret", name),
            call("RecoverDeletedSecret", name),
        ]
        items = {}
        for step in steps:
            result = await backend.call(step)
            items[step.operation] = the_item(result.items)

        assert {op: item.ref.name for op, item in items.items()} == dict.fromkeys(
            items, f"payments/{name.lower()}"
        )
        assert {op for op, item in items.items() if item.value is not None} == {
            "SetSecret",
            "GetSecret",
        }
        assert items["GetSecretVersions"].version_id is None  # a listing of versions
        assert items["GetSecret"].version_id == items["SetSecret"].version_id

    async def test_a_purge_names_the_secret_it_was_asked_for(
        self, backend: AzureBackend, name: str
    ) -> None:
        """A purge answers 204 without a body: its item is the name it was asked for."""
        await backend.call(call("SetSecret", name, body={"value": VALUE}))
        await backend.call(call("DeleteSecret", name))

        result = await backend.call(call("PurgeDeletedSecret", name))

        assert result.data == {"status": 204, "body": None}
        assert the_item(result.items).ref == SecretRef(BACKEND, f"payments/{name.lower()}")

    async def test_a_restore_names_no_secret(self, backend: AzureBackend, name: str) -> None:
        """A restore was authorised on the whole vault (the backup is opaque), so its
        answer names no secret."""
        await backend.call(call("SetSecret", name, body={"value": VALUE}))
        blob = (await backend.call(call("BackupSecret", name))).data["body"]["value"]
        await backend.call(call("DeleteSecret", name))
        await backend.call(call("PurgeDeletedSecret", name))

        result = await backend.call(
            call("RestoreSecret", body={"value": blob}, ref=SecretRef(BACKEND, "payments/*"))
        )

        assert result.items == ()
        assert result.data["body"]["id"].startswith(f"{CALLER}/secrets/{name}/")

    @pytest.mark.parametrize("listing", ["GetSecrets", "GetDeletedSecrets"])
    async def test_a_listing_names_each_secret_in_lower_case_without_values(
        self, backend: AzureBackend, standin: ThreadedAzureStandin, listing: str
    ) -> None:
        """Each secret of a listing (live or deleted) is named as policy names it, without
        a value, so the gateway can filter the page."""
        names = [f"List-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        standin.seed(dict.fromkeys(names, VALUE))
        if listing == "GetDeletedSecrets":
            for each in names:
                standin.store.delete_secret(each)

        result = await backend.call(call(listing))

        refs = {item.ref.name for item in result.items}
        assert {f"payments/{n.lower()}" for n in names} <= refs
        assert all(item.value is None and item.version_id is None for item in result.items)


class TestAnswers:
    async def test_pages_link_back_to_the_callers_vault(
        self, backend: AzureBackend, standin: ThreadedAzureStandin
    ) -> None:
        """A page's ids and nextLink name the vault as the caller reached it (nextLink with
        its path prefix), never the store's address; following it reads the next page."""
        standin.seed({f"Page-{uuid.uuid4().hex[:8]}": VALUE for _ in range(3)})

        first = await backend.call(call("GetSecrets", query=(*API, ("maxresults", "1"))))

        body = first.data["body"]
        assert standin.url.encode() not in orjson.dumps(body)
        assert body["value"][0]["id"].startswith(f"{CALLER}/secrets/")
        link = urlsplit(body["nextLink"])
        assert f"{link.scheme}://{link.netloc}{link.path}" == f"{CALLER}{PREFIX}/secrets"
        second = await backend.call(call("GetSecrets", query=tuple(parse_qsl(link.query))))
        assert second.data["body"]["value"][0]["id"] != body["value"][0]["id"]

    async def test_a_missing_secret_is_secret_not_found_with_key_vaults_code(
        self, backend: AzureBackend, name: str
    ) -> None:
        """The vault's 404 is SecretNotFound, keeping Key Vault's code for the front end."""
        with pytest.raises(SecretNotFound) as caught:
            await backend.call(call("GetSecret", name, version=""))

        assert (caught.value.code, caught.value.status) == ("SecretNotFound", 404)

    async def test_a_disabled_secret_is_the_callers_forbidden(
        self, backend: AzureBackend, name: str
    ) -> None:
        """Reading a disabled secret is Key Vault's 403 Forbidden, passed on to the caller:
        not a problem with keyledger's own identity."""
        await backend.call(call("SetSecret", name, body={"value": VALUE}))
        await backend.call(
            call("UpdateSecret", name, version="", body={"attributes": {"enabled": False}})
        )

        with pytest.raises(BackendError) as caught:
            await backend.call(call("GetSecret", name, version=""))

        assert not isinstance(caught.value, StoreCredentialsError)
        assert (caught.value.code, caught.value.status) == ("Forbidden", 403)

    async def test_setting_a_deleted_name_is_a_conflict(
        self, backend: AzureBackend, name: str
    ) -> None:
        """Setting a secret that is deleted but recoverable is Key Vault's 409."""
        await backend.call(call("SetSecret", name, body={"value": VALUE}))
        await backend.call(call("DeleteSecret", name))

        with pytest.raises(BackendConflict) as caught:
            await backend.call(call("SetSecret", name, body={"value": VALUE}))

        assert (caught.value.code, caught.value.status) == ("Conflict", 409)

    async def test_setting_an_existing_secret_adds_a_version(
        self, backend: AzureBackend, name: str
    ) -> None:
        """Unlike AWS and Google, a set on an existing name is no conflict: a new version."""
        first = await backend.call(call("SetSecret", name, body={"value": VALUE}))
        second = await backend.call(call("SetSecret", name, body={"value": VALUE + "-2"}))

        assert the_item(first.items).version_id != the_item(second.items).version_id

    async def test_only_key_vaults_query_parameters_are_forwarded(
        self, backend: AzureBackend, name: str
    ) -> None:
        """The api-version reaches the vault (an unknown one is its 400); anything else a
        call carries does not."""
        await backend.call(call("SetSecret", name, body={"value": VALUE}))
        await backend.call(call("GetSecret", name, version="", query=(*API, ("x-debug", "1"))))

        with pytest.raises(InvalidBackendRequest) as caught:
            await backend.call(call("GetSecret", name, version="", query=(("api-version", "1.0"),)))

        assert (caught.value.code, caught.value.status) == ("BadParameter", 400)


class TestStoreTrouble:
    async def test_a_vault_refusing_keyledgers_token_is_store_credentials_refused(
        self, transport: AiohttpTransport, strict_standin: ThreadedAzureStandin, name: str
    ) -> None:
        """A vault that answers 401 to keyledger's token is keyledger's identity refused
        (the caller did nothing wrong), for calls and readiness alike; what the vault said
        stays out of the message callers read."""
        assert OTHERS_TOKEN != STANDIN_TOKEN
        backend = await started(transport, strict_standin.url, credentials="standin")
        try:
            with pytest.raises(StoreCredentialsRefused) as caught:
                await backend.call(call("GetSecret", name, version=""))
            with pytest.raises(StoreCredentialsRefused):
                await backend.check()
        finally:
            await backend.close()

        for words in ("BearerReadAccessTokenFailed", "S2S12005", strict_standin.url):
            assert words not in caught.value.message
            assert words not in str(caught.value)

    async def test_a_stopped_vault_is_unavailable_at_once(
        self, transport: AiohttpTransport, tls: DevTls, name: str
    ) -> None:
        """A vault that has gone away is BackendUnavailable (the caller's SDK may retry),
        without waiting for the timeout."""
        standin = AzureStandin(ssl_context=server_context(tls.cert, tls.key))
        await standin.start()
        url = standin.url
        await standin.stop()
        backend = await started(transport, url, credentials="standin", timeout_s=5)
        try:
            began = time.monotonic()
            with pytest.raises(BackendUnavailable) as caught:
                await backend.call(call("GetSecret", name, version=""))
            with pytest.raises(BackendUnavailable):
                await backend.check()
            took = time.monotonic() - began
        finally:
            await backend.close()

        assert not isinstance(caught.value, StoreCredentialsError)
        assert took < 2

    async def test_a_silent_vault_is_unavailable_after_the_timeout(
        self, tls: DevTls, name: str
    ) -> None:
        """A vault that takes the connection and the request and never answers is
        BackendUnavailable once the backend's timeout_s has passed, not a hung request.
        (Bounded here at 1 s, ten times the timeout.)"""

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # until keyledger hangs up
            writer.close()

        context = server_context(tls.cert, tls.key)
        silent = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=context)
        port = silent.sockets[0].getsockname()[1]
        lent = AiohttpTransport(timeout_s=0.1, ca_file=tls.ca_cert, decompress=False)
        await lent.start()
        backend = await started(
            lent, f"https://127.0.0.1:{port}", credentials="standin", timeout_s=0.1
        )
        try:
            with pytest.raises(BackendUnavailable):
                await asyncio.wait_for(backend.call(call("GetSecret", name, version="")), 1)
        finally:
            await backend.close()
            await lent.close()
            silent.close()


@pytest.fixture
def no_azure_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine where keyledger has no Azure identity: no AZURE_* or managed identity
    settings, no az/azd/pwsh on the PATH, an empty home (no token caches)."""
    for variable in list(os.environ):
        if variable.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(variable)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
async def imds_without_identity() -> AsyncIterator[str]:
    """A managed identity endpoint (IMDS) on loopback answering every token request as
    IMDS does on a machine with no identity assigned: 400, at once."""

    async def no_identity(request: web.Request) -> web.Response:
        body = {"error": "invalid_request", "error_description": "Identity not found"}
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", no_identity)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def what_default_azure_credential_tried() -> list[str]:
    """The credentials DefaultAzureCredential lists as attempted when none works here."""
    chain = DefaultAzureCredential()
    try:
        await chain.get_token("https://vault.azure.net/.default")
    except ClientAuthenticationError as exc:
        return re.findall(r"^\t(\w+): ", str(exc.message), flags=re.MULTILINE)
    finally:
        await chain.close()
    pytest.fail("DefaultAzureCredential found an identity on a machine without one")


async def failed_start(transport: AiohttpTransport, credentials: str) -> StoreCredentialsMissing:
    backend = AzureBackend(
        AzureSettings(name=BACKEND, vaults={"payments": REAL}, credentials=credentials),
        http=transport,
    )
    try:
        with pytest.raises(StoreCredentialsMissing) as caught:
            await backend.start()
    finally:
        await backend.close()
    return caught.value


class TestStart:
    async def test_no_environment_credentials_fail_start_naming_what_to_set(
        self, transport: AiohttpTransport, no_azure_identity: None
    ) -> None:
        """With credentials "environment" and no AZURE_* settings, start fails with
        StoreCredentialsMissing naming the backend and the variables to set."""
        message = (await failed_start(transport, "environment")).message

        for words in (f"'{BACKEND}'", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"):
            assert words in message

    @pytest.mark.timeout(30)
    async def test_no_default_credentials_fail_start_listing_what_was_tried(
        self,
        transport: AiohttpTransport,
        no_azure_identity: None,
        imds_without_identity: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """With credentials "default", start fails with StoreCredentialsMissing naming
        what to set and every credential DefaultAzureCredential tried, so the operator
        sees why each did not apply. (Managed identity is asked of a local endpoint
        answering "no identity here": no wait for, and no call to, a metadata service.)"""
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds_without_identity)
        tried = await what_default_azure_credential_tried()

        began = time.monotonic()
        message = (await failed_start(transport, "default")).message
        took = time.monotonic() - began

        assert "AZURE_CLIENT_SECRET" in message
        assert len(tried) >= 5
        assert [name for name in tried if name not in message] == []
        assert took < 10
