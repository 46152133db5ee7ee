"""The admin API's JSON reads for a console: events, one event, reports, a secret, a principal,
``policy explain`` for a recorded call, and alerts.

Every test serves ``make_admin_app`` over a real socket, reading a journal that a real
``Journal`` writes in ``tmp_path``, with a real policy engine loaded from YAML, as
``keyledger serve`` wires them. The last class drives real boto3 calls through a running
keyledger and reads them back from its admin listener.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from keyledger.alerts.model import Alert, EventRef, Severity
from keyledger.proxy.admin import make_admin_app
from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    ResourceInfo,
    Status,
)
from keyledger.proxy.audit.journal import Journal, Rotation
from keyledger.proxy.audit.segments import segment_path
from keyledger.proxy.audit.stream import AuditBroadcaster
from keyledger.proxy.pipeline import PolicyHolder
from keyledger.proxy.reload import load_policy
from tests.conftest import TEST_POLICY, RunningProxy, journal_events, running_proxy
from tests.proxy.test_admin import NotAsked

CHAIN = "node-1"
TOKEN = b"admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN.decode()}"}
# A caller may name a secret or itself with anything: markup, terminal escapes, globs.
HOSTILE_SECRET = "app/<script>alert(1)</script>/\x1b[2J\x1b[31mred/*,x"
HOSTILE_PRINCIPAL = "team/<img src=x onerror=alert(1)>\x1b]0;owned\x07"

Client = TestClient[web.Request, web.Application]


def access(
    principal: str = "app",
    secret: str | None = "app/db",
    *,
    effect: str = "allow",
    rule: str | None = "app-read",
    action: str = "read",
    source_ip: str = "10.0.0.1",
    auth_method: str = "sigv4",
    groups: tuple[str, ...] = (),
    time: datetime | None = None,
    operation: str = "GetSecretValue",
) -> AuditEvent:
    return AuditEvent(
        type=EventType.ACCESS,
        time=time or datetime.now(UTC),
        request=RequestInfo(
            id=f"req-{principal}-{secret}",
            protocol="aws-json",
            operation=operation,
            source_ip=source_ip,
            user_agent="boto3/1.0",
        ),
        principal=PrincipalInfo(id=principal, auth_method=auth_method, groups=groups),
        action=action,
        resource=ResourceInfo(backend="aws", secret=secret),
        decision=DecisionInfo(
            effect=effect, rule=rule, policy_hash="sha256:then", reason=f"rule {rule}"
        ),
        outcome=Outcome(status=Status.SUCCESS if effect == "allow" else Status.DENIED),
    )


def engine_for(tmp_path: Path, policy: str = TEST_POLICY) -> Any:
    folder = tmp_path / f"policies-{abs(hash(policy))}"
    folder.mkdir(exist_ok=True)
    (folder / "app.yaml").write_text(policy)
    return load_policy([folder], ["aws"]).engine


@dataclass
class Admin:
    client: Client
    journal: Journal
    directory: Path
    policies: PolicyHolder

    def lines(self) -> list[bytes]:
        return segment_path(self.directory, CHAIN, 1).read_bytes().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        response = await self.client.get(path, params=params, headers=AUTH)
        return response.status, await _json(response)


async def _json(response: ClientResponse) -> Any:
    assert response.content_type == "application/json", await response.text()
    return orjson.loads(await response.read())


@pytest.fixture
async def admin(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Admin]:
    directory = tmp_path / "audit"
    journal = Journal(directory=directory, chain_id=CHAIN, fsync=False)
    await journal.start()
    policies = PolicyHolder(engine_for(tmp_path))
    try:
        app = make_admin_app(
            token=TOKEN,
            broadcaster=AuditBroadcaster(),
            journal_dir=directory,
            registry=CollectorRegistry(),
            readiness=NotAsked(),
            policies=policies,
            config_base=tmp_path,  # as if the config file were there
            journal=journal,
        )
        yield Admin(await aiohttp_client(app), journal, directory, policies)
    finally:
        await journal.close()


ENDPOINTS = [
    ("GET", "/v1/events"),
    ("GET", "/v1/events/node-1/1"),
    ("GET", "/v1/report"),
    ("GET", "/v1/secret?name=app/db"),
    ("GET", "/v1/principal?id=app"),
    ("GET", "/v1/explain?chain=node-1&seq=1"),
    ("GET", "/v1/alerts"),
    ("GET", "/v1/integrity"),
    ("GET", "/v1/verify"),
    ("POST", "/v1/verify"),
]


class TestToken:
    @pytest.mark.parametrize(("method", "path"), ENDPOINTS)
    @pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789abcdef"])
    async def test_every_console_endpoint_needs_the_token(
        self, admin: Admin, method: str, path: str, authorization: str | None
    ) -> None:
        """Without the admin token each endpoint answers 401 and does nothing."""
        await admin.journal.append(access())
        headers = {} if authorization is None else {"Authorization": authorization}

        response = await admin.client.request(method, path, headers=headers)

        assert response.status == 401
        assert await response.json() == {"error": "missing or wrong admin token"}
        _, state = await admin.get("/v1/verify")
        assert state["state"] == "idle"  # a refused POST started nothing


class TestEvents:
    async def test_newest_first_up_to_the_limit(self, admin: Admin) -> None:
        """Events come newest first, each exactly the journal's line, at most `limit`."""
        await admin.journal.append_many([access(f"svc-{n}") for n in range(5)])

        status, body = await admin.get("/v1/events", limit="3")

        assert status == 200
        assert [e["chain"]["seq"] for e in body["events"]] == [5, 4, 3]
        assert body["events"] == [orjson.loads(line) for line in reversed(admin.lines()[2:])]
        assert (body["count"], body["limit"], body["complete"]) == (3, 3, True)

    async def test_the_stream_filters_apply(self, admin: Admin) -> None:
        """principal, secret, effect and since filter as `audit tail` does."""
        await admin.journal.append_many(
            [
                access("svc-a", "prod/db"),
                access("svc-b", "prod/db", effect="deny", rule="no"),
                access("svc-a", "staging/db", effect="deny", rule="no"),
            ]
        )

        _, denied = await admin.get("/v1/events", effect="deny", secret="prod/*")
        _, mine = await admin.get("/v1/events", principal="svc-a")
        _, none = await admin.get("/v1/events", since="2h", until="1h")

        assert [e["principal"]["id"] for e in denied["events"]] == ["svc-b"]
        assert [e["resource"]["secret"] for e in mine["events"]] == ["staging/db", "prod/db"]
        assert none["events"] == []

    async def test_one_event_by_chain_and_seq(self, admin: Admin) -> None:
        """/v1/events/{chain}/{seq} is that event's line byte for byte; 404 when none."""
        await admin.journal.append_many([access("svc-a"), access("svc-b"), access("svc-c")])

        found = await admin.client.get(f"/v1/events/{CHAIN}/2", headers=AUTH)
        missing = await admin.client.get(f"/v1/events/{CHAIN}/4", headers=AUTH)
        other = await admin.client.get("/v1/events/elsewhere/2", headers=AUTH)

        assert found.status == 200
        assert await found.read() == admin.lines()[1]
        assert missing.status == 404
        assert (await missing.json())["error"] == f"no event 4 in chain '{CHAIN}'"
        assert other.status == 404

    async def test_one_event_is_found_in_a_later_segment(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        """After rotation, an event is looked up in the segment its seq falls in."""
        directory = tmp_path / "audit"
        journal = Journal(
            directory=directory, chain_id=CHAIN, fsync=False, rotation=Rotation(max_bytes=2000)
        )
        await journal.start()
        try:
            for n in range(12):
                await journal.append(access(f"svc-{n}"))
            app = make_admin_app(
                token=TOKEN,
                broadcaster=AuditBroadcaster(),
                journal_dir=directory,
                registry=CollectorRegistry(),
                readiness=NotAsked(),
            )
            client = await aiohttp_client(app)
            everything = journal_events(directory)
            assert len({p.name for p in directory.glob("*.jsonl")}) > 2  # it did rotate
            last = everything[-1]["chain"]["seq"]
            answers = [
                orjson.loads(
                    await (await client.get(f"/v1/events/{CHAIN}/{seq}", headers=AUTH)).read()
                )
                for seq in range(1, last + 1)
            ]
        finally:
            await journal.close()

        assert answers == everything[:last]

    async def test_hostile_names_round_trip_as_json_text(self, admin: Admin) -> None:
        """Markup and terminal escapes in names come back as the same JSON strings: never
        raw control bytes, never served as anything a browser would render."""
        await admin.journal.append(access(HOSTILE_PRINCIPAL, HOSTILE_SECRET))

        response = await admin.client.get("/v1/events", headers=AUTH)
        raw = await response.read()
        (event,) = orjson.loads(raw)["events"]

        assert event["resource"]["secret"] == HOSTILE_SECRET
        assert event["principal"]["id"] == HOSTILE_PRINCIPAL
        assert b"\x1b" not in raw  # escaped as \u001b
        assert b"\x07" not in raw
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ({"limit": "1001"}, "query parameter 'limit': expected 1 to 1000, not '1001'"),
            ({"limit": "0"}, "query parameter 'limit': expected 1 to 1000, not '0'"),
            ({"limit": "-5"}, "query parameter 'limit': expected 1 to 1000, not '-5'"),
            ({"limit": "ten"}, "query parameter 'limit': expected 1 to 1000, not 'ten'"),
            ({"action": "reed"}, "did you mean 'read'?"),
            ({"since": "yesterday"}, "query parameter 'since': 'yesterday' is not a time"),
            ({"principle": "app"}, "unknown query parameter 'principle' (did you mean"),
            ({"since": "1h", "until": "2h"}, "is after"),
        ],
    )
    async def test_bad_parameters_are_400_saying_which(
        self, admin: Admin, query: dict[str, str], message: str
    ) -> None:
        status, body = await admin.get("/v1/events", **query)

        assert status == 400
        assert message in body["error"]

    async def test_bad_places_are_400(self, admin: Admin) -> None:
        for path in (f"/v1/events/{CHAIN}/abc", f"/v1/events/{CHAIN}/0", f"/v1/events/{CHAIN}/-1"):
            status, body = await admin.get(path)
            assert status == 400, path
            assert "seq must be a positive whole number" in body["error"]


