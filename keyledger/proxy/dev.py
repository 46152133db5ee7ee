"""``keyledger serve --dev``: a complete, self-contained demo.

An embedded moto server plays AWS Secrets Manager, the Google stand-in plays Secret Manager
and the Key Vault stand-in plays vault ``demo``, all seeded with demo secrets; a demo
identity (a SigV4 key and a bearer token), the example policy shipped in the package, a
local CA for HTTPS and a journal under ``./var/`` make keyledger answer a real ``aws``
command, Google's Python client over REST or gRPC, or Azure's SecretClient, within seconds,
from any directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shlex
import shutil
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from keyledger.alerts.rules import example_rules_dir
from keyledger.backends.azure_standin import ThreadedAzureStandin
from keyledger.backends.gcp_standin import ThreadedGcpStandin
from keyledger.devtls import DevTls, ensure_dev_tls, server_context
from keyledger.policies import example_policy_dir
from keyledger.proxy.audit.checkpoints import generate_key_pair
from keyledger.proxy.auth.identities import IdentityStore, store_key_source
from keyledger.proxy.config import (
    AdminConfig,
    AlertsConfig,
    AuditConfig,
    AzureFrontendConfig,
    AzureVaultConfig,
    BackendConfig,
    CheckpointConfig,
    CloudWatchSinkConfig,
    Config,
    GcpFrontendConfig,
    IdentitiesConfig,
    ListenConfig,
    LoggingConfig,
    OidcConfig,
    S3SinkConfig,
    SinkBatch,
    SinkConfig,
    StdoutSinkConfig,
)
from keyledger.proxy.dev_issuer import demo_issuer

__all__ = [
    "AUDIT_BUCKET",
    "AZURE_VAULT",
    "DEFAULT_LISTEN",
    "DEMO_AZURE_SECRETS",
    "DEMO_CANARY",
    "DEMO_GCP_SECRETS",
    "DEMO_IDENTITY",
    "DEMO_ROLE_ARN",
    "DEMO_SECRETS",
    "GCP_PROJECT",
    "GCP_STORE_PROJECT",
    "DevBusy",
    "DevEnvironment",
    "DevError",
    "admin_port_for",
    "ready",
    "start_dev",
    "tls_port_for",
]

DEMO_IDENTITY = "demo-app"
# The role ARN the demo's STS accepts: the demo policy's role demo-app, bound to demo-app.
DEMO_ROLE_ARN = f"arn:aws:iam::000000000000:role/{DEMO_IDENTITY}"
DEFAULT_LISTEN = ("127.0.0.1", 8080)
# The admin API sits this far above the data port: 8080 -> 9090, 9000 -> 10010, so a second
# demo given only --listen does not collide with the first one's admin API.
ADMIN_PORT_OFFSET = 1010
# And HTTPS this far above it: 8080 -> 8443.
TLS_PORT_OFFSET = 363
REGION = "us-east-1"
# Credentials keyledger itself uses towards the embedded store (moto accepts any).
_STORE_CREDENTIALS = ("keyledger-dev-store", "keyledger-dev-store-secret")
# Where `--sinks s3,cloudwatch` ships the journal, in the embedded store.
AUDIT_BUCKET = "keyledger-audit"
AUDIT_LOG_GROUP = "keyledger-audit"
SINK_TYPES = ("s3", "cloudwatch", "stdout")
# Small batches, sent within a second: the demo shows objects appearing as you call.
_DEV_BATCH = SinkBatch(max_events=1000, max_bytes=1 << 20, max_wait_s=1.0)

DEMO_SECRETS: dict[str, str] = {
    "prod/db/password": "demo-prod-db-password",
    "prod/payments/api-key": "demo-payments-api-key",
    "staging/db/password": "demo-staging-db-password",
    "staging/api/token": json.dumps({"token": "demo-staging-token"}),
}
# A decoy: nothing should ever touch it, so the demo's alert rules flag any call on it.
DEMO_CANARY = "prod/db/admin-password-old"

# Google's side: callers name project keyledger-demo; the gcp backend maps it to the project
# the stand-in holds the secrets in, as a real deployment maps a stable name to its project.
# Google's secret ids cannot hold "/": the same secrets, named the Google way.
GCP_PROJECT = "keyledger-demo"
GCP_STORE_PROJECT = "keyledger-demo-real"
DEMO_GCP_SECRETS: dict[str, str] = {
    "staging-db-password": "demo-staging-db-password",
    "prod-db-password": "demo-prod-db-password",
    "prod-payments-api-key": "demo-payments-api-key",
}


# Azure's side: the stand-in is vault "demo" (as policies name it) of backend "azure",
# holding the Google demo's secrets under the same names (Key Vault's cannot hold "/").
AZURE_VAULT = "demo"
DEMO_AZURE_SECRETS: dict[str, str] = dict(DEMO_GCP_SECRETS)


def parse_sinks(text: str) -> tuple[str, ...]:
    """``s3,cloudwatch`` as ("s3", "cloudwatch"); ValueError naming an unknown one."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SINK_TYPES]
    if unknown:
        raise ValueError(
            f"--sinks: unknown sink {unknown[0]!r} (available: {', '.join(SINK_TYPES)})"
        )
    return names


