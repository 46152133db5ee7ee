"""Workload identities end to end: a JWT from a trusted issuer as the bearer token of
Google's and Azure's own clients, through a running keyledger, decided by policy on its
claims and recorded with them.

keyledger runs as ``serve`` builds it (``make_app``), in-process on one runner with two
listeners: plain HTTP for Google's REST client and HTTPS for Key Vault's SecretClient (it
sends bearer tokens only over HTTPS). Behind it are the Google and Azure stand-ins. It trusts
two local issuers (tests/oidc_issuer.py, aiohttp on loopback): the ``github-actions`` preset
with its key set from ``jwks_url`` (tokens say ``iss`` GitHub's), and the ``kubernetes``
preset for a cluster whose issuer is the local one (keys by discovery). Each issuer puts its
callers in a group (``ci``, ``workloads``) that the policy binds roles to; the rules then
condition on the token's claims, and ``keyledger policy explain`` decides the same calls
the same way.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import http_challenge_cache  # the SDK's process-wide cache
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.exceptions import RefreshError
from google.cloud.secretmanager_v1 import SecretManagerServiceClient
from google.oauth2.credentials import Credentials

from keyledger.backends._loop_thread import LoopThread
from keyledger.backends.azure_standin import ThreadedAzureStandin
from keyledger.backends.gcp_standin import ThreadedGcpStandin
from keyledger.cli import main
from keyledger.devtls import DevTls, ensure_dev_tls, server_context
from keyledger.proxy.app import make_app
from keyledger.proxy.config import Config, parse_config
from tests.conftest import journal_events, write_proxy_files
from tests.e2e.azure_helpers import StaticToken
from tests.oidc_issuer import (
    AUDIENCE,
    DISCOVERY,
    GITHUB,
    JWKS,
    SigningKey,
    ThreadedLocalIssuer,
    claims,
    ec_key,
    github_claims,
    kubernetes_claims,
    rsa_key,
)

PROJECT = "keyledger-demo"
SECRETS = {"payments-db": "payments-db-value", "checkout-key": "checkout-key-value"}

POLICY = """\
version: 1
groups:
  ci: []          # every caller of the github-actions issuer (its settings' groups)
  workloads: []   # every caller of the prod-cluster issuer
roles:
  - id: payments-ci
    rules:
      - id: payments-main-reads
        actions: [read]
        resources: ["gcp:keyledger-demo/payments-*", "azure:demo/payments-*"]
        when:
          principal: {repository: acme/payments, ref: refs/heads/main}
  - id: checkout-workload
    rules:
      - id: checkout-api-reads
        actions: [read]
        resources: ["gcp:keyledger-demo/checkout-*", "azure:demo/checkout-*"]
        when:
          principal: {namespace: checkout, service_account: checkout-api}
bindings:
  - role: payments-ci
    groups: [ci]
  - role: checkout-workload
    groups: [workloads]
"""


@dataclass
class Keyledger:
    """keyledger (``make_app``) on one runner with a plain HTTP and an HTTPS listener,
    from a background thread."""

    config: Config
    context: ssl.SSLContext
    policies: Path  # the policy folder it loaded
    http_url: str = ""
    https_url: str = ""
    _thread: LoopThread = field(default_factory=lambda: LoopThread("keyledger", timeout=30))
    _runner: web.AppRunner | None = None

    def start(self) -> None:
        self._thread.start(self._serve)

    def stop(self) -> None:
        self._thread.stop(self._close)

    async def _serve(self) -> None:
        self._runner = runner = web.AppRunner(
            await make_app(self.config), access_log=None, handle_signals=False
        )
        await runner.setup()
        try:
            for context in (None, self.context):
                await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        except BaseException:
            await self._close()
            raise
        plain, tls = (address[1] for address in runner.addresses)
        self.http_url, self.https_url = f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{tls}"

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def calls(self) -> list[dict[str, Any]]:
        """The journal's events about calls (access and auth_failure), in chain order."""
        return journal_events(self.config.audit.journal, "access", "auth_failure")