class TestReport:
    async def test_counts_per_secret_and_principal_in_the_window(self, admin: Admin) -> None:
        """The default window is the last 24 hours: older events are not counted."""
        old = datetime.now(UTC) - timedelta(days=3)
        await admin.journal.append(access("svc-old", "app/db", time=old))
        await admin.journal.append_many(
            [
                access("svc-a", "app/db"),
                access("svc-a", "app/db"),
                access("svc-b", "app/db", effect="deny", rule="app-no-forbidden"),
                access("svc-a", "app/cache"),
            ]
        )

        status, body = await admin.get("/v1/report")
        _, wider = await admin.get("/v1/report", since="4d")

        assert status == 200
        db = next(s for s in body["secrets"] if s["secret"] == "app/db")
        assert (db["events"], db["allowed"], db["denied"], db["errors"]) == (3, 2, 1, 0)
        assert [(p["principal"], p["allowed"], p["denied"]) for p in db["principals"]] == [
            ("svc-a", 2, 0),
            ("svc-b", 0, 1),
        ]
        assert db["actions"] == {"read": 3}
        assert body["bucket"] == "hour"
        assert len(body["buckets"]) == len(body["histogram"]) == len(db["histogram"])
        assert sum(body["histogram"]) == 3  # allowed accesses, every secret
        assert body["first"].endswith("Z")
        assert db["last"].endswith("Z")
        since, until = (datetime.fromisoformat(body["window"][k]) for k in ("since", "until"))
        assert until - since == timedelta(hours=24)
        wider_db = next(s for s in wider["secrets"] if s["secret"] == "app/db")
        assert wider_db["events"] == 4
        assert wider["bucket"] == "day"

    async def test_filters_narrow_the_report(self, admin: Admin) -> None:
        await admin.journal.append_many([access("svc-a", "app/db"), access("svc-b", "app/x")])

        _, body = await admin.get("/v1/report", principal="svc-b")

        assert [s["secret"] for s in body["secrets"]] == ["app/x"]

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ({"since": "40d"}, "at most 31 days"),
            ({"since": "1h", "until": "2h"}, "is not before 'until'"),
            ({"until": "soon"}, "query parameter 'until'"),
            ({"since": "1h", "extra": "1"}, "unknown query parameter 'extra'"),
        ],
    )
    async def test_bad_windows_are_400(
        self, admin: Admin, query: dict[str, str], message: str
    ) -> None:
        status, body = await admin.get("/v1/report", **query)

        assert status == 400
        assert message in body["error"]