def admin_port_for(port: int) -> int:
    """The demo's admin port when only the data port is given (8080 -> 9090)."""
    if port == 0:
        return 0
    return (
        port + ADMIN_PORT_OFFSET if port + ADMIN_PORT_OFFSET < 65536 else port - ADMIN_PORT_OFFSET
    )


def tls_port_for(port: int) -> int:
    """The demo's HTTPS port when only the data port is given (8080 -> 8443)."""
    if port == 0:
        return 0
    return port + TLS_PORT_OFFSET if port + TLS_PORT_OFFSET < 65536 else port - TLS_PORT_OFFSET


class DevError(ValueError):
    """``serve --dev`` cannot start; the message says why and what to do."""


class DevBusy(DevError):
    """Another ``serve --dev`` runs on the same state folder."""


@dataclass(frozen=True, slots=True)
class DevEnvironment:
    config: Config
    access_key_id: str
    secret_access_key: str = field(repr=False)
    token: str = field(repr=False)  # demo-app's bearer token, issued at this start
    store_url: str
    env_file: Path
    server: Any  # moto's ThreadedMotoServer
    standin: ThreadedGcpStandin
    vault: ThreadedAzureStandin
    tls: DevTls
    lock: int  # the open, locked var/.dev.lock: this demo owns var/ while it runs

    def close(self) -> None:
        """Stop the embedded stores and give var/ up."""
        try:
            self.vault.stop_thread()
            self.standin.stop_thread()
            self.server.stop()
        finally:
            os.close(self.lock)


def _claim(var: Path) -> int:
    """Lock ``var`` for this demo, or DevBusy naming the one that holds it.

    Taken before anything in ``var`` is written: the journal's own lock comes only once the
    proxy starts, after dev.env, the demo identity and the shipping cursors.
    """
    path = var / ".dev.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DevBusy(
            f"another `keyledger serve --dev` (pid {holder}) is running on {var}/: stop it "
            "(Ctrl-C in its terminal), or give this one its own folder with --var DIR"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _key_file(path: Path, make: Any) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
    return path.read_bytes().strip()


def _start_store() -> tuple[Any, str]:
    # The embedded store's per-request access log would drown keyledger's own output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise SystemExit(
            "keyledger serve --dev embeds moto as its demo store: pip install 'keyledger[dev]'"
        ) from exc
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _start_standin() -> ThreadedGcpStandin:
    """The Google stand-in on loopback, seeded in the project keyledger maps the demo's to."""
    standin = ThreadedGcpStandin(host="127.0.0.1")
    standin.start_in_thread()
    try:
        standin.seed(GCP_STORE_PROJECT, DEMO_GCP_SECRETS)
    except BaseException:
        standin.stop_thread()
        raise
    return standin


def _start_vault(tls: DevTls) -> ThreadedAzureStandin:
    """The Key Vault stand-in on loopback, over HTTPS with the demo's certificate."""
    vault = ThreadedAzureStandin(host="127.0.0.1", ssl_context=server_context(tls.cert, tls.key))
    vault.start_in_thread()
    try:
        vault.seed(DEMO_AZURE_SECRETS)
    except BaseException:
        vault.stop_thread()
        raise
    return vault


def _demo_token(store: IdentityStore) -> str:
    """A new bearer token for the demo identity, its old ones revoked: only a token's hash
    is kept, so one issued at an earlier start could not be printed again."""
    if any(t.name == DEMO_IDENTITY and not t.revoked for t in store.tokens()):
        return store.rotate_token(DEMO_IDENTITY).token
    return store.create_token(DEMO_IDENTITY).token


