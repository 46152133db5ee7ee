"""Exports other tools can read: JSON lines, CSV, ECS and OCSF, written one event at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from keyledger.proxy.audit.chain import event_hash
from keyledger.proxy.audit.events import AuditEvent, Status
from keyledger.proxy.audit.export import CSV_COLUMNS, FORMATS, csv_safe, write_export
from tests.audit_records import access_event, auth_failure_event, lifecycle_event, sealed

AT = datetime(2026, 11, 23, 21, 55, 1, 123456, tzinfo=UTC)
AT_MS = 1_795_470_901_123  # AT in milliseconds since the epoch
FINGERPRINT = "hmac-sha256:" + "ab" * 32


def access(
    *,
    action: str = "read",
    secret: str | None = "prod/db",
    effect: str | None = "allow",
    status: Status = Status.SUCCESS,
    code: str | None = None,
    source_ip: str | None = "10.1.2.3",
    user_agent: str | None = "Boto3/1.34.0 Python/3.11",
    operation: str = "GetSecretValue",
) -> AuditEvent:
    """svc-billing at AT with every field an export maps filled in; served if a success."""
    served = status == Status.SUCCESS
    return access_event(
        at=AT,
        event_id="01JDAT00000000000000000001",
        protocol="aws",
        operation=operation,
        source_ip=source_ip,
        user_agent=user_agent,
        principal="svc-billing",
        groups=("payments", "readers"),
        attributes={"team": "payments"},
        action=action,
        secret=secret,
        version="AWSCURRENT",
        effect=effect,
        rule="payments-read",
        policy_hash="sha256:" + "cd" * 32,
        reason=f"rule payments-read: {effect}",
        status=status,
        code=code,
        latency_ms=12.5,
        version_id="v-42" if served else None,
        value_fingerprint=FINGERPRINT if served else None,
    )


GEO = {"country": "DE", "asn": 3320, "as_org": "Deutsche Telekom AG"}


def with_geo(geo: dict[str, Any], source_ip: str = "203.0.113.7") -> list[dict[str, Any]]:
    """A sealed access event as GeoIP enriches it (request.geo)."""
    records = sealed(access(source_ip=source_ip))
    records[0]["request"]["geo"] = geo
    return records


def auth_failure() -> AuditEvent:
    return auth_failure_event(
        at=AT,
        request="req-9",
        protocol="aws",
        source_ip=None,
        user_agent=None,
        principal=None,
        code="SignatureDoesNotMatch",
        latency_ms=0.4,
        reason="the signature does not match",
    )


def lifecycle() -> AuditEvent:
    return lifecycle_event(AT)


def export(records: Iterable[dict[str, Any]], fmt: str) -> str:
    out = io.StringIO(newline="")
    write_export(records, fmt, out)
    return out.getvalue()


def documents(records: Iterable[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in export(records, fmt).splitlines()]


def only(records: Iterable[dict[str, Any]], fmt: str) -> dict[str, Any]:
    (document,) = documents(records, fmt)
    return document


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


class TestWriteExport:
    def test_formats(self) -> None:
        """The formats a user can ask for are named in one place."""
        assert FORMATS == ("jsonl", "csv", "ecs", "ocsf")

    def test_unknown_format_names_the_choices(self) -> None:
        """A misspelt format is refused with the list of formats and the likely one."""
        with pytest.raises(ValueError, match="unknown export format 'ocfs'") as caught:
            export([], "ocfs")
        assert "did you mean 'ocsf'?" in str(caught.value)
        assert "jsonl, csv, ecs, ocsf" in str(caught.value)

    @pytest.mark.parametrize("fmt", FORMATS)
    def test_counts_what_it_wrote(self, fmt: str) -> None:
        """The return value is the number of events exported, whatever the format."""
        out = io.StringIO(newline="")
        assert write_export(sealed(access(), auth_failure(), lifecycle()), fmt, out) == 3

    @pytest.mark.parametrize("fmt", FORMATS)
    def test_streams_one_event_at_a_time(self, fmt: str) -> None:
        """Each event is written before the next is read, so exports run in constant memory."""
        out = io.StringIO(newline="")
        records = sealed(*(access(secret=f"s/{n}") for n in range(3)))
        seen_before: list[int] = []

        def feed() -> Iterator[dict[str, Any]]:
            for record in records:
                seen_before.append(out.getvalue().count("\n"))
                yield record

        write_export(feed(), fmt, out)

        header = 1 if fmt == "csv" else 0
        assert seen_before == [header, header + 1, header + 2]


class TestJsonl:
    def test_records_are_kept_as_given_and_still_verify(self) -> None:
        """A JSON lines export is the journal's records, chain included, hashes intact."""
        records = sealed(access(), auth_failure(), lifecycle())

        exported = documents(records, "jsonl")

        assert exported == records
        assert [list(r) for r in exported] == [list(r) for r in records]  # key order kept
        assert all(event_hash(r) == r["chain"]["hash"] for r in exported)


