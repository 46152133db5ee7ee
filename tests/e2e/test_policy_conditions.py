"""Conditions, end to end: boto3 callers through the proxy, decided by where they come from,
what their identity carries, and which version they ask for, and recorded as such."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import RunningProxy, running_proxy

POLICY = """\
version: 1
groups:
  auditors: []
roles:
  - id: app
    rules:
      - id: team-reads-current-from-loopback
        actions: [read]
        resources: ["aws:cond/*"]
        when:
          source_ip: [127.0.0.0/8, "::1/128"]
          principal: {team: payments}
          request: {version_stage: AWSCURRENT}
      - id: nobody-from-loopback
        effect: deny
        actions: [describe]
        resources: ["aws:cond/*"]
        unless:
          source_ip: [10.0.0.0/8]
bindings:
  - role: app
    principals: [app, stranger]
"""


@pytest.fixture
def conditional(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> Iterator[RunningProxy]:
    store.create_secret(Name="cond/db", SecretString="conditional")
    with running_proxy(
        tmp_path, moto_url, policy=POLICY, attributes={"app": {"team": "payments"}}
    ) as running:
        yield running


def code_of(call: Any, **params: Any) -> str | None:
    try:
        call(**params)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


class TestConditionsThroughTheProxy:
    def test_identity_attributes_source_ip_and_stage_all_decide(
        self, conditional: RunningProxy
    ) -> None:
        """The caller with the right attribute, from loopback, reading the current version
        is served; the same caller asking for another stage, or a caller without the
        attribute, is denied; the events carry the attribute and name the rules."""
        app, stranger = conditional.client("app"), conditional.client("stranger")

        assert app.get_secret_value(SecretId="cond/db")["SecretString"] == "conditional"
        previous = {"SecretId": "cond/db", "VersionStage": "AWSPREVIOUS"}
        assert code_of(app.get_secret_value, **previous) == "AccessDeniedException"
        assert code_of(stranger.get_secret_value, SecretId="cond/db") == "AccessDeniedException"

        events = [e for e in conditional.events("access") if e["action"] == "read"]
        assert [(e["principal"]["id"], e["decision"]["effect"]) for e in events] == [
            ("app", "allow"),
            ("app", "deny"),
            ("stranger", "deny"),
        ]
        assert events[0]["principal"]["attributes"] == {"team": "payments"}
        assert events[0]["decision"]["rule"] == "team-reads-current-from-loopback"
        assert events[0]["request"]["source_ip"] == "127.0.0.1"

    def test_an_unless_deny_names_its_rule_to_the_caller(self, conditional: RunningProxy) -> None:
        """A deny that applies because the caller is outside the exempt network is an
        explicit deny, in the answer and in the journal."""
        with pytest.raises(ClientError) as caught:
            conditional.client("app").describe_secret(SecretId="cond/db")

        assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "explicit deny" in caught.value.response["Error"]["Message"]
        (event,) = [e for e in conditional.events("access") if e["action"] == "describe"]
        assert event["decision"]["rule"] == "nobody-from-loopback"
