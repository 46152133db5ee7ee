"""deploy/kubernetes: manifests that validate, and a pod an operator can rely on."""

from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from keyledger.proxy.config import (
    CloudWatchSinkConfig,
    S3SinkConfig,
    load_config,
    parse_listen,
)
from tests.deploy.conftest import KUBERNETES, ROOT, DeployTools, load_documents, load_yaml, run

# Kubernetes versions the manifests are checked against: the oldest they need (the preStop
# sleep action is on by default from 1.30) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", None)
EXAMPLES = "*.example.yaml"  # documented templates, never applied


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object applied by the kustomization, by (kind, name); examples left out."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        if fnmatch.fnmatch(path.name, EXAMPLES):
            continue
        for doc in load_documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} twice"
            found[key] = doc
    return found


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(KUBERNETES / "kustomization.yaml")
    return doc


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return resources()


@pytest.fixture(scope="module")
def deployment(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return objects[("Deployment", "keyledger")]


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    assert only["name"] == "keyledger"
    result: dict[str, Any] = only
    return result


def generated_configmaps(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """The ConfigMaps kustomize's configMapGenerator makes (names before any hash suffix)."""
    made = []
    for generator in kustomization["configMapGenerator"]:
        data = {}
        for entry in generator["files"]:
            key, _, source = entry.rpartition("=")
            data[key or PurePosixPath(source).name] = (KUBERNETES / source).read_text()
        made.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"], "namespace": kustomization["namespace"]},
                "data": data,
            }
        )
    return made


def configmap(kustomization: dict[str, Any], name: str) -> dict[str, str]:
    for made in generated_configmaps(kustomization):
        if made["metadata"]["name"] == name:
            data: dict[str, str] = made["data"]
            return data
    raise AssertionError(f"no ConfigMap {name} is generated")


def mount_of(pod: dict[str, Any], container: dict[str, Any], volume: str) -> tuple[str, Any]:
    """(mountPath, volume source) of the volume named ``volume``."""
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    (source,) = [v for v in pod["volumes"] if v["name"] == volume]
    return mount["mountPath"], source


def port_number(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


@pytest.fixture(scope="module")
def k8s_config_text(kustomization: dict[str, Any], container: dict[str, Any]) -> str:
    """config.yaml as the pod sees it: the key the --config argument names."""
    config_path = PurePosixPath(container["args"][container["args"].index("--config") + 1])
    data = configmap(kustomization, "keyledger-config")
    assert config_path.name in data
    return data[config_path.name]


# -- schemas ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validation_files(
    kustomization: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    generated = tmp_path_factory.mktemp("generated") / "configmaps.yaml"
    generated.write_text(yaml.safe_dump_all(generated_configmaps(kustomization)))
    return [*manifest_files(), generated]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda v: v or "latest")
def test_every_manifest_validates_against_the_kubernetes_schemas(
    tools: DeployTools, validation_files: list[Path], version: str | None
) -> None:
    """Strict schema validation (no unknown fields) of every object, generated ones too."""
    command: list[str | Path] = [tools.kubernetes_validate, "--strict"]
    if version:
        command += ["--kubernetes-version", version]
    result = run([*command, *validation_files])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    expected = sum(len(load_documents(path)) for path in validation_files)
    assert len(lines) == expected, lines
    assert all(line.startswith("INFO") and " passed " in line for line in lines), lines


def test_the_validator_catches_a_misspelt_field(tools: DeployTools, tmp_path: Path) -> None:
    """The schema check is real: a typo in a security setting fails it."""
    broken = tmp_path / "deployment.yaml"
    text = (KUBERNETES / "deployment.yaml").read_text()
    broken.write_text(text.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
    result = run([tools.kubernetes_validate, "--strict", broken])
    assert result.returncode != 0
    assert "readOnlyRootFileSystem" in result.stdout + result.stderr


# -- the kustomization --------------------------------------------------------------------


def test_kustomization_applies_every_manifest_but_the_examples(
    kustomization: dict[str, Any],
) -> None:
    """`kubectl apply -k` creates every object in the folder; the Secret template is not one."""
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in manifest_files()}
    assert listed <= on_disk, listed - on_disk
    left_out = on_disk - listed
    assert left_out == {"secret.example.yaml"}
    assert all(fnmatch.fnmatch(name, EXAMPLES) for name in left_out)
    docs = (ROOT / "docs" / "deploying.md").read_text()
    assert "secret.example.yaml" in docs
    assert "kubectl apply -k deploy/kubernetes" in docs


