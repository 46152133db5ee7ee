"""Recompute hash chains, check signed checkpoints, report where each chain first breaks.

Per chain found under SOURCE (its segments in seq order, whatever their names or folders):

- every line parses, is byte-for-byte as keyledger writes it and belongs to its file's chain;
- its hash matches its content; seq runs 1, 2, 3, ... across files with no gap, repeat or
  reordering; every ``prev`` names the hash of the event before it;
- every checkpoint event seals the event just before it, names the checkpoint before it,
  and (given the public key) carries a good signature;
- every record of the checkpoint file is signed, matches the journal's hash at the seq it
  seals, and is followed by its checkpoint event: a journal cut below a checkpoint, or
  rewritten with fresh hashes, no longer does so.

Events after a chain's last checkpoint are *unsealed*: intact as far as the hashes go, but
not yet signed, so a cut there could not be told from a chain that simply ended.

Where checking starts: at seq 1, unless

- ``from_seq`` says where (``audit verify --from-seq N``): the events before it are not read,
  and the ``prev`` of seq N is taken as given;
- the earliest segment left starts later, with the ``segment_start`` that links it to the
  segment before (retention deleted the older ones): checking starts there, anchored on that
  link, and the first checkpoint after it must name a previous checkpoint that the
  checkpoint file agrees with. A ``segment_pruned`` event later in the chain should account
  for the missing start (its ``last_seq`` and ``last_hash`` are the link); if none does, the
  report says so (:attr:`ChainReport.unaccounted`), for ``--strict`` to fail. A chain whose
  earliest event is not a segment's first (``segment_start``) still has a gap: lines were cut
  out of a file, which retention never does.

Remote copies (S3, CloudWatch Logs) arrive as loose lines, each with where it was found:
:func:`verify_copies` deduplicates them by (chain, seq) -- shipping is at-least-once -- and
fails on two *different* copies of one event, then checks each chain exactly as above and
lists every missing seq range.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyledger.proxy.audit.chain import GENESIS, event_hash
from keyledger.proxy.audit.checkpoints import Checkpoint
from keyledger.proxy.audit.events import parse_time
from keyledger.proxy.audit.segments import discover

__all__ = [
    "ChainLinks",
    "ChainReport",
    "Copy",
    "Problem",
    "VerifyReport",
    "cut_reason",
    "verify_copies",
    "verify_path",
]

_PROGRESS_EVERY = 4096  # lines between progress reports

# Reasons shared with the readers' own check (ChainLinks), so both say the same thing.
HASH_MISMATCH = "hash mismatch: the event was modified after it was written"
BROKEN_LINK = "broken link: prev does not match the event before it"
NOT_AN_EVENT = "not a keyledger audit event (no readable chain field)"


def gap_reason(expected: int, seq: int, whole: str = "") -> str:
    """Why ``seq`` cannot come where ``expected`` should; ``whole`` guesses what went."""
    if seq < expected:
        return f"out of order or repeated: expected seq {expected}"
    missing = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
    return f"gap: seq {missing} missing{whole} (deleted or moved events)"


def cut_reason(
    filed_as: str, sealed: int, end: int, newest: int | None = None, newest_line: int = 0
) -> str:
    """A checkpoint record sealing seq ``sealed`` that a journal ending at ``end`` lacks.

    The record stands for a checkpoint *event* at ``sealed + 1``; a newer record (``newest``,
    at ``newest_line``) stands for more, so at least seq end+1 to newest+1 were lost.
    """
    last = (sealed if newest is None else newest) + 1
    count = last - end
    lost = f"seq {last}" if count == 1 else f"seq {end + 1}-{last}"
    # At least: unsealed events after the newest checkpoint leave no trace in the file.
    events = "at least 1 event" if count == 1 else f"at least {count:,} events"
    verb = "was" if count == 1 else "were"
    more = (
        f"; its newest record, line {newest_line}, seals seq {newest}"
        if newest is not None and newest != sealed
        else ""
    )
    journal = f"the journal ends at seq {end}" if end else "the journal has no events"
    return (
        f"{filed_as} seals seq {sealed} (its checkpoint event is seq {sealed + 1}){more}, but "
        f"{journal}: {events} ({lost}) {verb} cut off its end"
    )


class ChainLinks:
    """The part of verify a reader affords as it goes: each event's hash recomputed, and
    its seq and ``prev`` linked to the event read next to it. Records are not modified.

    Read forwards (:meth:`follows`) from wherever reading starts, or backwards from the end
    (:meth:`precedes`); the byte-exact and checkpoint checks stay with ``audit verify``.
    """

    __slots__ = ("hash", "prev", "seq")

    def __init__(self) -> None:
        self.seq: int | None = None  # the event read last; None before the first
        self.hash = ""
        self.prev = ""

    def _read(self, record: Any) -> tuple[int, str, str] | str:
        try:
            chain = record["chain"]
            seq, prev, claimed = chain["seq"], chain["prev"], chain["hash"]
            if not isinstance(seq, int) or event_hash(record) != claimed:
                return HASH_MISMATCH if isinstance(seq, int) else NOT_AN_EVENT
        except (KeyError, TypeError, orjson.JSONEncodeError):
            return NOT_AN_EVENT
        return seq, prev, claimed

    def follows(self, record: Any) -> str | None:
        """None if ``record`` is intact and comes right after the event read before it."""
        found = self._read(record)
        if isinstance(found, str):
            return found
        seq, prev, claimed = found
        problem = None
        if self.seq is not None:
            if seq != self.seq + 1:
                problem = gap_reason(self.seq + 1, seq)
            elif prev != self.hash:
                problem = BROKEN_LINK
        self.seq, self.hash, self.prev = seq, claimed, prev
        return problem

    def precedes(self, record: Any) -> tuple[str, bool] | None:
        """Backwards: None if ``record`` is intact and is the event the one read before it
        names; else why not, and whether that is found at the later event (a link or gap)."""
        found = self._read(record)
        if isinstance(found, str):
            return found, False
        seq, prev, claimed = found
        problem = None
        if self.seq is not None:
            if seq != self.seq - 1:
                problem = gap_reason(seq + 1, self.seq), True
            elif claimed != self.prev:
                problem = BROKEN_LINK, True
        self.seq, self.hash, self.prev = seq, claimed, prev
        return problem


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
    files: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoints: int = 0
    last_checkpoint_seq: int = 0  # the seq of the newest checkpoint *event*
    problem: Problem | None = None  # the first one found, the one reported
    stopped: Problem | None = None  # where checking stopped: the counts above end there
    lines: int = 0  # every line of the chain, read to the end even past a problem
    signed: dict[str, int] = field(default_factory=dict)  # checkpoint events by key id
    missing: list[tuple[int, int]] = field(default_factory=list)  # remote copies: every gap
    duplicates: int = 0  # remote copies: identical extra copies (at-least-once shipping)
    # Time, as the events say it: a chain's times should never go back, and a long silence
    # may be an outage or a cut. Reported for an auditor to judge, not failures.
    last_time: str = ""
    backwards: int = 0  # events timed earlier than the event before them
    first_backwards: str = ""  # where, and from what to what
    largest_gap_s: float = 0.0
    largest_gap: str = ""  # where, and between which times
    # Where checking started: seq 1, or later (``start`` says why: "from_seq", "pruned").
    first_seq: int = 1
    start: str = ""
    skipped: int = 0  # lines before --from-seq, not checked
    pruned_by: Pruning | None = None  # the segment_pruned event accounting for a later start
    prunings: list[Pruning] = field(default_factory=list)  # every segment_pruned event read

    @property
    def unsealed(self) -> int:
        """Events after the newest checkpoint: not covered by any signature."""
        return self.last_seq - max(self.last_checkpoint_seq, self.first_seq - 1)

    @property
    def unaccounted(self) -> bool:
        """The chain starts after seq 1 with no segment_pruned event saying why."""
        return self.start == "pruned" and self.pruned_by is None


@dataclass(frozen=True, slots=True)
class Pruning:
    """A ``segment_pruned`` event read in the chain: where, and what it says went."""

    file: str
    line: int
    seq: int
    last_seq: int
    last_hash: str
    segments: tuple[str, ...]

    @classmethod
    def of(cls, file: str, line: int, seq: int, detail: Any) -> Pruning | None:
        try:
            last_seq, last_hash = detail["last_seq"], detail["last_hash"]
            segments = tuple(str(name) for name in detail.get("segments") or ())
        except (KeyError, TypeError):
            return None
        if not isinstance(last_seq, int) or not isinstance(last_hash, str):
            return None
        return cls(file, line, seq, last_seq, last_hash, segments)


@dataclass(slots=True)
class VerifyReport:
    chains: dict[str, ChainReport] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    signatures_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.chains)

    @property
    def events(self) -> int:
        return sum(chain.events for chain in self.chains.values())


def verify_path(
    source: Path,
    *,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
    progress: Callable[[int], None] | None = None,
    chains: Iterable[str] | None = None,
    from_seq: int | None = None,
) -> VerifyReport:
    """Verify every chain under a journal file or folder (or only ``chains``), from seq 1 or
    ``from_seq``; ``progress`` gets bytes read."""
    found = discover(source)
    report = VerifyReport(signatures_checked=public_keys is not None)
    for path, reason in found.unreadable:
        report.files.append(str(path))
        report.problems.append(Problem(str(path), 1, None, reason))
    wanted = None if chains is None else set(chains)
    for chain_id in found.chains:
        if wanted is not None and chain_id not in wanted:
            continue
        checker = _ChainChecker(
            report, chain_id, public_keys, from_seq=from_seq, segments_may_be_pruned=True
        )
        for path in found.checkpoints.get(chain_id, []):
            report.files.append(str(path))
            checker.load_checkpoints(_lines(path))
        for segment in found.segments.get(chain_id, []):
            report.files.append(str(segment.path))
            checker.chain.files += 1
            checker.check_lines(_lines(segment.path), progress)
        checker.finish()
    return report


def _lines(path: Path) -> Iterator[tuple[str, int, bytes]]:
    file = str(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield file, number, raw


@dataclass(frozen=True, slots=True)
class Copy:
    """One line of a remote copy, and where it was found."""

    where: str  # s3://bucket/key, cloudwatch://group/stream
    line: int
    raw: bytes  # as stored, with its newline
    kind: str = "event"  # or "checkpoint": a record like those of the checkpoint file


def verify_copies(
    copies: Iterable[Copy],
    *,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
    chains: Iterable[str] | None = None,
    from_seq: int | None = None,
) -> VerifyReport:
    """Verify every chain found in ``copies`` (or only ``chains``), in any order and with
    duplicates, from seq 1 or ``from_seq``.

    Of two different copies of one event the first given is checked against the chain
    (readers give the oldest first) and the other is reported. Sinks get every event, so
    a copy that starts late has a gap, whatever retention did to the local journal.
    """
    wanted = None if chains is None else set(chains)
    report = VerifyReport(signatures_checked=public_keys is not None)
    events: dict[str, dict[int, Copy]] = {}
    checkpoints: dict[str, list[tuple[int, Copy]]] = {}  # with the seq each seals
    conflicts: dict[str, list[tuple[Copy, Copy, int]]] = {}
    duplicates: dict[str, int] = {}
    wheres: dict[str, None] = {}
    for copy in copies:
        wheres[copy.where] = None
        raw = copy.raw if copy.raw.endswith(b"\n") else copy.raw + b"\n"
        try:
            record = orjson.loads(raw)
            if copy.kind == "checkpoint":
                chain_id, seq = str(record["chain"]), int(record["seq"])
            else:
                chain_id, seq = str(record["chain"]["id"]), int(record["chain"]["seq"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            what = "checkpoint record" if copy.kind == "checkpoint" else "audit event"
            report.problems.append(Problem(copy.where, copy.line, None, f"not a keyledger {what}"))
            continue
        copy = Copy(copy.where, copy.line, raw, copy.kind)
        if copy.kind == "checkpoint":
            checkpoints.setdefault(chain_id, []).append((seq, copy))
            continue
        known = events.setdefault(chain_id, {}).get(seq)
        if known is None:
            events[chain_id][seq] = copy
        elif known.raw == raw:
            duplicates[chain_id] = duplicates.get(chain_id, 0) + 1
        else:
            conflicts.setdefault(chain_id, []).append((known, copy, seq))
    report.files = list(wheres)
    for chain_id in sorted(events.keys() | checkpoints.keys()):
        if wanted is not None and chain_id not in wanted:
            continue
        checker = _ChainChecker(
            report,
            chain_id,
            public_keys,
            unit="object",
            filed_as="a shipped checkpoint",
            from_seq=from_seq,
        )
        chain = checker.chain
        chain.duplicates = duplicates.get(chain_id, 0)
        found = events.get(chain_id, {})
        chain.missing = _missing_ranges(sorted(found), from_seq or 1)
        chain.files = len({c.where for c in found.values()})
        filed = sorted(checkpoints.get(chain_id, []), key=lambda found: found[0])
        checker.load_checkpoints((c.where, c.line, c.raw) for _, c in filed)
        checker.check_lines((c.where, c.line, c.raw) for _, c in sorted(found.items()))
        for first, second, seq in conflicts.get(chain_id, [])[:1]:
            # Whatever the chain says, a second version of an event is a finding of its own.
            problem = Problem(
                second.where,
                second.line,
                seq,
                f"differs from another copy of the same event ({first.where}:{first.line}): "
                "one of them was altered",
            )
            report.problems.append(problem)
            chain.problem = chain.problem or problem
        checker.finish()
    return report


def _missing_ranges(seqs: list[int], start: int = 1) -> list[tuple[int, int]]:
    """Every run of seqs absent from ``seqs`` (sorted), from ``start`` to the last present."""
    gaps = []
    expected = start
    for seq in seqs:
        if seq < start:
            continue
        if seq > expected:
            gaps.append((expected, seq - 1))
        expected = seq + 1
    return gaps


@dataclass(slots=True)
class _Filed:
    """A record of the checkpoint file, and where it is."""

    checkpoint: Checkpoint
    file: str
    line: int


class _ChainChecker:
    """One chain, fed its checkpoint file(s) first, then its segments in order."""

    def __init__(
        self,
        report: VerifyReport,
        chain_id: str,
        keys: Mapping[str, Ed25519PublicKey] | None,
        *,
        unit: str = "segment file",  # what a gap starting at line 1 may be
        filed_as: str = "the checkpoint file",  # where the signed records came from
        from_seq: int | None = None,  # check from this seq on; the chain before is given
        segments_may_be_pruned: bool = False,  # a local journal: may start at a later segment
    ) -> None:
        self.unit = unit
        self.filed_as = filed_as
        self.from_seq = from_seq
        self.prunable = segments_may_be_pruned
        self.started = False  # the first event to check was found
        self.anchor = ""  # the prev of the first event checked, taken as given
        self.last_read: tuple[str, int, int] | None = None  # of the lines skipped
        self.report = report
        self.chain = report.chains.setdefault(chain_id, ChainReport(chain_id))
        self.keys = keys
        self.filed: dict[int, _Filed] = {}  # by the seq each seals
        self.last_checkpoint: Checkpoint | None = None

    def fail(
        self, file: str, line: int, seq: int | None, reason: str, *, stop: bool = True
    ) -> None:
        """Record a problem; the first is reported. ``stop``: check nothing after it."""
        problem = Problem(file, line, seq, reason)
        if self.chain.problem is None:
            self.chain.problem = problem
            self.report.problems.append(problem)
        if stop and self.chain.stopped is None:
            self.chain.stopped = problem

    def _signature(self, file: str, number: int, seq: int, checkpoint: Checkpoint) -> bool:
        """False if the signature is bad; a key not given is reported, and checking goes on.

        A wrong or missing public key says nothing about the journal: the chain is still
        checked to its end, so the counts say what was read.
        """
        if self.keys is None:
            return True
        bad = checkpoint.verify(self.keys)
        if bad is None:
            return True
        if checkpoint.key_id not in self.keys:
            self.fail(file, number, seq, f"checkpoint {bad}", stop=False)
            return True
        self.fail(file, number, seq, f"checkpoint {bad}")
        return False

    # -- the checkpoint file -------------------------------------------------------------

    def load_checkpoints(self, lines: Iterable[tuple[str, int, bytes]]) -> None:
        """Checkpoint-file records (or S3 checkpoint objects), each signed."""
        for file, number, raw in lines:
            if not raw.endswith(b"\n"):
                self.fail(file, number, None, "last line is incomplete (torn write)")
                return
            try:
                checkpoint = Checkpoint.from_line(raw)
            except ValueError as exc:
                self.fail(file, number, None, f"not a checkpoint record: {exc}")
                return
            if checkpoint.chain != self.chain.id:
                self.fail(file, number, checkpoint.seq, f"names chain {checkpoint.chain!r}")
                return
            if not self._signature(file, number, checkpoint.seq, checkpoint):
                return
            known = self.filed.get(checkpoint.seq)
            if known is not None and known.checkpoint != checkpoint:
                self.fail(file, number, checkpoint.seq, "two different checkpoints for one seq")
                return
            self.filed[checkpoint.seq] = _Filed(checkpoint, file, number)

    # -- the journal ---------------------------------------------------------------------

    def check_lines(
        self,
        lines: Iterable[tuple[str, int, bytes]],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """The chain's events, in order: one segment file, or deduplicated copies."""
        chain = self.chain
        pending = 0
        for file, number, raw in lines:
            chain.lines += 1
            if chain.stopped is None:  # past a problem, lines are only counted
                self._check_line(file, number, raw)
            if progress is not None:
                pending += len(raw)
                if number % _PROGRESS_EVERY == 0:
                    progress(pending)
                    pending = 0
        if progress is not None:
            progress(pending)

    def _check_line(self, file: str, number: int, raw: bytes) -> None:
        chain = self.chain
        if not raw.endswith(b"\n"):
            self.fail(file, number, None, "last line is incomplete (torn write)")
            return
        try:
            record: Any = orjson.loads(raw)
            chain_field = record["chain"]
            chain_id = chain_field["id"]
            seq = chain_field["seq"]
            prev = chain_field["prev"]
            claimed = chain_field["hash"]
            if not isinstance(seq, int) or not isinstance(claimed, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.fail(file, number, None, NOT_AN_EVENT)
            return
        if not self.started:
            if self.from_seq is not None and seq < self.from_seq:
                chain.skipped += 1  # before --from-seq: taken as given
                self.last_read = (file, number, seq)
                return
            self._start(number, seq, prev, record)
        if chain_id != chain.id:
            # A forged line claiming another chain would otherwise be checked against that
            # (empty) chain and pass.
            self.fail(file, number, seq, f"belongs to chain {chain_id!r}, not {chain.id!r}")
            return
        if orjson.dumps(record) != raw[:-1]:
            # The hash covers the parsed event; bytes that parse to it in another way
            # (duplicate keys, spacing) could show one thing to a reader and another to us.
            self.fail(
                file, number, seq, "not as keyledger wrote it (re-encoded, or duplicate keys)"
            )
            return
        del chain_field["hash"]
        if hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest() != claimed:
            self.fail(file, number, seq, HASH_MISMATCH)
            return
        if seq != chain.last_seq + 1:
            self.fail(file, number, seq, self._out_of_sequence(seq, number))
            return
        if prev != chain.last_hash:
            self.fail(file, number, seq, BROKEN_LINK)
            return
        filed = self.filed.get(seq)
        if filed is not None and filed.checkpoint.hash != claimed:
            self.fail(
                file,
                number,
                seq,
                f"differs from what checkpoint {filed.file}:{filed.line} sealed: the journal "
                "was rewritten from here on",
            )
            return
        if record.get("type") == "checkpoint":
            self._check_checkpoint_event(file, number, seq, record)
        elif record.get("type") == "lifecycle" and _detail_event(record) == "segment_pruned":
            pruning = Pruning.of(file, number, seq, record["detail"])
            if pruning is not None:
                chain.prunings.append(pruning)
        elif (sealed := self.filed.get(seq - 1)) is not None:
            self.fail(
                file,
                number,
                seq,
                f"checkpoint {sealed.file}:{sealed.line} should follow seq {seq - 1} here: "
                "it was removed from the journal",
            )
            return
        chain.events += 1
        chain.last_seq = seq
        chain.last_hash = claimed
        self._check_time(file, number, seq, record.get("time"))

    def _start(self, number: int, seq: int, prev: object, record: dict[str, Any]) -> None:
        """Where checking starts: seq 1, ``from_seq``, or a later segment's first event
        linking back to a segment no longer there; anything else is a gap from there."""
        self.started = True
        chain = self.chain
        start = self.from_seq or 1
        if seq == 1 or not isinstance(prev, str):
            return
        if seq == start:
            chain.first_seq, chain.start = seq, "from_seq"
        elif self.prunable and number == 1 and _links_back(record, seq, prev):
            chain.first_seq, chain.start = seq, "pruned"
        else:
            chain.last_seq = start - 1  # the gap is reported from where checking should start
            return
        chain.last_seq, chain.last_hash = seq - 1, prev
        self.anchor = prev

    def _check_time(self, file: str, number: int, seq: int, moment: object) -> None:
        chain = self.chain
        if not isinstance(moment, str):
            return
        last, chain.last_time = chain.last_time, moment
        if not last:
            return
        # Fixed-width UTC times sort as strings; only a new minute can hold a long gap.
        if moment < last:
            chain.backwards += 1
            if not chain.first_backwards:
                chain.first_backwards = f"{file}:{number}: seq {seq}: {last} -> {moment}"
            chain.last_time = last  # a step back is measured against the latest time seen
        elif moment[:16] != last[:16]:
            before, after = parse_time(last), parse_time(moment)
            if before is not None and after is not None:
                gap = (after - before).total_seconds()
                if gap > chain.largest_gap_s:
                    chain.largest_gap_s = gap
                    chain.largest_gap = f"{file}:{number}: seq {seq}: {last} .. {moment}"

    def _out_of_sequence(self, seq: int, number: int) -> str:
        whole = f" (a whole {self.unit}?)" if number == 1 and self.chain.last_seq else ""
        return gap_reason(self.chain.last_seq + 1, seq, whole)

    def _check_checkpoint_event(
        self, file: str, number: int, seq: int, record: dict[str, Any]
    ) -> None:
        try:
            checkpoint = Checkpoint.from_event(record)
        except ValueError as exc:
            self.fail(file, number, seq, str(exc))
            return
        chain = self.chain
        if checkpoint.seq != seq - 1:
            self.fail(
                file,
                number,
                seq,
                f"checkpoint seals seq {checkpoint.seq}, but the event just before it is "
                f"seq {seq - 1}",
            )
            return
        if checkpoint.hash != chain.last_hash:
            self.fail(
                file,
                number,
                seq,
                f"checkpoint seals seq {checkpoint.seq} with hash {checkpoint.hash[:12]}, but "
                f"that event's hash is {chain.last_hash[:12]}",
            )
            return
        expected = self.last_checkpoint.seal if self.last_checkpoint else None
        if expected is None and chain.first_seq > 1:
            # The checkpoints before the start were not read: the checkpoint file vouches.
            problem = self._previous_before_start(checkpoint)
            if problem is not None:
                self.fail(file, number, seq, problem)
                return
        elif checkpoint.previous != expected:
            named = checkpoint.previous.seq if checkpoint.previous else "none"
            last = expected.seq if expected else "none"
            self.fail(
                file,
                number,
                seq,
                f"checkpoint names seq {named} as the previous checkpoint, but the last one "
                f"sealed seq {last} (checkpoints removed or reordered)",
            )
            return
        if not self._signature(file, number, seq, checkpoint):
            return
        filed = self.filed.get(checkpoint.seq)
        if filed is not None and filed.checkpoint != checkpoint:
            self.fail(file, number, seq, f"differs from checkpoint {filed.file}:{filed.line}")
            return
        self.last_checkpoint = checkpoint
        chain.signed[checkpoint.key_id] = chain.signed.get(checkpoint.key_id, 0) + 1
        chain.checkpoints += 1
        chain.last_checkpoint_seq = seq

    def _previous_before_start(self, checkpoint: Checkpoint) -> str | None:
        """Why the first checkpoint after a later start cannot name the previous it names."""
        named = checkpoint.previous
        after = named.seq if named is not None else -1
        if named is not None and named.seq + 1 >= self.chain.first_seq:
            return (
                f"checkpoint names seq {named.seq} as the previous checkpoint, but no "
                "checkpoint was found there (checkpoints removed or reordered)"
            )
        filed = self.filed.get(after)
        if named is not None and filed is not None and filed.checkpoint.hash != named.hash:
            return (
                f"checkpoint names seq {named.seq} with hash {named.hash[:12]} as the previous "
                f"checkpoint, but {filed.file}:{filed.line} sealed it with hash "
                f"{filed.checkpoint.hash[:12]}"
            )
        skipped = [f for s, f in sorted(self.filed.items()) if after < s < self.chain.first_seq - 1]
        if skipped:
            last = skipped[-1]
            named_seq = "none" if named is None else f"seq {named.seq}"
            return (
                f"checkpoint names {named_seq} as the previous checkpoint, but "
                f"{last.file}:{last.line} sealed seq {last.checkpoint.seq} after it "
                "(checkpoints removed or reordered)"
            )
        return None

    def _account_for_start(self) -> None:
        """The newest segment_pruned event that removed what comes before the start."""
        chain = self.chain
        anchor = chain.first_seq - 1
        matching = [p for p in chain.prunings if p.last_seq == anchor]
        if not matching:
            return  # unaccounted: a warning (a failure under --strict)
        pruning = matching[-1]
        if pruning.last_hash != self.anchor:
            self.fail(
                pruning.file,
                pruning.line,
                pruning.seq,
                f"segment_pruned says seq {anchor} had hash {pruning.last_hash[:12]}, but the "
                f"earliest segment links to {self.anchor[:12]}: it is not the segment that "
                "followed the pruned ones",
                stop=False,
            )
            return
        chain.pruned_by = pruning

    def finish(self) -> None:
        """Checkpoints the journal never reached: events were cut off its end.

        A record that seals seq N stands for a checkpoint *event* at seq N + 1, so a journal
        that ends at seq N or earlier lost at least seq (end + 1) to (newest record + 1).
        """
        if self.chain.stopped is not None:
            return
        if not self.started and self.last_read is not None:
            file, line, seq = self.last_read
            reason = f"no event from seq {self.from_seq} on: the chain ends at seq {seq}"
            self.fail(file, line, None, reason, stop=False)
            return
        if self.chain.start == "pruned":
            self._account_for_start()
        end = self.chain.last_seq
        beyond = [f for seq, f in sorted(self.filed.items()) if seq >= end]
        if not beyond:
            return
        first, newest = beyond[0], beyond[-1]
        self.fail(
            first.file,
            first.line,
            first.checkpoint.seq,
            cut_reason(
                self.filed_as, first.checkpoint.seq, end, newest.checkpoint.seq, newest.line
            ),
            stop=False,  # every line was checked: the counts stand
        )


def _detail_event(record: dict[str, Any]) -> object:
    detail = record.get("detail")
    return detail.get("event") if isinstance(detail, dict) else None


def _links_back(record: dict[str, Any], seq: int, prev: str) -> bool:
    """A segment's first event naming the last event of the segment before it."""
    detail = record.get("detail")
    return (
        record.get("type") == "lifecycle"
        and isinstance(detail, dict)
        and detail.get("event") == "segment_start"
        and detail.get("previous_last_seq") == seq - 1
        and detail.get("previous_last_hash") == prev
    )
