"""``keyledger audit ...`` and ``keyledger keys ...``: the security team's tools.

keyledger audit verify SOURCE|s3://BUCKET/PREFIX|cloudwatch://GROUP [--public-key PUB] [--strict]
                       [--chain ID] [--from-seq N]
keyledger audit tail [SOURCE | --url URL] [-n N] [-f] [--json] [filters]
keyledger audit export SOURCE --format jsonl|csv|ecs|ocsf [--output FILE] [--chain ID] [filters]
keyledger audit report SOURCE [--format table|csv|html] [--output FILE] [--chain ID] [filters]
keyledger keys generate --out PREFIX

Every verb that writes to stdout exits like other Unix tools when its reader leaves
(``keyledger audit tail -f | head -1``): status 141, nothing on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import stat
import sys
from collections.abc import Awaitable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

__all__ = ["add_audit_parser", "add_keys_parser"]

# Below this, verifying takes a blink: a progress bar would only flicker.
_PROGRESS_FROM_BYTES = 16 << 20


class AuditCliError(Exception):
    """A usage problem: printed as ``keyledger: <message>``, exit status 2."""


def _console(**options: Any) -> Any:
    """rich's console, but a reader that left is the caller's BrokenPipeError (exit 141, as
    ``keyledger.cli.main`` answers it), not rich's own silent exit status 1."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return PipeConsole(**options)


_PIPE_POLL_S = 0.25


async def _until_reader_leaves() -> NoReturn:
    """Raise BrokenPipeError once stdout is a pipe its reader closed; else wait forever.

    A follower that has nothing new to print would otherwise never find out (`tail -f |
    head -1`); a pipe whose reader is gone polls as POLLERR.
    """
    try:
        fd = sys.stdout.fileno()
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except (OSError, ValueError):  # no real file: pytest's capture, a closed stdout
        is_pipe = False
    if not is_pipe:
        await asyncio.Event().wait()
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
    # Polling is the point: a reader leaving wakes nobody who is not writing.
    while not poller.poll(0):  # noqa: ASYNC110
        await asyncio.sleep(_PIPE_POLL_S)
    raise BrokenPipeError