class TestCsv:
    def test_header_and_values(self) -> None:
        """The CSV has the documented columns and reads back with the event's values."""
        text = export(sealed(access()), "csv")

        (row,) = rows(text)
        assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
        assert row["time"] == "2026-11-23T21:55:01.123456Z"
        assert row["type"] == "access"
        assert (row["chain.id"], row["chain.seq"]) == ("node-1", "1")
        assert row["request.operation"] == "GetSecretValue"
        assert row["request.source_ip"] == "10.1.2.3"
        assert row["principal.id"] == "svc-billing"
        assert row["principal.groups"] == "payments;readers"
        assert (row["resource.backend"], row["resource.secret"]) == ("aws", "prod/db")
        assert (row["decision.effect"], row["decision.rule"]) == ("allow", "payments-read")
        assert (row["outcome.status"], row["outcome.latency_ms"]) == ("success", "12.5")
        assert row["outcome.value_fingerprint"] == FINGERPRINT
        assert len(row["chain.hash"]) == 64

    def test_missing_values_are_empty_cells(self) -> None:
        """Parts an event does not have (no decision, no resource) are empty, not 'None'."""
        (row,) = rows(export(sealed(auth_failure()), "csv"))

        assert row["principal.id"] == ""
        assert row["decision.effect"] == ""
        assert row["resource.secret"] == ""
        assert row["outcome.status"] == "denied"

    def test_empty_export_still_has_its_header(self) -> None:
        """With no events the CSV is just the header, so tools still see the columns."""
        assert export([], "csv").splitlines() == [",".join(CSV_COLUMNS)]

    @pytest.mark.parametrize(
        "name", ['=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3", "@SUM(A1)"]
    )
    def test_formula_injection_is_neutralised(self, name: str) -> None:
        """A caller-chosen secret name or user agent cannot run as a spreadsheet formula."""
        (row,) = rows(export(sealed(access(secret=name, user_agent=name)), "csv"))

        assert row["resource.secret"] == "'" + name
        assert row["request.user_agent"] == "'" + name

    @pytest.mark.parametrize(
        ("name", "shown"), [("\tx", "\\tx"), ("\rx", "\\rx"), ("a\x1b[2Jb", "a\\x1b[2Jb")]
    )
    def test_control_characters_are_shown_escaped(self, name: str, shown: str) -> None:
        """Tabs, carriage returns and ANSI escapes appear as visible escapes, never raw."""
        (row,) = rows(export(sealed(access(secret=name, user_agent=name)), "csv"))

        assert row["resource.secret"] == shown
        assert row["request.user_agent"] == shown

    def test_ordinary_text_is_untouched(self) -> None:
        """Names that are not formulas, and numbers, are exported exactly."""
        assert csv_safe("prod/db=primary") == "prod/db=primary"
        (row,) = rows(export(sealed(access(secret="a-b")), "csv"))
        assert row["resource.secret"] == "a-b"
        assert row["chain.seq"] == "1"


def field(document: dict[str, Any], dotted: str) -> Any:
    """A nested field by its dotted ECS name; KeyError if it is absent."""
    value: Any = document
    for name in dotted.split("."):
        value = value[name]
    return value


class TestEcs:
    def test_allowed_read(self) -> None:
        """An allowed read is a successful api access event with the user, source and rule."""
        doc = only(sealed(access()), "ecs")

        assert doc["@timestamp"] == "2026-11-23T21:55:01.123456Z"
        assert field(doc, "ecs.version") == "8.17.0"
        assert field(doc, "event.kind") == "event"
        assert field(doc, "event.category") == ["api"]
        assert field(doc, "event.type") == ["access", "allowed"]
        assert field(doc, "event.outcome") == "success"
        assert field(doc, "event.action") == "GetSecretValue"
        assert field(doc, "event.id") == "01JDAT00000000000000000001"
        assert field(doc, "event.dataset") == "keyledger.audit"
        assert field(doc, "event.duration") == 12_500_000
        assert field(doc, "event.reason") == "rule payments-read: allow"
        assert field(doc, "user.id") == "svc-billing"
        assert field(doc, "user.group.name") == ["payments", "readers"]
        assert field(doc, "related.user") == ["svc-billing"]
        assert field(doc, "source.ip") == "10.1.2.3"
        assert field(doc, "related.ip") == ["10.1.2.3"]
        assert field(doc, "user_agent.original") == "Boto3/1.34.0 Python/3.11"
        assert field(doc, "http.request.id") == "req-1"
        assert field(doc, "rule.name") == "payments-read"
        assert field(doc, "cloud.provider") == "aws"

    @pytest.mark.parametrize(
        ("protocol", "backend", "cloud"),
        [
            ("aws-json", "aws-eu", "aws"),
            ("gcp-rest", "payments", "gcp"),
            ("gcp-grpc", "gcp", "gcp"),
            ("azure", "vault-prod", "azure"),
            ("unknown", "aws", "aws"),
            ("unknown", "mystery", None),
        ],
    )
    def test_cloud_follows_the_wire_protocol_not_the_backends_name(
        self, protocol: str, backend: str, cloud: str | None
    ) -> None:
        """cloud.provider comes from the protocol the call spoke: backend names are the
        operator's to choose ("aws-eu", "payments")."""
        event = access_event(protocol=protocol, backend=backend)

        doc = only(sealed(event), "ecs")

        assert doc.get("cloud", {}).get("provider") == cloud

    def test_keyledger_facts_keep_their_own_namespace(self) -> None:
        """Chain, resource, policy hash and value fingerprint stay under keyledger.*."""
        record = sealed(access())[0]
        doc = only([record], "ecs")

        assert field(doc, "keyledger.chain") == record["chain"]
        assert field(doc, "keyledger.resource.secret") == "prod/db"
        assert field(doc, "keyledger.decision.policy_hash") == "sha256:" + "cd" * 32
        assert field(doc, "keyledger.outcome.value_fingerprint") == FINGERPRINT
        assert "id" not in doc["keyledger"]
        assert "time" not in doc["keyledger"]

    @pytest.mark.parametrize("value", ["ip-hmac:3fa1c2", "203.0.113.0/24", "", "fe80::1%eth0"])
    def test_only_real_addresses_become_source_ip(self, value: str) -> None:
        """A pseudonymised or truncated address is kept only under keyledger.*."""
        doc = only(sealed(access(source_ip=value)), "ecs")

        assert "source" not in doc
        assert "ip" not in doc.get("related", {})
        assert field(doc, "keyledger.request.source_ip") == value

    def test_geoip_is_source_geo_and_as(self) -> None:
        """GeoIP's request.geo is ECS source.geo and source.as, and stays under keyledger."""
        doc = only(with_geo(GEO), "ecs")

        assert doc["source"] == {
            "ip": "203.0.113.7",
            "geo": {"country_iso_code": "DE"},
            "as": {"number": 3320, "organization": {"name": "Deutsche Telekom AG"}},
        }
        assert field(doc, "keyledger.request.geo") == GEO

    def test_geoip_outlives_a_minimised_address(self) -> None:
        """A truncated address is no source.ip, but where it was still is source.geo."""
        doc = only(with_geo({"country": "DE"}, source_ip="203.0.113.0/24"), "ecs")

        assert doc["source"] == {"geo": {"country_iso_code": "DE"}}

    def test_ipv6_source(self) -> None:
        """An IPv6 caller is a source.ip like any other."""
        assert field(only(sealed(access(source_ip="2001:db8::7")), "ecs"), "source.ip") == (
            "2001:db8::7"
        )

    def test_denied_access(self) -> None:
        """A policy denial is a failed access of type denied."""
        doc = only(sealed(access(effect="deny", status=Status.DENIED, code="AccessDenied")), "ecs")

        assert field(doc, "event.type") == ["access", "denied"]
        assert field(doc, "event.outcome") == "failure"
        assert "error" not in doc

    def test_store_error(self) -> None:
        """A store error is a failure carrying the error code."""
        doc = only(sealed(access(status=Status.ERROR, code="InternalServiceError")), "ecs")

        assert field(doc, "event.outcome") == "failure"
        assert field(doc, "error.code") == "InternalServiceError"

    @pytest.mark.parametrize(
        ("action", "kind"), [("write", "change"), ("rotate", "change"), ("delete", "deletion")]
    )
    def test_changes(self, action: str, kind: str) -> None:
        """Writes and rotations are changes, deletes are deletions."""
        doc = only(sealed(access(action=action, operation="PutSecretValue")), "ecs")

        assert field(doc, "event.type") == [kind, "allowed"]

    def test_pending_change_has_an_unknown_outcome(self) -> None:
        """A change written before the store answered has outcome unknown."""
        doc = only(sealed(access(action="write", status=Status.PENDING)), "ecs")

        assert field(doc, "event.outcome") == "unknown"

    def test_auth_failure(self) -> None:
        """A failed authentication is an authentication failure, with no user or source."""
        doc = only(sealed(auth_failure()), "ecs")

        assert field(doc, "event.category") == ["authentication"]
        assert field(doc, "event.type") == ["start"]
        assert field(doc, "event.outcome") == "failure"
        assert field(doc, "event.reason") == "the signature does not match"
        assert "user" not in doc
        assert "source" not in doc

    def test_lifecycle(self) -> None:
        """The proxy starting is a process start event with no outcome."""
        doc = only(sealed(lifecycle()), "ecs")

        assert field(doc, "event.category") == ["process"]
        assert field(doc, "event.type") == ["start"]
        assert "outcome" not in doc["event"]
        assert field(doc, "keyledger.detail") == {"event": "start"}


class TestOcsf:
    def test_allowed_read(self) -> None:
        """An allowed read is an API Activity Read with status Success."""
        doc = only(sealed(access()), "ocsf")

        assert (doc["class_uid"], doc["class_name"]) == (6003, "API Activity")
        assert (doc["category_uid"], doc["category_name"]) == (6, "Application Activity")
        assert (doc["activity_id"], doc["activity_name"]) == (2, "Read")
        assert (doc["type_uid"], doc["type_name"]) == (600302, "API Activity: Read")
        assert (doc["severity_id"], doc["severity"]) == (1, "Informational")
        assert (doc["status_id"], doc["status"]) == (1, "Success")
        assert doc["time"] == AT_MS
        assert doc["duration"] == 12
        assert field(doc, "actor.user.uid") == "svc-billing"
        assert field(doc, "actor.user.groups") == [{"name": "payments"}, {"name": "readers"}]
        assert field(doc, "actor.authorizations") == [
            {
                "decision": "allowed",
                "policy": {"name": "payments-read", "uid": "sha256:" + "cd" * 32},
            }
        ]
        assert field(doc, "api.operation") == "GetSecretValue"
        assert field(doc, "api.request.uid") == "req-1"
        assert field(doc, "api.service.name") == "aws"
        assert field(doc, "src_endpoint.ip") == "10.1.2.3"
        assert field(doc, "http_request.user_agent") == "Boto3/1.34.0 Python/3.11"
        assert doc["resources"] == [
            {"name": "prod/db", "type": "secret", "uid": "aws:prod/db", "version": "v-42"}
        ]

    def test_metadata(self) -> None:
        """Metadata names the schema version, the product, the event and its place in the chain."""
        doc = only(sealed(access()), "ocsf")

        assert field(doc, "metadata.version") == "1.1.0"
        assert field(doc, "metadata.product") == {"name": "keyledger", "vendor_name": "keyledger"}
        assert field(doc, "metadata.uid") == "01JDAT00000000000000000001"
        assert field(doc, "metadata.original_time") == "2026-11-23T21:55:01.123456Z"
        assert field(doc, "metadata.correlation_uid") == "req-1"
        assert (field(doc, "metadata.log_name"), field(doc, "metadata.sequence")) == ("node-1", 1)

    def test_keyledger_facts_are_unmapped(self) -> None:
        """Chain, policy hash and fingerprint travel in unmapped.keyledger."""
        record = sealed(access())[0]
        doc = only([record], "ocsf")

        assert field(doc, "unmapped.keyledger.chain") == record["chain"]
        assert field(doc, "unmapped.keyledger.outcome.value_fingerprint") == FINGERPRINT

    @pytest.mark.parametrize(
        ("action", "activity", "name"),
        [
            ("describe", 2, "Read"),
            ("list", 2, "Read"),
            ("write", 3, "Update"),
            ("rotate", 3, "Update"),
            ("delete", 4, "Delete"),
        ],
    )
    def test_activities(self, action: str, activity: int, name: str) -> None:
        """Each keyledger action maps to one OCSF activity and its type_uid."""
        doc = only(sealed(access(action=action)), "ocsf")

        assert (doc["activity_id"], doc["activity_name"]) == (activity, name)
        assert doc["type_uid"] == 600300 + activity

    def test_denied_access(self) -> None:
        """A denial is a Failure, its code and reason kept."""
        event = access(effect="deny", status=Status.DENIED, code="AccessDenied")
        doc = only(sealed(event), "ocsf")

        assert (doc["status_id"], doc["status"]) == (2, "Failure")
        assert doc["status_code"] == "AccessDenied"
        assert doc["status_detail"] == "rule payments-read: deny"
        assert field(doc, "actor.authorizations")[0]["decision"] == "denied"

    def test_pending_change(self) -> None:
        """A change not yet answered by the store has status Other, named Pending."""
        doc = only(sealed(access(action="write", status=Status.PENDING)), "ocsf")

        assert (doc["status_id"], doc["status"]) == (99, "Pending")

    def test_auth_failure(self) -> None:
        """A failed authentication is an API Activity of unknown kind that failed."""
        doc = only(sealed(auth_failure()), "ocsf")

        assert (doc["activity_id"], doc["type_uid"]) == (0, 600300)
        assert (doc["status_id"], doc["status"]) == (2, "Failure")
        assert doc["status_code"] == "SignatureDoesNotMatch"
        assert "user" not in doc.get("actor", {})
        assert "src_endpoint" not in doc
        assert "resources" not in doc

    def test_lifecycle_is_other(self) -> None:
        """A proxy lifecycle event is activity Other, named by its keyledger type."""
        doc = only(sealed(lifecycle()), "ocsf")

        assert (doc["activity_id"], doc["activity_name"]) == (99, "lifecycle")
        assert (doc["type_uid"], doc["type_name"]) == (600399, "API Activity: Other")
        assert (doc["status_id"], doc["status"]) == (0, "Unknown")
        assert field(doc, "unmapped.keyledger.detail") == {"event": "start"}

    def test_geoip_is_src_endpoint_location(self) -> None:
        """OCSF 1.1's endpoint has a location (the country) and no autonomous system: the
        ASN stays with the rest of keyledger's event in unmapped."""
        doc = only(with_geo(GEO), "ocsf")

        assert doc["src_endpoint"] == {"ip": "203.0.113.7", "location": {"country": "DE"}}
        assert field(doc, "unmapped.keyledger.request.geo") == GEO

    def test_pseudonymised_source_is_not_an_ip(self) -> None:
        """src_endpoint.ip is only ever a real address."""
        doc = only(sealed(access(source_ip="ip-hmac:3fa1c2")), "ocsf")

        assert "src_endpoint" not in doc
        assert field(doc, "unmapped.keyledger.request.source_ip") == "ip-hmac:3fa1c2"