def _client(service: str, store_url: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=store_url,
        region_name=REGION,
        aws_access_key_id=_STORE_CREDENTIALS[0],
        aws_secret_access_key=_STORE_CREDENTIALS[1],
    )


def _seed(store_url: str, sinks: tuple[str, ...]) -> None:
    client = _client("secretsmanager", store_url)
    for name, value in DEMO_SECRETS.items():
        client.create_secret(Name=name, SecretString=value, Description="keyledger demo secret")
    client.create_secret(
        Name=DEMO_CANARY, SecretString="demo-decoy-value", Description="keyledger demo canary"
    )
    if "s3" in sinks:
        # As a security team would make it: Object Lock on from the start (it cannot be
        # turned on later for a bucket's existing objects).
        _client("s3", store_url).create_bucket(Bucket=AUDIT_BUCKET, ObjectLockEnabledForBucket=True)
    # The log group is left to the sink, which creates it (and its stream) when missing.


def _dev_sinks(names: tuple[str, ...], store_url: str) -> tuple[SinkConfig, ...]:
    made: dict[str, SinkConfig] = {
        "s3": S3SinkConfig(
            name="s3",
            bucket=AUDIT_BUCKET,
            retention_days=1,
            batch=_DEV_BATCH,
            region=REGION,
            endpoint_url=store_url,
            static_credentials=_STORE_CREDENTIALS,
        ),
        "cloudwatch": CloudWatchSinkConfig(
            name="cloudwatch",
            log_group=AUDIT_LOG_GROUP,
            retention_days=1,
            batch=_DEV_BATCH,
            region=REGION,
            endpoint_url=store_url,
            static_credentials=_STORE_CREDENTIALS,
        ),
        "stdout": StdoutSinkConfig(name="stdout"),
    }
    return tuple(made[name] for name in names)


def start_dev(
    *,
    var: Path,
    listen: tuple[str, int],
    admin_listen: tuple[str, int] | None = None,
    tls_listen: tuple[str, int] | None = None,
    sinks: tuple[str, ...] = (),
) -> DevEnvironment:
    """Prepare ``var/`` and the embedded store; return the config to serve.

    DevBusy, with nothing written, when another demo runs on ``var``; DevError when
    ``var`` cannot hold the demo's state.
    """
    try:
        var.mkdir(parents=True, exist_ok=True)
        lock = _claim(var)
    except OSError as exc:
        raise _state_error(var, exc) from exc
    try:
        return _start_dev(
            var=var,
            listen=listen,
            admin_listen=admin_listen,
            tls_listen=tls_listen or (listen[0], tls_port_for(listen[1])),
            sinks=sinks,
            lock=lock,
        )
    except OSError as exc:
        os.close(lock)
        raise _state_error(var, exc) from exc
    except BaseException:
        os.close(lock)
        raise


def _state_error(var: Path, exc: OSError) -> DevError:
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(var) else ""
    return DevError(
        f"cannot keep the --dev state in {var}/: {exc.strerror or exc}{where}; run it in a "
        "folder you can write, or pass --var DIR"
    )


