"""A gateway in front of several backends: a call runs on the backend its secrets were
authorised on, and only there.

Two backends on one moto server, told apart by region (moto keeps a store per region): the
same secret name holds a different value in each, so the value served shows which backend
executed the call. Everything is real (SigV4 signed by botocore, the policy engine, the
journal, AwsBackend over HTTP) except where a test needs a frontend or backend that
misbehaves; those are the real classes with one method changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.fernet import Fernet
from multidict import CIMultiDict

from keyledger.backends import Backend
from keyledger.backends.aws import AwsBackend, AwsSettings
from keyledger.model import Action, SecretRef, SecretRequest, SecretResult
from keyledger.proxy.audit.events import Fingerprinter
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.auth import IdentityStore, IssuedKey, SigV4Authenticator
from keyledger.proxy.frontends import AwsFrontend
from keyledger.proxy.http_client import AiohttpTransport
from keyledger.proxy.pipeline import Gateway, PolicyHolder
from keyledger.proxy.reload import load_policy
from keyledger.proxy.wire import Call, Frontend, WireRequest, WireResponse
from tests.conftest import journal_events

# The app may read its secrets on "aws" only; on "aws-eu" it may read one other folder, so
# that a call claiming to run there passes the first gate.
POLICY = """\
version: 1
roles:
  - id: app
    rules:
      - id: app-read
        actions: [read, list]
        resources: ["aws:app/*"]
      - id: app-write
        actions: [write]
        resources: ["aws:app/*"]
      - id: app-read-eu-public
        actions: [read, list]
        resources: ["aws-eu:public/*"]
bindings:
  - role: app
    principals: [app]
"""

US_VALUE = "served-by-us-east-1"
EU_VALUE = "served-by-eu-west-1"


class RunsElsewhere(AwsFrontend):
    """The AWS frontend, but its calls claim to run on another backend than the one their
    secrets name: what a buggy or crafted frontend could produce."""

    def __init__(self, *, backend: str, runs_on: str) -> None:
        super().__init__(backend=backend)
        self.runs_on = runs_on

    def parse(self, wire: WireRequest) -> Call:
        return dataclasses.replace(super().parse(wire), backend=self.runs_on)


class ResolvesElsewhere(AwsBackend):
    """An AWS backend whose alias lookup answers with a secret of another backend."""

    async def resolve(self, ref: SecretRef) -> SecretRef:
        return SecretRef("aws", ref.name)


class AliasesAnother(AwsBackend):
    """An AWS backend whose alias lookup and whose store disagree: it says ``other/db`` is
    another name of ``app/db``, while the store holds a secret called ``other/db``."""

    async def resolve(self, ref: SecretRef) -> SecretRef:
        if ref.name == "other/db":
            return SecretRef(self.name, "app/db")
        return await super().resolve(ref)


class AnswersForElsewhere(AwsBackend):
    """An AWS backend whose listings name secrets of another backend."""

    async def call(self, request: SecretRequest) -> SecretResult:
        result = await super().call(request)
        items = tuple(
            dataclasses.replace(item, ref=SecretRef("aws", item.ref.name)) for item in result.items
        )
        return SecretResult(data=result.data, items=items)


@dataclasses.dataclass
class Parts:
    journal: Journal
    policies: PolicyHolder
    authenticator: SigV4Authenticator
    key: IssuedKey
    directory: Path
    transports: list[AiohttpTransport]
    moto_url: str

    async def backend(self, kind: type[AwsBackend], name: str, region: str) -> AwsBackend:
        transport = AiohttpTransport(timeout_s=10)
        await transport.start()
        self.transports.append(transport)
        backend = kind(
            AwsSettings(
                name=name,
                region=region,
                endpoint_url=self.moto_url,
                static_credentials=("keyledger-proxy", "keyledger-proxy-secret"),
            ),
            transport=transport,
        )
        await backend.start()
        return backend

    def gateway(self, frontend: Frontend, **backends: Backend) -> Gateway:
        return Gateway(
            frontend=frontend,
            authenticator=self.authenticator,
            policies=self.policies,
            backends={backend.name: backend for backend in backends.values()},
            journal=self.journal,
            fingerprint=Fingerprinter(b"f" * 32),
        )

    def wire(self, operation: str, body: dict[str, Any]) -> WireRequest:
        """A request as the proxy sees it, signed by botocore with the app's key."""
        data = orjson.dumps(body)
        request = AWSRequest(
            method="POST",
            url="http://127.0.0.1:8443/",
            data=data,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": f"secretsmanager.{operation}",
            },
        )
        credentials = Credentials(self.key.access_key_id, self.key.secret_access_key)
        SigV4Auth(credentials, "secretsmanager", "us-east-1").add_auth(request)
        headers = CIMultiDict((name.lower(), value) for name, value in request.headers.items())
        headers["host"] = "127.0.0.1:8443"
        return WireRequest(
            method="POST",
            path="/",
            query=(),
            headers=headers,
            body=data,
            source_ip="127.0.0.1",
            user_agent="botocore",
            request_id=f"req-{operation}",
        )


