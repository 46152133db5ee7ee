"""Google's own clients, unmodified, through a running keyledger to the Google stand-in.

keyledger runs as `serve` builds it (make_app: the data plane with Google's REST API under
/v1/, and the gRPC listener), with a gcp backend mapping the caller's project
``keyledger-demo`` to the stand-in's ``real-project``. The clients only change their
endpoint and credentials: a keyledger bearer token as the OAuth access token (REST) or as
``authorization`` metadata (gRPC).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import grpc
import httplib2  # type: ignore[import-untyped]
import pytest
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.exceptions import RefreshError
from google.cloud.secretmanager_v1 import SecretManagerServiceClient
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp  # type: ignore[import-untyped]
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from keyledger.backends.gcp_standin import ThreadedGcpStandin
from keyledger.proxy.app import GRPC, JOURNAL
from keyledger.proxy.auth import IdentityStore
from keyledger.proxy.config import parse_config
from tests.conftest import RunningProxy, write_proxy_files
from tests.proxy.test_operate import get

PROJECT = "keyledger-demo"
CANARY = "gcp-canary-value-9b2e"

POLICY = """\
version: 1
roles:
  - id: app
    rules:
      - id: app-read
        actions: [read, describe, list, write, delete]
        resources: ["gcp:keyledger-demo/app-*"]
      - id: app-no-payments
        effect: deny
        actions: ["*"]
        resources: ["gcp:keyledger-demo/app-payments*"]
bindings:
  - role: app
    principals: [app]
"""


@dataclass
class Served:
    proxy: RunningProxy
    token: str
    grpc_target: str

    def rest(self, token: str | None = None) -> Any:
        return SecretManagerServiceClient(
            transport="rest",
            credentials=Credentials(token=token or self.token),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=self.proxy.url),
        )

    def grpc(self) -> tuple[Any, list[tuple[str, str]]]:
        channel = grpc.insecure_channel(self.grpc_target)
        client = SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=channel)
        )
        return client, [("authorization", f"Bearer {self.token}")]


@pytest.fixture(scope="module")
def standin() -> Iterator[ThreadedGcpStandin]:
    with ThreadedGcpStandin() as running:
        running.seed(
            "real-project",
            {"app-db": "db-value", "app-payments-key": CANARY, "other-secret": "nope"},
        )
        yield running


@pytest.fixture
def served(
    request: pytest.FixtureRequest, tmp_path: Path, standin: ThreadedGcpStandin
) -> Iterator[Served]:
    """keyledger in front of the stand-in, over REST and gRPC; a test's indirect parameter
    gives config sections to add."""
    doc = write_proxy_files(tmp_path, policy=POLICY)
    doc.update(getattr(request, "param", {}))
    doc["backends"] = {
        "gcp": {
            "type": "gcp",
            "endpoint": standin.grpc_target,
            "projects": {PROJECT: "real-project"},
            "credentials": "anonymous",
        }
    }
    doc["frontends"] = {"gcp": {"grpc_listen": "127.0.0.1:0"}}
    config = parse_config(doc, base=tmp_path, source="test")
    store = IdentityStore(config.identities.path, config.identities.key_file.read_bytes())  # type: ignore[union-attr]
    issued = store.create_token("app")
    proxy = RunningProxy(config, {})
    proxy.start()
    try:
        assert proxy.app is not None
        yield Served(proxy, issued.token, f"127.0.0.1:{proxy.app[GRPC].port}")
    finally:
        proxy.stop()


def version(name: str) -> str:
    return f"projects/{PROJECT}/secrets/{name}/versions/latest"


class TestRest:
    def test_a_read_is_served_with_its_checksum_and_recorded(self, served: Served) -> None:
        """The REST client reads a secret it may read, its CRC32C checks out, names are in
        the caller's project, and one access event records it as gcp-rest."""
        answer = served.rest().access_secret_version(name=version("app-db"))

        assert answer.payload.data == b"db-value"
        assert answer.payload.data_crc32c == google_crc32c.value(b"db-value")
        assert answer.name.startswith(f"projects/{PROJECT}/secrets/app-db/versions/")
        (event,) = served.proxy.events("access")
        assert event["request"]["protocol"] == "gcp-rest"
        assert event["request"]["operation"] == "AccessSecretVersion"
        assert event["resource"]["backend"] == "gcp"
        assert event["resource"]["secret"] == f"{PROJECT}/app-db"
        assert event["principal"] == {
            "id": "app",
            "auth_method": "token",
            "groups": [],
            "attributes": {},
        }
        assert event["outcome"]["value_fingerprint"].startswith("hmac-sha256:")

    def test_a_denied_read_is_forbidden_once_and_recorded(self, served: Served) -> None:
        """A read the policy denies raises Forbidden, serves nothing, and is recorded."""
        with pytest.raises(gexc.Forbidden):
            served.rest().access_secret_version(name=version("app-payments-key"))

        (event,) = served.proxy.events("access")
        assert event["decision"]["effect"] == "deny"
        assert event["decision"]["rule"] == "app-no-payments"

    def test_an_unknown_token_is_refused_once_and_recorded(self, served: Served) -> None:
        """A token keyledger never issued gets 401, as Google answers a bad access token:
        the client, holding a static token it cannot refresh, gives up after that one
        request (google-auth's RefreshError), and one auth_failure event records it."""
        client = served.rest("kltok_aaaaaaaaaaaa_" + "b" * 43)

        with pytest.raises(RefreshError):
            client.access_secret_version(name=version("app-db"))

        assert [e["outcome"]["code"] for e in served.proxy.events("auth_failure")] == [
            "unknown_token"
        ]

    def test_a_listing_shows_only_what_the_caller_may_list(self, served: Served) -> None:
        """ListSecrets through keyledger names only the secrets policy lets the caller list,
        in the caller's project."""
        names = [s.name for s in served.rest().list_secrets(parent=f"projects/{PROJECT}")]

        assert names == [f"projects/{PROJECT}/secrets/app-db"]

    def test_a_missing_secret_is_not_found(self, served: Served) -> None:
        """A secret the caller may read but that does not exist is NotFound."""
        with pytest.raises(gexc.NotFound):
            served.rest().access_secret_version(name=version("app-missing"))


