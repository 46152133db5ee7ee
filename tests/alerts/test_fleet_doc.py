"""docs/fleet.md's ready queries hold for the events keyledger writes: the Athena table's
columns and location template against events written by the real journal and objects
written by the real S3 sink (to a moto server), the Athena queries run over that copy
(DuckDB, translated by sqlglot, where they are installed), and every field the CloudWatch
Logs Insights queries name found in the same events, as Insights flattens them.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    GeoInfo,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    ResourceInfo,
    Status,
)
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.sinks import Batch
from keyledger.proxy.audit.sinks.base import parse_line
from keyledger.proxy.audit.sinks.s3 import S3Sink
from keyledger.proxy.config import S3SinkConfig
from tests.audit_records import access_event, auth_failure_event

DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"
NOW = datetime.now(UTC).replace(microsecond=0)
DOC_BUCKET, DOC_PREFIX = "acme-keyledger-audit", "prod"

Record = dict[str, Any]


def blocks(kind: str) -> list[str]:
    """The doc's fenced blocks of one kind (``sql``, ``cloudwatch-insights``, ``sh``)."""
    return re.findall(rf"^```{re.escape(kind)}\n(.*?)^```", DOC.read_text(), re.S | re.M)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def read(principal: str, secret: str, at: datetime, effect: str = "allow") -> AuditEvent:
    return access_event(at=at, principal=principal, secret=secret, effect=effect)


def located_read(at: datetime) -> AuditEvent:
    """A read with everything an event can carry: groups, attributes, GeoIP."""
    return AuditEvent(
        type=EventType.ACCESS,
        time=at,
        request=RequestInfo(
            id="req-geo",
            protocol="aws-json",
            operation="GetSecretValue",
            source_ip="192.0.2.7",
            user_agent="Boto3/1.34",
            geo=GeoInfo(country="DE", asn=64500, as_org="Example Net"),
        ),
        principal=PrincipalInfo(
            id="svc-payments",
            auth_method="oidc",
            groups=("payments", "ci"),
            attributes={"sub": "repo:acme/payments"},
        ),
        action="read",
        resource=ResourceInfo(backend="aws", secret="prod/db/password", version="AWSCURRENT"),
        decision=DecisionInfo(effect="allow", rule="r", policy_hash="sha256:x", reason="ok"),
        outcome=Outcome(
            status=Status.SUCCESS, latency_ms=3.5, version_id="v1", value_fingerprint="h"
        ),
    )


# Two chains, as two replicas write them: what each question has to find.
CHAINS = {
    "replica-a": [
        read("svc-payments", "prod/db/password", ago(days=20)),  # first access: 20 days ago
        read("svc-payments", "prod/db/password", ago(hours=2)),
        read("mallory", "prod/db/password", ago(minutes=50), effect="deny"),
        read("newbie", "prod/api-key", ago(minutes=30)),
    ],
    "replica-b": [
        located_read(ago(hours=1)),
        auth_failure_event(at=ago(minutes=40), principal=None, request="req-x"),
        read("mallory", "prod/db/admin-password-old", ago(minutes=10), effect="deny"),
    ],
}


async def _journaled(folder: Path, chain: str, events: list[AuditEvent]) -> None:
    journal = Journal(directory=folder, chain_id=chain, fsync=False)
    await journal.start()
    try:
        for each in events:
            await journal.append(each)
    finally:
        await journal.close()


@pytest.fixture(scope="module")
def journaled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    """Each chain's lines, as the real journal wrote them."""
    folder = tmp_path_factory.mktemp("journal")
    found = {}
    for chain, events in CHAINS.items():
        asyncio.run(_journaled(folder, chain, events))
        files = sorted(folder.glob(f"{chain}.*.jsonl"))
        found[chain] = b"".join(p.read_bytes() for p in files).splitlines()
    return found


def records(journaled: dict[str, list[bytes]]) -> list[Record]:
    return [orjson.loads(line) for lines in journaled.values() for line in lines]


@pytest.fixture
def copy(
    journaled: dict[str, list[bytes]],
    bucket: str,
) -> tuple[str, list[str]]:
    """The chains shipped by the real S3 sink under prod/, each event batch by batch, the
    first two events of each chain twice (at least once); the bucket and its keys."""
    sink = S3Sink(
        S3SinkConfig(name="s3", bucket=bucket, prefix=f"{DOC_PREFIX}/", region="us-east-1")
    )

    async def ship() -> None:
        for chain, lines in journaled.items():
            parsed = [parse_line(line) for line in lines]
            await sink.send(Batch(chain, tuple(parsed[:2])))
            for line in parsed:
                await sink.send(Batch(chain, (line,)))
        await sink.close()

    asyncio.run(ship())
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    return bucket, keys


# -- the Athena table ---------------------------------------------------------------------