@pytest.fixture
async def parts(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> AsyncIterator[Parts]:
    store.create_secret(Name="app/db", SecretString=US_VALUE)
    eu = boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name="eu-west-1",
        aws_access_key_id="store-admin",
        aws_secret_access_key="store-admin",
    )
    eu.create_secret(Name="app/db", SecretString=EU_VALUE)
    (tmp_path / "policy.yaml").write_text(POLICY)
    identities = IdentityStore(tmp_path / "identities.json", Fernet.generate_key())
    key = identities.create("app")
    journal = Journal(directory=tmp_path / "audit", chain_id="gw")
    await journal.start()
    built = Parts(
        journal=journal,
        policies=PolicyHolder(load_policy([tmp_path / "policy.yaml"], ("aws", "aws-eu")).engine),
        authenticator=SigV4Authenticator(store=identities),
        key=key,
        directory=tmp_path / "audit",
        transports=[],
        moto_url=moto_url,
    )
    yield built
    await journal.close()
    for transport in built.transports:
        await transport.close()


def body_of(response: WireResponse) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(response.body)
    return parsed


class TestOneBackendExecutes:
    async def test_a_read_runs_on_the_backend_its_secret_names(self, parts: Parts) -> None:
        """Of two backends holding the same name, the one the secret was authorised on
        serves it, and the event names that backend."""
        us = await parts.backend(AwsBackend, "aws", "us-east-1")
        eu = await parts.backend(AwsBackend, "aws-eu", "eu-west-1")
        gateway = parts.gateway(AwsFrontend(backend="aws"), us=us, eu=eu)

        response = await gateway.handle(parts.wire("GetSecretValue", {"SecretId": "app/db"}))

        assert response.status == 200
        assert body_of(response)["SecretString"] == US_VALUE
        (event,) = journal_events(parts.directory, "access")
        assert event["resource"] == {"backend": "aws", "secret": "app/db", "version": None}

    async def test_a_call_claiming_another_backend_is_refused_unexecuted(
        self, parts: Parts
    ) -> None:
        """Secrets authorised on "aws" but a call set to run on "aws-eu" (which the gate
        lets through): refused with a recorded error, and neither value leaves."""
        us = await parts.backend(AwsBackend, "aws", "us-east-1")
        eu = await parts.backend(AwsBackend, "aws-eu", "eu-west-1")
        gateway = parts.gateway(RunsElsewhere(backend="aws", runs_on="aws-eu"), us=us, eu=eu)

        response = await gateway.handle(parts.wire("GetSecretValue", {"SecretId": "app/db"}))

        assert response.status == 400
        assert EU_VALUE.encode() not in response.body
        assert US_VALUE.encode() not in response.body
        (event,) = journal_events(parts.directory, "access")
        assert event["outcome"]["status"] == "error"
        assert event["outcome"]["code"] == "bad_request"

    async def test_a_call_for_an_unconfigured_backend_is_refused(self, parts: Parts) -> None:
        """A call naming a backend nobody configured is an error in the caller's protocol,
        recorded, not a crash."""
        us = await parts.backend(AwsBackend, "aws", "us-east-1")
        gateway = parts.gateway(AwsFrontend(backend="aws-eu"), us=us)

        response = await gateway.handle(parts.wire("GetSecretValue", {"SecretId": "app/db"}))

        assert response.status == 400
        assert b"no backend named 'aws-eu'" in response.body
        (event,) = journal_events(parts.directory, "access")
        assert event["outcome"]["status"] == "error"

    async def test_an_alias_resolved_onto_another_backend_is_not_served(self, parts: Parts) -> None:
        """A backend that resolves a name to a secret of another backend: the call is
        refused before policy could decide on the wrong backend's secret."""
        us = await parts.backend(AwsBackend, "aws", "us-east-1")
        eu = await parts.backend(ResolvesElsewhere, "aws-eu", "eu-west-1")
        gateway = parts.gateway(AwsFrontend(backend="aws-eu"), us=us, eu=eu)

        response = await gateway.handle(parts.wire("GetSecretValue", {"SecretId": "public/x"}))

        assert response.status != 200
        assert EU_VALUE.encode() not in response.body
        (event,) = journal_events(parts.directory, "access")
        assert event["outcome"]["code"] == "NameMismatch"

    async def test_a_listing_naming_another_backends_secrets_is_not_served(
        self, parts: Parts
    ) -> None:
        """A store answer naming another backend's secrets is refused whole, even where
        policy would allow that other backend's secret."""
        eu = await parts.backend(AnswersForElsewhere, "aws-eu", "eu-west-1")
        us = await parts.backend(AwsBackend, "aws", "us-east-1")
        frontend = AwsFrontend(backend="aws-eu")
        gateway = parts.gateway(frontend, us=us, eu=eu)
        listing = SecretRequest(action=Action.LIST, ref=None, operation="ListSecrets", params={})
        # The store does hold a secret that policy would let the app list on "aws".
        assert [item.ref for item in (await eu.call(listing)).items] == [SecretRef("aws", "app/db")]

        response = await gateway.handle(parts.wire("ListSecrets", {}))

        assert response.status == 500
        assert b"app/db" not in response.body
        (event,) = journal_events(parts.directory, "access")
        assert event["outcome"]["code"] == "NameMismatch"


class TestChangesAreAddressedByTheNameAuthorised:
    async def test_a_write_through_an_alias_lands_on_the_secret_authorised(
        self, parts: Parts, store: Any
    ) -> None:
        """A write naming an alias is sent to the store by the name policy authorised:
        the secret the store would have taken the alias for is never touched, where before
        the change landed on it and the mismatch was seen only afterwards."""
        store.create_secret(Name="other/db", SecretString="not-the-apps-to-change")
        us = await parts.backend(AliasesAnother, "aws", "us-east-1")
        gateway = parts.gateway(AwsFrontend(backend="aws"), us=us)

        response = await gateway.handle(
            parts.wire("PutSecretValue", {"SecretId": "other/db", "SecretString": "changed"})
        )

        assert response.status == 200, response.body
        assert body_of(response)["Name"] == "app/db"
        other = store.get_secret_value(SecretId="other/db")["SecretString"]
        assert other == "not-the-apps-to-change"
        assert store.get_secret_value(SecretId="app/db")["SecretString"] == "changed"
        events = journal_events(parts.directory, "access")
        assert [(e["resource"]["secret"], e["outcome"]["status"]) for e in events] == [
            ("app/db", "pending"),
            ("app/db", "success"),
        ]