class TestGrpc:
    def test_a_read_over_grpc_is_served_and_recorded(self, served: Served) -> None:
        """The gRPC client reads through keyledger's gRPC listener, recorded as gcp-grpc."""
        client, metadata = served.grpc()

        answer = client.access_secret_version(name=version("app-db"), metadata=metadata)

        assert answer.payload.data == b"db-value"
        assert answer.payload.data_crc32c == google_crc32c.value(b"db-value")
        (event,) = served.proxy.events("access")
        assert event["request"]["protocol"] == "gcp-grpc"
        assert event["outcome"]["status"] == "success"

    def test_a_denied_read_over_grpc_is_permission_denied(self, served: Served) -> None:
        """A denied read over gRPC raises PermissionDenied, and no value leaves."""
        client, metadata = served.grpc()

        with pytest.raises(gexc.PermissionDenied):
            client.access_secret_version(name=version("app-payments-key"), metadata=metadata)

    def test_no_token_over_grpc_is_unauthenticated(self, served: Served) -> None:
        """A call without a token is Unauthenticated, and recorded once."""
        client, _ = served.grpc()

        with pytest.raises(gexc.Unauthenticated):
            client.access_secret_version(name=version("app-db"))

        assert len(served.proxy.events("auth_failure")) == 1


def test_the_canary_value_never_reaches_the_journal(served: Served) -> None:
    """A denied secret's value appears nowhere in the journal, over either protocol."""
    client, metadata = served.grpc()
    with pytest.raises(gexc.Forbidden):
        served.rest().access_secret_version(name=version("app-payments-key"))
    with pytest.raises(gexc.PermissionDenied):
        client.access_secret_version(name=version("app-payments-key"), metadata=metadata)

    assert len(served.proxy.events("access")) == 2
    for path in served.proxy.journal.iterdir():
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes()


@dataclass
class Client:
    """A synchronous GAPIC client and what each of its calls carries (gRPC: the token)."""

    sm: Any
    call: dict[str, Any]


