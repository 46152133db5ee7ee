"""``keyledger audit tail|export|report`` and ``keyledger keys generate``, as a security team
runs them: what is printed, what is written, and the exit status.

Journals are real: sealed line by line with the chain's own ``seal`` (at chosen times), or
written by a running ``Journal``. Commands run through ``keyledger.cli.main``, or as a
``python -m keyledger`` process where a terminal, a pipe or following matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import pty
import re
import secrets
import select
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from keyledger.cli import main
from keyledger.proxy.audit.checkpoints import (
    CheckpointSigner,
    load_private_key,
    load_public_keys,
)
from keyledger.proxy.audit.events import AuditEvent, format_time
from keyledger.proxy.audit.journal import Checkpointing, Journal, Rotation
from tests.audit_records import (
    CHAIN,
    Record,
    SealedChain,
    access_event,
    auth_failure_event,
    lifecycle_event,
)

KEYLEDGER = [sys.executable, "-m", "keyledger"]

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=3)  # well before any --since 1h
RECENT = NOW - timedelta(minutes=30)  # well after it

# A secret name chosen by an attacker: set the terminal title, clear the screen, a CSI in
# its one-byte C1 form, a right-to-left override.
EVIL = "prod/\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- journals ------------------------------------------------------------------------------


def access(
    at: datetime,
    principal: str,
    secret: str,
    *,
    action: str = "read",
    effect: str = "allow",
) -> AuditEvent:
    """An access event as the proxy records it: allowed and served, or denied by policy."""
    return access_event(
        at=at,
        request=secrets.token_hex(8),
        principal=principal,
        action=action,
        secret=secret,
        effect=effect,
        rule=f"{principal}-{effect}",
        policy_hash="p" * 64,
        latency_ms=2.5,
    )


def auth_failure(at: datetime) -> AuditEvent:
    """A failed sign-in: a claimed key id, no secret."""
    return auth_failure_event(
        at=at,
        request=secrets.token_hex(8),
        source_ip="10.0.0.9",
        user_agent="curl/8",
        principal="AKIAUNKNOWN",
        code="invalid_signature",
        reason="signature does not match",
    )


def at_old(minute: int) -> datetime:
    return OLD + timedelta(minutes=minute)


def at_recent(minute: int) -> datetime:
    return RECENT + timedelta(minutes=minute)


def scenario(directory: Path) -> SealedChain:
    """Twelve events, seq 1-12: five three days ago, seven in the last half hour."""
    chain = SealedChain(directory)
    chain.add(
        access(at_old(0), "svc-payments", "prod/db/password"),  # 1
        access(at_old(1), "svc-payments", "prod/db/password"),  # 2
        access(at_old(2), "svc-batch", "staging/api-key"),  # 3
        access(at_old(3), "svc-batch", "prod/db/password", action="write", effect="deny"),  # 4
        auth_failure(at_old(4)),  # 5
        access(at_recent(0), "svc-payments", "prod/db/password"),  # 6
        access(at_recent(1), "alice@corp", "prod/cache/url", action="describe"),  # 7
        access(at_recent(2), "svc-batch", "prod/db/password", effect="deny"),  # 8
        lifecycle_event(at_recent(3)),  # 9
        access(at_recent(4), "svc-payments", "prod/cache/url"),  # 10
        access(at_recent(5), "svc-batch", "staging/api-key", action="rotate"),  # 11
        access(at_recent(6), "alice@corp", "app/forbidden", effect="deny"),  # 12
    )
    return chain


@pytest.fixture
def journal(tmp_path: Path) -> SealedChain:
    return scenario(tmp_path / "audit")


@pytest.fixture(autouse=True)
def plain_terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No colour forced on (or off) by whoever runs the suite."""
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``keyledger ARGV`` in this process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def audit(
    capsys: pytest.CaptureFixture[str], command: str, source: Path | str, *options: str
) -> tuple[int, str, str]:
    """``keyledger audit COMMAND SOURCE OPTIONS`` in this process, as ``run``."""
    return run(capsys, "audit", command, str(source), *options)


def export(
    capsys: pytest.CaptureFixture[str], source: Path, fmt: str, *options: str
) -> tuple[int, str, str]:
    """``keyledger audit export SOURCE --format FMT OPTIONS`` in this process, as ``run``."""
    return audit(capsys, "export", source, "--format", fmt, *options)


def usage_error(result: tuple[int, str, str]) -> str:
    """The stderr of a command refused as a usage error: exit status 2, nothing on stdout."""
    code, out, err = result
    assert code == 2
    assert out == ""
    return err


def seqs(out: str) -> list[int]:
    """The chain seqs of ``--json`` output, in the order printed."""
    return [orjson.loads(line)["chain"]["seq"] for line in out.splitlines()]


def keyledger(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYLEDGER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(env) if env is not None else None,
    )


# -- tail ----------------------------------------------------------------------------------


