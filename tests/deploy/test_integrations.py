"""docs/integrations.md: the GitHub Actions, Kubernetes, Azure workload identity and
External Secrets Operator examples load, validate and agree with keyledger's config, its
STS and the acme policy set they name."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jsonschema
import yaml

from keyledger.model import Action, SecretRef
from keyledger.policies import PolicyEngine, example_policy_dir, load_policy_files
from keyledger.policies.engine import principal_of
from keyledger.policies.loader import resolve_policy_paths
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.auth.oidc import OidcVerifier
from keyledger.proxy.auth.sessions import SessionSealer
from keyledger.proxy.config import Config, parse_config
from keyledger.proxy.issuers import IssuerSettings
from keyledger.proxy.pipeline import PolicyHolder
from keyledger.proxy.sts import StsEndpoint
from keyledger.proxy.wire import WireRequest
from tests.conftest import journal_events
from tests.deploy.conftest import KUBERNETES, ROOT, DeployTools, load_documents, load_yaml, run
from tests.oidc_issuer import rsa_key

DOC = ROOT / "docs" / "integrations.md"
# The parts of ESO's external-secrets.io/v1 CRD schemas the page uses (the file says from
# where): kubernetes-validate bundles no CRD schemas, and nothing is fetched at test time.
ESO_SCHEMAS = Path(__file__).with_name("external_secrets_v1.schema.json")
# What ESO's AWS provider does with a SecretStore's jwt auth (external-secrets,
# providers/v1/aws/auth/auth.go): the service account's role-arn annotation is the role it
# assumes; its token is requested for the audience annotation's value, else
# sts.amazonaws.com, followed by serviceAccountRef.audiences; the session name is fixed.
ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
AUDIENCE_ANNOTATION = "eks.amazonaws.com/audience"
ESO_DEFAULT_AUDIENCE = "sts.amazonaws.com"
ESO_SESSION_NAME = "external-secrets-provider-aws"
ESO = "External Secrets Operator"  # the page's section


def yaml_blocks(section: str | None = None) -> list[Any]:
    """The page's yaml blocks, or those of its ``## section``."""
    text = DOC.read_text(encoding="utf-8")
    if section is not None:
        text = re.split(r"^## ", text, flags=re.M)[[*_sections(text)].index(section) + 1]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def _sections(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, re.M)


def block(key: str, section: str | None = None) -> list[Any]:
    return [b for b in yaml_blocks(section) if isinstance(b, dict) and key in b]


def manifest(kind: str, section: str | None = None) -> dict[str, Any]:
    """The page's one manifest of ``kind`` (in its ``## section``)."""
    (found,) = [b for b in block("apiVersion", section) if b["kind"] == kind]
    result: dict[str, Any] = found
    return result


def keyledger_config(doc: dict[str, Any], base: Path) -> Config:
    return parse_config(
        {**doc, "policies": ["p"], "backends": {"aws": {"region": "eu-central-1"}}},
        base=base,
        source="integrations.md",
    )


def acme() -> PolicyEngine:
    return PolicyEngine(load_policy_files(resolve_policy_paths([example_policy_dir("acme")])))


def test_the_issuers_load_as_keyledger_config(tmp_path: Path) -> None:
    """Every oidc: block is valid keyledger config, as the page says they work; ESO's is
    the cluster's own issuer, once for both."""
    github, cluster, eso = (keyledger_config(b, tmp_path).oidc.issuers[0] for b in block("oidc"))
    assert (github.issuer, github.audiences, github.groups) == (
        "https://token.actions.githubusercontent.com",
        ("keyledger",),
        ("ci-deployers",),
    )
    assert (cluster.name, cluster.audiences, cluster.groups) == (
        "prod-cluster",
        ("keyledger",),
        ("prod-cluster",),
    )
    assert eso == cluster