class TestSecret:
    async def test_a_name_is_matched_exactly_never_as_a_glob(self, admin: Admin) -> None:
        """A name holding `*`, `,`, `/`, markup and escapes selects only that secret."""
        await admin.journal.append_many(
            [
                access("svc-a", HOSTILE_SECRET),
                access("svc-a", "app/<script>alert(1)</script>/\x1b[2J\x1b[31mred/other"),
                access("svc-b", HOSTILE_SECRET, effect="deny", rule="app-no-forbidden"),
            ]
        )

        status, body = await admin.get("/v1/secret", name=HOSTILE_SECRET)

        assert status == 200
        assert body["secret"] == HOSTILE_SECRET
        (only,) = body["secrets"]
        assert (only["secret"], only["allowed"], only["denied"]) == (HOSTILE_SECRET, 1, 1)
        assert [(r["principal"], r["effect"], r["seq"]) for r in body["recent"]] == [
            ("svc-b", "deny", 3),
            ("svc-a", "allow", 1),
        ]

    async def test_backend_narrows_and_name_is_required(self, admin: Admin) -> None:
        await admin.journal.append(access())

        _, elsewhere = await admin.get("/v1/secret", name="app/db", backend="gcp")
        status, missing = await admin.get("/v1/secret")

        assert elsewhere["secrets"] == []
        assert elsewhere["recent"] == []
        assert status == 400
        assert missing["error"] == "query parameter 'name' is required"


