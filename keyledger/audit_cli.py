"""``keyledger audit ...`` and ``keyledger keys ...``: the security team's tools.

keyledger audit verify SOURCE [--public-key PUB] [--strict]
keyledger keys generate --out PREFIX
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_audit_parser", "add_keys_parser"]

# Below this, verifying takes a blink: a progress bar would only flicker.
_PROGRESS_FROM_BYTES = 16 << 20


class AuditCliError(Exception):
    """A usage problem: printed as ``keyledger: <message>``, exit status 2."""


# -- verify ------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from keyledger.proxy.audit.checkpoints import load_public_keys
    from keyledger.proxy.audit.verify import verify_path

    source = Path(args.source)
    if not source.exists():
        raise AuditCliError(f"{source}: no such file or folder")
    keys = load_public_keys(Path(p) for p in args.public_key) if args.public_key else None
    total = _size_of(source)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    if show and (args.progress or total >= _PROGRESS_FROM_BYTES):
        report = _verify_with_progress(source, keys, total)
    else:
        report = verify_path(source, public_keys=keys)
    if not report.files:
        raise AuditCliError(f"{source}: no journal files (*.jsonl) found")

    warnings = []
    for chain in sorted(report.chains.values(), key=lambda c: c.id):
        state = "BROKEN" if chain.problem else "ok"
        print(
            f"chain {chain.id}: {chain.events:,} events in {chain.files} file(s), last seq "
            f"{chain.last_seq}, {chain.checkpoints:,} checkpoint(s): {state}"
        )
        if chain.problem is None and chain.unsealed:
            if chain.checkpoints:
                warnings.append(
                    f"chain {chain.id}: {chain.unsealed:,} event(s) after the last checkpoint "
                    f"(seq {chain.last_checkpoint_seq}) are unsealed"
                )
            else:
                warnings.append(f"chain {chain.id}: no signed checkpoints; all events unsealed")
    if not report.signatures_checked and any(c.checkpoints for c in report.chains.values()):
        warnings.append("checkpoint signatures not checked: pass --public-key FILE.pub")
    for problem in report.problems:
        print(f"FAIL {problem}")
    for warning in warnings:
        print(f"WARN {warning}")
    if not report.chains and not report.problems:
        print(f"no events found in {source}")
        return 1
    if not report.ok:
        return 1
    if args.strict and warnings:
        print("not intact under --strict: every event must be sealed by a verified signature")
        return 1
    signed = f", signatures checked ({', '.join(sorted(keys))})" if keys else ""
    print(f"intact: {report.events:,} events verified{signed}")
    return 0


def _size_of(source: Path) -> int:
    if source.is_file():
        return source.stat().st_size
    return sum(p.stat().st_size for p in source.rglob("*.jsonl") if p.is_file())


def _verify_with_progress(source: Path, keys: Any, total: int) -> Any:
    from rich.console import Console
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
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("verify", total=total)
        return verify_path(source, public_keys=keys, progress=lambda n: progress.advance(task, n))


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
        "last checkpoint are reported as unsealed (a warning; a failure with --strict).",
    )
    verify.add_argument("source", metavar="SOURCE", help="a journal file or folder")
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
        help="also fail when events are unsealed or signatures were not checked",
    )
    verify.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: on a terminal, for inputs over 16 MiB)",
    )
    verify.set_defaults(func=cmd_verify)


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