def _start_dev(
    *,
    var: Path,
    listen: tuple[str, int],
    admin_listen: tuple[str, int] | None,
    tls_listen: tuple[str, int],
    sinks: tuple[str, ...],
    lock: int,
) -> DevEnvironment:
    keys = var / "keys"
    identity_key = _key_file(keys / "identity.key", Fernet.generate_key)
    _key_file(keys / "fingerprint.key", lambda: secrets.token_hex(32).encode())
    _key_file(keys / "admin.token", lambda: secrets.token_hex(24).encode())
    if not (keys / "checkpoint.key").exists():
        generate_key_pair(keys / "checkpoint")
    tls = ensure_dev_tls(var / "tls")

    store = IdentityStore(
        var / "identities.json",
        identity_key,
        key_source=store_key_source(env=None, file=keys / "identity.key"),
    )
    demo = next((i for i in store if i.name == DEMO_IDENTITY and not i.revoked), None)
    if demo is None:
        issued = store.create(DEMO_IDENTITY)
        key_id, secret = issued.access_key_id, issued.secret_access_key
    else:
        key_id, secret = demo.access_key_id, store.secret_of(demo)
    token = _demo_token(store)

    server, store_url = _start_store()
    try:
        _seed(store_url, sinks)
        standin = _start_standin()
        try:
            vault = _start_vault(tls)
        except BaseException:
            standin.stop_thread()
            raise
    except BaseException:
        server.stop()
        raise
    # The embedded store starts empty every time, while the journal in var/ lives on:
    # ship it all again, or the new bucket would miss every earlier event.
    for cursor in (var / "audit" / ".cursors").glob("*.json"):
        cursor.unlink()

    host, port = listen
    config = Config(
        # HTTPS beside plain HTTP: Azure's SDKs send tokens only over TLS.
        listen=ListenConfig(
            host=host, port=port, tls_cert=tls.cert, tls_key=tls.key, tls_listen=tls_listen
        ),
        identities=IdentitiesConfig(path=var / "identities.json", key_file=keys / "identity.key"),
        policies=(example_policy_dir(),),
        backends={
            "aws": BackendConfig(
                name="aws",
                type="aws",
                region=REGION,
                endpoint_url=store_url,
                static_credentials=_STORE_CREDENTIALS,
            ),
            "gcp": BackendConfig(
                name="gcp",
                type="gcp",
                endpoint=standin.grpc_target,
                projects={GCP_PROJECT: GCP_STORE_PROJECT},
                credentials="anonymous",
            ),
            "azure": BackendConfig(
                name="azure",
                type="azure",
                vaults={
                    AZURE_VAULT: AzureVaultConfig(name=AZURE_VAULT, url=vault.url, default=True)
                },
                credentials="standin",
                ca_file=tls.ca_cert,
            ),
        },
        aws_backend="aws",
        # REST under /v1/ on the data plane; gRPC on any free port of the same host, printed
        # (and written to dev.env) once it is bound.
        gcp=GcpFrontendConfig(projects={GCP_PROJECT: "gcp"}, grpc_listen=(host, 0)),
        # Key Vault's surface on both listeners; its SDKs insist on the HTTPS one.
        azure=AzureFrontendConfig(default=("azure", AZURE_VAULT)),
        # A workload identity issuer of the demo's own (`keyledger dev token`).
        oidc=OidcConfig(issuers=(demo_issuer(var),)),
        # The demo's alert rules; what they flag shows in the log and the journal.
        alerts=AlertsConfig(rules=(example_rules_dir(),)),
        audit=AuditConfig(
            journal=var / "audit",
            chain_id="dev",
            fingerprint_key_file=keys / "fingerprint.key",
            checkpoints=CheckpointConfig(key_file=keys / "checkpoint.key"),
            sinks=_dev_sinks(sinks, store_url),
        ),
        admin=AdminConfig(
            host=admin_listen[0] if admin_listen else "127.0.0.1",
            port=admin_listen[1] if admin_listen else admin_port_for(port),
            token_file=keys / "admin.token",
        ),
        logging=LoggingConfig(format="console"),
        source="--dev",
    )
    env_file = var / "dev.env"
    return DevEnvironment(
        config, key_id, secret, token, store_url, env_file, server, standin, vault, tls, lock
    )


def ready(env: DevEnvironment, app: Any, *, var_display: str) -> str:
    """Once ``app`` serves (its gRPC port bound): write var/dev.env; the banner to print."""
    from keyledger.proxy.app import GRPC

    grpc_target = f"{_netloc(env.config.listen.host)}:{app[GRPC].port}"
    _write_env(env, grpc_target)
    return banner(env, grpc_target=grpc_target, var_display=var_display)


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _write_env(env: DevEnvironment, grpc_target: str) -> None:
    config = env.config
    endpoint = f"http://{_netloc(config.listen.host)}:{config.listen.port}"
    admin = config.admin
    assert admin is not None
    assert admin.token_file is not None
    sinks = tuple(sink.name for sink in config.audit.sinks)
    env.env_file.write_text(
        f"# Written by keyledger serve --dev; load with: set -a; . {env.env_file}; set +a\n"
        + _path_line()
        + f"AWS_ENDPOINT_URL={endpoint}\n"
        f"AWS_ACCESS_KEY_ID={env.access_key_id}\n"
        f"AWS_SECRET_ACCESS_KEY={env.secret_access_key}\n"
        f"AWS_DEFAULT_REGION={REGION}\n"
        # STS on keyledger: a demo workload token (`keyledger dev token`) traded for AWS
        # credentials, for a caller with AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE.
        f"AWS_ENDPOINT_URL_STS={endpoint}\n"
        f"KEYLEDGER_DEMO_ROLE_ARN={DEMO_ROLE_ARN}\n"
        # Google Secret Manager through keyledger: REST base URL, gRPC target, the project
        # callers name, and demo-app's bearer token (a new one at every start).
        f"KEYLEDGER_GCP_ENDPOINT={endpoint}\n"
        f"KEYLEDGER_GCP_GRPC_TARGET={grpc_target}\n"
        f"KEYLEDGER_GCP_PROJECT={GCP_PROJECT}\n"
        f"KEYLEDGER_TOKEN={env.token}\n"
        # Azure Key Vault through keyledger: vault demo on the HTTPS listener, and the local
        # CA its certificate chains to (KEYLEDGER_TOKEN is demo-app's token there too).
        f"KEYLEDGER_AZURE_VAULT_URL={https_url(config)}\n"
        f"KEYLEDGER_CA={env.tls.ca_cert.absolute()}\n"
        f"KEYLEDGER_ADMIN_URL=http://{_netloc(admin.host)}:{admin.port}\n"
        f"KEYLEDGER_ADMIN_TOKEN={admin.token_file.read_text().strip()}\n"
        # The embedded store itself, behind keyledger: what an inventory is made from.
        f"KEYLEDGER_DEV_STORE_URL={env.store_url}\n" + _sink_endpoints(sinks, env.store_url),
        encoding="utf-8",
    )
    env.env_file.chmod(0o600)


