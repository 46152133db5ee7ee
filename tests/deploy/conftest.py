"""What the deploy/ tests share: where things are, and the linters `make` installs.

The linters and validators (hadolint, kubernetes-validate, python-hcl2, checkov) live in
venvs of their own under .venv-deploy/ (``make deploy-tools``), away from keyledger's
dependencies. Without them a developer's run skips those tests and says why; under CI
(CI=true) a missing tool fails the run instead, so a green CI always means they ran.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
TERRAFORM = DEPLOY / "terraform" / "aws"
SYSTEMD = DEPLOY / "systemd"
CONTAINER = DEPLOY / "container"
TOOLS_VENV = ROOT / ".venv-deploy"


@dataclass(frozen=True)
class DeployTools:
    """Paths of the installed tools."""

    hadolint: Path
    kubernetes_validate: Path
    tools_python: Path  # has python-hcl2, setuptools and wheel
    checkov: Path


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI must run the deploy checks: `make deploy-tools`)")
    pytest.skip(f"{reason}: run `make deploy-tools` (or `make test`) to install them")


@pytest.fixture(scope="session")
def tools() -> DeployTools:
    """The deploy tools; skipped when absent on a developer's machine, failed under CI."""
    if not (TOOLS_VENV / ".installed").exists():
        _missing(f"the deploy tools are not installed in {TOOLS_VENV.name}/")
    found = DeployTools(
        hadolint=TOOLS_VENV / "tools" / "bin" / "hadolint",
        kubernetes_validate=TOOLS_VENV / "tools" / "bin" / "kubernetes-validate",
        tools_python=TOOLS_VENV / "tools" / "bin" / "python",
        checkov=TOOLS_VENV / "checkov" / "bin" / "checkov",
    )
    for path in (found.hadolint, found.kubernetes_validate, found.tools_python, found.checkov):
        if not os.access(path, os.X_OK):
            _missing(f"{path.relative_to(ROOT)} is missing")
    return found


def run(
    command: list[str | Path], *, timeout: float = 120, cwd: Path = ROOT, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion, output captured as text; never raises on its exit status."""
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **env},
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every document of a (multi-document) YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def load_healthcheck() -> ModuleType:
    """deploy/container/healthcheck.py as a module (the image runs it as a script)."""
    spec = importlib.util.spec_from_file_location(
        "keyledger_healthcheck", CONTAINER / "healthcheck.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