@dataclass(frozen=True)
class Issuers:
    github: ThreadedLocalIssuer
    cluster: ThreadedLocalIssuer

    @property
    def github_key(self) -> SigningKey:
        return self.github.keys[0]

    @property
    def cluster_key(self) -> SigningKey:
        return self.cluster.keys[0]


@pytest.fixture(scope="module")
def issuers() -> Iterator[Issuers]:
    """GitHub's keys (RS256, as GitHub signs) and a cluster's (ES256), served locally."""
    with (
        ThreadedLocalIssuer(rsa_key("gh-1")) as github,
        ThreadedLocalIssuer(ec_key("cluster-1")) as cluster,
    ):
        yield Issuers(github, cluster)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> DevTls:
    return ensure_dev_tls(tmp_path_factory.mktemp("tls"), names=("localhost", "127.0.0.1"))


@pytest.fixture(scope="module")
def keyledger(
    tmp_path_factory: pytest.TempPathFactory, tls: DevTls, issuers: Issuers
) -> Iterator[Keyledger]:
    """keyledger trusting both issuers, in front of both stand-ins, for the module."""
    context = server_context(tls.cert, tls.key)
    with (
        ThreadedGcpStandin() as google,
        ThreadedAzureStandin(ssl_context=context) as vault,
    ):
        google.seed("real-project", SECRETS)
        vault.seed(SECRETS)
        folder = tmp_path_factory.mktemp("keyledger")
        doc = write_proxy_files(folder, policy=POLICY)
        del doc["admin"]
        doc["backends"] = {
            "gcp": {
                "type": "gcp",
                "endpoint": google.grpc_target,
                "projects": {PROJECT: "real-project"},
                "credentials": "anonymous",
            },
            "azure": {
                "type": "azure",
                "credentials": "standin",
                "ca_file": str(tls.ca_cert),
                "vaults": {"demo": {"url": vault.url, "default": True}},
            },
        }
        doc["oidc"] = {
            "issuers": [
                {
                    "preset": "github-actions",
                    "audiences": [AUDIENCE],
                    "jwks_url": issuers.github.url + JWKS,
                    "groups": ["ci"],
                },
                {
                    "preset": "kubernetes",
                    "name": "prod-cluster",
                    "issuer": issuers.cluster.url,
                    "audiences": [AUDIENCE],
                    "groups": ["workloads"],
                },
            ]
        }
        config = parse_config(doc, base=folder, source="test")
        running = Keyledger(config, context, folder / "policies")
        running.start()
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(autouse=True)
def sdk_as_a_new_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CA override from the machine (requests prefers it to connection_verify), and no
    Key Vault challenge cached by an earlier test."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    http_challenge_cache.clear()


@dataclass
class Calls:
    """What this test's calls put in the journal."""

    keyledger: Keyledger
    start: int

    def __call__(self) -> list[dict[str, Any]]:
        return self.keyledger.calls()[self.start :]


@pytest.fixture
def calls(keyledger: Keyledger) -> Calls:
    return Calls(keyledger, len(keyledger.calls()))


def google(keyledger: Keyledger, token: str) -> Any:
    """Google's REST client, unmodified, holding ``token`` as its OAuth access token."""
    return SecretManagerServiceClient(
        transport="rest",
        credentials=Credentials(token=token),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=keyledger.http_url),
    )


def azure(keyledger: Keyledger, token: str, tls: DevTls) -> SecretClient:
    """Key Vault's SecretClient, unmodified, with a credential handing out ``token``."""
    return SecretClient(
        vault_url=keyledger.https_url,
        credential=StaticToken(token),
        connection_verify=str(tls.ca_cert),
        verify_challenge_resource=False,
    )


def latest(secret: str) -> str:
    return f"projects/{PROJECT}/secrets/{secret}/versions/latest"


def github_attributes(ref: str) -> dict[str, str]:
    return {
        "issuer": "github-actions",
        "repository": "acme/payments",
        "repository_owner": "acme",
        "ref": ref,
        "workflow_ref": f"acme/payments/.github/workflows/deploy.yml@{ref}",
        "job_workflow_ref": f"acme/workflows/.github/workflows/deploy.yml@{ref}",
    }


