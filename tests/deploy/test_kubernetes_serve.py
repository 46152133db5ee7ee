"""The Kubernetes config, served for real: what kubelet, a client and SIGTERM would see.

keyledger runs as a process with the ConfigMap's config.yaml, changed only where a pod and
this machine differ (addresses, and the folders the volumes would be mounted at), with its
secrets in the environment exactly as the Deployment's secretKeyRefs name them, against a
moto server standing in for Secrets Manager, S3 (Object Lock) and CloudWatch Logs.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
import botocore.config
import pytest
import yaml
from botocore.exceptions import ClientError
from cryptography.fernet import Fernet

from keyledger.proxy.audit.checkpoints import generate_key_pair
from keyledger.proxy.auth import IdentityStore
from keyledger.proxy.config import default_chain_id
from tests.conftest import clean_env, journal_events
from tests.deploy.conftest import KUBERNETES, ROOT, load_healthcheck, load_yaml
from tests.e2e.test_cli_serve import free_port
from tests.e2e.test_tls import self_signed as make_certificate

REGION = "eu-central-1"
SECRET = "apps/checkout/db-password"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, named as the keyledger-tls Secret names them."""
    folder.mkdir(parents=True)
    cert, key = make_certificate(folder)
    return cert.rename(folder / "tls.crt"), key.rename(folder / "tls.key")