def test_the_workflow_asks_for_keyledgers_audience_and_names_a_bound_role() -> None:
    """The job may ask for its token, asks it for the audience keyledger trusts, hands it
    to the CLI with the role the acme set binds ci-deployers to; and that caller, on main,
    is allowed its read by the set, a feature branch is not."""
    (workflow,) = block("jobs")
    assert workflow["permissions"]["id-token"] == "write"
    job = workflow["jobs"]["deploy"]
    env = job["env"]
    assert env["AWS_ENDPOINT_URL_STS"] == env["AWS_ENDPOINT_URL"]
    assert "audience=keyledger" in job["steps"][0]["run"]
    role = env["AWS_ROLE_ARN"].rsplit("/", 1)[1]
    engine = acme()

    def decide(ref: str) -> bool:
        caller = principal_of(
            f"repo:acme/shop:ref:{ref}",
            ["ci-deployers"],
            {"repository": "acme/shop", "ref": ref, "issuer": "github-actions"},
        )
        assert role in {name for name, _ in engine.bindings_of(caller)}
        secret = SecretRef("aws", "prod/apps/shop/deploy")
        return engine.decide(caller, Action.READ, secret).allowed

    assert decide("refs/heads/main")
    assert not decide("refs/heads/feature")


def test_the_deployment_mounts_a_keyledger_token_where_the_sdk_reads_it() -> None:
    """The projected token's audience is the issuer's, its path is the SDK's token file,
    and the role is one the acme set binds prod-cluster to."""
    deployment = manifest("Deployment", "Kubernetes")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (projected,) = [v for v in spec["volumes"] if "projected" in v]
    (source,) = projected["projected"]["sources"]
    token = source["serviceAccountToken"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == projected["name"])
    assert token["audience"] == "keyledger"
    assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{mount['mountPath']}/{token['path']}"
    engine = acme()
    caller = principal_of(
        f"system:serviceaccount:{deployment['metadata']['namespace']}:{spec['serviceAccountName']}",
        ["prod-cluster"],
        {"namespace": "payments", "service_account": "checkout"},
    )
    role = env["AWS_ROLE_ARN"].rsplit("/", 1)[1]
    assert role in {name for name, _ in engine.bindings_of(caller)}
    assert engine.decide(caller, Action.READ, SecretRef("aws", "prod/payments/stripe-key")).allowed


def test_the_deployment_validates_strictly(tools: DeployTools, tmp_path: Path) -> None:
    """The Deployment passes the same strict schema check as deploy/kubernetes."""
    deployment = manifest("Deployment", "Kubernetes")
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = run([tools.kubernetes_validate, "--strict", path])
    assert result.returncode == 0, result.stdout + result.stderr


# -- External Secrets Operator -------------------------------------------------------------


def eso_audiences(account: dict[str, Any], store: dict[str, Any]) -> list[str]:
    """The audiences ESO asks the TokenRequest API for, for this store and account."""
    ref = store["spec"]["provider"]["aws"]["auth"]["jwt"]["serviceAccountRef"]
    annotations = account["metadata"].get("annotations", {})
    return [annotations.get(AUDIENCE_ANNOTATION, ESO_DEFAULT_AUDIENCE), *ref.get("audiences", [])]


def test_the_eso_manifests_validate_against_esos_v1_schemas() -> None:
    """The SecretStore and ExternalSecret are external-secrets.io/v1 objects whose every
    field is one ESO's CRDs have, and the schema check is real: a misspelt field fails."""
    schemas = json.loads(ESO_SCHEMAS.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schemas)

    def errors(kind: str, doc: dict[str, Any]) -> list[str]:
        validator = jsonschema.Draft202012Validator({**schemas, "$ref": f"#/$defs/{kind}"})
        return [e.message for e in validator.iter_errors(doc)]

    store, external = manifest("SecretStore"), manifest("ExternalSecret")
    for doc in (store, external):
        assert doc["apiVersion"] == "external-secrets.io/v1"
        assert errors(doc["kind"], doc) == []
        assert {"name", "namespace"} <= doc["metadata"].keys()
    assert set(store["spec"]["provider"]) == {"aws"}
    misspelt = copy.deepcopy(store)
    jwt_auth = misspelt["spec"]["provider"]["aws"]["auth"]["jwt"]
    jwt_auth["serviceAccount"] = jwt_auth.pop("serviceAccountRef")
    assert any("serviceAccount" in message for message in errors("SecretStore", misspelt))
    wrong_kind = copy.deepcopy(external)
    wrong_kind["spec"]["secretStoreRef"]["kind"] = "Secretstore"
    assert errors("ExternalSecret", wrong_kind)


