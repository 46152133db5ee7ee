"""The hash chain: each event names the hash of the one before it.

``hash = sha256(canonical bytes of the event with chain.{id, seq, prev} and without
chain.hash)``, where canonical bytes are compact JSON with sorted keys. Anyone can
recompute it from the line alone; editing, removing, inserting or reordering a line breaks
either the hash, the seq run or the prev link.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["GENESIS", "ChainState", "canonical_bytes", "event_hash", "seal"]

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where a chain stands: the last sealed seq and its hash."""

    id: str
    seq: int = 0
    hash: str = GENESIS


def canonical_bytes(record: dict[str, Any]) -> bytes:
    """The bytes that are hashed: the record minus ``chain.hash``, sorted keys, compact."""
    chain = dict(record["chain"])
    chain.pop("hash", None)
    unsealed = {**record, "chain": chain}
    return orjson.dumps(unsealed, option=orjson.OPT_SORT_KEYS)


def event_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def seal(record: dict[str, Any], state: ChainState) -> tuple[bytes, ChainState]:
    """Link ``record`` after ``state``; return its journal line and the new state."""
    seq = state.seq + 1
    chain: dict[str, Any] = {"id": state.id, "seq": seq, "prev": state.hash}
    if "chain" in record and record["chain"] is None:
        record["chain"] = chain  # made for sealing (AuditEvent.to_record(chained=True))
        sealed = record
    else:
        sealed = _with_chain(record, chain)
    # The chain has no hash yet, so these are already the bytes event_hash would rebuild.
    digest = hashlib.sha256(orjson.dumps(sealed, option=orjson.OPT_SORT_KEYS)).hexdigest()
    chain["hash"] = digest
    return orjson.dumps(sealed) + b"\n", ChainState(state.id, seq, digest)


def _with_chain(record: dict[str, Any], chain: dict[str, Any]) -> dict[str, Any]:
    # Keep the human-friendly order (schema, id, time, type, chain, ...) in the line;
    # hashing sorts keys anyway.
    out: dict[str, Any] = {}
    for key, value in record.items():
        out[key] = value
        if key == "type":
            out["chain"] = chain
    out.setdefault("chain", chain)
    return out