class TestPrincipal:
    async def test_what_it_read_from_where_how_and_what_decided(self, admin: Admin) -> None:
        await admin.journal.append_many(
            [
                access(HOSTILE_PRINCIPAL, "app/db", source_ip="10.0.0.1"),
                access(HOSTILE_PRINCIPAL, "app/db", source_ip="10.0.0.2", auth_method="oidc"),
                access(
                    HOSTILE_PRINCIPAL, "app/forbidden-x", effect="deny", rule="app-no-forbidden"
                ),
                access("someone-else", "app/db"),
            ]
        )

        status, body = await admin.get("/v1/principal", id=HOSTILE_PRINCIPAL, limit="2")

        assert status == 200
        assert body["principal"] == HOSTILE_PRINCIPAL
        assert body["events"] == 3
        assert body["effects"] == {"allow": 2, "deny": 1}
        assert [(s["secret"], s["allowed"], s["denied"]) for s in body["secrets"]] == [
            ("app/db", 2, 0),
            ("app/forbidden-x", 0, 1),
        ]
        assert [(s["source_ip"], s["events"]) for s in body["sources"]] == [
            ("10.0.0.1", 2),
            ("10.0.0.2", 1),
        ]
        assert [(m["auth_method"], m["events"]) for m in body["auth_methods"]] == [
            ("sigv4", 2),
            ("oidc", 1),
        ]
        assert [(r["seq"], r["rule"], r["effect"]) for r in body["recent"]] == [
            (3, "app-no-forbidden", "deny"),
            (2, "app-read", "allow"),
        ]
        assert body["recent"][0]["reason"] == "rule app-no-forbidden"

    async def test_id_is_required(self, admin: Admin) -> None:
        status, body = await admin.get("/v1/principal", id="")

        assert status == 400
        assert body["error"] == "query parameter 'id' is required"