def test_the_external_secret_uses_the_store_and_the_store_the_service_account() -> None:
    """The ExternalSecret names the SecretStore of its own namespace; the store reads
    Secrets Manager with jwt auth as the ServiceAccount the page annotates, of the same
    namespace (a namespaced store can name no other)."""
    store, external = manifest("SecretStore"), manifest("ExternalSecret")
    account = manifest("ServiceAccount")
    namespace = store["metadata"]["namespace"]
    assert external["metadata"]["namespace"] == namespace
    assert external["spec"]["secretStoreRef"] == {"kind": "SecretStore", "name": "keyledger"}
    assert store["metadata"]["name"] == "keyledger"
    aws = store["spec"]["provider"]["aws"]
    assert aws["service"] == "SecretsManager"
    ref = aws["auth"]["jwt"]["serviceAccountRef"]
    assert "namespace" not in ref
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == (
        ref["name"],
        namespace,
    )
    assert ROLE_ARN_ANNOTATION in account["metadata"]["annotations"]


def test_the_eso_service_account_and_controller_values_validate_strictly(
    tools: DeployTools, tmp_path: Path
) -> None:
    """The ServiceAccount, and a pod with the Helm values' extraEnv, extraVolumeMounts and
    extraVolumes where ESO's chart puts them (the controller container's env and
    volumeMounts, the pod's volumes), pass the strict Kubernetes schema check; the CA
    bundle is a file of the mounted volume."""
    (values,) = block("extraEnv")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "external-secrets", "namespace": "external-secrets"},
        "spec": {
            "containers": [
                {
                    "name": "external-secrets",
                    "image": "ghcr.io/external-secrets/external-secrets:v2.0.0",
                    "env": values["extraEnv"],
                    "volumeMounts": values["extraVolumeMounts"],
                }
            ],
            "volumes": values["extraVolumes"],
        },
    }
    documents = [manifest("ServiceAccount"), pod]
    path = tmp_path / "eso.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    result = run([tools.kubernetes_validate, "--strict", path])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == len(documents), lines
    assert all(" passed " in line for line in lines), lines
    env = {e["name"]: e["value"] for e in values["extraEnv"]}
    (mount,) = values["extraVolumeMounts"]
    (volume,) = values["extraVolumes"]
    assert mount["name"] == volume["name"]
    assert "configMap" in volume
    assert env["AWS_CA_BUNDLE"].startswith(mount["mountPath"].rstrip("/") + "/")


def test_in_cluster_clients_reach_keyledgers_service() -> None:
    """ESO's two endpoints are one, and they and the Deployment's name the Service
    deploy/kubernetes makes, on the port it listens on."""
    (values,) = block("extraEnv")
    env = {e["name"]: e["value"] for e in values["extraEnv"]}
    assert env["AWS_SECRETSMANAGER_ENDPOINT"] == env["AWS_STS_ENDPOINT"]
    (container,) = manifest("Deployment", "Kubernetes")["spec"]["template"]["spec"]["containers"]
    deployment_env = {e["name"]: e["value"] for e in container["env"]}
    (service,) = load_documents(KUBERNETES / "service.yaml")
    namespace = load_yaml(KUBERNETES / "kustomization.yaml")["namespace"]
    (port,) = service["spec"]["ports"]
    for url in (
        env["AWS_SECRETSMANAGER_ENDPOINT"],
        deployment_env["AWS_ENDPOINT_URL"],
        deployment_env["AWS_ENDPOINT_URL_STS"],
    ):
        parts = urlsplit(url)
        assert parts.scheme == "https", url
        assert parts.hostname == f"{service['metadata']['name']}.{namespace}.svc", url
        assert (parts.port or 443) == port["port"], url