def write_configmap_volume(folder: Path, files: dict[str, str]) -> None:
    """A ConfigMap volume as kubelet writes it, and updates it: the files live in a
    timestamped folder, ``..data`` links to it, and each key links through ``..data``. An
    update writes a new folder and renames a new ``..data`` link over the old one."""
    folder.mkdir(exist_ok=True)
    version = folder / f"..{time.time_ns()}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
    old = (folder / "..data").resolve() if (folder / "..data").is_symlink() else None
    (folder / "..data_tmp").symlink_to(version.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")
    if old is not None:
        for stale in old.iterdir():
            stale.unlink()
        old.rmdir()


@dataclass
class Pod:
    """keyledger serving the Kubernetes config, and what a test needs to talk to it."""

    process: subprocess.Popen[bytes]
    data_url: str
    admin_url: str
    tls: ssl.SSLContext
    ca_file: Path
    token: str
    key_id: str
    key_secret: str
    journal: Path
    public_key: Path
    env: dict[str, str]
    log: Path
    grace_s: float
    pre_stop_s: float

    def admin(self, path: str, *, token: bool = False) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        request = urllib.request.Request(self.admin_url + path, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.tls) as reply:  # noqa: S310
                return int(reply.status), reply.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def client(self) -> Any:
        return boto3.client(
            "secretsmanager",
            endpoint_url=self.data_url,
            region_name=REGION,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.key_secret,
            verify=str(self.ca_file),
            config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
        )


def copy_stderr(stream: IO[bytes], log: Path) -> None:
    with stream, log.open("ab") as out:
        for line in stream:
            out.write(line)
            out.flush()


def moto_client(service: str, moto_url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="store-admin",
        aws_secret_access_key="store-admin",
    )


@pytest.fixture
def pod(tmp_path: Path, moto_url: str) -> Iterator[Pod]:
    deployment = load_yaml(KUBERNETES / "deployment.yaml")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    config = load_yaml(KUBERNETES / "config" / "config.yaml")

    # The volumes, under tmp_path instead of their mount paths.
    def local(path: str, volume: str) -> str:
        return str(tmp_path / volume / Path(path).relative_to(mounts[volume]))

    cert, _ = self_signed(tmp_path / "tls")
    assert config["tls"]["cert"] == str(mounts["tls"] / "tls.crt")
    config["tls"] = {
        "cert": local(config["tls"]["cert"], "tls"),
        "key": local(config["tls"]["key"], "tls"),
    }
    generators = load_yaml(KUBERNETES / "kustomization.yaml")["configMapGenerator"]
    (policy_files,) = [g["files"] for g in generators if g["name"] == "keyledger-policies"]
    write_configmap_volume(
        tmp_path / "policies",
        {Path(name).name: (KUBERNETES / name).read_text() for name in policy_files},
    )
    config["policies"] = [local(p, "policies") + "/" for p in config["policies"]]
    config["audit"]["journal"] = local(config["audit"]["journal"], "state")
    config["identities"]["path"] = local(config["identities"]["path"], "identities")
    data_port, admin_port = free_port(), free_port()
    assert config["listen"] == "0.0.0.0:8080"
    assert config["admin"]["listen"] == "0.0.0.0:9090"
    config["listen"] = f"127.0.0.1:{data_port}"
    config["admin"]["listen"] = f"127.0.0.1:{admin_port}"
    config_path = tmp_path / "config" / "config.yaml"
    config_path.parent.mkdir()
    config_path.write_text(yaml.safe_dump(config))

    # The keyledger-keys Secret, and the identity store keyledger-identities would hold.
    identity_key = Fernet.generate_key()
    private_key, public_key = generate_key_pair(tmp_path / "checkpoint")
    keys = {
        "identity-key": identity_key.decode(),
        "fingerprint-key": secrets.token_hex(32),
        "checkpoint-key": private_key.read_text(),
        "admin-token": secrets.token_hex(32),
    }
    store = IdentityStore(Path(config["identities"]["path"]), identity_key)
    issued = store.create("svc-checkout", groups=("services",))
    env = clean_env(
        AWS_ACCESS_KEY_ID="keyledger-proxy",
        AWS_SECRET_ACCESS_KEY="keyledger-proxy-secret",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=moto_url,
    )
    for item in container["env"]:
        env[item["name"]] = keys[item["valueFrom"]["secretKeyRef"]["key"]]

    # What the Terraform module makes, and one secret to read.
    reset = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")  # noqa: S310
    urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 (loopback http)
    moto_client("s3", moto_url).create_bucket(
        Bucket=config["audit"]["sinks"][0]["bucket"],
        CreateBucketConfiguration={"LocationConstraint": REGION},
        ObjectLockEnabledForBucket=True,
    )
    moto_client("secretsmanager", moto_url).create_secret(Name=SECRET, SecretString="s3cr3t")

    log = tmp_path / "keyledger.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "keyledger", *container["args"][:-1], str(config_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    threading.Thread(target=copy_stderr, args=(process.stderr, log), daemon=True).start()
    tls = ssl.create_default_context(cafile=str(cert))
    running = Pod(
        process=process,
        data_url=f"https://127.0.0.1:{data_port}",
        admin_url=f"https://127.0.0.1:{admin_port}",
        tls=tls,
        ca_file=cert,
        token=keys["admin-token"],
        key_id=issued.access_key_id,
        key_secret=issued.secret_access_key,
        journal=Path(config["audit"]["journal"]),
        public_key=public_key,
        env=env,
        log=log,
        grace_s=float(spec["terminationGracePeriodSeconds"]),
        pre_stop_s=float(container["lifecycle"]["preStop"]["sleep"]["seconds"]),
    )
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def policy_reloads(pod: Pod) -> int:
    return sum(1 for event in journal_events(pod.journal) if event["type"] == "policy_reload")


def wait_until_live(pod: Pod, timeout_s: float = 60) -> None:
    """What the startupProbe does: GET /healthz over HTTPS until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pod.process.poll() is not None:
            pytest.fail(f"keyledger exited with {pod.process.returncode}:\n{pod.log.read_text()}")
        try:
            if pod.admin("/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"no answer on /healthz within {timeout_s} s:\n{pod.log.read_text()}")


def test_the_pod_serves_probes_clients_and_stops_cleanly(
    pod: Pod, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probes answer without a token, a service reads its secret over TLS, and SIGTERM
    ends in exit 0 within the grace period with every event shipped and sealed."""
    wait_until_live(pod)

    # kubelet: /healthz and /readyz without a token; the rest of the admin API needs it.
    status, body = pod.admin("/readyz")
    assert status == 200, body
    assert json.loads(body)["ready"] is True
    assert pod.admin("/metrics")[0] == 401
    assert pod.admin("/metrics", token=True)[0] == 200

    # The container's HEALTHCHECK script finds the TLS admin API on its own.
    healthcheck = load_healthcheck()
    port = pod.admin_url.rsplit(":", 1)[1]
    monkeypatch.setattr(
        healthcheck,
        "DEFAULT_URLS",
        (f"http://127.0.0.1:{port}/healthz", f"https://127.0.0.1:{port}/healthz"),
    )
    monkeypatch.delenv("KEYLEDGER_HEALTHCHECK_URL", raising=False)
    assert healthcheck.main() == 0

    # A service in the group `services` reads under apps/ and nothing else.
    client = pod.client()
    assert client.get_secret_value(SecretId=SECRET)["SecretString"] == "s3cr3t"
    with pytest.raises(ClientError) as denied:
        client.get_secret_value(SecretId="infra/root-credentials")
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"

    # A policy rollout: the ConfigMap changes, kubelet swaps the ..data link, the replica
    # reloads by itself and the next call is decided by the new set.
    policies = pod.journal.parent.parent / "policies"
    stricter = (
        (policies / "services.yaml")
        .read_text()
        .replace(
            '        actions: [delete]\n        resources: ["aws:*"]\n',
            '        actions: [delete]\n        resources: ["aws:*"]\n'
            '      - id: checkout-frozen\n        effect: deny\n        actions: ["*"]\n'
            '        resources: ["aws:apps/checkout/*"]\n',
        )
    )
    assert "checkout-frozen" in stricter
    write_configmap_volume(policies, {"services.yaml": stricter})
    deadline = time.monotonic() + 15
    while policy_reloads(pod) == 0:
        assert time.monotonic() < deadline, "the new policy was not picked up"
        time.sleep(0.2)
    with pytest.raises(ClientError) as frozen:
        client.get_secret_value(SecretId=SECRET)
    assert frozen.value.response["Error"]["Code"] == "AccessDeniedException"

    # Kubernetes: the preStop sleep, then SIGTERM; SIGKILL at the end of the grace period.
    started = time.monotonic()
    pod.process.send_signal(signal.SIGTERM)
    returncode = pod.process.wait(timeout=pod.grace_s - pod.pre_stop_s)
    log = pod.log.read_text()
    assert returncode == 0, log
    assert time.monotonic() - started < pod.grace_s - pod.pre_stop_s

    # The journal ends sealed, and the S3 copy holds every event: nothing lost with the
    # emptyDir.
    lines = journal_events(pod.journal)
    assert lines[-1]["type"] == "checkpoint"
    assert [e["type"] for e in lines].count("policy_reload") == 1
    accesses = [e for e in lines if e["type"] == "access"]
    assert [e["decision"]["rule"] for e in accesses] == [
        "services-read-apps",
        None,
        "checkout-frozen",
    ]
    assert {line["chain"]["id"] for line in lines} == {default_chain_id()}
    keyledger = [sys.executable, "-m", "keyledger", "audit", "verify"]
    local = subprocess.run(
        [*keyledger, str(pod.journal), "--public-key", str(pod.public_key)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert local.returncode == 0, local.stdout + local.stderr
    config = yaml.safe_load((pod.log.parent / "config" / "config.yaml").read_text())
    s3 = config["audit"]["sinks"][0]
    remote = subprocess.run(
        [*keyledger, f"s3://{s3['bucket']}/{s3['prefix']}/", "--public-key", str(pod.public_key)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=pod.env,
        cwd=ROOT,
    )
    assert remote.returncode == 0, remote.stdout + remote.stderr
    logs = boto3.client(
        "logs",
        endpoint_url=pod.env["AWS_ENDPOINT_URL"],
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    group = config["audit"]["sinks"][1]["log_group"]
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == [default_chain_id()]
