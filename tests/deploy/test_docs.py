"""docs/deploying.md says what deploy/ does."""

from __future__ import annotations

import re

from tests.deploy.conftest import KUBERNETES, ROOT, load_yaml

DOC = ROOT / "docs" / "deploying.md"


def test_every_path_it_names_exists() -> None:
    text = DOC.read_text()
    # In prose, tables, links and the commands to paste alike.
    paths = set(re.findall(r"(?<![\w/.-])((?:deploy|docs|tests)/[\w./*-]*[\w*/])", text))
    paths |= set(re.findall(r"\]\(\.\./([\w./-]+)\)", text))
    assert len(paths) > 10, paths
    for path in paths:
        if "*" in path:
            assert list(ROOT.glob(path)), path
        else:
            assert (ROOT / path.rstrip("/")).exists(), path
    listed = set(re.findall(r"^\| `([\w./*-]+)` \|", text, re.MULTILINE))
    for name in listed & {p.name for p in KUBERNETES.glob("*.yaml")}:
        assert (KUBERNETES / name).is_file()
    for manifest in KUBERNETES.glob("*.yaml"):
        if manifest.name != "kustomization.yaml":
            assert f"`{manifest.name}`" in text, f"{manifest.name} is not described"


def test_shutdown_numbers_match_the_manifests() -> None:
    """The seconds the guide quotes are the ones the Deployment and config use."""
    text = DOC.read_text()
    deployment = load_yaml(KUBERNETES / "deployment.yaml")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    config = load_yaml(KUBERNETES / "config" / "config.yaml")
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert f"`preStop` sleeps {pre_stop} s" in text
    assert f"`terminationGracePeriodSeconds: {spec['terminationGracePeriodSeconds']}`" in text
    assert f"`limits.shutdown_timeout_s` ({config['limits']['shutdown_timeout_s']} s)" in text
    drain = str(config["audit"]["shipping"]["drain"]).removesuffix("s")
    assert f"`audit.shipping.drain` ({drain} s)" in text
    requests = container["resources"]["requests"]
    assert f"requests {requests['cpu']} CPU / {requests['memory']}" in text