class TestExplain:
    async def test_explains_a_recorded_call_against_the_policy_now(self, admin: Admin) -> None:
        """The deciding rule, every rule considered and why, beside what was recorded."""
        await admin.journal.append(access("app", "app/forbidden-x", effect="allow"))

        status, body = await admin.get("/v1/explain", chain=CHAIN, seq="1")

        assert status == 200
        assert body["recorded"]["effect"] == "allow"
        now = body["now"]
        assert (now["effect"], now["rule"]) == ("deny", "app-no-forbidden")
        assert now["policy_hash"] == admin.policies.engine.hash
        assert (body["same_effect"], body["same_rule"], body["same_policy"]) == (
            False,
            False,
            False,
        )
        rules = {r["id"]: r for r in now["rules"]}
        assert rules["app-read"]["applies"] is True
        assert rules["app-no-backups"]["applies"] is False
        assert any("matches none of" in reason for reason in rules["app-no-backups"]["reasons"])
        assert now["roles"] == [{"role": "app", "via": "principal app"}]
        assert now["request"]["operation"] == "GetSecretValue"
        assert now["request"]["source_ip"] == "10.0.0.1"
        assert body["event"]["seq"] == 1
        # Files named from the config's folder, as the operator wrote them, not the server's.
        assert re.fullmatch(r"policies-\d+/app\.yaml:\d+:\d+", rules["app-read"]["source"])

    async def test_a_reload_changes_the_answer(self, admin: Admin, tmp_path: Path) -> None:
        """The engine in force is read per request: a reloaded policy answers next time."""
        await admin.journal.append(access("app", "app/db"))
        _, before = await admin.get("/v1/explain", chain=CHAIN, seq="1")

        admin.policies.engine = engine_for(tmp_path, TEST_POLICY.replace("app/*", "other/*"))
        _, after = await admin.get("/v1/explain", chain=CHAIN, seq="1")

        assert (before["now"]["effect"], before["now"]["rule"]) == ("allow", "app-read")
        assert (after["now"]["effect"], after["now"]["rule"]) == ("deny", None)

    async def test_groups_and_listings(self, admin: Admin) -> None:
        """A group bound to a role counts; a listing is decided for the whole backend."""
        await admin.journal.append_many(
            [
                access("x", "prod/db", action="describe", groups=("auditors",)),
                access("x", None, action="list", groups=("auditors",), operation="ListSecrets"),
            ]
        )

        _, described = await admin.get("/v1/explain", chain=CHAIN, seq="1")
        _, listed = await admin.get("/v1/explain", chain=CHAIN, seq="2")

        assert (described["now"]["effect"], described["now"]["rule"]) == (
            "allow",
            "auditor-describe",
        )
        assert described["now"]["roles"] == [{"role": "auditor", "via": "group auditors"}]
        assert (listed["now"]["effect"], listed["now"]["rule"]) == ("allow", "auditor-describe")
        assert listed["now"]["request"]["secret"] == "aws:*"

    async def test_time_conditions_are_judged_at_the_event_or_now(self, admin: Admin) -> None:
        """at=event (the default) evaluates at the event's own time; at=now at this moment."""
        then = datetime.now(UTC) - timedelta(days=2)
        await admin.journal.append(access("app", "app/db", time=then))

        _, default = await admin.get("/v1/explain", chain=CHAIN, seq="1")
        _, now = await admin.get("/v1/explain", chain=CHAIN, seq="1", at="now")

        assert datetime.fromisoformat(default["now"]["request"]["at"]) == then
        assert datetime.fromisoformat(now["now"]["request"]["at"]) - then > timedelta(days=1)

    async def test_events_without_a_decision_and_bad_queries(self, admin: Admin) -> None:
        await admin.journal.append(AuditEvent(type=EventType.LIFECYCLE, detail={"event": "x"}))

        lifecycle = await admin.get("/v1/explain", chain=CHAIN, seq="1")
        missing = await admin.get("/v1/explain", chain=CHAIN, seq="9")
        no_seq = await admin.get("/v1/explain", chain=CHAIN)
        bad_at = await admin.get("/v1/explain", chain=CHAIN, seq="1", at="then")

        assert lifecycle[0] == 422
        assert "records no policy decision" in lifecycle[1]["error"]
        assert missing == (404, {"error": f"no event 9 in chain '{CHAIN}'"})
        assert no_seq == (400, {"error": "query parameter 'seq' is required"})
        assert bad_at[0] == 400