def test_policies_configmap_holds_every_policy_file(kustomization: dict[str, Any]) -> None:
    """Every policy file in policies/ is generated into the ConfigMap (tests stay out)."""
    generators = {g["name"]: g for g in kustomization["configMapGenerator"]}
    policies = generators["keyledger-policies"]
    files = {PurePosixPath(f).name for f in policies["files"]}
    on_disk = {
        p.name for p in (KUBERNETES / "policies").glob("*.yaml") if not p.stem.endswith("_test")
    }
    assert files == on_disk
    # A stable name: an edit updates the mounted folder and the replicas reload it live.
    assert policies["options"]["disableNameSuffixHash"] is True
    # The config's name is hashed: an edit rolls the Deployment (config is read at start).
    assert "options" not in generators["keyledger-config"]
    assert generators["keyledger-config"]["files"] == ["config/config.yaml"]


def test_one_namespace_and_image(
    kustomization: dict[str, Any],
    objects: dict[tuple[str, str], dict[str, Any]],
    container: dict[str, Any],
) -> None:
    assert kustomization["namespace"] == "keyledger"
    assert ("Namespace", "keyledger") in objects
    for doc in load_documents(KUBERNETES / "secret.example.yaml"):
        assert doc["metadata"]["namespace"] == kustomization["namespace"]
    (image,) = kustomization["images"]
    assert container["image"].split(":")[0] == image["name"]
    assert image["newTag"]


# -- the pod ------------------------------------------------------------------------------


def test_pod_runs_non_root_read_only_without_privileges(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    """The restricted Pod Security Standard, and a read-only root file system."""
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] >= 1000
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == pod_security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in security["capabilities"]
    assert security.get("privileged", False) is False
    assert pod["automountServiceAccountToken"] is False
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"configMap", "secret", "emptyDir", "projected"}
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod


def test_the_image_user_is_the_pod_user(container: dict[str, Any]) -> None:
    """runAsUser matches the Dockerfile's USER, so the state volume's owner can write."""
    dockerfile = (ROOT / "deploy" / "container" / "Dockerfile").read_text()
    user_lines = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user_lines == [
        f"{container['securityContext']['runAsUser']}:{container['securityContext']['runAsGroup']}"
    ]


def test_resources_have_requests_and_limits(container: dict[str, Any]) -> None:
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind


def test_probes_use_the_admin_port(container: dict[str, Any], k8s_config_text: str) -> None:
    """Liveness /healthz and readiness /readyz on the admin port, in the scheme it serves."""
    config = yaml.safe_load(k8s_config_text)
    scheme = "HTTPS" if config.get("tls") else "HTTP"
    admin_port = parse_listen(config["admin"]["listen"])[1]
    assert port_number(container, "admin") == admin_port
    expected = {
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"], get["scheme"]) == (path, "admin", scheme), probe
        assert "httpHeaders" not in get  # kubelet has no token to send
    # kubelet sends no token: /readyz must be open (status and check names only).
    assert config["admin"]["open_readyz"] is True
    assert port_number(container, "https") == parse_listen(config["listen"])[1]


def test_shutdown_fits_in_the_grace_period(
    pod: dict[str, Any], container: dict[str, Any], k8s_config_text: str
) -> None:
    """preStop keeps serving until endpoints drop it; then requests and the drain fit."""
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5
    config = yaml.safe_load(k8s_config_text)
    in_flight = float(config["limits"]["shutdown_timeout_s"])
    drain = float(str(config["audit"]["shipping"]["drain"]).removesuffix("s"))
    grace = pod["terminationGracePeriodSeconds"]
    # 10 s to spare for the closing checkpoint and the process exit.
    assert grace >= pre_stop + in_flight + drain + 10, (grace, pre_stop, in_flight, drain)


def test_config_and_policies_are_mounted_as_folders(
    pod: dict[str, Any], container: dict[str, Any], k8s_config_text: str
) -> None:
    """No subPath anywhere (those mounts never update); the paths are the config's."""
    assert all("subPath" not in m and "subPathExpr" not in m for m in container["volumeMounts"])
    config = yaml.safe_load(k8s_config_text)
    config_dir, config_source = mount_of(pod, container, "config")
    assert config_source["configMap"]["name"] == "keyledger-config"
    args = container["args"]
    assert args[:1] == ["serve"]
    assert PurePosixPath(args[args.index("--config") + 1]).parent == PurePosixPath(config_dir)
    policies_dir, policies_source = mount_of(pod, container, "policies")
    assert policies_source["configMap"]["name"] == "keyledger-policies"
    assert [PurePosixPath(p) for p in config["policies"]] == [PurePosixPath(policies_dir)]
    tls_dir, tls_source = mount_of(pod, container, "tls")
    assert tls_source["secret"]["secretName"] == "keyledger-tls"
    assert config["tls"] == {"cert": f"{tls_dir}/tls.crt", "key": f"{tls_dir}/tls.key"}
    identities_dir, identities_source = mount_of(pod, container, "identities")
    assert identities_source["secret"]["secretName"] == "keyledger-identities"
    assert config["identities"]["path"] == f"{identities_dir}/identities.json"
    for name in ("config", "policies", "identities", "tls"):
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == name]
        assert mount["readOnly"] is True, name


def test_everything_written_goes_to_a_volume(
    pod: dict[str, Any], container: dict[str, Any], k8s_config_text: str
) -> None:
    """The journal (and its cursors) and /tmp are emptyDirs; nothing else is writable."""
    config = yaml.safe_load(k8s_config_text)
    state_dir, state = mount_of(pod, container, "state")
    assert "emptyDir" in state
    assert state["emptyDir"]["sizeLimit"]
    assert PurePosixPath(config["audit"]["journal"]).is_relative_to(state_dir)
    tmp_dir, tmp = mount_of(pod, container, "tmp")
    assert tmp_dir == "/tmp"
    assert "emptyDir" in tmp
    # Each replica its own chain: chain_id defaults to the host name, the pod's name.
    assert "chain_id" not in config["audit"]
    # An emptyDir is only safe with remote copies to drain to.
    assert {sink["type"] for sink in config["audit"]["sinks"]} >= {"s3", "cloudwatch"}


def test_secrets_come_from_secret_refs_the_example_documents(
    container: dict[str, Any], k8s_config_text: str
) -> None:
    """Every key the config reads from the environment is set from a Secret key that the
    example Secret names, and the example holds no value."""
    config = yaml.safe_load(k8s_config_text)
    wanted = {
        config["identities"]["key_env"],
        config["audit"]["fingerprint_key_env"],
        config["audit"]["checkpoints"]["key_env"],
        config["admin"]["token_env"],
    }
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(refs) == wanted
    assert all("value" not in e for e in container["env"])
    examples = {
        d["metadata"]["name"]: d for d in load_documents(KUBERNETES / "secret.example.yaml")
    }
    for ref in refs.values():
        assert ref["key"] in examples[ref["name"]]["stringData"], ref
    assert set(examples["keyledger-identities"]["stringData"]) == {"identities.json"}
    assert set(examples["keyledger-tls"]["stringData"]) == {"tls.crt", "tls.key"}
    assert examples["keyledger-tls"]["type"] == "kubernetes.io/tls"
    for example in examples.values():
        assert all(value == "" for value in example["stringData"].values())