def https_url(config: Config) -> str:
    """The demo's HTTPS listener, as a URL (also vault demo's URL)."""
    listen = config.listen
    assert listen.tls_listen is not None
    host, port = listen.tls_listen
    return f"https://{_netloc(host)}:{port}"


def scripts_dir() -> str:
    """Where this keyledger's environment keeps its commands (keyledger, aws): a venv's bin."""
    return sysconfig.get_path("scripts")


def _path_line() -> str:
    """PATH with this environment's commands first, so that sourcing dev.env in a new
    terminal is enough: no venv to activate. ``${PATH}`` as sh and python-dotenv expand it."""
    quoted = "".join("\\" + c if c in '"\\$`' else c for c in scripts_dir())
    return f'PATH="{quoted}:${{PATH}}"\n'


def _sink_endpoints(sinks: tuple[str, ...], store_url: str) -> str:
    """The embedded store as the S3 and CloudWatch Logs endpoint, for aws and keyledger."""
    lines = []
    if "s3" in sinks:
        lines.append(f"AWS_ENDPOINT_URL_S3={store_url}\n")
    if "cloudwatch" in sinks:
        # botocore and the aws CLI read the service id's name; keyledger also reads _LOGS.
        lines.append(f"AWS_ENDPOINT_URL_LOGS={store_url}\n")
        lines.append(f"AWS_ENDPOINT_URL_CLOUDWATCH_LOGS={store_url}\n")
    return "".join(lines)


def _sink_lines(env: DevEnvironment, var: str) -> str:
    names = [sink.name for sink in env.config.audit.sinks]
    if not names:
        return ""
    pub = f"{var}/keys/checkpoint.pub"
    lines = ["", "The journal is also shipped to:", ""]
    if "s3" in names:
        lines += [
            f"  s3://{AUDIT_BUCKET}/     Object Lock (COMPLIANCE, 1 day) in the embedded store",
            f"    aws s3 ls s3://{AUDIT_BUCKET} --recursive",
            f"    keyledger audit verify s3://{AUDIT_BUCKET}/ --public-key {pub}",
        ]
    if "cloudwatch" in names:
        lines += [
            f"  cloudwatch://{AUDIT_LOG_GROUP}   log group, one stream per chain",
            f"    aws logs get-log-events --log-group-name {AUDIT_LOG_GROUP} "
            f"--log-stream-name {env.config.audit.chain_id} --query 'events[].message'",
            f"    keyledger audit verify cloudwatch://{AUDIT_LOG_GROUP} --public-key {pub}",
        ]
    if "stdout" in names:
        lines.append("  stdout                    one JSON event per line (logs go to stderr)")
    return "\n".join(lines) + "\n"


def _aws_hint() -> str:
    """A line for when no ``aws`` command will be found (keyledger installed without it)."""
    if shutil.which("aws", path=scripts_dir()) or shutil.which("aws"):
        return ""
    return "  # no aws CLI found: pip install awscli, or use the boto3 lines below\n"