async def _while_read(work: Awaitable[int]) -> int:
    """``work``'s result, unless stdout's reader leaves first (BrokenPipeError)."""
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_reader_leaves())
    done: set[asyncio.Future[Any]] = set()
    try:
        done, _ = await asyncio.wait((job, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (job, watch):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if job in done:
        return job.result()
    watch.result()  # the reader left: raises BrokenPipeError


# -- verify ------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from keyledger.proxy.audit.checkpoints import load_public_keys

    keys = load_public_keys(Path(p) for p in args.public_key) if args.public_key else None
    if args.source.startswith(("s3://", "cloudwatch://")):
        report, notes = _verify_remote(args, keys)
        unit = "object(s)" if args.source.startswith("s3://") else "stream(s)"
    else:
        report, notes, unit = _verify_files(args, keys), [], "file(s)"
    _require_chains(args, report.chains)

    warnings = list(notes)
    for chain in sorted(report.chains.values(), key=lambda c: c.id):
        print(_chain_line(chain, unit))
        if chain.missing:
            print(f"  missing seq: {_ranges(chain.missing)}")
        if start := _start_line(chain, args.from_seq):
            print(f"  {start}")
        if chain.unaccounted and chain.stopped is None:  # else the pruning may lie past it
            warnings.append(
                f"chain {chain.id}: the journal starts at seq {chain.first_seq}, and no "
                f"segment_pruned event accounts for seq 1-{chain.first_seq - 1} (segments "
                "removed by hand, or a partial copy): verified from there on, the chain before "
                "it is taken as given"
            )
        if chain.problem is None and chain.unsealed:
            if chain.checkpoints:
                warnings.append(
                    f"chain {chain.id}: {chain.unsealed:,} event(s) after the last checkpoint "
                    f"(seq {chain.last_checkpoint_seq}) are unsealed"
                )
            else:
                warnings.append(
                    f"chain {chain.id}: no checkpoints found: the end of the journal is not "
                    f"sealed (all {chain.unsealed:,} event(s) unsealed)"
                )
    if not report.signatures_checked and any(c.checkpoints for c in report.chains.values()):
        warnings.append("checkpoint signatures not checked: pass --public-key FILE.pub")
    for problem in report.problems:
        print(f"FAIL {problem}")
    for chain in sorted(report.chains.values(), key=lambda c: c.id):
        if keys is not None and (hint := _key_hint(chain, keys)):
            print(f"  {hint}")
    for warning in warnings:
        print(f"WARN {warning}")
    # Not failures, even under --strict: a clock is for an auditor to judge.
    for chain in sorted(report.chains.values(), key=lambda c: c.id):
        for note in _time_notes(chain, args.max_gap):
            print(f"WARN {note}")
    if not report.chains and not report.problems:
        print(f"no events found in {args.source}")
        return 1
    if not report.ok:
        return 1
    if args.strict and warnings:
        # The WARN lines above say which rule each warning breaks (an unaccounted start too).
        print("not intact under --strict: every event must be sealed by a verified signature")
        return 1
    print(f"intact: {report.events:,} events verified{_signatures(report, keys)}")
    return 0


def _chain_line(chain: Any, unit: str) -> str:
    """One chain's summary; past a problem it says how far checking got, not how far it read."""
    copies = f", {chain.duplicates:,} duplicate(s) ignored" if chain.duplicates else ""
    if chain.stopped is None:
        state = "BROKEN" if chain.problem else "ok"
        return (
            f"chain {chain.id}: {chain.events:,} events in {chain.files} {unit}, last seq "
            f"{chain.last_seq}, {chain.checkpoints:,} checkpoint(s){copies}: {state}"
        )
    stopped = chain.stopped
    where = "the problem below" if stopped is chain.problem else f"{stopped.file}:{stopped.line}"
    checked = (
        f"checked up to seq {chain.last_seq} ({chain.checkpoints:,} checkpoint(s))"
        if chain.last_seq
        else "nothing checked"
    )
    return (
        f"chain {chain.id}: {chain.lines:,} line(s) in {chain.files} {unit}{copies}; {checked} "
        f"before {where}: BROKEN"
    )


def _start_line(chain: Any, from_seq: int | None) -> str | None:
    """Why checking started after seq 1, when it did."""
    if chain.start == "from_seq":
        return (
            f"verified from seq {chain.first_seq} (--from-seq): the chain before it is taken "
            f"as given, not checked ({chain.skipped:,} earlier line(s) not read)"
        )
    if chain.start != "pruned":
        return None
    asked = f" (--from-seq {from_seq})" if from_seq is not None and from_seq > 1 else ""
    pruning = chain.pruned_by
    if pruning is None:
        return f"verified from seq {chain.first_seq}{asked}: the earliest segment present"
    files = ", ".join(pruning.segments[:3]) + (
        f" and {len(pruning.segments) - 3} more" if len(pruning.segments) > 3 else ""
    )
    return (
        f"verified from seq {chain.first_seq}{asked}, anchored on its segment_start link: seq "
        f"1-{chain.first_seq - 1} were pruned by retention (segment_pruned, seq {pruning.seq} "
        f"at {pruning.file}:{pruning.line}: {files})"
    )


def _require_chains(args: argparse.Namespace, found: Mapping[str, Any]) -> None:
    """A --chain that names no chain under SOURCE is a usage error, not an empty success."""
    missing = [c for c in args.chain or () if c not in found]
    if missing:
        raise AuditCliError(f"{args.source}: no chain {missing[0]!r} found{_chains_in(args)}")


def _chains_in(args: argparse.Namespace) -> str:
    """The chains under a local SOURCE, for an error message."""
    from keyledger.proxy.audit.segments import discover

    source = Path(args.source)
    if not source.exists():
        return ""
    chains = discover(source).chains
    return f" (chains there: {', '.join(chains)})" if chains else ""


def _key_hint(chain: Any, keys: Mapping[str, Any]) -> str | None:
    """What to pass when checkpoints were signed by keys that were not given."""
    unknown = {k: n for k, n in chain.signed.items() if k not in keys}
    if not unknown:
        return None
    signers = ", ".join(f"{k} ({n:,} checkpoint(s))" for k, n in sorted(unknown.items()))
    given = ", ".join(sorted(keys))
    return (
        f"chain {chain.id}: checkpoints signed by key id {signers}; the public key(s) given: "
        f"{given}. Pass the .pub of every key id (--public-key repeats)"
    )


def _signatures(report: Any, keys: Mapping[str, Any] | None) -> str:
    """What the signatures proved: how many checkpoints, by which keys, or that none were."""
    if keys is None:
        return ""
    signed: dict[str, int] = {}
    for chain in report.chains.values():
        for key_id, count in chain.signed.items():
            signed[key_id] = signed.get(key_id, 0) + count
    if not signed:
        return "; no checkpoints found, so no signature was checked"
    total = sum(signed.values())
    by = ", ".join(
        f"{n:,} by key {k}" if len(signed) > 1 else f"key {k}" for k, n in sorted(signed.items())
    )
    return f", signatures checked ({total:,} checkpoint(s): {by})"


def _age(text: str) -> timedelta:
    """``6h``, ``2d``, ``90m``: an argparse type."""
    from keyledger.proxy.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 6h, 2d or 90m, not {text!r}")
    return timedelta(seconds=seconds)


def _time_notes(chain: Any, max_gap: timedelta | None) -> list[str]:
    """What a chain's times say: events going back in time, a silence longer than
    ``max_gap``."""
    notes = []
    if chain.backwards:
        notes.append(
            f"chain {chain.id}: {chain.backwards:,} event(s) timed earlier than the event "
            f"before them (a clock stepped back?), first at {chain.first_backwards}"
        )
    if max_gap is not None and chain.largest_gap_s > max_gap.total_seconds():
        hours = chain.largest_gap_s / 3600
        notes.append(
            f"chain {chain.id}: no event for {hours:.1f} h, more than --max-gap, at "
            f"{chain.largest_gap} (an outage, or events removed with their chain rewritten?)"
        )
    return notes


def _verify_files(args: argparse.Namespace, keys: Any) -> Any:
    from keyledger.proxy.audit.verify import verify_path

    source = Path(args.source)
    if not source.exists():
        raise AuditCliError(f"{source}: no such file or folder")
    total = _size_of(source)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    scope = {"chains": args.chain or None, "from_seq": args.from_seq}
    if show and (args.progress or total >= _PROGRESS_FROM_BYTES):
        report = _verify_with_progress(source, keys, total, scope)
    else:
        report = verify_path(source, public_keys=keys, **scope)
    _require_chains(args, report.chains)  # before "no files": none of the chain asked for
    if not report.files:
        raise AuditCliError(f"{source}: no journal files (*.jsonl) found")
    return report


def _verify_remote(args: argparse.Namespace, keys: Any) -> tuple[Any, list[str]]:
    """Download a remote copy (every S3 object version, or every log stream) and verify."""
    from keyledger.proxy.audit.sinks import SinkError
    from keyledger.proxy.audit.verify import verify_copies

    source = args.source

    try:
        if source.startswith("s3://"):
            from keyledger.proxy.audit.sinks.s3 import read_s3

            found = read_s3(source)
            copies, notes = found.copies, found.notes
            if not found.objects:
                raise AuditCliError(f"{source}: no objects found")
        else:
            from keyledger.proxy.audit.sinks.cloudwatch import read_cloudwatch

            streams = read_cloudwatch(source)
            copies, notes = streams.copies, []
            if not streams.streams:
                raise AuditCliError(f"{source}: the log group has no streams")
    except (SinkError, ValueError) as exc:
        raise AuditCliError(str(exc)) from None
    report = verify_copies(
        copies, public_keys=keys, chains=args.chain or None, from_seq=args.from_seq
    )
    return report, notes


def _ranges(ranges: list[tuple[int, int]], limit: int = 20) -> str:
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    more = f" and {len(ranges) - limit} more range(s)" if len(ranges) > limit else ""
    return ", ".join(shown) + more


def _size_of(source: Path) -> int:
    if source.is_file():
        return source.stat().st_size
    return sum(p.stat().st_size for p in source.rglob("*.jsonl") if p.is_file())


def _verify_with_progress(source: Path, keys: Any, total: int, scope: dict[str, Any]) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from keyledger.proxy.audit.verify import verify_path

    columns = (
        TextColumn("verifying"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(stderr=True), transient=True) as progress:
        task = progress.add_task("verify", total=total)
        return verify_path(
            source, public_keys=keys, progress=lambda n: progress.advance(task, n), **scope
        )


# -- tail --------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from keyledger.proxy.audit.filters import filter_from_args

    if (args.source is None) == (args.url is None):
        raise AuditCliError("give a journal file or folder, or --url of a running keyledger")
    if args.lines < 0:
        raise AuditCliError("-n: expected 0 or more")
    try:
        filt = filter_from_args(args, datetime.now(UTC))
    except ValueError as exc:
        raise AuditCliError(str(exc)) from exc
    console = _console(highlight=False, soft_wrap=True, emoji=False, markup=False)
    printer = _Printer(console, as_json=args.json)
    if args.url is not None:
        return asyncio.run(_while_read(_tail_url(args, filt, printer)))
    source = Path(args.source)
    if not source.exists():
        raise AuditCliError(f"{source}: no such file or folder")
    return asyncio.run(_while_read(_tail_files(source, filt, args, printer)))


class _Printer:
    """One event per line: readable (coloured on a terminal) or JSON."""

    def __init__(self, console: Any, *, as_json: bool) -> None:
        self._console = console
        self._json = as_json
        # rich decides: a terminal, NO_COLOR and FORCE_COLOR are honoured.
        self._color = console.is_terminal and not console.no_color

    def __call__(self, record: Mapping[str, Any]) -> None:
        from keyledger.proxy.audit.render import render_json, render_line

        if self._json:
            print(render_json(record), flush=True)
        else:
            self._console.print(render_line(record, color=self._color))


async def _tail_files(source: Path, filt: Any, args: argparse.Namespace, show: _Printer) -> int:
    from keyledger.proxy.audit.reader import Follower, ReadCheck, Unseen, last_records

    check = ReadCheck()
    # Start following first: whatever is appended while the last lines are read is then
    # caught by the follower, and shown once (``Unseen`` drops what was shown already).
    follower = Follower(source, filt, check=check)
    if args.follow:
        await asyncio.to_thread(follower.start, at_end=True)
    newer = Unseen()
    last = await asyncio.to_thread(last_records, source, args.lines, filt, check=check)
    for record in last:
        if newer(record):
            show(record)
    _warn_unverified(check, args.source)
    if not args.follow:
        return 0
    async for record in follower.records(poll_s=0.25):
        if newer(record):
            show(record)
        _warn_unverified(check, args.source)
    return 0


def _warn_unverified(check: Any, source: str) -> None:
    """One line on stderr for what a reader found that does not verify (stdout stays data)."""
    problems = check.untold()
    if not problems:
        return
    more = f" (and {len(problems) - 1} more chain(s))" if len(problems) > 1 else ""
    print(
        f"keyledger: warning: what was read does not verify: {problems[0]}{more}; check the "
        f"journal with: {_verify_command(source)}",
        file=sys.stderr,
        flush=True,
    )


def _verify_command(source: str) -> str:
    """The verify command for ``source``; with the key ``serve --dev`` makes, if it is there."""
    import shlex

    path = Path(source)
    folder = path if path.is_dir() else path.parent
    key = folder.parent / "keys" / "checkpoint.pub"  # var/audit -> var/keys/checkpoint.pub
    public = shlex.quote(str(key)) if key.is_file() else "FILE.pub"
    return f"keyledger audit verify {shlex.quote(source)} --public-key {public}"


async def _tail_url(args: argparse.Namespace, filt: Any, show: _Printer) -> int:
    import ssl

    import aiohttp
    import orjson

    from keyledger.proxy.audit.stream import server_sent_events

    token = _admin_token(args)
    params: list[tuple[str, str]] = [("last", str(args.lines))]
    for name in ("principal", "secret", "action", "effect", "protocol", "type"):
        params += [(name, value) for value in getattr(args, name) or ()]
    # Ages (--since 15m) are read here, against this clock, not the server's.
    params += [
        (name, getattr(filt, name).isoformat())
        for name in ("since", "until")
        if getattr(filt, name)
    ]
    url = args.url.rstrip("/") + "/v1/audit/stream"
    context = ssl.create_default_context(cafile=args.cacert) if args.cacert else None
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=None)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(
                url,
                params=params,
                headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
                ssl=context if context is not None else True,
            ) as response,
        ):
            if response.status != 200:
                body = await response.text()
                raise AuditCliError(f"{url}: HTTP {response.status}: {body.strip()[:300]}")
            async for event, data in server_sent_events(response.content):
                if event == "audit":
                    show(orjson.loads(data))
                elif event == "replayed" and not args.follow:
                    return 0
                elif event == "dropped":
                    reason = orjson.loads(data).get("reason", "")
                    print(f"keyledger: the server dropped this stream: {reason}", file=sys.stderr)
                    return 1
    except aiohttp.ClientConnectorError as exc:
        # aiohttp's own text says "ssl:default" even for plain http: name the cause alone.
        error = exc.os_error
        cause = os.strerror(error.errno) if error.errno else str(error)
        raise AuditCliError(
            f"cannot connect to {args.url}: {cause}. Is keyledger serving its admin API "
            "there? It is `admin.listen` in the config (127.0.0.1:9090 by default; "
            "`serve --dev` writes it to var/dev.env as KEYLEDGER_ADMIN_URL)"
        ) from exc
    except aiohttp.ClientError as exc:
        raise AuditCliError(f"{url}: {exc}") from exc
    return 0


def _admin_token(args: argparse.Namespace) -> str:
    import os

    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise AuditCliError(f"--token-file {args.token_file}: {exc.strerror}") from exc
    token = os.environ.get("KEYLEDGER_ADMIN_TOKEN")
    if not token:
        raise AuditCliError(
            "--url needs the admin token: --token-file FILE or KEYLEDGER_ADMIN_TOKEN"
        )
    return token


# -- export and report -------------------------------------------------------------------


def _records(args: argparse.Namespace, check: Any) -> Any:
    """The events under SOURCE that the filter options ask for, oldest first, checked."""
    from datetime import UTC, datetime

    from keyledger.proxy.audit.filters import filter_from_args
    from keyledger.proxy.audit.reader import iter_records
    from keyledger.proxy.audit.segments import discover

    source = Path(args.source)
    if not source.exists():
        raise AuditCliError(f"{source}: no such file or folder")
    try:
        filt = filter_from_args(args, datetime.now(UTC))
    except ValueError as exc:
        raise AuditCliError(str(exc)) from exc
    chains = set(args.chain) if args.chain else None
    if chains is not None:
        _require_chains(args, dict.fromkeys(discover(source).segments))
    return iter_records(source, filt, check=check, chains=chains)


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """``path`` written whole or not at all (a temporary file renamed), or stdout."""
    if path is None:
        yield sys.stdout
        return
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    try:
        # newline="": the csv module writes its own line endings.
        handle = partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise AuditCliError(f"--output {target}: {exc.strerror}") from None
    try:
        with handle:
            yield handle
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def cmd_export(args: argparse.Namespace) -> int:
    from keyledger.proxy.audit.export import write_export
    from keyledger.proxy.audit.reader import ReadCheck

    check = ReadCheck()
    records = _records(args, check)
    with _output(args.output) as out:
        count = write_export(records, args.format, out)
    _warn_unverified(check, args.source)
    if args.output:
        print(f"exported {count:,} events to {args.output} ({args.format})", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from keyledger.proxy.audit.reader import ReadCheck
    from keyledger.proxy.audit.report import build_report, render_html, render_table, write_csv

    check = ReadCheck()
    report = build_report(_records(args, check))
    with _output(args.output) as out:
        if args.format == "html":
            out.write(render_html(report, title=args.title))
        elif args.format == "csv":
            write_csv(report, out)
        else:
            # A file or a pipe has no width of its own: COLUMNS if set, else wide enough for
            # the full tables (rich reads COLUMNS itself when width is None).
            width = None if out.isatty() or os.environ.get("COLUMNS", "").isdigit() else 160
            console = _console(file=out, width=width, highlight=False, markup=False, emoji=False)
            render_table(report, console)
    _warn_unverified(check, args.source)
    return 0


# -- keys --------------------------------------------------------------------------------


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from keyledger.proxy.audit.checkpoints import generate_key_pair, load_public_keys

    try:
        private, public = generate_key_pair(Path(args.out))
    except FileExistsError as exc:
        raise AuditCliError(str(exc)) from exc
    (key_id,) = load_public_keys([public])
    print(f"private key  {private}   (mode 0600: only keyledger serve reads it)")
    print(f"public key   {public}   (give it to whoever verifies the journal)")
    print(f"key id       {key_id}")
    print()
    print("In the config:")
    print("  audit:")
    print("    checkpoints:")
    print(f"      key_file: {private}")
    print()
    print(f"Verify with:  keyledger audit verify JOURNAL --public-key {public}")
    return 0


# -- parsers -----------------------------------------------------------------------------


def add_audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify, tail, export and report on the audit journal")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = audit_sub.add_parser(
        "verify",
        help="prove a journal was not edited, cut or reordered",
        description="Recompute the hash chain of a journal file, or of every chain in a "
        "folder of rotated files, and check every signed checkpoint. Exit 0 when intact; "
        "exit 1 when any event was modified, removed, inserted or reordered, a file is "
        "missing, the end was cut below a checkpoint, or a checkpoint does not verify; the "
        "first problem of each chain is printed with file, line and seq. Events after the "
        "last checkpoint are reported as unsealed (a warning; a failure with --strict). "
        "Remote copies are deduplicated by (chain, seq): shipping is at-least-once, but two "
        "different copies of one event fail, and every missing seq range is listed. A "
        "journal whose oldest segments retention pruned is verified from the earliest "
        "segment left, anchored on its link to the one before and on the checkpoint file, "
        "and the segment_pruned event that accounts for it is named; a journal that starts "
        "late with no such event is a warning (a failure with --strict), a segment missing "
        "after the earliest one a failure.",
    )
    verify.add_argument(
        "source",
        metavar="SOURCE",
        help="a journal file or folder; s3://BUCKET[/PREFIX] (every object version); or "
        "cloudwatch://GROUP[/STREAM] (every stream: one per chain). AWS credentials, region "
        "and endpoints come from the usual AWS settings (AWS_PROFILE, AWS_ENDPOINT_URL_S3, ...)",
    )
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="PUB",
        help="checkpoint public key (PEM, from `keyledger keys generate`); repeat for keys "
        "used over time",
    )
    verify.add_argument(
        "--strict",
        action="store_true",
        help="also fail when events are unsealed, signatures were not checked, or a chain "
        "starts after seq 1 with no segment_pruned event to say why",
    )
    _add_chain_argument(verify, "verify only this chain")
    verify.add_argument(
        "--from-seq",
        type=_seq,
        metavar="N",
        help="check each chain from seq N on: the events before it are not read, and the "
        "link of seq N to them is taken as given (the output says so)",
    )
    verify.add_argument(
        "--max-gap",
        type=_age,
        metavar="DURATION",
        help="warn when a chain has no event for longer than this (like 6h or 2d); events "
        "timed earlier than the one before are always warned about (neither fails --strict)",
    )
    verify.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: on a terminal, for inputs over 16 MiB)",
    )
    verify.set_defaults(func=cmd_verify)
    _add_tail_parser(audit_sub)
    _add_export_parsers(audit_sub)