def test_no_replica_count_fights_the_autoscaler(
    deployment: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    hpa = objects[("HorizontalPodAutoscaler", "keyledger")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["minReplicas"] >= 2
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_selectors_match_the_pods(
    deployment: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """The Services, the PodDisruptionBudget and the NetworkPolicy select exactly the pods."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for key in (("Service", "keyledger"), ("Service", "keyledger-admin")):
        assert objects[key]["spec"]["selector"].items() <= labels.items(), key
    pdb = objects[("PodDisruptionBudget", "keyledger")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    policy = objects[("NetworkPolicy", "keyledger")]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_services_keep_the_data_plane_and_admin_apart(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    data_plane = objects[("Service", "keyledger")]["spec"]["ports"]
    admin = objects[("Service", "keyledger-admin")]["spec"]["ports"]
    assert [(p["name"], p["targetPort"]) for p in data_plane] == [("https", "https")]
    assert [(p["name"], p["targetPort"]) for p in admin] == [("admin", "admin")]


def test_network_policy_admits_admin_only_from_monitoring(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Admin port: monitoring namespaces only. Data plane: labelled client namespaces."""
    spec = objects[("NetworkPolicy", "keyledger")]["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    by_port: dict[str, list[dict[str, Any]]] = {}
    for rule in spec["ingress"]:
        assert rule["from"], "a rule without 'from' admits everyone"
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    assert set(by_port) == {"https", "admin"}
    assert by_port["admin"] == [
        {"namespaceSelector": {"matchLabels": {"keyledger.io/monitoring": "true"}}}
    ]
    assert by_port["https"] == [
        {"namespaceSelector": {"matchLabels": {"keyledger.io/client": "true"}}}
    ]
    egress_ports = {(p["port"], p["protocol"]) for r in spec["egress"] for p in r["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


def test_service_account_carries_the_irsa_role_placeholder(
    pod: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    account = objects[("ServiceAccount", pod["serviceAccountName"])]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.startswith("arn:aws:iam::")
    assert ":role/" in role
    assert account["automountServiceAccountToken"] is False


def test_namespace_enforces_the_restricted_pod_security_standard(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    labels = objects[("Namespace", "keyledger")]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- the config and policies inside the ConfigMaps -----------------------------------------


@pytest.fixture
def mounted(kustomization: dict[str, Any], tmp_path: Path) -> Path:
    """The ConfigMaps' files written out as the pod's mounts would show them."""
    for made in generated_configmaps(kustomization):
        folder = tmp_path / made["metadata"]["name"]
        folder.mkdir()
        for key, text in made["data"].items():
            (folder / key).write_text(text)
    return tmp_path


def test_config_loads_with_keyledgers_own_parser(mounted: Path) -> None:
    """load_config accepts the ConfigMap's config.yaml, and it says what the docs claim."""
    config = load_config(mounted / "keyledger-config" / "config.yaml")
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 8080)
    assert config.listen.tls_cert is not None
    assert not config.listen.allow_plaintext
    assert config.admin is not None
    assert (config.admin.host, config.admin.port, config.admin.open_readyz) == (
        "0.0.0.0",
        9090,
        True,
    )
    assert config.policies == (Path("/etc/keyledger/policies"),)
    assert config.policy_reload.watch
    s3, cloudwatch = config.audit.sinks
    assert isinstance(s3, S3SinkConfig)
    assert s3.lock_mode == "COMPLIANCE"
    assert isinstance(cloudwatch, CloudWatchSinkConfig)
    # The Terraform module owns the retention; keyledger's role cannot change it.
    assert cloudwatch.retention_days is None
    assert config.audit.checkpoints.enabled
    assert config.audit.checkpoints.key_file is None
    assert config.audit.fsync


def test_policies_pass_check_and_their_tests(mounted: Path) -> None:
    """`keyledger policy check` on the mounted folder, with the config's backends; and the
    test cases kept next to the policies pass."""
    config_text = (mounted / "keyledger-config" / "config.yaml").read_text()
    local = mounted / "config.yaml"
    local.write_text(
        config_text.replace("/etc/keyledger/policies/", f"{mounted}/keyledger-policies/")
    )
    keyledger = ROOT / ".venv" / "bin" / "keyledger"
    check = run([keyledger, "policy", "check", "--config", local])
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok: 1 file(s)"), check.stdout
    cases = run([keyledger, "policy", "test", KUBERNETES / "policies"])
    assert cases.returncode == 0, cases.stdout + cases.stderr
    assert " 0 failed" in cases.stdout