def _aws_command() -> str:
    """``aws`` as a terminal without dev.env finds it: by its path when it is ours."""
    ours = Path(scripts_dir()) / "aws"
    return shlex.quote(str(ours)) if ours.exists() else "aws"


_GCP_CURL = (
    'curl -s -H "Authorization: Bearer $KEYLEDGER_TOKEN" '
    '"$KEYLEDGER_GCP_ENDPOINT/v1/projects/$KEYLEDGER_GCP_PROJECT'
    '/secrets/staging-db-password/versions/latest:access"'
)


def _gcp_lines(grpc_target: str) -> str:
    """Google's part of the banner: a curl line and the Python client over REST and gRPC,
    each working as pasted once dev.env is loaded (its python is this keyledger's)."""
    name = (
        "f\"projects/{os.environ['KEYLEDGER_GCP_PROJECT']}"
        '/secrets/staging-db-password/versions/latest"'
    )
    return f"""
Google Cloud Secret Manager, project {GCP_PROJECT} ({GCP_STORE_PROJECT} in the stand-in):
REST on the same endpoint (/v1/...), gRPC on {grpc_target}, demo-app's bearer token in
$KEYLEDGER_TOKEN (a new one at each start). Secrets: staging-db-password, prod-db-password,
prod-payments-api-key. In the terminal that loaded dev.env:

  {_GCP_CURL}

REST (google-cloud-secret-manager; prod-payments-api-key raises Forbidden):

python - <<'EOF'
import os
from google.api_core.client_options import ClientOptions
from google.cloud import secretmanager
from google.oauth2.credentials import Credentials
sm = secretmanager.SecretManagerServiceClient(
    transport="rest",
    credentials=Credentials(token=os.environ["KEYLEDGER_TOKEN"]),
    client_options=ClientOptions(api_endpoint=os.environ["KEYLEDGER_GCP_ENDPOINT"]),
)
name = {name}
print(sm.access_secret_version(name=name).payload.data.decode())
EOF

gRPC (the token as metadata; prod-payments-api-key raises PermissionDenied):

python - <<'EOF'
import os, grpc
from google.cloud import secretmanager
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)
channel = grpc.insecure_channel(os.environ["KEYLEDGER_GCP_GRPC_TARGET"])
sm = secretmanager.SecretManagerServiceClient(
    transport=SecretManagerServiceGrpcTransport(channel=channel)
)
token = [("authorization", "Bearer " + os.environ["KEYLEDGER_TOKEN"])]
name = {name}
print(sm.access_secret_version(name=name, metadata=token).payload.data.decode())
EOF
"""


_AZURE_CURL = (
    'curl -s --cacert "$KEYLEDGER_CA" -H "Authorization: Bearer $KEYLEDGER_TOKEN" '
    '"$KEYLEDGER_AZURE_VAULT_URL/secrets/staging-db-password/?api-version=7.4"'
)


def _azure_lines(env: DevEnvironment, var: str) -> str:
    """Azure's part of the banner, and how each client trusts the local CA."""
    https = https_url(env.config)
    return f"""
Azure Key Vault, vault {AZURE_VAULT} (the Key Vault stand-in behind keyledger), at
$KEYLEDGER_AZURE_VAULT_URL: {https} (Azure's SDKs send tokens only over
HTTPS), with demo-app's token in $KEYLEDGER_TOKEN. Secrets: {", ".join(DEMO_AZURE_SECRETS)}.

  {_AZURE_CURL}

azure-keyvault-secrets (prod-payments-api-key raises HttpResponseError 403):

python - <<'EOF'
import os, time
from azure.core.credentials import AccessToken
from azure.keyvault.secrets import SecretClient

class KeyledgerToken:  # demo-app's keyledger token, handed over as Azure's SDKs take one
    def get_token(self, *scopes, **kwargs):
        return AccessToken(os.environ["KEYLEDGER_TOKEN"], int(time.time()) + 3600)

client = SecretClient(
    vault_url=os.environ["KEYLEDGER_AZURE_VAULT_URL"],
    credential=KeyledgerToken(),
    connection_verify=os.environ["KEYLEDGER_CA"],  # trust the demo's local CA
    verify_challenge_resource=False,  # 127.0.0.1 is not a name under vault.azure.net
)
print(client.get_secret("staging-db-password").value)
EOF

Every protocol is also served over HTTPS on {https}, its certificate signed by
the local CA {var}/tls/ca.pem ($KEYLEDGER_CA). To trust it:

  Python (Azure)  SecretClient(..., connection_verify=os.environ["KEYLEDGER_CA"])
  Node.js         NODE_EXTRA_CA_CERTS="$KEYLEDGER_CA" node app.js
  aws, boto3      AWS_CA_BUNDLE="$KEYLEDGER_CA" aws --endpoint-url {https} \\
                    secretsmanager get-secret-value --secret-id staging/db/password
  curl            curl --cacert "$KEYLEDGER_CA" ...
"""


