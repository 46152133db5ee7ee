"""Recompute hash chains and report the first place each one breaks.

Checks, per chain found in the input: every line parses, is byte-for-byte as keyledger
writes it and belongs to its file's chain; its hash matches its content; seq runs 1, 2,
3, ... with no gap, repeat or reordering; and every ``prev`` names the hash of the event
before it. An unkeyed chain cannot show events cut off its *end*, nor a line rewritten
together with every hash after it: signed checkpoints (a later feature) close that gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from keyledger.proxy.audit.chain import GENESIS, event_hash

__all__ = ["ChainReport", "Problem", "VerifyReport", "journal_files", "verify_path"]


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    seq: int | None
    reason: str

    def __str__(self) -> str:
        seq = f"seq {self.seq}: " if self.seq is not None else ""
        return f"{self.file}:{self.line}: {seq}{self.reason}"


@dataclass(slots=True)
class ChainReport:
    id: str
    events: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    problem: Problem | None = None


@dataclass(slots=True)
class VerifyReport:
    chains: dict[str, ChainReport] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.chains)


def journal_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.jsonl") if p.is_file())
    return [path]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        yield from enumerate(handle, start=1)


def verify_path(path: Path) -> VerifyReport:
    """Verify every chain in a journal file or a folder of journal files."""
    report = VerifyReport()
    for file in journal_files(path):
        report.files.append(str(file))
        owner: list[str] = []  # the chain this file belongs to: its first line's
        for number, raw in _lines(file):
            _check_line(report, str(file), number, raw, owner)
    return report


def _check_line(report: VerifyReport, file: str, number: int, raw: bytes, owner: list[str]) -> None:
    def fail(chain: ChainReport | None, seq: int | None, reason: str) -> None:
        problem = Problem(file, number, seq, reason)
        if chain is not None:
            if chain.problem is not None:
                return  # report only the first break of each chain
            chain.problem = problem
        report.problems.append(problem)

    if not raw.endswith(b"\n"):
        fail(None, None, "last line is incomplete (torn write)")
        return
    try:
        record: Any = orjson.loads(raw)
        chain_field = record["chain"]
        chain_id = str(chain_field["id"])
        seq = int(chain_field["seq"])
        prev = str(chain_field["prev"])
        claimed = str(chain_field["hash"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        fail(None, None, "not a keyledger audit event (unreadable JSON or no chain field)")
        return
    if not owner:
        owner.append(chain_id)
    elif chain_id != owner[0]:
        # A forged line claiming another chain would otherwise be checked against that
        # (empty) chain and pass.
        fail(
            report.chains.get(owner[0]),
            seq,
            f"belongs to chain {chain_id!r}, but this file holds chain {owner[0]!r}",
        )
        return
    chain = report.chains.setdefault(chain_id, ChainReport(chain_id))
    if chain.problem is not None:
        return
    if orjson.dumps(record) + b"\n" != raw:
        # The hash covers the parsed event; bytes that parse to it in another way
        # (duplicate keys, spacing) could show one thing to a reader and another to us.
        fail(chain, seq, "not as keyledger wrote it (re-encoded, or duplicate keys)")
    elif event_hash(record) != claimed:
        fail(chain, seq, "hash mismatch: the event was modified after it was written")
    elif seq != chain.last_seq + 1:
        if seq <= chain.last_seq:
            fail(chain, seq, f"out of order or repeated: expected seq {chain.last_seq + 1}")
        else:
            missing = (
                f"{chain.last_seq + 1}"
                if seq == chain.last_seq + 2
                else (f"{chain.last_seq + 1}-{seq - 1}")
            )
            fail(chain, seq, f"gap: seq {missing} missing (deleted events)")
    elif prev != chain.last_hash:
        fail(chain, seq, "broken link: prev does not match the hash of the event before it")
    chain.events += 1
    chain.last_seq = seq
    chain.last_hash = claimed
