"""Every supported Secrets Manager operation round-trips through keyledger with boto3."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import RunningProxy


class TestOperations:
    def test_secret_lifecycle_round_trips(self, proxy: RunningProxy, store: Any) -> None:
        """Create, put, update, describe, version list, tag, untag, delete, restore: all work."""
        client = proxy.client()
        created = client.create_secret(
            Name="app/lifecycle", SecretString="v1", Tags=[{"Key": "team", "Value": "a"}]
        )
        assert created["Name"] == "app/lifecycle"
        assert created["ARN"].startswith("arn:aws:secretsmanager:")

        put = client.put_secret_value(SecretId="app/lifecycle", SecretString="v2")
        assert put["VersionStages"] == ["AWSCURRENT"]
        client.update_secret(SecretId="app/lifecycle", Description="updated")
        client.tag_resource(SecretId="app/lifecycle", Tags=[{"Key": "env", "Value": "test"}])
        client.untag_resource(SecretId="app/lifecycle", TagKeys=["team"])

        described = client.describe_secret(SecretId="app/lifecycle")
        assert described["Description"] == "updated"
        assert described["Tags"] == [{"Key": "env", "Value": "test"}]
        versions = client.list_secret_version_ids(SecretId="app/lifecycle")["Versions"]
        assert {v["VersionId"] for v in versions} >= {created["VersionId"], put["VersionId"]}
        current = client.get_secret_value(SecretId="app/lifecycle")
        assert current["SecretString"] == "v2"
        previous = client.get_secret_value(SecretId="app/lifecycle", VersionStage="AWSPREVIOUS")
        assert previous["SecretString"] == "v1"

        deleted = client.delete_secret(SecretId="app/lifecycle", RecoveryWindowInDays=7)
        assert "DeletionDate" in deleted
        with pytest.raises(ClientError) as exc:
            client.get_secret_value(SecretId="app/lifecycle")
        assert exc.value.response["Error"]["Code"] == "InvalidRequestException"
        client.restore_secret(SecretId="app/lifecycle")
        assert client.get_secret_value(SecretId="app/lifecycle")["SecretString"] == "v2"

        # The store itself saw every change.
        assert store.get_secret_value(SecretId="app/lifecycle")["SecretString"] == "v2"

        events = proxy.events("access")
        outcomes = [e for e in events if e["outcome"]["status"] != "pending"]
        ops = [e["request"]["operation"] for e in outcomes]
        assert ops == [
            "CreateSecret",
            "PutSecretValue",
            "UpdateSecret",
            "TagResource",
            "UntagResource",
            "DescribeSecret",
            "ListSecretVersionIds",
            "GetSecretValue",
            "GetSecretValue",
            "DeleteSecret",
            "GetSecretValue",
            "RestoreSecret",
            "GetSecretValue",
        ]
        # Every change was recorded durably *before* it reached the store, then its outcome.
        for before, after in itertools.pairwise(events):
            if after["action"] in {"write", "rotate", "delete"}:
                if after["outcome"]["status"] == "pending":
                    continue
                assert before["outcome"]["status"] == "pending"
                assert before["request"]["id"] == after["request"]["id"]
                assert before["chain"]["seq"] + 1 == after["chain"]["seq"]
        assert sum(e["outcome"]["status"] == "pending" for e in events) == 7
        actions = {e["request"]["operation"]: e["action"] for e in outcomes}
        assert actions["CreateSecret"] == "write"
        assert actions["DeleteSecret"] == "delete"
        assert actions["DescribeSecret"] == "describe"
        versioned = [e for e in outcomes if e["resource"]["version"]]
        assert versioned[0]["resource"]["version"] == "AWSPREVIOUS"

    def test_rotate_secret_is_the_rotate_action(self, proxy: RunningProxy, store: Any) -> None:
        """RotateSecret reaches the store and is recorded as a rotate action."""
        store.create_secret(Name="app/rotating", SecretString="v1")
        rotated = proxy.client().rotate_secret(SecretId="app/rotating")
        assert rotated["Name"] == "app/rotating"
        assert rotated["VersionId"]
        event = proxy.events("access")[-1]
        assert event["action"] == "rotate"
        assert event["decision"]["rule"] == "app-manage"
        assert event["outcome"]["version_id"] == rotated["VersionId"]

    def test_writes_need_write_permission(self, proxy: RunningProxy, store: Any) -> None:
        """An identity allowed only to describe cannot create, put, tag or delete."""
        store.create_secret(Name="other/x", SecretString="v")
        auditor = proxy.client("auditor")
        calls: list[Callable[[], object]] = [
            lambda: auditor.create_secret(Name="other/new", SecretString="v"),
            lambda: auditor.put_secret_value(SecretId="other/x", SecretString="v2"),
            lambda: auditor.tag_resource(SecretId="other/x", Tags=[{"Key": "k", "Value": "v"}]),
            lambda: auditor.delete_secret(SecretId="other/x"),
            lambda: auditor.rotate_secret(SecretId="other/x"),
        ]
        for call in calls:
            with pytest.raises(ClientError) as exc:
                call()
            assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
        assert store.get_secret_value(SecretId="other/x")["SecretString"] == "v"
        with pytest.raises(ClientError):
            store.describe_secret(SecretId="other/new")
        denied = [e for e in proxy.events("access") if e["outcome"]["status"] == "denied"]
        assert [e["action"] for e in denied] == ["write", "write", "write", "delete", "rotate"]