async def test_eso_trades_its_token_at_keyledgers_sts_and_reads_only_as_checkout(
    tmp_path: Path,
) -> None:
    """keyledger's STS, configured with the page's issuer and the acme set, takes what ESO
    sends for the page's SecretStore (a TokenRequest token of its service account, with the
    audiences ESO asks for, no pod; the role the annotation names; ESO's session name) and
    issues credentials whose caller the set lets read the ExternalSecret's remote key. Other
    service accounts of the cluster get credentials (the role is the cluster's) but not the
    read, and the token ESO would ask for without the audience annotation is refused."""
    account, store = manifest("ServiceAccount"), manifest("SecretStore")
    external = manifest("ExternalSecret")
    (oidc,) = block("oidc", ESO)
    (issuer,) = keyledger_config(oidc, tmp_path).oidc.issuers
    audiences = eso_audiences(account, store)
    assert ESO_DEFAULT_AUDIENCE not in audiences
    assert set(audiences) <= set(issuer.audiences)
    without_annotation = copy.deepcopy(account)
    del without_annotation["metadata"]["annotations"][AUDIENCE_ANNOTATION]
    assert not set(eso_audiences(without_annotation, store)) & set(issuer.audiences)

    key = rsa_key("cluster-1")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.jwk()]}))
    trusted: IssuerSettings = dataclasses.replace(issuer, jwks_file=jwks)

    async def no_fetch(url: str) -> bytes:
        raise OSError(f"the key set is a file, nothing is fetched ({url})")

    engine = acme()
    sessions = SessionSealer(os.urandom(32))
    journal = Journal(directory=tmp_path / "audit", chain_id="eso", fsync=False)
    await journal.start()
    sts = StsEndpoint(
        verifier=OidcVerifier([trusted], fetch=no_fetch),
        sessions=sessions,
        policies=PolicyHolder(engine),
        journal=journal,
    )
    role_arn = account["metadata"]["annotations"][ROLE_ARN_ANNOTATION]
    role = role_arn.rsplit("/", 1)[1]
    secret = SecretRef("aws", external["spec"]["data"][0]["remoteRef"]["key"])

    async def exchange(namespace: str, name: str, audience: list[str]) -> tuple[int, str]:
        now = int(time.time())
        token = key.sign(
            {
                "iss": trusted.issuer,
                "sub": f"system:serviceaccount:{namespace}:{name}",
                "aud": audience,
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
                "kubernetes.io": {
                    "namespace": namespace,
                    "serviceaccount": {"name": name, "uid": "0f5a2a4e-3e1b-4d4e-9d1c-1d6f0b0c2a11"},
                },
            }
        )
        form = {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": role_arn,
            "RoleSessionName": ESO_SESSION_NAME,
            "WebIdentityToken": token,
        }
        reply = await sts.handle(
            WireRequest(
                method="POST",
                path="/",
                query=(),
                headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
                body=urlencode(form).encode(),
                source_ip="10.20.0.7",
                user_agent="aws-sdk-go-v2 external-secrets",
                request_id=f"eso-{namespace}-{name}",
            )
        )
        return reply.status, reply.body.decode()

    def may_read(answer: str) -> bool:
        found = re.search(r"<SessionToken>([^<]+)</SessionToken>", answer)
        assert found is not None, answer
        session = sessions.open(found[1])
        assert session is not None
        caller = session.principal
        assert caller.attributes["role"] == role
        assert "pod" not in caller.attributes
        assert role in {bound for bound, _ in engine.bindings_of(caller)}
        return engine.decide(caller, Action.READ, secret).allowed

    try:
        namespace = store["metadata"]["namespace"]
        name = store["spec"]["provider"]["aws"]["auth"]["jwt"]["serviceAccountRef"]["name"]
        status, answer = await exchange(namespace, name, audiences)
        assert status == 200, answer
        assert may_read(answer)
        for other_namespace, other_name in ((namespace, "refunds"), ("shop", name)):
            status, answer = await exchange(other_namespace, other_name, audiences)
            assert status == 200, answer
            assert not may_read(answer)
        status, answer = await exchange(namespace, name, eso_audiences(without_annotation, store))
        assert status == 400, answer
        assert "InvalidIdentityToken" in answer
    finally:
        await journal.close()
    events = journal_events(tmp_path / "audit", "lifecycle", "auth_failure")
    assert [(e["type"], e["principal"]["id"]) for e in events] == [
        ("lifecycle", f"system:serviceaccount:{namespace}:{name}"),
        ("lifecycle", f"system:serviceaccount:{namespace}:refunds"),
        ("lifecycle", f"system:serviceaccount:shop:{name}"),
        ("auth_failure", None),
    ]
    assert all(
        e["detail"] == {**e["detail"], "event": "credentials_issued", "role": role}
        for e in events[:3]
    )


