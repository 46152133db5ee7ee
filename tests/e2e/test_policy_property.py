"""The proxy decides exactly as `keyledger policy explain` says, for any policy and request.

Hypothesis writes a policy set (roles, allow/deny rules over overlapping globs, bindings to
principals, groups and ``*``, and conditions of every kind), the running proxy reloads it,
and boto3 clients make requests through it. For each request, the decision in the audit
journal (effect and rule) must equal what ``keyledger policy explain --json`` prints for
the same principal, action, secret and context. The proxy decides through the index;
explain scans every rule: this holds the two to the same answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyledger.cli import main
from keyledger.proxy.app import RELOADER
from tests.conftest import RunningProxy, running_proxy

PREFIX = f"prop{time.time_ns() % 10**8}"
NAMES = [f"{PREFIX}/a", f"{PREFIX}/a/b", f"{PREFIX}/b", f"{PREFIX}/c-backup"]
MISSING = f"{PREFIX}/missing"
GLOBS = [
    f"aws:{PREFIX}/*",
    f"aws:{PREFIX}/a*",
    f"aws:{PREFIX}/a/*",
    f"aws:{PREFIX}/b",
    f"aws:{PREFIX}/?",
    f"aws:{PREFIX}/*-backup",
    f"*:{PREFIX}/a",
    "aws:*",
    "gcp:*",
]
IDENTITIES = {"app": [], "auditor": ["auditors"], "stranger": []}
_TODAY = datetime.now(UTC)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Whole-day windows that hold, or do not, all through the test, whenever it runs.
ALWAYS = {"days": "mon-sun", "timezone": "UTC"}
NEVER = {"days": _DAYS[(_TODAY + timedelta(days=3)).weekday()], "timezone": "UTC"}

conditions = st.fixed_dictionaries(
    {},
    optional={
        "source_ip": st.sampled_from(
            [["127.0.0.1/32"], ["127.0.0.0/8", "::1/128"], ["10.0.0.0/8"], ["::1/128"]]
        ),
        "time": st.sampled_from([ALWAYS, NEVER, [NEVER, ALWAYS]]),
        "principal": st.sampled_from([{"repository": "acme/*"}, {"team": "payments"}]),
        "request": st.sampled_from(
            [
                {"version_stage": "AWSCURRENT"},
                {"version_stage": ["AWSPREVIOUS", "AWSPENDING"]},
                {"protocol": "aws-*"},
                {"protocol": "gcp-rest"},
                {"operation": "Describe*"},
            ]
        ),
    },
)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "effect": draw(st.sampled_from(["allow", "allow", "deny"])),
        "actions": draw(
            st.lists(st.sampled_from(["read", "describe", "list", "*"]), min_size=1, max_size=2)
        ),
        "resources": draw(st.lists(st.sampled_from(GLOBS), min_size=1, max_size=2)),
    }
    for key in ("when", "unless"):
        block = draw(st.one_of(st.none(), conditions.filter(bool)))
        if block:
            rule[key] = block
    return rule


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    roles = []
    for r in range(draw(st.integers(1, 3))):
        role_rules = draw(st.lists(rules(), min_size=1, max_size=4))
        for i, rule in enumerate(role_rules):
            rule["id"] = f"r{r}-{i}"
        roles.append({"id": f"role{r}", "rules": role_rules})
    bindings = []
    for role in roles:
        principals = draw(
            st.lists(st.sampled_from(["app", "auditor", "stranger", "*"]), max_size=2)
        )
        groups = draw(st.lists(st.sampled_from(["auditors", "ops"]), max_size=1))
        if principals or groups:
            bindings.append({"role": role["id"], "principals": principals, "groups": groups})
    return {
        "version": 1,
        "groups": {"auditors": [], "ops": ["stranger"]},
        "roles": roles,
        "bindings": bindings,
    }


requests = st.tuples(
    st.sampled_from(sorted(IDENTITIES)),
    st.sampled_from(
        [
            ("GetSecretValue", None),
            ("GetSecretValue", "AWSCURRENT"),
            ("GetSecretValue", "AWSPREVIOUS"),
            ("DescribeSecret", None),
        ]
    ),
    st.sampled_from([*NAMES, MISSING]),
)


@dataclass
class Stand:
    proxy: RunningProxy
    clients: dict[str, Any]  # one boto3 client per identity: creating one costs ~50 ms


@pytest.fixture
def stand(tmp_path: Path, moto_url: str, store: Any, store_credentials: None) -> Iterator[Stand]:
    for name in NAMES:
        store.create_secret(Name=name, SecretString=f"value of {name}")
    # Reloads are forced by the test, one per example; no watcher racing it.
    extra = {"policy_reload": {"watch": False, "interval_s": 0.05}}
    with running_proxy(tmp_path, moto_url, extra=extra) as running:
        yield Stand(running, {name: running.client(name) for name in IDENTITIES})


def put_in_force(proxy: RunningProxy, doc: dict[str, Any]) -> Path:
    path = proxy.config.policies[0] / "app.yaml"  # type: ignore[operator]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert proxy.app is not None
    reloader = proxy.app[RELOADER]
    future = asyncio.run_coroutine_threadsafe(
        reloader.reload_if_changed(force=True),
        proxy._loop,
    )
    future.result(10)
    return path


def call(client: Any, operation: str, stage: str | None, name: str) -> str:
    """Make the request; return its request id (from the answer or the error)."""
    params: dict[str, Any] = {"SecretId": name}
    if stage is not None:
        params["VersionStage"] = stage
    try:
        if operation == "GetSecretValue":
            answer = client.get_secret_value(**params)
        else:
            answer = client.describe_secret(**params)
    except ClientError as exc:
        return str(exc.response["ResponseMetadata"]["RequestId"])
    return str(answer["ResponseMetadata"]["RequestId"])


def explain(
    capsys: pytest.CaptureFixture[str], policy: Path, event: dict[str, Any], stage: str | None
) -> dict[str, Any]:
    identity = event["principal"]["id"]
    argv = [
        "policy",
        "explain",
        str(policy),
        f"--principal={identity}",
        f"--action={event['action']}",
        f"--secret=aws:{event['resource']['secret']}",
        f"--source-ip={event['request']['source_ip']}",
        f"--at={event['time']}",
        f"--protocol={event['request']['protocol']}",
        f"--operation={event['request']['operation']}",
        "--json",
    ]
    argv += [f"--group={g}" for g in IDENTITIES[identity]]
    if stage is not None:
        argv.append(f"--version-stage={stage}")
    capsys.readouterr()
    code = main(argv)
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == (0 if result["effect"] == "allow" else 3)
    return result


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=policies(), batch=st.lists(requests, min_size=1, max_size=4))
def test_proxy_decisions_match_policy_explain(
    stand: Stand,
    capsys: pytest.CaptureFixture[str],
    doc: dict[str, Any],
    batch: list[tuple[str, tuple[str, str | None], str]],
) -> None:
    """For generated policies and requests, the journal's effect and rule equal explain's."""
    policy = put_in_force(stand.proxy, doc)
    for identity, (operation, stage), name in batch:
        request_id = call(stand.clients[identity], operation, stage, name)
        (event,) = [e for e in stand.proxy.events("access") if e["request"]["id"] == request_id]
        # The stage the AWS frontend assigns: as asked, else AWSCURRENT for a plain read.
        implied = stage or ("AWSCURRENT" if operation == "GetSecretValue" else None)
        expected = explain(capsys, policy, event, implied)
        got = event["decision"]
        assert (got["effect"], got["rule"]) == (expected["effect"], expected["rule"]), (
            f"{identity} {operation}({name}, stage={stage}) under\n"
            f"{yaml.safe_dump(doc, sort_keys=False)}"
        )
        assert got["policy_hash"] == expected["policy_hash"]