class TestAlerts:
    async def test_alerts_most_severe_first_with_their_triggering_events(
        self, admin: Admin
    ) -> None:
        await admin.journal.append_many([access("svc-a"), access("svc-b")])
        first, second = admin.records()

        def alert(severity: Severity, refs: list[dict[str, Any]]) -> AuditEvent:
            return Alert(
                rule=f"rule-{severity.value}",
                severity=severity,
                detector="deny_burst",
                key="principal svc-a",
                summary=f"{severity.value} <b>alert</b>",
                time=datetime.now(UTC),
                events=tuple(EventRef.of(r) for r in refs),
            ).as_event()

        await admin.journal.append(alert(Severity.HIGH, [first, second]))
        await admin.journal.append(alert(Severity.LOW, [second]))

        status, body = await admin.get("/v1/alerts")
        _, high_only = await admin.get("/v1/alerts", severity="high,critical")
        bad = await admin.get("/v1/alerts", severity="urgent")

        assert status == 200
        assert [a["severity"] for a in body["alerts"]] == ["high", "low"]
        high = body["alerts"][0]
        assert high["summary"] == "high <b>alert</b>"
        assert [e["event"] for e in high["events"]] == [first, second]
        assert [(e["chain"], e["seq"]) for e in high["events"]] == [(CHAIN, 1), (CHAIN, 2)]
        assert [a["rule"] for a in high_only["alerts"]] == ["rule-high"]
        assert bad[0] == 400
        assert "unknown severity 'urgent'" in bad[1]["error"]


# -- through a running keyledger ------------------------------------------------------------


def call(url: str, token: str, method: str = "GET") -> tuple[int, Any]:
    assert url.startswith("http://")
    request = urllib.request.Request(url, method=method)  # noqa: S310 (http only, asserted)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def served(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> Iterator[RunningProxy]:
    store.create_secret(Name="app/db", SecretString="s3cr3t-db")
    store.create_secret(Name="app/forbidden-x", SecretString="s3cr3t-forbidden")
    with running_proxy(tmp_path, moto_url) as running:
        yield running


class TestThroughTheProxy:
    def test_calls_made_with_boto3_are_explained_and_summed_up(self, served: RunningProxy) -> None:
        """A boto3 read and a denied read show on the principal's page with their rules,
        and explain names the same rule the proxy recorded, under the same policy."""
        client = served.client("app")
        client.get_secret_value(SecretId="app/db")
        with pytest.raises(ClientError):
            client.get_secret_value(SecretId="app/forbidden-x")
        token, admin = served.admin_token, served.admin_url

        status, page = call(f"{admin}/v1/principal?{urlencode({'id': 'app'})}", token)
        denied = next(r for r in page["recent"] if r["effect"] == "deny")
        _, explained = call(
            f"{admin}/v1/explain?{urlencode({'chain': denied['chain'], 'seq': denied['seq']})}",
            token,
        )

        assert status == 200
        calls = [r for r in page["recent"] if r["type"] == "access"]  # also: its key issued
        assert [(r["secret"], r["rule"]) for r in calls] == [
            ("app/forbidden-x", "app-no-forbidden"),
            ("app/db", "app-read"),
        ]
        assert page["auth_methods"][0]["auth_method"] == "sigv4"
        assert page["sources"][0]["source_ip"] == "127.0.0.1"
        assert explained["now"]["rule"] == explained["recorded"]["rule"] == "app-no-forbidden"
        assert explained["same_policy"] is True
        assert explained["now"]["request"]["protocol"] == "aws-json"
        body = json.dumps(page) + json.dumps(explained)
        assert "s3cr3t" not in body  # values are never in the journal, so never here