def _seq(text: str) -> int:
    """A chain seq, 1 or more: an argparse type."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a seq, 1 or more, not {text!r}")
    return int(text)


def _add_chain_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--chain",
        action="append",
        metavar="ID",
        help=f"{what} (a chain id: one per replica, as `verify` lists them); repeat for more",
    )


def _add_tail_parser(audit_sub: Any) -> None:
    from keyledger.proxy.audit.filters import add_filter_arguments

    tail = audit_sub.add_parser(
        "tail",
        help="show the last events, and follow new ones",
        description="Print the last N audit events (default 10), oldest first, one "
        "readable line each (coloured on a terminal; NO_COLOR turns colour off), or JSON "
        "lines with --json. -f keeps following: from the journal files (rotation "
        "included), or from a running keyledger's admin stream with --url. Names and user "
        "agents are shown with control characters escaped.",
    )
    tail.add_argument("source", nargs="?", metavar="SOURCE", help="a journal file or folder")
    tail.add_argument("--url", help="a running keyledger's admin API (http://127.0.0.1:9090)")
    tail.add_argument(
        "--token-file", metavar="FILE", help="admin token for --url (else KEYLEDGER_ADMIN_TOKEN)"
    )
    tail.add_argument("--cacert", metavar="PEM", help="CA bundle to trust for an https --url")
    tail.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="last N (10)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--json", action="store_true", help="one JSON object per line (for jq)")
    add_filter_arguments(tail)
    tail.set_defaults(func=cmd_tail)


def _add_export_parsers(audit_sub: Any) -> None:
    from keyledger.proxy.audit.export import FORMATS
    from keyledger.proxy.audit.filters import add_filter_arguments

    export = audit_sub.add_parser(
        "export",
        help="write events for a SIEM or an auditor: jsonl, csv, ecs, ocsf",
        description="Write the events under SOURCE (every chain, merged by time), filtered, "
        "to stdout or --output. jsonl: the journal lines as written (an unfiltered export of "
        "one chain still verifies); "
        "csv: one row per event, flattened columns, spreadsheet-safe; ecs: Elastic Common "
        "Schema documents; ocsf: OCSF API Activity (class 6003) events. --chain ID exports "
        "one chain (one replica) only; its unfiltered jsonl export verifies.",
    )
    export.add_argument("source", metavar="SOURCE", help="a journal file or folder")
    export.add_argument("--format", required=True, choices=FORMATS, help="output shape")
    export.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    _add_chain_argument(export, "export only this chain's events")
    add_filter_arguments(export)
    export.set_defaults(func=cmd_export)

    report = audit_sub.add_parser(
        "report",
        help="who accessed each secret, how often, first and last time, denies",
        description="An access report per secret: each principal that accessed it, how "
        "many times, first and last access, denies and errors. table (terminal), csv (one "
        "row per secret and principal) or html (one self-contained page with a chart of "
        "accesses over time). Filters narrow the events counted (e.g. --since 2026-10-01 "
        "--until 2026-11-01 for one month).",
    )
    report.add_argument("source", metavar="SOURCE", help="a journal file or folder")
    report.add_argument("--format", default="table", choices=("table", "csv", "html"))
    report.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    report.add_argument("--title", default="keyledger access report", help="the HTML page's title")
    _add_chain_argument(report, "count only this chain's events")
    add_filter_arguments(report)
    report.set_defaults(func=cmd_report)


def add_keys_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="make the key pair that signs audit checkpoints")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    generate = keys_sub.add_parser(
        "generate",
        help="generate an Ed25519 checkpoint signing key pair",
        description="Write PREFIX.key (the private key, PEM, mode 0600) and PREFIX.pub (the "
        "public key). keyledger serve signs checkpoints with the private key "
        "(audit.checkpoints.key_file); `keyledger audit verify --public-key PREFIX.pub` "
        "checks them. Existing files are never overwritten.",
    )
    generate.add_argument("--out", required=True, metavar="PREFIX", help="e.g. keys/checkpoint")
    generate.set_defaults(func=cmd_keys_generate)