def _split(text: str) -> list[str]:
    """``text`` split at the commas outside <...>."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def leaves(name: str, hive_type: str) -> Iterator[tuple[str, str]]:
    """(path, type) of every leaf a Hive column type declares; arrays and maps are leaves."""
    kind = hive_type.strip()
    if kind.startswith("struct<"):
        for field in _split(kind[len("struct<") : -1]):
            child, _, child_type = field.partition(":")
            yield from leaves(f"{name}.{child.strip()}", child_type)
    else:
        yield name, kind.split("<")[0]


def table(ddl: str) -> dict[str, str]:
    """The declared leaves of a CREATE EXTERNAL TABLE's columns."""
    body = ddl[ddl.index("(") + 1 : ddl.index("\n)")]
    declared: dict[str, str] = {}
    for column in _split(" ".join(body.split())):
        name, _, hive_type = column.partition(" ")
        declared.update(leaves(name.strip("`"), hive_type))
    return declared


def json_leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of an event's leaves, lists and objects under a map kept whole."""
    if isinstance(value, dict) and not path.endswith("attributes"):
        for key, child in value.items():
            yield from json_leaves(child, f"{path}.{key}" if path else key)
    else:
        yield path, value


_TYPES = {
    "string": (str,),
    "bigint": (int,),
    "double": (float, int),
    "array": (list,),
    "map": (dict,),
}


def ddls() -> tuple[str, str]:
    projected, unpartitioned = [b for b in blocks("sql") if b.startswith("CREATE EXTERNAL")]
    return projected, unpartitioned


class TestAthenaTable:
    def test_every_column_is_a_field_of_the_events_with_its_type(
        self, journaled: dict[str, list[bytes]]
    ) -> None:
        """Each column the table declares is in the journal's events, with values of the
        declared type; and every field of an access or a failed sign-in is declared."""
        events = records(journaled)
        found: dict[str, set[type]] = {}
        for record in events:
            for path, value in json_leaves(record):
                found.setdefault(path, set()).add(type(value))
        for ddl in ddls():
            declared = table(ddl)
            assert set(declared) <= set(found), set(declared) - set(found)
            for path, kind in declared.items():
                assert found[path] <= {*_TYPES[kind], type(None)}, (path, kind, found[path])
        calls = {
            path
            for record in events
            if record["type"] in ("access", "auth_failure")
            for path, _ in json_leaves(record)
        }
        projected = table(ddls()[0])
        assert calls - {"detail.reason"} <= set(projected), calls - set(projected)
        assert "chain.id" not in table(ddls()[1])  # a checkpoint's chain is a string

    def test_the_location_template_matches_the_keys_the_sink_writes(
        self, copy: tuple[str, list[str]], journaled: dict[str, list[bytes]]
    ) -> None:
        """Projected, ${chain_id}/${day}/ (day as yyyy/MM/dd) is exactly where each batch
        object is, its day the first event's; checkpoints lie outside it."""
        shipped_to, keys = copy
        projected = ddls()[0]
        properties = dict(re.findall(r"'([\w.]+)' = '([^']*)'", projected))
        assert properties["projection.day.format"] == "yyyy/MM/dd"
        template = properties["storage.location.template"]
        assert template == f"s3://{DOC_BUCKET}/{DOC_PREFIX}/${{chain_id}}/${{day}}/"
        assert f"LOCATION 's3://{DOC_BUCKET}/{DOC_PREFIX}/'" in projected
        pattern = re.escape(template.replace(DOC_BUCKET, shipped_to).removeprefix("s3://"))
        pattern = pattern.replace(r"\$\{chain_id\}", r"(?P<chain>[^/]+)")
        pattern = pattern.replace(r"\$\{day\}", r"(?P<day>\d{4}/\d{2}/\d{2})")
        within = [k for k in keys if re.match(pattern + r"[^/]+$", f"{shipped_to}/{k}")]
        assert sorted(set(keys) - set(within)) == []  # (no checkpoints without a signer)
        s3 = boto3.client("s3")
        for key in within:
            match = re.match(pattern, f"{shipped_to}/{key}")
            assert match is not None
            body = gzip.decompress(s3.get_object(Bucket=shipped_to, Key=key)["Body"].read())
            first = orjson.loads(body.splitlines()[0])
            assert first["chain"]["id"] == match["chain"]
            moment = datetime.fromisoformat(first["time"])
            assert f"{moment:%Y/%m/%d}" == match["day"]


# -- the Athena queries, run --------------------------------------------------------------


def queries() -> list[str]:
    return [b for b in blocks("sql") if b.startswith("SELECT")]


@pytest.fixture
def duckdb_table(copy: tuple[str, list[str]], tmp_path: Path) -> Any:
    """The projected table in DuckDB, over the objects under its location template."""
    duckdb = pytest.importorskip("duckdb")
    sqlglot = pytest.importorskip("sqlglot")
    shipped_to, keys = copy
    create = sqlglot.parse_one(ddls()[0], read="athena")
    columns = {
        c.name: c.args["kind"].sql("duckdb") for c in create.this.expressions if c.args.get("kind")
    }
    db = duckdb.connect()
    s3 = boto3.client("s3")
    first = True
    for key in keys:
        match = re.match(rf"{DOC_PREFIX}/([^/]+)/(\d{{4}}/\d{{2}}/\d{{2}})/[^/]+\.jsonl\.gz$", key)
        if match is None:
            continue
        local = tmp_path / key.replace("/", "_")
        local.write_bytes(s3.get_object(Bucket=shipped_to, Key=key)["Body"].read())
        # Our own file name, and the chain and day of our own keys: nothing foreign.
        chain, day = match[1], match[2]
        source = f"read_json('{local}', format = 'newline_delimited', columns = {columns!r})"
        select = f"SELECT *, '{chain}' AS chain_id, '{day}' AS day FROM {source}"  # noqa: S608
        db.execute(
            f"CREATE TABLE keyledger_audit AS {select}"
            if first
            else f"INSERT INTO keyledger_audit {select}"
        )
        first = False
    return db, sqlglot