def test_the_page_no_longer_lists_eso_as_missing() -> None:
    """ESO has its section, and "Not covered yet" no longer says it is missing."""
    text = DOC.read_text(encoding="utf-8")
    assert f"\n## {ESO}\n" in text
    missing = text.split("\n## Not covered yet\n", 1)[1]
    assert "AWS provider" not in missing


# -- Azure workload identity ---------------------------------------------------------------

AZURE = "Azure workload identity"  # the page's section


def test_the_azure_deployment_validates_strictly(tools: DeployTools, tmp_path: Path) -> None:
    """The Azure section's Deployment passes the same strict schema check."""
    deployment = manifest("Deployment", AZURE)
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = run([tools.kubernetes_validate, "--strict", path])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_azure_pod_sends_keyledger_a_token_for_keyledger(tmp_path: Path) -> None:
    """The pod's token file is its projected token, for the audience the cluster issuer
    trusts; the authority is keyledger's Service; the CA bundles are files of the mounted
    CA; the vault URL lies under the challenge's resource as verify_challenge_resource
    demands and reaches the default vault; and the acme set lets that service account read
    the vault's secrets."""
    deployment = manifest("Deployment", AZURE)
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (projected,) = [v for v in spec["volumes"] if "projected" in v]
    (source,) = projected["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == f"{mounts[projected['name']]}/{token['path']}"
    (cluster,) = block("oidc", "Kubernetes")
    assert token["audience"] in cluster["oidc"]["issuers"][0]["audiences"]
    (kubernetes,) = manifest("Deployment", "Kubernetes")["spec"]["template"]["spec"]["containers"]
    aws_endpoint = next(e["value"] for e in kubernetes["env"] if e["name"] == "AWS_ENDPOINT_URL")
    assert env["AZURE_AUTHORITY_HOST"] == aws_endpoint  # keyledger's Service, checked above
    for bundle in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        assert env[bundle].startswith(mounts["keyledger-ca"] + "/"), bundle

    (settings,) = block("frontends", AZURE)
    config = parse_config({**settings, "policies": ["p"]}, base=tmp_path, source="integrations.md")
    vault = urlsplit(env["KEY_VAULT_URL"])
    resource = urlsplit(config.azure.resource)
    # azure-keyvault's verify_challenge_resource: the resource's host a strict parent.
    assert (vault.hostname or "").endswith("." + (resource.hostname or "-"))
    assert (vault.port, resource.port) == (None, None)
    assert config.azure.default == ("azure", "payments")
    caller = principal_of(
        f"system:serviceaccount:{deployment['metadata']['namespace']}:{spec['serviceAccountName']}",
        ["prod-cluster"],
        {"namespace": "payments", "service_account": "checkout", "issuer": "prod-cluster"},
    )
    assert acme().decide(caller, Action.READ, SecretRef("azure", "payments/stripe-key")).allowed