def clients(served: Served) -> dict[str, Client]:
    grpc_client, metadata = served.grpc()
    return {
        "rest": Client(served.rest(), {}),
        "grpc": Client(grpc_client, {"metadata": metadata}),
    }


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_secrets_whole_life_through_keyledger(served: Served, transport: str) -> None:
    """Create, add versions, read latest and pinned, page through a listing, disable,
    enable, destroy and delete, each refusal raised as the client raises it: one audit
    event per call (a pending and its outcome for a change), all of this protocol."""
    client = clients(served)[transport]
    sm, kw = client.sm, client.call
    parent = f"projects/{PROJECT}"
    secret = f"{parent}/secrets/app-life-{transport}"

    sm.create_secret(
        parent=parent,
        secret_id=f"app-life-{transport}",
        secret={"replication": {"automatic": {}}},
        **kw,
    )
    for value in (b"one", b"two"):
        sm.add_secret_version(parent=secret, payload={"data": value}, **kw)
    latest = sm.access_secret_version(name=f"{secret}/versions/latest", **kw)
    first = sm.access_secret_version(name=f"{secret}/versions/1", **kw)
    assert (latest.payload.data, first.payload.data) == (b"two", b"one")
    assert first.payload.data_crc32c == google_crc32c.value(b"one")
    listed = [s.name for s in sm.list_secrets(request={"parent": parent, "page_size": 1}, **kw)]
    assert secret in listed
    assert f"{parent}/secrets/app-payments-key" not in listed  # denied: hidden
    assert f"{parent}/secrets/other-secret" not in listed  # allowed nothing: hidden

    sm.disable_secret_version(name=f"{secret}/versions/1", **kw)
    refused = gexc.BadRequest if transport == "rest" else gexc.FailedPrecondition
    with pytest.raises(refused):
        sm.access_secret_version(name=f"{secret}/versions/1", **kw)
    sm.enable_secret_version(name=f"{secret}/versions/1", **kw)
    sm.destroy_secret_version(name=f"{secret}/versions/1", **kw)
    exists = gexc.Conflict if transport == "rest" else gexc.AlreadyExists
    with pytest.raises(exists):
        sm.create_secret(
            parent=parent,
            secret_id=f"app-life-{transport}",
            secret={"replication": {"automatic": {}}},
            **kw,
        )
    sm.delete_secret(name=secret, **kw)
    with pytest.raises(gexc.NotFound):
        sm.get_secret(name=secret, **kw)

    events = served.proxy.events("access")
    assert {e["request"]["protocol"] for e in events} == {f"gcp-{transport}"}
    outcomes = [e["outcome"]["status"] for e in events]
    pending = [e["request"]["id"] for e in events if e["outcome"]["status"] == "pending"]
    # Every change was written ahead, and its outcome followed under the same request.
    for request_id in pending:
        assert [e["outcome"]["status"] for e in events if e["request"]["id"] == request_id][1] in (
            "success",
            "error",
        )
    assert outcomes.count("pending") == 8  # create x2, add x2, disable, enable, destroy, delete
    calls = [e for e in events if e["outcome"]["status"] != "pending"]
    pages = [e for e in calls if e["request"]["operation"] == "ListSecrets"]
    assert len(pages) >= 2  # the listing was paged, a call per page
    assert len(calls) - len(pages) == 12  # and one event for each other call made


def test_the_async_grpc_client_reads_through_keyledger(served: Served) -> None:
    """SecretManagerServiceAsyncClient, gRPC only, reads latest and pinned versions."""
    from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcAsyncIOTransport,
    )

    async def read() -> tuple[bytes, bytes]:
        channel = grpc.aio.insecure_channel(served.grpc_target)
        client = SecretManagerServiceAsyncClient(
            transport=SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
        )
        metadata = [("authorization", f"Bearer {served.token}")]
        try:
            latest = await client.access_secret_version(name=version("app-db"), metadata=metadata)
            pinned = await client.access_secret_version(
                name=f"projects/{PROJECT}/secrets/app-db/versions/1", metadata=metadata
            )
        finally:
            await channel.close()
        return latest.payload.data, pinned.payload.data

    assert asyncio.run(read()) == (b"db-value", b"db-value")
    assert len(served.proxy.events("access")) == 2


def test_the_discovery_client_through_keyledger(served: Served) -> None:
    """Google's discovery-based client, a second independent client, creates, adds a
    version, reads, lists and deletes through keyledger, and gets a 404 as Google's."""
    http = AuthorizedHttp(Credentials(token=served.token), http=httplib2.Http())  # type: ignore[no-untyped-call]
    service = build(
        "secretmanager",
        "v1",
        static_discovery=True,
        http=http,
        client_options={"api_endpoint": served.proxy.url},
    )
    with service:
        secrets = service.projects().secrets()
        parent = f"projects/{PROJECT}"
        made = secrets.create(
            parent=parent, secretId="app-discovered", body={"replication": {"automatic": {}}}
        ).execute()
        data = base64.b64encode(b"found").decode()
        secrets.addVersion(parent=made["name"], body={"payload": {"data": data}}).execute()
        access = secrets.versions().access(name=f"{made['name']}/versions/latest").execute()
        listed = secrets.list(parent=parent).execute()
        secrets.delete(name=made["name"]).execute()
        with pytest.raises(HttpError) as missing:
            secrets.get(name=made["name"]).execute()

    assert base64.b64decode(access["payload"]["data"]) == b"found"
    assert int(access["payload"]["dataCrc32c"]) == google_crc32c.value(b"found")
    assert f"{parent}/secrets/app-discovered" in [s["name"] for s in listed["secrets"]]
    assert missing.value.status_code == 404
    assert {e["request"]["protocol"] for e in served.proxy.events("access")} == {"gcp-rest"}


