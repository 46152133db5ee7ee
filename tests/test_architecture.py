"""Data flows one way: the policy engine and the backends never reach back into the proxy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "keyledger"


def imports_of(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(PACKAGE.parent))] = names
    return found


@pytest.mark.parametrize("package", ["policies", "backends"])
def test_lower_layers_do_not_import_the_proxy_or_the_web_stack(package: str) -> None:
    """policies/ and backends/ import neither keyledger.proxy nor aiohttp; a stand-in
    (a server playing a cloud, for dev mode and tests) may serve HTTP with aiohttp."""

    def forbidden(file: str) -> tuple[str, ...]:
        if "_standin/" in file:
            return ("keyledger.proxy",)
        return ("keyledger.proxy", "aiohttp")

    offenders = {
        file: sorted(n for n in names if n.startswith(forbidden(file)))
        for file, names in imports_of(PACKAGE / package).items()
    }
    assert {f: n for f, n in offenders.items() if n} == {}


def test_policy_engine_is_synchronous() -> None:
    """The policy engine has no coroutines: it is pure and synchronous."""
    for path in (PACKAGE / "policies").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(tree)), path


def test_alert_rules_are_pure() -> None:
    """The alert engine (rules, detectors, engine, the Alert type) reads events and says
    what fires: no coroutines (but the Destination protocol's), no web stack, nothing of
    the proxy but the audit event's shape and the read side's filters; delivery and the
    service around it may do I/O."""
    pure = ("model.py", "rules.py", "detectors.py", "engine.py")
    allowed = ("keyledger.proxy.audit.events", "keyledger.proxy.audit.filters")
    for name in pure:
        path = PACKAGE / "alerts" / name
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if name != "model.py":
            assert not any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(tree)), path
        names = imports_of(PACKAGE / "alerts")[f"keyledger/alerts/{name}"]
        reaching = {n for n in names if n.startswith(("aiohttp", "keyledger.proxy"))}
        assert reaching <= set(allowed), (name, reaching)