def explain(
    capsys: pytest.CaptureFixture[str],
    keyledger: Keyledger,
    event: dict[str, Any],
    secret: str,
) -> dict[str, Any]:
    """`keyledger policy explain` (JSON) for the call ``event`` records: its principal, the
    groups and attributes the token gave, its action and secret."""
    principal = event["principal"]
    argv = [
        "policy",
        "explain",
        str(keyledger.policies),
        "--principal",
        principal["id"],
        "--action",
        event["action"],
        "--secret",
        secret,
        "--json",
    ]
    for group in principal["groups"]:
        argv += ["--group", group]
    for name, value in principal["attributes"].items():
        argv += ["--attr", f"{name}={value}"]
    capsys.readouterr()
    code = main(argv)
    explained: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == (0 if explained["effect"] == "allow" else 3)
    return explained


def decided(event: dict[str, Any]) -> tuple[str, str | None, str]:
    return (
        event["decision"]["effect"],
        event["decision"]["rule"],
        event["decision"]["policy_hash"],
    )


class TestGithubActions:
    def test_main_reads_through_googles_rest_client(
        self,
        keyledger: Keyledger,
        issuers: Issuers,
        calls: Calls,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A GitHub Actions token for acme/payments on main reads payments-db through
        Google's REST client: allowed by payments-main-reads, recorded with auth_method
        oidc, the ci group and the token's attributes; policy explain agrees."""
        token = issuers.github_key.sign(github_claims(), headers={"typ": "JWT"})

        answer = google(keyledger, token).access_secret_version(name=latest("payments-db"))

        assert answer.payload.data == b"payments-db-value"
        (event,) = calls()
        assert event["type"] == "access"
        assert event["request"]["protocol"] == "gcp-rest"
        assert event["principal"] == {
            "id": "repo:acme/payments:ref:refs/heads/main",
            "auth_method": "oidc",
            "groups": ["ci"],
            "attributes": github_attributes("refs/heads/main"),
        }
        assert decided(event)[:2] == ("allow", "payments-main-reads")
        assert token not in json.dumps(event)
        explained = explain(capsys, keyledger, event, f"gcp:{PROJECT}/payments-db")
        assert (explained["effect"], explained["rule"], explained["policy_hash"]) == decided(event)

    def test_another_branch_is_denied_through_googles_rest_client(
        self,
        keyledger: Keyledger,
        issuers: Issuers,
        calls: Calls,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The same repository on a feature branch: Forbidden, nothing served, a deny
        recorded with that ref; policy explain denies it too."""
        ref = "refs/heads/feature-x"
        token = issuers.github_key.sign(github_claims(ref=ref))

        with pytest.raises(gexc.Forbidden):
            google(keyledger, token).access_secret_version(name=latest("payments-db"))

        (event,) = calls()
        assert event["principal"]["id"] == f"repo:acme/payments:ref:{ref}"
        assert event["principal"]["attributes"] == github_attributes(ref)
        assert event["decision"]["effect"] == "deny"
        assert event["outcome"]["status"] == "denied"
        explained = explain(capsys, keyledger, event, f"gcp:{PROJECT}/payments-db")
        assert (explained["effect"], explained["rule"], explained["policy_hash"]) == decided(event)
        (verdict,) = [v for v in explained["rules"] if v["id"] == "payments-main-reads"]
        assert not verdict["applies"]
        assert any("refs/heads/feature-x" in reason for reason in verdict["reasons"])

    @pytest.mark.parametrize(
        ("ref", "secret", "allowed"),
        [
            ("refs/heads/main", "payments-db", True),
            ("refs/heads/feature-x", "payments-db", False),
            ("refs/heads/main", "checkout-key", False),
        ],
    )
    def test_azure_secret_client_is_decided_on_the_claims(
        self,
        keyledger: Keyledger,
        issuers: Issuers,
        tls: DevTls,
        calls: Calls,
        capsys: pytest.CaptureFixture[str],
        ref: str,
        secret: str,
        allowed: bool,
    ) -> None:
        """Key Vault's SecretClient with the GitHub token: main reads payments-db; a
        feature branch, or another secret, is 403; explain decides each call the same."""
        token = issuers.github_key.sign(github_claims(ref=ref))

        with azure(keyledger, token, tls) as client:
            if allowed:
                assert client.get_secret(secret).value == SECRETS[secret]
            else:
                with pytest.raises(HttpResponseError) as refused:
                    client.get_secret(secret)
                assert refused.value.status_code == 403

        (event,) = calls()  # the challenge before it is no call
        assert event["request"]["protocol"] == "azure"
        assert (event["principal"]["auth_method"], event["principal"]["groups"]) == (
            "oidc",
            ["ci"],
        )
        assert event["principal"]["attributes"]["ref"] == ref
        assert (event["decision"]["effect"] == "allow") is allowed
        explained = explain(capsys, keyledger, event, f"azure:demo/{secret}")
        assert (explained["effect"], explained["rule"], explained["policy_hash"]) == decided(event)

    def test_the_key_set_is_fetched_once_not_per_call(
        self, keyledger: Keyledger, issuers: Issuers, calls: Calls
    ) -> None:
        """Three calls with three tokens: the GitHub key set has been fetched once in this
        keyledger's life, and GitHub's discovery document never (jwks_url is given)."""
        for run in range(3):
            token = issuers.github_key.sign(github_claims(run_id=f"run-{run}"))
            google(keyledger, token).access_secret_version(name=latest("payments-db"))

        assert len(calls()) == 3
        assert dict(issuers.github.requests) == {JWKS: 1}


class TestKubernetes:
    @pytest.mark.parametrize(
        ("namespace", "service_account", "allowed"),
        [
            ("checkout", "checkout-api", True),
            ("checkout", "checkout-batch", False),
            ("payments", "checkout-api", False),
        ],
    )
    def test_a_service_account_token_is_decided_on_its_claims(
        self,
        keyledger: Keyledger,
        issuers: Issuers,
        tls: DevTls,
        calls: Calls,
        capsys: pytest.CaptureFixture[str],
        namespace: str,
        service_account: str,
        allowed: bool,
    ) -> None:
        """A projected service-account token (keys found by discovery): checkout's
        checkout-api reads checkout-key over Google REST and Key Vault; another service
        account, or the same name in another namespace, is denied on both; the events
        carry namespace, service_account and pod; explain agrees."""
        payload = kubernetes_claims(
            issuers.cluster.url, namespace=namespace, service_account=service_account
        )
        token = issuers.cluster_key.sign(payload)

        with azure(keyledger, token, tls) as client:
            if allowed:
                value = google(keyledger, token).access_secret_version(name=latest("checkout-key"))
                assert value.payload.data == b"checkout-key-value"
                assert client.get_secret("checkout-key").value == "checkout-key-value"
            else:
                with pytest.raises(gexc.Forbidden):
                    google(keyledger, token).access_secret_version(name=latest("checkout-key"))
                with pytest.raises(HttpResponseError) as refused:
                    client.get_secret("checkout-key")
                assert refused.value.status_code == 403

        rest, vault = calls()
        assert [rest["request"]["protocol"], vault["request"]["protocol"]] == ["gcp-rest", "azure"]
        for event, secret in (
            (rest, f"gcp:{PROJECT}/checkout-key"),
            (vault, "azure:demo/checkout-key"),
        ):
            assert event["principal"] == {
                "id": f"system:serviceaccount:{namespace}:{service_account}",
                "auth_method": "oidc",
                "groups": ["workloads"],
                "attributes": {
                    "issuer": "prod-cluster",
                    "namespace": namespace,
                    "service_account": service_account,
                    "pod": f"{service_account}-69cbfb9798-jv9gn",
                },
            }
            assert (event["decision"]["effect"] == "allow") is allowed
            explained = explain(capsys, keyledger, event, secret)
            assert (explained["effect"], explained["rule"], explained["policy_hash"]) == (
                decided(event)
            )
        assert dict(issuers.cluster.requests) == {DISCOVERY: 1, JWKS: 1}  # keys held since


class TestRefusedTokens:
    def test_an_expired_token_on_googles_rest_client(
        self, keyledger: Keyledger, issuers: Issuers, calls: Calls
    ) -> None:
        """An expired GitHub token: 401, which Google's client, holding a static token it
        cannot refresh, raises as RefreshError (README: as for any refused token); one
        auth_failure event, method oidc, reason token_expired, issuer and subject as
        claimed."""
        token = issuers.github_key.sign(github_claims(exp=int(claims(GITHUB)["iat"]) - 600))

        with pytest.raises(RefreshError):
            google(keyledger, token).access_secret_version(name=latest("payments-db"))

        (event,) = calls()
        assert event["type"] == "auth_failure"
        assert event["principal"]["auth_method"] == "oidc"
        assert event["principal"]["attributes"] == {
            "issuer": "github-actions",
            "subject": "repo:acme/payments:ref:refs/heads/main",
        }
        assert event["outcome"]["code"] == "token_expired"
        assert token not in json.dumps(event)

    def test_an_expired_token_on_azures_secret_client(
        self, keyledger: Keyledger, issuers: Issuers, tls: DevTls, calls: Calls
    ) -> None:
        """An expired cluster token: ClientAuthenticationError, nothing served, and one
        auth_failure event (the challenge before it is none), method oidc, token_expired."""
        payload = kubernetes_claims(issuers.cluster.url)
        payload["exp"] = payload["iat"] - 600
        token = issuers.cluster_key.sign(payload)

        with azure(keyledger, token, tls) as client, pytest.raises(ClientAuthenticationError):
            client.get_secret("checkout-key")

        (event,) = calls()
        assert event["type"] == "auth_failure"
        assert event["request"]["protocol"] == "azure"
        assert (event["principal"]["auth_method"], event["outcome"]["code"]) == (
            "oidc",
            "token_expired",
        )
        assert event["principal"]["attributes"] == {
            "issuer": "prod-cluster",
            "subject": "system:serviceaccount:checkout:checkout-api",
        }

    @pytest.mark.parametrize(
        ("change", "reason", "claimed_issuer"),
        [
            ({"aud": "sts.amazonaws.com"}, "wrong_audience", "github-actions"),
            ({"iss": "https://gitlab.com"}, "unknown_issuer", "https://gitlab.com"),
        ],
    )
    def test_other_refusals_are_recorded_with_their_reason(
        self,
        keyledger: Keyledger,
        issuers: Issuers,
        calls: Calls,
        change: dict[str, str],
        reason: str,
        claimed_issuer: str,
    ) -> None:
        """A token for another audience, and one from an issuer keyledger does not trust:
        refused, each one auth_failure event naming its reason."""
        token = issuers.github_key.sign(github_claims(**change))

        with pytest.raises(RefreshError):
            google(keyledger, token).access_secret_version(name=latest("payments-db"))

        (event,) = calls()
        assert (event["type"], event["outcome"]["code"]) == ("auth_failure", reason)
        assert event["principal"]["auth_method"] == "oidc"
        assert event["principal"]["attributes"]["issuer"] == claimed_issuer


class TestAzureWorkloadIdentity:
    """azure-identity's own workload identity flow with keyledger as its authority: the
    client assertion (the pod's projected token) traded at keyledger's
    /{tenant}/oauth2/v2.0/token for a keyledger bearer token, which SecretClient then
    sends. Nothing else changes: AKS's webhook sets AZURE_CLIENT_ID, AZURE_TENANT_ID and
    AZURE_FEDERATED_TOKEN_FILE; AZURE_AUTHORITY_HOST names keyledger."""

    TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    CLIENT_ID = "5e6c8f1a-3b2d-4c7e-9f10-2a4b6c8d0e1f"

    def token_file(self, tmp_path: Path, issuers: Issuers, service_account: str) -> Path:
        path = tmp_path / "azure-identity-token"
        payload = kubernetes_claims(issuers.cluster.url, service_account=service_account)
        path.write_text(issuers.cluster_key.sign(payload))
        return path

    def test_the_environment_aks_sets_plus_the_authority_host(
        self,
        keyledger: Keyledger,
        issuers: Issuers,
        tls: DevTls,
        calls: Calls,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """DefaultAzureCredential, from the environment alone: checkout-api reads
        checkout-key and is denied payments-db (403), with one token for both calls; the
        exchange is a credentials_issued event naming the tenant and client id, and both
        calls are the service account's, auth method token-exchange, with its claims."""
        from azure.identity import DefaultAzureCredential

        for name, value in {
            "AZURE_CLIENT_ID": self.CLIENT_ID,
            "AZURE_TENANT_ID": self.TENANT,
            "AZURE_FEDERATED_TOKEN_FILE": str(self.token_file(tmp_path, issuers, "checkout-api")),
            "AZURE_AUTHORITY_HOST": keyledger.https_url,
        }.items():
            monkeypatch.setenv(name, value)
        exchanges_before = len(exchanges(keyledger))
        credential = DefaultAzureCredential(
            exclude_managed_identity_credential=True,  # no IMDS probe on a test machine
            connection_verify=str(tls.ca_cert),
        )
        with (
            credential,
            SecretClient(
                vault_url=keyledger.https_url,
                credential=credential,
                connection_verify=str(tls.ca_cert),
                verify_challenge_resource=False,
            ) as client,
        ):
            served = client.get_secret("checkout-key").value
            with pytest.raises(HttpResponseError) as denied:
                client.get_secret("payments-db")

        assert served == "checkout-key-value"
        assert denied.value.status_code == 403
        (exchange,) = exchanges(keyledger)[exchanges_before:]
        assert exchange["request"]["protocol"] == "entra-client-assertion"
        assert exchange["detail"]["tenant"] == self.TENANT
        assert exchange["detail"]["client_id"] == self.CLIENT_ID
        assert exchange["detail"]["scope"] == "https://vault.azure.net/.default"
        read, refused = calls()
        for event in (read, refused):
            assert event["principal"]["id"] == "system:serviceaccount:checkout:checkout-api"
            assert event["principal"]["auth_method"] == "token-exchange"
            assert event["principal"]["attributes"]["namespace"] == "checkout"
        assert [read["decision"]["effect"], refused["decision"]["effect"]] == ["allow", "deny"]

    def test_a_forged_assertion_is_client_authentication_error(
        self, keyledger: Keyledger, issuers: Issuers, tls: DevTls, tmp_path: Path
    ) -> None:
        """A token file whose signature does not verify: azure-identity raises its usual
        ClientAuthenticationError naming Entra's invalid_client and keyledger's reason;
        the refusal is an auth_failure event; nothing is served."""
        from azure.identity import WorkloadIdentityCredential

        path = self.token_file(tmp_path, issuers, "checkout-api")
        path.write_text(path.read_text()[:-8] + "AAAAAAAA")
        failures_before = len(journal_events(keyledger.config.audit.journal, "auth_failure"))
        credential = WorkloadIdentityCredential(
            tenant_id=self.TENANT,
            client_id=self.CLIENT_ID,
            token_file_path=str(path),
            authority=keyledger.https_url,
            connection_verify=str(tls.ca_cert),
        )

        with credential, pytest.raises(ClientAuthenticationError) as refused:
            credential.get_token("https://vault.azure.net/.default")

        assert "invalid_client" in str(refused.value)
        assert "signature does not verify" in str(refused.value)
        failures = journal_events(keyledger.config.audit.journal, "auth_failure")[failures_before:]
        assert [(e["request"]["protocol"], e["outcome"]["code"]) for e in failures] == [
            ("entra-client-assertion", "token_mismatch")
        ]


def exchanges(keyledger: Keyledger) -> list[dict[str, Any]]:
    return [
        e
        for e in journal_events(keyledger.config.audit.journal, "lifecycle")
        if e["detail"]["event"] == "credentials_issued"
    ]