def banner(env: DevEnvironment, *, grpc_target: str, var_display: str) -> str:
    """What a newcomer needs to call the dev proxy, ready to paste."""
    listen = env.config.listen
    endpoint = f"http://{listen.host}:{listen.port}"
    admin = env.config.admin
    assert admin is not None
    admin_url = f"http://{admin.host}:{admin.port}"
    admin_token = (admin.token_file.read_text().strip()) if admin.token_file else "-"
    q = shlex.quote
    return f"""
keyledger (dev) is listening on {endpoint} and {https_url(env.config)}
-- AWS, Google and Azure protocols on both

  endpoint URL       {endpoint}
  access key id      {env.access_key_id}
  secret access key  {env.secret_access_key}
  region             {REGION}
  identity           {DEMO_IDENTITY}   (policy: {example_policy_dir() / "demo.yaml"})
  audit journal      {var_display}/audit/   (chain "dev", signed checkpoints)
  checkpoint key     {var_display}/keys/checkpoint.pub   (public; verifies the journal)
  admin API          {admin_url}   (health, readiness, metrics, live audit stream)
  admin token        {admin_token}
  web console        {admin_url}/ui/   (sign in with the admin token)

Try it from another terminal (dev.env also puts this keyledger and aws first on PATH):

  cd {q(os.getcwd())}
  set -a; . {var_display}/dev.env; set +a
{_aws_hint()}  aws secretsmanager get-secret-value --secret-id staging/db/password
  aws secretsmanager get-secret-value --secret-id prod/payments/api-key   # denied by policy
  keyledger audit tail {var_display}/audit -f            # or, from the admin API:
  keyledger audit tail --url "$KEYLEDGER_ADMIN_URL" -f
  keyledger audit verify {var_display}/audit --public-key {var_display}/keys/checkpoint.pub
  curl -s -H "Authorization: Bearer $KEYLEDGER_ADMIN_TOKEN" "$KEYLEDGER_ADMIN_URL/readyz"
  curl -s -H "Authorization: Bearer $KEYLEDGER_ADMIN_TOKEN" "$KEYLEDGER_ADMIN_URL/metrics"
{_sink_lines(env, var_display)}
Or in one line, without the env file:

  AWS_ACCESS_KEY_ID={q(env.access_key_id)} AWS_SECRET_ACCESS_KEY={q(env.secret_access_key)} \\
    {_aws_command()} --endpoint-url {endpoint} --region {REGION} \\
    secretsmanager get-secret-value --secret-id staging/db/password

boto3:

  import boto3
  sm = boto3.client("secretsmanager", endpoint_url="{endpoint}", region_name="{REGION}",
                    aws_access_key_id="{env.access_key_id}",
                    aws_secret_access_key="{env.secret_access_key}")
  print(sm.get_secret_value(SecretId="staging/db/password")["SecretString"])
{_gcp_lines(grpc_target)}{_azure_lines(env, var_display)}
Workload identities: the demo trusts an OIDC issuer of its own. A token for demo-app,
traded through keyledger's STS by the AWS CLI (no keys), or sent as a bearer token:

  keyledger dev token --subject demo-app > {var_display}/demo-app.jwt
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_ROLE_ARN="$KEYLEDGER_DEMO_ROLE_ARN" \\
    AWS_WEB_IDENTITY_TOKEN_FILE={var_display}/demo-app.jwt \\
    aws secretsmanager get-secret-value --secret-id staging/db/password

Alerts: the demo's rules ({example_rules_dir() / "demo.yaml"}) watch every call.
{DEMO_CANARY} is a canary: touching it at all raises an alert.

  aws secretsmanager get-secret-value --secret-id {DEMO_CANARY}   # denied, and flagged
  keyledger audit tail {var_display}/audit --type alert -n 1

Demo secrets (AWS): {", ".join(DEMO_SECRETS)}.  Ctrl-C stops.
"""
