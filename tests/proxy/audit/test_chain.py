"""Sealing events into a hash chain that anyone can recompute from the lines alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from keyledger.proxy.audit.chain import GENESIS, ChainState, canonical_bytes, event_hash, seal
from keyledger.proxy.audit.events import (
    AuditEvent,
    EventType,
    Outcome,
    PrincipalInfo,
    ResourceInfo,
    Status,
)


def record(principal: str = "svc-a", secret: str = "prod/db") -> dict[str, Any]:
    return AuditEvent(
        type=EventType.ACCESS,
        time=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        id="01J0000000000000000000000A",
        principal=PrincipalInfo(id=principal, auth_method="sigv4", groups=("ops",)),
        action="read",
        resource=ResourceInfo(backend="aws", secret=secret),
        outcome=Outcome(status=Status.SUCCESS, latency_ms=1.25),
    ).to_record()


class TestSeal:
    def test_first_event_starts_the_chain(self) -> None:
        """The first event has seq 1 and links to the genesis hash."""
        line, state = seal(record(), ChainState("node-1"))

        chain = orjson.loads(line)["chain"]
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert chain == {"id": "node-1", "seq": 1, "prev": GENESIS, "hash": state.hash}
        assert state == ChainState("node-1", 1, chain["hash"])

    def test_events_link_to_the_previous_hash(self) -> None:
        """Each sealed event has the next seq and names the hash of the one before it."""
        state = ChainState("node-1")
        chains = []
        for i in range(3):
            line, state = seal(record(secret=f"s{i}"), state)
            chains.append(orjson.loads(line)["chain"])

        assert [c["seq"] for c in chains] == [1, 2, 3]
        assert [c["prev"] for c in chains] == [GENESIS, chains[0]["hash"], chains[1]["hash"]]
        assert state.hash == chains[2]["hash"]

    def test_hash_recomputes_from_the_line_alone(self) -> None:
        """Anyone holding just the line can recompute its hash."""
        line, _ = seal(record(), ChainState("node-1", 41, "ab" * 32))

        parsed = orjson.loads(line)

        assert event_hash(parsed) == parsed["chain"]["hash"]
        assert b'"hash"' not in canonical_bytes(parsed)

    def test_any_change_changes_the_hash(self) -> None:
        """Events that differ in any field, or in their place in the chain, hash differently."""
        state = ChainState("node-1")
        base, _ = seal(record(), state)
        hashes = {
            orjson.loads(base)["chain"]["hash"],
            orjson.loads(seal(record(principal="svc-b"), state)[0])["chain"]["hash"],
            orjson.loads(seal(record(secret="prod/other"), state)[0])["chain"]["hash"],
            orjson.loads(seal(record(), ChainState("node-2"))[0])["chain"]["hash"],
            orjson.loads(seal(record(), ChainState("node-1", 1, "f" * 64))[0])["chain"]["hash"],
        }

        assert len(hashes) == 5

    def test_line_keeps_readable_order_and_input_untouched(self) -> None:
        """The line reads schema, id, time, type, chain first; the caller's record is unchanged."""
        original = record()
        before = dict(original)

        line, _ = seal(original, ChainState("node-1"))

        assert list(orjson.loads(line))[:5] == ["schema", "id", "time", "type", "chain"]
        assert original == before
        assert "chain" not in original