class TestTail:
    def test_last_ten_oldest_first(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without -n, the last 10 events are printed one per line, oldest first."""
        code, out, _ = audit(capsys, "tail", journal.path.parent)

        assert code == 0
        lines = out.splitlines()
        assert len(lines) == 10
        expected = journal.records[2:]
        for line, record in zip(lines, expected, strict=True):
            assert line.startswith(record["time"][:10] + " " + record["time"][11:23])
        assert "svc-batch (sigv4)" in lines[0]
        assert "staging/api-key" in lines[0]
        assert "DENY" in lines[-1]
        assert "app/forbidden" in lines[-1]
        assert "alice@corp (sigv4)" in lines[-1]

    def test_n_lines(self, journal: SealedChain, capsys: pytest.CaptureFixture[str]) -> None:
        """-n 3 prints exactly the last three events, oldest first."""
        code, out, _ = audit(capsys, "tail", journal.path.parent, "-n", "3", "--json")

        assert code == 0
        assert seqs(out) == [10, 11, 12]

    def test_a_single_file_is_a_source(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """SOURCE may be one journal file instead of a folder."""
        code, out, _ = audit(capsys, "tail", journal.path, "-n", "2", "--json")

        assert code == 0
        assert seqs(out) == [11, 12]

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            (["--principal", "svc-*"], [1, 2, 3, 4, 6, 8, 10, 11]),
            (["--principal", "svc-pay*"], [1, 2, 6, 10]),
            (["--principal", "alice@corp"], [7, 12]),
            (["--secret", "prod/*"], [1, 2, 4, 6, 7, 8, 10]),
            (["--secret", "prod/db/*"], [1, 2, 4, 6, 8]),
            (["--secret", "aws:staging/*"], [3, 11]),
            (["--effect", "deny"], [4, 5, 8, 12]),
            (["--action", "write"], [4]),
            (["--action", "describe", "--action", "rotate"], [7, 11]),
            (["--type", "auth_failure"], [5]),
            (["--type", "lifecycle"], [9]),
            (["--since", "1h"], [6, 7, 8, 9, 10, 11, 12]),
            (["--until", "1h"], [1, 2, 3, 4, 5]),
            (["--principal", "svc-*", "--effect", "deny"], [4, 8]),
            (["--secret", "prod/*", "--since", "1h", "--effect", "allow"], [6, 7, 10]),
        ],
    )
    def test_filters(
        self,
        journal: SealedChain,
        capsys: pytest.CaptureFixture[str],
        options: list[str],
        expected: list[int],
    ) -> None:
        """Each filter keeps exactly the events it names; different options must all hold."""
        code, out, err = audit(capsys, "tail", journal.path.parent, "--json", *options)

        assert code == 0, err
        assert seqs(out) == expected

    def test_filters_apply_before_the_last_n(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """-n counts matching events: the last two denies, however far back they are."""
        code, out, _ = audit(capsys, "tail", journal.path.parent, "--effect", "deny", "-n", "2")

        assert code == 0
        lines = out.splitlines()
        assert len(lines) == 2
        assert "prod/db/password" in lines[0]
        assert "svc-batch" in lines[0]
        assert "app/forbidden" in lines[1]

    def test_json_lines_are_the_journal_records(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--json prints one JSON object per line, equal to the journal's own records."""
        code, out, _ = audit(capsys, "tail", journal.path.parent, "--json", "-n", "50")

        assert code == 0
        assert [orjson.loads(line) for line in out.splitlines()] == journal.records
        on_disk = [orjson.loads(line) for line in journal.path.read_bytes().splitlines()]
        assert journal.records == on_disk

    def test_control_characters_never_reach_the_terminal(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An escape sequence in a secret name or user agent is printed as visible escapes."""
        chain = SealedChain(tmp_path)
        chain.add(access(NOW, "svc-\x1b[8mhidden", EVIL))

        code, out, _ = audit(capsys, "tail", tmp_path)

        assert code == 0
        for char in RAW_CONTROLS:
            assert char not in out
        assert "prod/\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eevil" in out
        assert "svc-\\x1b[8mhidden" in out

    def test_control_characters_never_reach_the_terminal_as_json(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--json escapes ESC, BEL, C1 and bidi characters, and still parses to the true name."""
        chain = SealedChain(tmp_path)
        chain.add(access(NOW, "svc-a", EVIL))

        code, out, _ = audit(capsys, "tail", tmp_path, "--json")

        assert code == 0
        for char in RAW_CONTROLS:
            assert char not in out
        (record,) = (orjson.loads(line) for line in out.splitlines())
        assert record["resource"]["secret"] == EVIL
        assert record == chain.records[0]

    def test_a_pipe_gets_no_colour(self, journal: SealedChain) -> None:
        """Piped (not a terminal), the readable lines carry no ANSI codes."""
        result = keyledger("audit", "tail", str(journal.path.parent))

        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 10
        assert "\x1b" not in result.stdout

    def test_a_terminal_gets_colour_unless_no_color(self, journal: SealedChain) -> None:
        """On a terminal the labels are coloured; NO_COLOR turns every ANSI code off."""
        env = {k: v for k, v in os.environ.items() if k not in _COLOUR_VARIABLES}
        env["TERM"] = "xterm-256color"

        coloured = on_terminal(["audit", "tail", str(journal.path.parent)], env)
        plain = on_terminal(["audit", "tail", str(journal.path.parent)], {**env, "NO_COLOR": "1"})

        assert ANSI.search(coloured), coloured
        assert "\x1b" not in plain
        assert ANSI.sub("", coloured) == plain

    def test_a_terminal_never_gets_a_secret_names_escapes(self, tmp_path: Path) -> None:
        """Even on a colour terminal, the escapes in a secret name are shown, not obeyed."""
        chain = SealedChain(tmp_path)
        chain.add(access(NOW, "svc-a", EVIL))
        env = {k: v for k, v in os.environ.items() if k not in _COLOUR_VARIABLES}
        env["TERM"] = "xterm-256color"

        out = on_terminal(["audit", "tail", str(tmp_path)], env)

        assert ANSI.search(out), out  # colour is on
        for char in ("\x07", "\x9b", "\u202e"):
            assert char not in out
        assert "\x1b]" not in out
        assert "\x1b[2J" not in out
        assert "\\x1b]0;owned" in out

    def test_missing_source_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A SOURCE that does not exist is a usage error naming the path."""
        missing = tmp_path / "no-such-journal"

        err = usage_error(audit(capsys, "tail", missing))

        assert err == f"keyledger: {missing}: no such file or folder\n"

    def test_neither_source_nor_url_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without SOURCE or --url there is nothing to read: exit 2 saying what to give."""
        err = usage_error(run(capsys, "audit", "tail"))

        assert "give a journal file or folder, or --url" in err

    def test_both_source_and_url_exit_2(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """SOURCE and --url together are ambiguous: exit 2, nothing printed."""
        err = usage_error(audit(capsys, "tail", journal.path, "--url", "http://127.0.0.1:9"))

        assert "give a journal file or folder, or --url" in err

    def test_url_nobody_serves_says_so_without_ssl_noise(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A plain-http --url where nothing listens: one line naming the URL, the refusal and
        where the admin API really is, not aiohttp's "ssl:default"."""
        monkeypatch.setenv("KEYLEDGER_ADMIN_TOKEN", "t")
        with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"

        err = usage_error(run(capsys, "audit", "tail", "--url", url))

        assert err.startswith(f"keyledger: cannot connect to {url}: Connection refused.")
        assert "KEYLEDGER_ADMIN_URL" in err
        assert "ssl" not in err

    def test_a_bad_since_exits_2_naming_the_option(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--since that is not a time exits 2 and says which option and what it takes."""
        err = usage_error(audit(capsys, "tail", journal.path, "--since", "yesterday"))

        assert err.startswith("keyledger: --since: 'yesterday' is not a time")


_COLOUR_VARIABLES = frozenset(
    {"NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "TERM"}
)


def on_terminal(args: list[str], env: Mapping[str, str]) -> str:
    """What ``keyledger ARGS`` writes to a real terminal (a pseudo-terminal), as text."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [*KEYLEDGER, *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=dict(env),
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 20)
            assert ready, "no output from keyledger on the terminal"
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        _, err = process.communicate(timeout=20)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    # The terminal turns each "\n" into "\r\n".
    return b"".join(chunks).decode().replace("\r\n", "\n")


# -- tail -f -------------------------------------------------------------------------------


def read_event(n: int) -> AuditEvent:
    """svc-n reading app/item-n, allowed, now; no request."""
    return access_event(request=None, principal=f"svc-{n}", secret=f"app/item-{n}", latency_ms=1.0)


@contextlib.asynccontextmanager
async def running_journal(
    directory: Path, *, max_bytes: int | None = None, checkpoints: Checkpointing | None = None
) -> AsyncIterator[Journal]:
    """A real journal that starts a new segment every ``max_bytes`` (None: the Journal's
    default rotation), with ``checkpoints`` (None: none)."""
    rotation = None if max_bytes is None else Rotation(max_bytes=max_bytes, max_age_s=None)
    journal = Journal(
        directory=directory, chain_id=CHAIN, rotation=rotation, checkpoints=checkpoints
    )
    await journal.start()
    try:
        yield journal
    finally:
        await journal.close()


def signer_for(prefix: Path) -> CheckpointSigner:
    """A signer for the private key ``keyledger keys generate --out PREFIX`` wrote."""
    key = load_private_key(prefix.with_suffix(".key").read_bytes(), source="test key")
    return CheckpointSigner(key)


class Follow:
    """``keyledger audit tail ... -f`` as a process; its stdout read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def line(self, within: float) -> str:
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(within):
                raw = await self.process.stdout.readline()
        except TimeoutError:
            raise AssertionError(
                f"nothing printed within {within}s; so far: {self.lines}"
            ) from None
        assert raw, f"tail -f exited ({await self.process.wait()}); printed {self.lines}"
        text = raw.decode().rstrip("\n")
        self.lines.append(text)
        return text

    async def json_until(self, seq: int, within: float) -> list[Record]:
        """Records printed until the one with chain seq ``seq``, all within ``within`` s."""
        out = []
        deadline = time.monotonic() + within
        while True:
            record: Record = orjson.loads(await self.line(deadline - time.monotonic()))
            out.append(record)
            if record["chain"]["seq"] >= seq:
                return out


@contextlib.asynccontextmanager
async def following(*args: str) -> AsyncIterator[Follow]:
    process = await asyncio.create_subprocess_exec(
        *KEYLEDGER,
        "audit",
        "tail",
        *args,
        "-f",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield Follow(process)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


class TestFollow:
    async def test_new_events_are_printed_within_a_second_or_two_across_rotation(
        self, tmp_path: Path
    ) -> None:
        """Each event a running journal appends is printed within 2 s, including after the
        journal rotates into a new segment, and the seqs printed run without gap or repeat."""
        directory = tmp_path / "audit"
        async with running_journal(directory, max_bytes=1500) as journal:
            await journal.append_many([read_event(0), read_event(1)])
            async with following(str(directory), "--json") as tail:
                started = await tail.json_until(2, within=20)
                assert [r["principal"]["id"] for r in started] == ["svc-0", "svc-1"]

                printed = list(started)
                for n in range(2, 12):
                    appended = time.monotonic()
                    await journal.append(read_event(n))
                    new = await tail.json_until(journal.state.seq, within=2)
                    assert time.monotonic() - appended < 2
                    assert new[-1]["principal"]["id"] == f"svc-{n}"
                    printed += new
            rotations = journal.stats.rotations
            last_seq = journal.state.seq

        assert rotations >= 2
        assert len(list(directory.glob(f"{CHAIN}.*.jsonl"))) == rotations + 1
        assert [r["chain"]["seq"] for r in printed] == list(range(1, last_seq + 1))
        segment_starts = [r for r in printed if r["type"] == "lifecycle"]
        assert [r["detail"]["event"] for r in segment_starts] == ["segment_start"] * rotations

    async def test_a_file_source_follows_into_the_next_segment_readably(
        self, tmp_path: Path
    ) -> None:
        """Given the first segment file, readable (non-JSON) tail -f through a pipe prints
        events from the segments that follow it, each within 2 s."""
        directory = tmp_path / "audit"
        async with running_journal(directory, max_bytes=1500) as journal:
            await journal.append(read_event(0))
            first_segment = journal.path
            async with following(str(first_segment), "--principal", "svc-*") as tail:
                assert "app/item-0" in await tail.line(within=20)
                for n in range(1, 8):
                    await journal.append(read_event(n))
                    line = await tail.line(within=2)
                    assert "app/item-" + str(n) in line, line
                    assert f"svc-{n} (sigv4)" in line
                    assert "\x1b" not in line
            assert journal.path != first_segment

    async def test_nothing_is_missed_or_repeated_while_tail_starts(self, tmp_path: Path) -> None:
        """Events appended while tail -n 3 -f is starting up, and after, are each printed
        exactly once: the initial last three and the followed events join without a gap."""
        directory = tmp_path / "audit"
        async with running_journal(directory, max_bytes=4000) as journal:
            await journal.append_many([read_event(n) for n in range(5)])
            stop = asyncio.Event()

            async def keep_appending() -> None:
                n = 5
                while not stop.is_set():
                    await journal.append(read_event(n))
                    n += 1
                    await asyncio.sleep(0.005)

            async with following(str(directory), "-n", "3", "--json") as tail:
                # Appending starts with the process, so it overlaps its whole start-up.
                appender = asyncio.create_task(keep_appending())
                try:
                    first = orjson.loads(await tail.line(within=20))
                    seq_when_first_printed = journal.state.seq
                    await asyncio.sleep(0.5)
                finally:
                    stop.set()
                    await appender
                last_seq = journal.state.seq
                printed = [first, *await tail.json_until(last_seq, within=10)]
            rotations = journal.stats.rotations

        assert seq_when_first_printed > 5  # appends ran while tail started
        assert last_seq > seq_when_first_printed + 10  # and went on while it followed
        assert rotations >= 1
        printed_seqs = [r["chain"]["seq"] for r in printed]
        assert printed_seqs[0] >= 3  # never more than the last three from before the start
        assert printed_seqs == list(range(printed_seqs[0], last_seq + 1))


# -- export --------------------------------------------------------------------------------


class TestExport:
    def test_jsonl_of_everything_is_the_journal_and_verifies(
        self, journal: SealedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exporting every event as jsonl writes the journal's lines as they are, and the
        exported file passes `keyledger audit verify`."""
        out = tmp_path / "export.jsonl"

        code, stdout, err = export(capsys, journal.path.parent, "jsonl", "-o", str(out))

        assert code == 0
        assert stdout == ""
        assert err == f"exported 12 events to {out} (jsonl)\n"
        assert out.read_bytes() == journal.path.read_bytes()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
        code, stdout, _ = audit(capsys, "verify", out)
        assert code == 0, stdout
        assert "intact: 12 events verified" in stdout

    async def test_jsonl_of_a_rotated_checkpointed_journal_verifies_with_signatures(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An export of a whole journal folder (several segments, signed checkpoints) is one
        file that verifies, signatures included."""
        prefix = tmp_path / "keys" / "checkpoint"
        assert main(["keys", "generate", "--out", str(prefix)]) == 0
        directory = tmp_path / "audit"
        checkpoints = Checkpointing(signer=signer_for(prefix), every_events=3)
        async with running_journal(directory, max_bytes=2000, checkpoints=checkpoints) as journal:
            for n in range(12):
                await journal.append(read_event(n))
        assert journal.stats.rotations >= 2
        capsys.readouterr()
        out = tmp_path / "all.jsonl"

        code, _, _ = export(capsys, directory, "jsonl", "--output", str(out))

        assert code == 0
        exported = out.read_bytes().splitlines()
        assert [orjson.loads(line)["chain"]["seq"] for line in exported] == list(
            range(1, journal.state.seq + 1)
        )
        code, stdout, _ = audit(
            capsys, "verify", out, "--public-key", str(prefix.with_suffix(".pub"))
        )
        assert code == 0, stdout
        assert f"intact: {journal.state.seq} events verified, signatures checked" in stdout

    def test_jsonl_of_every_replica_merges_by_time_and_is_not_one_chain(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A jsonl export of two replicas' chains interleaves them by time; as `export
        --help` says, only a one-chain export verifies, and verify names the other chain."""
        directory = tmp_path / "audit"
        a, b = SealedChain(directory, "replica-a"), SealedChain(directory, "replica-b")
        for n in range(3):
            a.add(access(at_recent(2 * n), "svc-a", f"app/a{n}"))
            b.add(access(at_recent(2 * n + 1), "svc-b", f"app/b{n}"))
        assert main(["audit", "verify", str(directory)]) == 0
        out = tmp_path / "all.jsonl"

        code, _, _ = export(capsys, directory, "jsonl", "-o", str(out))

        assert code == 0
        exported = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        assert len(exported) == 6
        assert [r["chain"]["id"] for r in exported] == ["replica-a", "replica-b"] * 3
        code, stdout, _ = audit(capsys, "verify", out)
        assert code == 1
        assert "belongs to chain 'replica-b', not 'replica-a'" in stdout

    def test_chain_exports_one_replica_and_it_verifies(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--chain ID exports that replica's events only, and the file verifies."""
        directory = tmp_path / "audit"
        a, b = SealedChain(directory, "replica-a"), SealedChain(directory, "replica-b")
        for n in range(3):
            a.add(access(at_recent(2 * n), "svc-a", f"app/a{n}"))
            b.add(access(at_recent(2 * n + 1), "svc-b", f"app/b{n}"))
        out = tmp_path / "b.jsonl"

        code, _, _ = export(capsys, directory, "jsonl", "--chain", "replica-b", "-o", str(out))

        assert code == 0
        assert out.read_bytes() == b.path.read_bytes()
        code, stdout, _ = audit(capsys, "verify", out)
        assert code == 0, stdout
        assert "intact: 3 events verified" in stdout

    def test_an_unknown_chain_exits_2_naming_the_chains_there(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--chain that names no chain under SOURCE is a usage error that lists the chains."""
        err = usage_error(export(capsys, journal.path.parent, "csv", "--chain", "node-9"))

        assert err == (
            f"keyledger: {journal.path.parent}: no chain 'node-9' found (chains there: {CHAIN})\n"
        )

    def test_a_filtered_jsonl_export_is_a_subset_that_does_not_pass_as_whole(
        self, journal: SealedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A filtered export holds exactly the matching journal records; verify does not
        call it intact, since events are missing from its chain."""
        out = tmp_path / "denies.jsonl"

        code, _, _ = export(
            capsys, journal.path.parent, "jsonl", "--effect", "deny", "-o", str(out)
        )

        assert code == 0
        exported = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        assert exported == [journal.records[i - 1] for i in (4, 5, 8, 12)]
        code, stdout, _ = audit(capsys, "verify", out)
        assert code == 1
        assert "intact" not in stdout

    def test_stdout_and_output_file_are_the_same_export(
        self, journal: SealedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --output the export goes to stdout, byte for byte what --output writes."""
        out = tmp_path / "export.ocsf.jsonl"
        args = ["audit", "export", str(journal.path.parent), "--format", "ocsf", "--since", "1h"]

        code, to_stdout, _ = run(capsys, *args)
        assert code == 0
        code, _, _ = run(capsys, *args, "--output", str(out))
        assert code == 0

        assert out.read_text() == to_stdout
        assert len(to_stdout.splitlines()) == 7

    def test_output_replaces_an_existing_file_whole(
        self, journal: SealedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An existing --output file is replaced by the new export, with nothing of the old
        one left and no temporary file beside it."""
        out = tmp_path / "export.csv"
        out.write_text("old,contents\n" * 1000)

        code, _, _ = export(capsys, journal.path, "csv", "--type", "lifecycle", "-o", str(out))

        assert code == 0
        rows = list(csv.DictReader(io.StringIO(out.read_text(), newline="")))
        assert [row["chain.seq"] for row in rows] == ["9"]
        assert "old,contents" not in out.read_text()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["audit", "export.csv"]

    def test_csv_with_filters_parses(
        self, journal: SealedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """CSV has a header and one row per matching event; csv.DictReader reads it back."""
        out = tmp_path / "export.csv"

        code, _, _ = export(
            capsys,
            journal.path.parent,
            "csv",
            "--principal",
            "svc-*",
            "--since",
            "1h",
            "-o",
            str(out),
        )

        assert code == 0
        with out.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [row["chain.seq"] for row in rows] == ["6", "8", "10", "11"]
        assert [row["principal.id"] for row in rows] == [
            "svc-payments",
            "svc-batch",
            "svc-payments",
            "svc-batch",
        ]
        assert [row["resource.secret"] for row in rows] == [
            "prod/db/password",
            "prod/db/password",
            "prod/cache/url",
            "staging/api-key",
        ]
        assert [row["decision.effect"] for row in rows] == ["allow", "deny", "allow", "allow"]
        assert [row["id"] for row in rows] == [journal.records[i - 1]["id"] for i in (6, 8, 10, 11)]
        assert rows[0]["time"] == journal.records[5]["time"]
        assert rows[0]["chain.hash"] == journal.records[5]["chain"]["hash"]

    def test_csv_defuses_formulas_and_control_characters(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A secret name that is a spreadsheet formula or holds escapes is written inert."""
        chain = SealedChain(tmp_path / "audit")
        formula = '=HYPERLINK("http://evil","x")'
        chain.add(access(NOW, "svc-a", formula), access(NOW, "svc-a", EVIL))

        code, out, _ = export(capsys, chain.path, "csv")

        assert code == 0
        for char in RAW_CONTROLS:
            assert char not in out
        rows = list(csv.DictReader(io.StringIO(out, newline="")))
        assert [row["resource.secret"] for row in rows] == [
            "'" + formula,
            "prod/\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eevil",
        ]

    def test_ecs_documents_with_a_secret_filter(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--format ecs writes one ECS document per matching event, in journal order."""
        code, out, _ = export(capsys, journal.path.parent, "ecs", "--secret", "prod/db/*")

        assert code == 0
        documents = [orjson.loads(line) for line in out.splitlines()]
        wanted = [journal.records[i - 1] for i in (1, 2, 4, 6, 8)]
        assert [d["event"]["id"] for d in documents] == [r["id"] for r in wanted]
        assert [d["@timestamp"] for d in documents] == [r["time"] for r in wanted]
        assert {d["ecs"]["version"] for d in documents} == {"8.17.0"}
        assert [d["event"]["outcome"] for d in documents] == [
            "success",
            "success",
            "failure",
            "success",
            "failure",
        ]
        assert [d["user"]["id"] for d in documents] == [r["principal"]["id"] for r in wanted]
        assert documents[0]["keyledger"]["chain"] == wanted[0]["chain"]

    def test_ocsf_events_with_an_effect_filter(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--format ocsf writes OCSF API Activity events, failed sign-ins counted as denies."""
        code, out, _ = export(capsys, journal.path, "ocsf", "--effect", "deny")

        assert code == 0
        events = [orjson.loads(line) for line in out.splitlines()]
        assert [e["metadata"]["sequence"] for e in events] == [4, 5, 8, 12]
        assert {e["class_uid"] for e in events} == {6003}
        assert [e["status"] for e in events] == ["Failure"] * 4
        assert [e["metadata"]["uid"] for e in events] == [
            journal.records[i - 1]["id"] for i in (4, 5, 8, 12)
        ]

    def test_since_is_inclusive_and_until_exclusive(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--since T1 --until T2 exports the events at T1 up to, not including, T2."""
        since, until = journal.records[1]["time"], journal.records[3]["time"]

        code, out, err = export(capsys, journal.path, "jsonl", "--since", since, "--until", until)

        assert code == 0, err
        assert seqs(out) == [2, 3]

    def test_since_and_until_take_dates_and_ages(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A date or an age works for --since and --until as for tail."""
        day = format_time(OLD)[:10]
        next_day = format_time(OLD + timedelta(days=1))[:10]

        on_that_day = [r["chain"]["seq"] for r in journal.records if r["time"].startswith(day)]
        args = ["audit", "export", str(journal.path), "--format", "jsonl"]

        code, out, _ = run(capsys, *args, "--since", day, "--until", next_day)
        assert code == 0
        assert seqs(out) == on_that_day
        assert on_that_day[0] == 1
        code, out, _ = run(capsys, *args, "--since", "2h")
        assert code == 0
        assert seqs(out) == [6, 7, 8, 9, 10, 11, 12]

    def test_until_before_since_exits_2(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A window that ends before it starts is a usage error, not an empty export."""
        err = usage_error(export(capsys, journal.path, "csv", "--since", "1h", "--until", "2h"))

        assert "--since" in err
        assert "no event can match" in err

    def test_missing_source_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exporting from a path that does not exist exits 2 and writes no output file."""
        out = tmp_path / "out.csv"

        code, _, err = export(capsys, tmp_path / "nope", "csv", "-o", str(out))

        assert code == 2
        assert "no such file or folder" in err
        assert not out.exists()

    def test_an_unwritable_output_exits_2_naming_the_file(
        self, journal: SealedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--output in a folder that does not exist is a usage error naming the file, not a
        traceback."""
        out = tmp_path / "no-such-folder" / "export.csv"

        code, _, err = export(capsys, journal.path, "csv", "-o", str(out))

        assert code == 2
        assert str(out.parent) in err
        assert not out.exists()


# -- report --------------------------------------------------------------------------------


def table_rows(out: str) -> list[list[str]]:
    """The cells of each row of rich's tables in ``out``."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in out.splitlines()
        if line.count("│") >= 3
    ]


class TestReport:
    def test_table_counts(self, journal: SealedChain, capsys: pytest.CaptureFixture[str]) -> None:
        """The table shows per secret and per principal how many accesses were allowed,
        denied and failed, over the counted events."""
        code, out, _ = audit(capsys, "report", journal.path.parent)

        assert code == 0
        assert "10 events on 4 secrets" in out
        rows = table_rows(out)
        # Secrets: Backend, Secret, Allowed, Denied, Errors, Unresolved, Principals, ...
        secrets_rows = {row[1]: row[2:7] for row in rows if row[0] == "aws"}
        assert secrets_rows == {
            "prod/db/password": ["3", "2", "0", "0", "2"],
            "prod/cache/url": ["2", "0", "0", "0", "2"],
            "staging/api-key": ["2", "0", "0", "0", "1"],
            "app/forbidden": ["0", "1", "0", "0", "1"],
        }
        # Principals: Secret, Principal, Allowed, Denied, Errors, First, Last
        principal_rows = {(row[0], row[1]): row[2:5] for row in rows if row[0] != "aws"}
        assert principal_rows[("prod/db/password", "svc-payments")] == ["3", "0", "0"]
        assert principal_rows[("prod/db/password", "svc-batch")] == ["0", "2", "0"]
        assert principal_rows[("staging/api-key", "svc-batch")] == ["2", "0", "0"]
        assert principal_rows[("app/forbidden", "alice@corp")] == ["0", "1", "0"]
        assert "\x1b" not in out

    def test_table_fits_columns_80_with_whole_names(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With COLUMNS=80 no line is wider than 80, and every name and count is still there;
        a name too long for its column folds onto the next lines, every character kept."""
        long_name = "prod/payments/stripe/live-api-key-for-the-checkout-service-eu-west-1"
        chain = scenario(tmp_path / "audit")
        chain.add(access(at_recent(7), "svc-payments", long_name))
        monkeypatch.setenv("COLUMNS", "80")

        code, out, _ = audit(capsys, "report", chain.path.parent)

        assert code == 0
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= 80, out
        for name in ("prod/db/password", "prod/cache/url", "staging/api-key", "app/forbidden"):
            assert name in out
        for who in ("svc-payments", "svc-batch", "alice@corp"):
            assert who in out
        header = next(line for line in lines if "Allowed" in line)
        width = header.index("Allowed")
        start = lines.index(header) + 2
        column = "".join(line[:width].strip() for line in lines[start : start + 12])
        assert long_name in column
        db_row = next(line.split() for line in lines if line.split()[:1] == ["prod/db/password"])
        assert db_row[1:5] == ["3", "2", "0", "2"]  # allowed, denied, errors, principals

    def test_csv_counts(self, journal: SealedChain, capsys: pytest.CaptureFixture[str]) -> None:
        """--format csv has one row per secret and principal, with counts and times."""
        code, out, _ = audit(capsys, "report", journal.path, "--format", "csv")

        assert code == 0
        rows = list(csv.DictReader(io.StringIO(out, newline="")))
        counts = {
            (r["secret"], r["principal"]): (r["events"], r["allowed"], r["denied"], r["errors"])
            for r in rows
        }
        assert counts == {
            ("prod/db/password", "svc-payments"): ("3", "3", "0", "0"),
            ("prod/db/password", "svc-batch"): ("2", "0", "2", "0"),
            ("prod/cache/url", "alice@corp"): ("1", "1", "0", "0"),
            ("prod/cache/url", "svc-payments"): ("1", "1", "0", "0"),
            ("staging/api-key", "svc-batch"): ("2", "2", "0", "0"),
            ("app/forbidden", "alice@corp"): ("1", "0", "1", "0"),
        }
        (payments,) = [
            r for r in rows if (r["secret"], r["principal"]) == ("prod/db/password", "svc-payments")
        ]
        assert payments["first"] == journal.records[0]["time"]
        assert payments["last"] == journal.records[5]["time"]
        assert {r["backend"] for r in rows} == {"aws"}

    def test_filters_narrow_what_is_counted(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--since 1h counts only the last half hour's accesses."""
        code, out, _ = audit(capsys, "report", journal.path, "--format", "csv", "--since", "1h")

        assert code == 0
        rows = list(csv.DictReader(io.StringIO(out, newline="")))
        counts = {(r["secret"], r["principal"]): r["events"] for r in rows}
        assert counts == {
            ("prod/db/password", "svc-payments"): "1",
            ("prod/db/password", "svc-batch"): "1",
            ("prod/cache/url", "alice@corp"): "1",
            ("prod/cache/url", "svc-payments"): "1",
            ("staging/api-key", "svc-batch"): "1",
            ("app/forbidden", "alice@corp"): "1",
        }

    def test_html_has_the_counts_and_no_markup_from_names(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The HTML page holds the counts; a secret or principal name made of HTML is shown
        as text, never as a script or an element."""
        chain = scenario(tmp_path / "audit")
        script = "app/<script>alert(1)</script>"
        chain.add(
            access(at_recent(7), "<img src=x onerror=alert(2)>", script),
            access(at_recent(8), "svc-payments", script, effect="deny"),
        )
        page = tmp_path / "report.html"

        code, out, _ = audit(
            capsys,
            "report",
            chain.path.parent,
            "--format",
            "html",
            "-o",
            str(page),
            "--title",
            "Q4 <b>review</b>",
        )

        assert code == 0
        assert out == ""
        html = page.read_text(encoding="utf-8")
        assert html.startswith("<!DOCTYPE html>")
        assert "<script" not in html.lower()
        assert "<img" not in html.lower()
        assert "<b>review" not in html
        assert "app/&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(2)&gt;" in html
        assert "Q4 &lt;b&gt;review&lt;/b&gt;" in html
        assert "12 events on 5 secrets" in html
        text = re.sub(r"<[^>]+>", " ", html)
        assert re.search(r"prod/db/password\s+3\s+2\s+0\s+0\s+2\b", text), text
        assert "5 events: 3 allowed, 2 denied, 0 errors" in html
        assert "2 events: 1 allowed, 1 denied, 0 errors" in html


# -- keys ----------------------------------------------------------------------------------


class TestKeysGenerate:
    def test_writes_a_private_key_only_its_owner_reads_and_a_public_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """PREFIX.key is written with mode 0600, PREFIX.pub beside it, and the key id that
        verify will name is printed."""
        prefix = tmp_path / "keys" / "checkpoint"

        code, out, _ = run(capsys, "keys", "generate", "--out", str(prefix))

        assert code == 0
        private, public = tmp_path / "keys" / "checkpoint.key", tmp_path / "keys" / "checkpoint.pub"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
        (key_id,) = load_public_keys([public])
        assert f"key id       {key_id}\n" in out
        assert str(private) in out
        assert f"--public-key {public}" in out

    def test_never_overwrites_a_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A second run with the same prefix exits 2 and leaves both files as they were."""
        prefix = tmp_path / "checkpoint"
        assert main(["keys", "generate", "--out", str(prefix)]) == 0
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        capsys.readouterr()

        err = usage_error(run(capsys, "keys", "generate", "--out", str(prefix)))

        assert "exists" in err
        assert "never overwrites" in err
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    def test_never_overwrites_a_lone_public_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An existing PREFIX.pub alone also stops it: no private key is written either."""
        (tmp_path / "checkpoint.pub").write_text("someone's key\n")

        code, _, err = run(capsys, "keys", "generate", "--out", str(tmp_path / "checkpoint"))

        assert code == 2
        assert "checkpoint.pub exists" in err
        assert not (tmp_path / "checkpoint.key").exists()
        assert (tmp_path / "checkpoint.pub").read_text() == "someone's key\n"

    async def test_checkpoints_signed_with_it_verify_strictly(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A journal signed with the generated key passes `audit verify --public-key --strict`,
        and its key id is the one keys generate printed."""
        prefix = tmp_path / "checkpoint"
        code, out, _ = run(capsys, "keys", "generate", "--out", str(prefix))
        assert code == 0
        printed_id = re.search(r"key id\s+(\S+)", out)
        assert printed_id is not None
        checkpoints = Checkpointing(signer=signer_for(prefix), every_events=2)
        async with running_journal(tmp_path / "audit", checkpoints=checkpoints) as journal:
            for n in range(5):
                await journal.append(read_event(n))

        public = str(prefix.with_suffix(".pub"))
        code, out, _ = audit(
            capsys, "verify", tmp_path / "audit", "--public-key", public, "--strict"
        )

        assert code == 0, out
        assert f"signatures checked (3 checkpoint(s): key {printed_id[1]})" in out


# -- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            ["audit", "verify"],
            ["SOURCE", "--public-key", "--strict", "--progress", "--chain", "--from-seq", "pruned"],
        ),
        (
            ["audit", "tail"],
            [
                "SOURCE",
                "--url",
                "--token-file",
                "--lines",
                "--follow",
                "--json",
                "--principal",
                "--secret",
                "--effect",
                "--action",
                "--type",
                "--since",
                "--until",
                "NO_COLOR",
            ],
        ),
        (
            ["audit", "export"],
            [
                "SOURCE",
                "--format",
                "--output",
                "jsonl",
                "csv",
                "ecs",
                "ocsf",
                "--since",
                "--until",
                "--chain",
            ],
        ),
        (
            ["audit", "report"],
            ["SOURCE", "--format", "html", "--output", "--title", "--since", "--chain"],
        ),
        (["keys", "generate"], ["--out", "PREFIX", "0600"]),
    ],
)
def test_help_describes_the_options(
    command: list[str], options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--help exits 0 and names each option the command takes."""
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])

    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: keyledger {' '.join(command)}")
    for option in options:
        assert option in out, option


class TestVerifyTimes:
    def test_a_long_silence_is_warned_about_only_when_asked(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """The scenario's three days without an event: silent by default; with --max-gap
        1d a WARN naming where; verification still passes."""
        scenario(tmp_path / "audit")

        code, out, _ = audit(capsys, "verify", tmp_path / "audit")
        assert code == 0
        assert "no event for" not in out

        code, out, _ = audit(capsys, "verify", tmp_path / "audit", "--max-gap", "1d")
        assert code == 0
        (warned,) = [line for line in out.splitlines() if "no event for" in line]
        assert warned.startswith(f"WARN chain {CHAIN}: no event for ")
        assert "more than --max-gap" in warned
        assert ": seq 6: " in warned

    def test_a_bad_max_gap_is_a_usage_error(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        scenario(tmp_path / "audit")
        with pytest.raises(SystemExit) as exited:
            audit(capsys, "verify", tmp_path / "audit", "--max-gap", "soon")
        assert exited.value.code == 2
        assert "expected a duration like 6h, 2d or 90m, not 'soon'" in capsys.readouterr().err


# -- a reader that leaves ------------------------------------------------------------------


def many_reads(directory: Path, count: int = 800) -> None:
    """``count`` reads of as many secrets: every verb prints far more than a pipe holds."""
    SealedChain(directory).add(
        *(access(at_recent(0), f"svc-{n % 7}", f"prod/app-{n}/db-password") for n in range(count))
    )


def first_line_then_leave(args: list[str], stderr: Path) -> tuple[int, bytes]:
    """Run ``keyledger ARGS`` into a pipe, read one line, close the pipe; (exit status,
    that line). stderr goes to the file ``stderr``."""
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [*KEYLEDGER, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        process.stdout.close()
        return process.wait(timeout=30), first
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class TestClosedPipe:
    @pytest.mark.parametrize(
        "args",
        [
            ["tail", "-n", "800"],
            ["tail", "-n", "800", "--json"],
            ["export", "--format", "csv"],
            ["export", "--format", "jsonl"],
            ["report"],
            ["report", "--format", "csv"],
        ],
        ids=" ".join,
    )
    def test_exits_141_quietly(self, args: list[str], tmp_path: Path) -> None:
        """`keyledger audit VERB ... | head -1`: status 141, nothing on stderr, as other
        Unix tools exit when their reader leaves."""
        many_reads(tmp_path / "audit")
        verb, *options = args

        code, first = first_line_then_leave(
            ["audit", verb, str(tmp_path / "audit"), *options], tmp_path / "stderr"
        )

        assert first
        assert (tmp_path / "stderr").read_bytes() == b""
        assert code == 141

    def test_following_with_nothing_new_exits_once_the_reader_leaves(self, tmp_path: Path) -> None:
        """`keyledger audit tail -f | head -1` ends soon after head does, though no new event
        comes to write: status 141, nothing on stderr."""
        many_reads(tmp_path / "audit", 3)
        started = time.monotonic()

        code, first = first_line_then_leave(
            ["audit", "tail", str(tmp_path / "audit"), "-f", "-n", "1", "--json"],
            tmp_path / "stderr",
        )

        assert orjson.loads(first)["chain"]["seq"] == 3
        assert (tmp_path / "stderr").read_bytes() == b""
        assert code == 141
        assert time.monotonic() - started < 10


# -- verify: where checking starts ---------------------------------------------------------


async def journal_with_segments(directory: Path, prefix: Path, segments: int = 4) -> Journal:
    """A closed journal of ``segments`` segments, checkpoints signed with the key pair that
    `keyledger keys generate --out PREFIX` made."""
    checkpoints = Checkpointing(signer=signer_for(prefix), every_events=5)
    async with running_journal(directory, max_bytes=2000, checkpoints=checkpoints) as journal:
        n = 0
        while journal.stats.rotations < segments - 1:
            await journal.append(read_event(n))
            n += 1
    return journal


class TestVerifyStart:
    @pytest.fixture
    def prefix(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
        prefix = tmp_path / "keys" / "checkpoint"
        assert main(["keys", "generate", "--out", str(prefix)]) == 0
        capsys.readouterr()
        return prefix

    async def test_a_pruned_journal_verifies_strictly_and_says_from_where(
        self, tmp_path: Path, prefix: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """After retention pruned the oldest segments, verify --strict passes and says it
        started at the first seq left because seq 1 to the one before were pruned, naming
        the segment_pruned event and the files."""
        from keyledger.proxy.audit.retention import Retention
        from keyledger.proxy.audit.segments import chain_segments

        directory = tmp_path / "audit"
        await journal_with_segments(directory, prefix)
        checkpoints = Checkpointing(signer=signer_for(prefix), every_events=5)
        later = datetime.now(UTC) + timedelta(days=2)
        async with running_journal(directory, checkpoints=checkpoints) as journal:
            retention = Retention(journal=journal, sinks=[], max_age_s=86400, now=lambda: later)
            pruned = await retention.prune_once()
        assert pruned is not None
        first = pruned.last_seq + 1
        event_seq = max(
            orjson.loads(line)["chain"]["seq"]
            for line in chain_segments(directory, CHAIN)[-1].path.read_bytes().splitlines()
            if b"segment_pruned" in line
        )

        code, out, _ = audit(
            capsys, "verify", directory, "--public-key", str(prefix.with_suffix(".pub")), "--strict"
        )

        assert code == 0, out
        (line,) = [line for line in out.splitlines() if "verified from seq" in line]
        assert line.startswith(
            f"  verified from seq {first}, anchored on its segment_start link: seq "
            f"1-{first - 1} were pruned by retention (segment_pruned, seq {event_seq} at "
        )
        assert pruned.segments[0] in line
        assert "intact: " in out

    async def test_segments_removed_by_hand_warn_and_fail_strict(
        self, tmp_path: Path, prefix: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The earliest segment deleted by hand: verify passes with a WARN that no
        segment_pruned event accounts for it; --strict fails."""
        from keyledger.proxy.audit.segments import chain_segments

        directory = tmp_path / "audit"
        await journal_with_segments(directory, prefix)
        removed, kept = chain_segments(directory, CHAIN)[:2]
        removed.path.unlink()
        public = str(prefix.with_suffix(".pub"))

        code, out, _ = audit(capsys, "verify", directory, "--public-key", public)
        assert code == 0, out
        assert (
            f"WARN chain {CHAIN}: the journal starts at seq {kept.first_seq}, and no "
            f"segment_pruned event accounts for seq 1-{kept.first_seq - 1}"
        ) in out

        code, out, _ = audit(capsys, "verify", directory, "--public-key", public, "--strict")
        assert code == 1
        assert "not intact under --strict" in out

    async def test_a_middle_segment_removed_fails(
        self, tmp_path: Path, prefix: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A segment missing after the earliest one is a gap: exit 1, naming the seqs."""
        from keyledger.proxy.audit.segments import chain_segments

        directory = tmp_path / "audit"
        await journal_with_segments(directory, prefix)
        removed = chain_segments(directory, CHAIN)[1]
        removed.path.unlink()

        code, out, _ = audit(capsys, "verify", directory)

        assert code == 1
        assert f"gap: seq {removed.first_seq}-" in out

    def test_from_seq_says_what_is_taken_as_given(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--from-seq 6 checks seq 6 on and says the chain before it was not checked."""
        code, out, _ = audit(capsys, "verify", journal.path.parent, "--from-seq", "6")

        assert code == 0, out
        assert out.splitlines()[:2] == [
            f"chain {CHAIN}: 7 events in 1 file(s), last seq 12, 0 checkpoint(s): ok",
            "  verified from seq 6 (--from-seq): the chain before it is taken as given, not "
            "checked (5 earlier line(s) not read)",
        ]

    def test_chain_verifies_only_that_chain(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--chain ID verifies that chain alone; an unknown one is a usage error."""
        directory = tmp_path / "audit"
        for chain_id in ("replica-a", "replica-b"):
            SealedChain(directory, chain_id).add(access(at_recent(0), "svc", "app/x"))

        code, out, _ = audit(capsys, "verify", directory, "--chain", "replica-b")
        assert code == 0
        assert [line.split(":")[0] for line in out.splitlines() if line.startswith("chain")] == [
            "chain replica-b"
        ]

        err = usage_error(audit(capsys, "verify", directory, "--chain", "replica-c"))
        assert "no chain 'replica-c' found (chains there: replica-a, replica-b)" in err

    def test_a_bad_from_seq_is_a_usage_error(
        self, journal: SealedChain, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            audit(capsys, "verify", journal.path.parent, "--from-seq", "0")
        assert exited.value.code == 2
        assert "expected a seq, 1 or more, not '0'" in capsys.readouterr().err