def run_query(duckdb_table: Any, athena_sql: str) -> list[tuple[Any, ...]]:
    db, sqlglot = duckdb_table
    (translated,) = sqlglot.transpile(
        athena_sql.rstrip().rstrip(";"), read="athena", write="duckdb"
    )
    return [tuple(row) for row in db.execute(translated).fetchall()]


class TestAthenaQueries:
    def test_who_read_a_secret(self, duckdb_table: Any) -> None:
        """Each reader once per effect, every copy of an event counted once."""
        rows = run_query(duckdb_table, queries()[0])
        assert [(principal, effect, reads) for principal, effect, reads, *_ in rows] == [
            ("svc-payments", "allow", 3),
            ("mallory", "deny", 1),
        ]

    def test_denials_by_principal(self, duckdb_table: Any) -> None:
        rows = run_query(duckdb_table, queries()[1])
        assert [row[:3] for row in rows] == [("mallory", 2, 2), ("(unknown)", 1, 0)]

    def test_principals_new_to_a_secret(self, duckdb_table: Any) -> None:
        """svc-payments first read the password 20 days ago: not new; newbie is."""
        rows = run_query(duckdb_table, queries()[2])
        assert [(principal, secret, calls) for principal, secret, _, calls in rows] == [
            ("newbie", "aws:prod/api-key", 1)
        ]

    def test_canary_touches(self, duckdb_table: Any) -> None:
        rows = run_query(duckdb_table, queries()[3])
        assert [(row[1], row[2], row[3], row[6]) for row in rows] == [
            ("mallory", "read", "deny", "replica-b")
        ]


# -- the CloudWatch Logs Insights queries ---------------------------------------------------

_COMMANDS = {"fields", "filter", "stats", "sort", "limit", "display", "dedup", "parse"}
_FUNCTIONS = {"count", "count_distinct", "min", "max", "avg", "sum", "earliest", "latest"}
_WORDS = {"and", "or", "not", "in", "as", "by", "asc", "desc", "like"}
_SYSTEM = {"@timestamp", "@message", "@logStream", "@log", "@ingestionTime"}


def insights_queries() -> list[str]:
    found = [" ".join(b.split()) for b in blocks("cloudwatch-insights")]
    for line in blocks("sh")[-1].splitlines():  # the `aws logs start-query` example
        words = shlex.split(line)
        if "--query-string" in words:
            found.append(words[words.index("--query-string") + 1])
    return found


def flattened(record: Record, path: str = "") -> Iterator[str]:
    """The fields Insights discovers in a JSON event: nesting by dots, lists by index."""
    if isinstance(record, dict):
        for key, child in record.items():
            yield from flattened(child, f"{path}.{key}" if path else key)
    elif isinstance(record, list):
        for index, child in enumerate(record):
            yield from flattened(child, f"{path}.{index}")
    else:
        yield path


class TestInsightsQueries:
    def test_there_are_the_four_questions_and_the_command_line_one(self) -> None:
        assert len(insights_queries()) == 5

    @pytest.mark.parametrize("query", insights_queries())
    def test_every_field_named_is_one_insights_finds_in_the_events(
        self, query: str, journaled: dict[str, list[bytes]]
    ) -> None:
        """Each command is one of Insights', each function an aggregation of its stats,
        and each other name a field of the events (or an alias the query made)."""
        fields = {path for record in records(journaled) for path in flattened(record)}
        bare = re.sub(r'"[^"]*"|\[[^\]]*\]', " ", query)  # strings and lists of them out
        aliases = set(re.findall(r"\bas\s+([A-Za-z_]\w*)", bare))
        for command in bare.split("|"):
            words = command.split()
            assert words[0] in _COMMANDS, command
            for name in re.findall(r"[@A-Za-z_][\w.@]*(?:\s*\()?", " ".join(words[1:])):
                if name.endswith("("):
                    assert name.rstrip("( ") in _FUNCTIONS, name
                elif name not in _WORDS | _SYSTEM | aliases:
                    assert name in fields, f"{name!r} is not a field of the events"

    def test_an_event_has_fewer_fields_than_insights_extracts(
        self, journaled: dict[str, list[bytes]]
    ) -> None:
        """Insights extracts at most 100 fields of a JSON event (200 in newer accounts):
        the richest event keyledger writes stays well under."""
        assert max(len(set(flattened(r))) for r in records(journaled)) < 60