def test_no_value_over_rest_while_the_journal_cannot_be_written(served: Served) -> None:
    """Fail closed on Google's REST path: with the journal closed, a read is refused
    (ServiceUnavailable, retried by the client only if asked) and no value leaves."""
    assert served.proxy.app is not None
    journal = served.proxy.app[JOURNAL]
    asyncio.run_coroutine_threadsafe(journal.close(), served.proxy._loop).result(30)

    with pytest.raises(gexc.ServiceUnavailable) as refused:
        served.rest().access_secret_version(name=version("app-db"), retry=None)

    assert b"db-value" not in str(refused.value).encode()


def test_no_value_in_a_log_line_a_metric_or_an_error(
    served: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    """Values served (and refused) over both protocols appear in no log line, no metric
    and no error the caller gets."""
    client, metadata = served.grpc()
    served.rest().access_secret_version(name=version("app-db"))
    client.access_secret_version(name=version("app-db"), metadata=metadata)
    with pytest.raises(gexc.Forbidden) as rest_refusal:
        served.rest().access_secret_version(name=version("app-payments-key"))
    with pytest.raises(gexc.PermissionDenied) as grpc_refusal:
        client.access_secret_version(name=version("app-payments-key"), metadata=metadata)
    status, metrics = get(f"{served.proxy.admin_url}/metrics", served.proxy.admin_token)
    logged = "".join(capfd.readouterr())

    assert status == 200
    assert b"gcp-grpc" in metrics  # the calls are counted ...
    for text in (metrics.decode(), logged, str(rest_refusal.value), str(grpc_refusal.value)):
        assert "db-value" not in text  # ... but no value is
        assert CANARY not in text


@pytest.mark.parametrize(
    "served", [{"limits": {"rate": {"per_principal": 1, "burst_s": 2}}}], indirect=True
)
def test_past_its_rate_limit_a_caller_gets_resource_exhausted(served: Served) -> None:
    """Past limits.rate.per_principal, REST answers 429 (TooManyRequests) and gRPC
    RESOURCE_EXHAUSTED, the codes Google's clients back off from; each throttled call is
    recorded with the secret it named."""
    rest = served.rest()
    client, metadata = served.grpc()
    name = version("app-db")

    served_now = [rest.access_secret_version(name=name, retry=None) for _ in range(2)]
    with pytest.raises(gexc.TooManyRequests) as over_rest:
        rest.access_secret_version(name=name, retry=None)
    with pytest.raises(gexc.ResourceExhausted):
        client.access_secret_version(name=name, metadata=metadata, retry=None)

    assert [a.payload.data for a in served_now] == [b"db-value"] * 2
    assert over_rest.value.code == 429
    throttled = [e for e in served.proxy.events("access") if e["outcome"]["code"] == "throttled"]
    assert [e["request"]["protocol"] for e in throttled] == ["gcp-rest", "gcp-grpc"]
    assert {e["resource"]["secret"] for e in throttled} == {"keyledger-demo/app-db"}


@pytest.mark.parametrize(
    "served",
    [{"cache": {"rules": [{"secrets": "gcp:keyledger-demo/app-*", "ttl": "60s"}]}}],
    indirect=True,
)
def test_cached_reads_are_recorded_over_both_protocols_and_a_new_version_is_seen(
    served: Served,
) -> None:
    """A read over REST fills the cache; gRPC's read of the same version is a hit, recorded
    as the miss was but for outcome.cache; a version added through keyledger is read at
    once from the store, and the bypass metadata asks the store."""
    rest = served.rest()
    client, metadata = served.grpc()
    secret = f"projects/{PROJECT}/secrets/app-cached"
    rest.create_secret(
        parent=f"projects/{PROJECT}",
        secret_id="app-cached",
        secret={"replication": {"automatic": {}}},
    )
    rest.add_secret_version(parent=secret, payload={"data": b"one"})

    first = rest.access_secret_version(name=f"{secret}/versions/latest").payload.data
    again = client.access_secret_version(
        name=f"{secret}/versions/latest", metadata=metadata
    ).payload.data
    rest.add_secret_version(parent=secret, payload={"data": b"two"})
    after = rest.access_secret_version(name=f"{secret}/versions/latest").payload.data
    bypassed = client.access_secret_version(
        name=f"{secret}/versions/latest",
        metadata=[*metadata, ("x-keyledger-cache", "bypass")],
    ).payload.data

    reads = [
        e
        for e in served.proxy.events("access")
        if e["request"]["operation"] == "AccessSecretVersion"
    ]
    assert (first, again, after, bypassed) == (b"one", b"one", b"two", b"two")
    assert [e["outcome"].get("cache") for e in reads] == ["miss", "hit", "miss", "miss"]
    assert reads[0]["outcome"]["value_fingerprint"] == reads[1]["outcome"]["value_fingerprint"]
    assert reads[0]["decision"] == reads[1]["decision"]
