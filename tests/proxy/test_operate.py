"""What an operator watches: the admin API's token, /healthz, /readyz and /metrics.

keyledger runs in front of the real moto server with its admin API on its own socket,
wired as `keyledger serve` wires it; boto3 makes the calls; the metrics are read back with
prometheus-client's own parser of the text format.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_POLICY, RunningProxy, journal_events, running_proxy, sm_client


def get(url: str, token: str | None = None, *, authorization: str = "") -> tuple[int, bytes]:
    """GET over HTTP, with ``token`` as a bearer token (or ``authorization`` verbatim)."""
    assert url.startswith("http://")
    request = urllib.request.Request(url)  # noqa: S310 (http only, asserted)
    if token is not None:
        authorization = f"Bearer {token}"
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def readyz(proxy: RunningProxy, token: str | None = None) -> tuple[int, dict[str, Any]]:
    status, body = get(f"{proxy.admin_url}/readyz", token)
    return status, json.loads(body)


class Metrics:
    """One scrape of /metrics, parsed."""

    def __init__(self, proxy: RunningProxy) -> None:
        status, body = get(f"{proxy.admin_url}/metrics", proxy.admin_token)
        assert status == 200, body
        self.samples = [
            sample
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        found = [
            s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()
        ]
        assert found, f"no sample {name}{labels}"
        return sum(found)

    def labels(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]


@pytest.fixture
def operated(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> Iterator[RunningProxy]:
    store.create_secret(Name="app/db", SecretString="s3cr3t-db")
    store.create_secret(Name="app/forbidden-x", SecretString="s3cr3t-forbidden")
    with running_proxy(tmp_path, moto_url) as proxy:
        yield proxy


class TestToken:
    PATHS = ("/readyz", "/metrics", "/v1/sinks", "/v1/audit/stream")

    @pytest.mark.parametrize("path", PATHS)
    def test_every_endpoint_but_healthz_refuses_a_missing_or_wrong_token(
        self, operated: RunningProxy, path: str
    ) -> None:
        token = operated.admin_token
        wrong = ("x" * len(token), token[:-1], token + "x", token.upper(), "")
        for attempt in (None, *wrong):
            status, body = get(f"{operated.admin_url}{path}", attempt)
            assert status == 401, (path, attempt)
            assert json.loads(body) == {"error": "missing or wrong admin token"}
        # The token itself, but not as a bearer token.
        for authorization in (token, f"Basic {token}", f"bearer  {token}"):
            assert get(f"{operated.admin_url}{path}", authorization=authorization)[0] == 401

    def test_healthz_is_open_and_says_nothing_more(self, operated: RunningProxy) -> None:
        assert get(f"{operated.admin_url}/healthz") == (200, b"ok\n")

    def test_the_data_plane_serves_no_admin_endpoint(self, operated: RunningProxy) -> None:
        """Metrics and readiness live on the admin port only: the data plane answers an
        SDK error for these paths, never the admin body."""
        for path in ("/healthz", "/readyz", "/metrics"):
            status, body = get(f"{operated.url}{path}", operated.admin_token)
            assert status >= 400
            assert b"keyledger_" not in body
            assert b'"checks"' not in body


class TestReadiness:
    def test_ready_names_every_check_with_its_detail(self, operated: RunningProxy) -> None:
        status, body = readyz(operated, operated.admin_token)

        assert status == 200
        assert body["ready"] is True
        assert set(body["checks"]) == {"config", "policy", "journal", "backend"}
        assert all(check["ok"] for check in body["checks"].values())
        policy_hash = journal_events(operated.journal, "lifecycle")[0]["detail"]["policy_hash"]
        assert policy_hash in body["checks"]["policy"]["detail"]
        assert body["checks"]["backend"]["detail"] == "aws answers"

    def test_a_store_that_does_not_answer_makes_the_replica_unready(
        self, tmp_path: Path, store_credentials: None
    ) -> None:
        with running_proxy(tmp_path, "http://127.0.0.1:9") as proxy:  # nothing listens
            status, body = readyz(proxy, proxy.admin_token)
            healthz = get(f"{proxy.admin_url}/healthz")

        assert status == 503
        assert body["ready"] is False
        assert body["checks"]["backend"]["ok"] is False
        assert body["checks"]["backend"]["detail"].startswith("aws: ")
        assert all(body["checks"][name]["ok"] for name in ("config", "policy", "journal"))
        assert healthz == (200, b"ok\n")  # alive: restarting it would not help

    def test_open_readyz_serves_probes_without_the_token_but_no_details(
        self, tmp_path: Path, moto_url: str, store: Any, store_credentials: None
    ) -> None:
        admin = {"listen": "127.0.0.1:0", "token_file": "keys/admin.token", "open_readyz": True}
        with running_proxy(tmp_path, moto_url, extra={"admin": admin}) as proxy:
            anonymous = readyz(proxy)
            with_token = readyz(proxy, proxy.admin_token)
            metrics = get(f"{proxy.admin_url}/metrics")

        assert anonymous[0] == 200
        assert anonymous[1]["checks"]["journal"] == {"ok": True}
        assert "detail" in with_token[1]["checks"]["journal"]
        assert metrics[0] == 401  # only readiness opened


class TestMetrics:
    def test_counts_follow_a_known_sequence_of_calls(self, operated: RunningProxy) -> None:
        before = Metrics(operated)
        app = operated.client("app")
        app.get_secret_value(SecretId="app/db")
        app.get_secret_value(SecretId="app/db")
        app.list_secrets()
        for client, name in (
            (app, "app/forbidden-x"),  # a deny rule
            (operated.client("stranger"), "app/db"),  # no rule at all
            (app, "app/missing"),  # allowed, the store says not found
        ):
            with pytest.raises(ClientError):
                client.get_secret_value(SecretId=name)
        key = operated.keys["app"].access_key_id
        for key_id, secret in ((key, "not-the-secret"), ("AKIAUNKNOWNKEY000000", "x")):
            with pytest.raises(ClientError):
                sm_client(operated.url, key_id, secret).get_secret_value(SecretId="app/db")

        after = Metrics(operated)

        def delta(name: str, **labels: str) -> float:
            return after.value(name, **labels) - (
                before.value(name, **labels) if before.labels(name) else 0.0
            )

        requests = "keyledger_requests_total"
        read = {"protocol": "aws-json", "operation": "GetSecretValue"}
        assert delta(requests, **read, effect="allow", status="success") == 2
        assert delta(requests, **read, effect="deny", status="denied") == 2
        assert delta(requests, **read, effect="allow", status="error") == 1
        assert delta(requests, operation="ListSecrets", effect="allow", status="success") == 1
        # Authentication fails before anything is decided.
        assert delta(requests, **read, effect="none", status="denied") == 2
        assert after.value(requests) == 8
        failures = "keyledger_auth_failures_total"
        assert delta(failures, reason="signature_mismatch") == 1
        assert delta(failures, reason="unknown_access_key") == 1
        assert delta("keyledger_backend_errors_total", backend="aws", kind="not_found") == 1

        assert after.value("keyledger_request_duration_seconds_count") == 8
        assert after.value("keyledger_audit_wait_seconds_count") == 8
        # Only the calls that reached the store: two reads, the listing, the missing one.
        assert after.value("keyledger_backend_duration_seconds_count", backend="aws") == 4
        total = after.value("keyledger_request_duration_seconds_sum")
        backend = after.value("keyledger_backend_duration_seconds_sum")
        audit = after.value("keyledger_audit_wait_seconds_sum")
        # Parts of the total, never counted twice (a failed call's event is audit time).
        assert backend > 0
        assert audit > 0
        assert backend + audit < total

        # The journal's numbers agree with the journal on disk.
        events = journal_events(operated.journal)
        assert after.value("keyledger_journal_events_total") == len(events)
        assert after.value("keyledger_journal_seq") == events[-1]["chain"]["seq"]
        assert after.value("keyledger_journal_events_per_fsync_sum") == len(events)
        fsyncs = after.value("keyledger_journal_fsync_duration_seconds_count")
        assert 1 <= fsyncs <= len(events)
        assert after.value("keyledger_audit_queue_depth") == 0
        assert after.value("keyledger_journal_writable") == 1

    def test_labels_never_carry_what_a_caller_typed(self, operated: RunningProxy) -> None:
        """An operation nobody serves is counted as "unknown": a caller cannot mint series."""
        client = operated.client("app")
        client.meta.events.register(
            "before-sign.secrets-manager.*",
            lambda request, **_: request.headers.replace_header(
                "X-Amz-Target", "secretsmanager.Made-Up-<script>"
            ),
        )
        with pytest.raises(ClientError):
            client.get_secret_value(SecretId="app/db")

        operations = {
            labels["operation"] for labels in Metrics(operated).labels("keyledger_requests_total")
        }
        assert operations == {"unknown"}

    def test_policy_hash_and_reloads(self, operated: RunningProxy, tmp_path: Path) -> None:
        first = Metrics(operated)
        (info,) = first.labels("keyledger_policy_info")
        assert info["hash"] == journal_events(operated.journal)[0]["detail"]["policy_hash"]
        policy = tmp_path / "policies" / "app.yaml"

        policy.write_text(TEST_POLICY.replace("app-read", "app-read-v2"))
        reload = wait_for_event(operated, "policy_reload", 1)
        policy.write_text("version: 1\nroles: [")  # broken: rejected, the last good stays
        rejected = wait_for_event(operated, "policy_reload", 2)
        after = Metrics(operated)

        assert reload["outcome"]["status"] == "success"
        assert rejected["outcome"]["status"] == "error"
        (info,) = after.labels("keyledger_policy_info")
        assert (
            info["hash"]
            == reload["detail"]["new_hash"]
            != first.labels("keyledger_policy_info")[0]["hash"]
        )
        assert after.value("keyledger_policy_reloads_total", result="applied") == 1
        assert after.value("keyledger_policy_reloads_total", result="rejected") == 1


def wait_for_event(proxy: RunningProxy, kind: str, count: int) -> dict[str, Any]:
    """The ``count``-th event of type ``kind``, once it is in the journal."""
    deadline = time.monotonic() + 15
    while len(found := proxy.events(kind)) < count:
        assert time.monotonic() < deadline, f"no {kind} event #{count}"
        time.sleep(0.05)
    return found[count - 1]
