"""Journal setup shared by the audit tests: events, a real key pair, and a running journal.

The fixtures (``keys``, ``signer``, ``public_keys``, ``intact``, ``journal_dir``) reach
every test here; the helpers are imported: ``from tests.proxy.audit.conftest import ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypedDict, Unpack

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyledger.proxy.audit.checkpoints import (
    CheckpointSigner,
    generate_key_pair,
    load_private_key,
    load_public_keys,
)
from keyledger.proxy.audit.events import AuditEvent, EventType, PrincipalInfo, ResourceInfo
from keyledger.proxy.audit.journal import Checkpointing, Journal, Rotation
from keyledger.proxy.audit.verify import VerifyReport, verify_path
from tests.audit_records import CHAIN

__all__ = [
    "CHAIN",
    "append",
    "event",
    "load_signer",
    "new_journal",
    "records",
    "running",
    "until",
]

Intact = Callable[[Path], VerifyReport]


def event(n: int) -> AuditEvent:
    """An access event that names ``n`` in its principal (svc-n) and secret (staging/n)."""
    return AuditEvent(
        type=EventType.ACCESS,
        principal=PrincipalInfo(id=f"svc-{n}", auth_method="sigv4"),
        action="read",
        resource=ResourceInfo(backend="aws", secret=f"staging/{n}"),
    )


def records(path: Path) -> list[dict[str, Any]]:
    """Every line of a journal file, parsed."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def load_signer(private: Path) -> CheckpointSigner:
    """A signer for the PEM private key in ``private``."""
    return CheckpointSigner(load_private_key(private.read_bytes(), source=str(private)))


class JournalOptions(TypedDict, total=False):
    """How ``new_journal`` sets a journal up, beyond its folder and signer."""

    chain: str
    rotation: Rotation | None  # None: the Journal's default
    every_events: int  # with a signer, a checkpoint after this many events ...
    every_s: float  # ... or this many seconds
    watch_s: float  # how often a quiet journal compares its file with the path


def new_journal(
    directory: Path,
    signer: CheckpointSigner | None = None,
    *,
    chain: str = CHAIN,
    rotation: Rotation | None = None,
    every_events: int = 1000,
    every_s: float = 3600.0,
    watch_s: float = 1.0,
) -> Journal:
    """A journal, not yet started; given a signer, it seals a checkpoint every 1000 events
    and every hour unless told otherwise."""
    checkpoints = (
        None
        if signer is None
        else Checkpointing(signer=signer, every_events=every_events, every_s=every_s)
    )
    return Journal(
        directory=directory,
        chain_id=chain,
        rotation=rotation,
        checkpoints=checkpoints,
        watch_s=watch_s,
    )


@contextlib.asynccontextmanager
async def running(
    directory: Path, signer: CheckpointSigner | None = None, **options: Unpack[JournalOptions]
) -> AsyncIterator[Journal]:
    """A started ``new_journal``, closed on the way out."""
    journal = new_journal(directory, signer, **options)
    await journal.start()
    try:
        yield journal
    finally:
        await journal.close()


async def until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds; fail after 5 s."""
    async with asyncio.timeout(5):
        # Polling is the point: the journal's timers show only in its state.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def append(journal: Journal, count: int, start: int = 0) -> None:
    """Append ``event(n)`` for n from ``start``, ``count`` of them, one at a time."""
    for n in range(start, start + count):
        await journal.append(event(n))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A real Ed25519 key pair in PEM files: (private, public)."""
    return generate_key_pair(tmp_path / "keys" / "checkpoint")


@pytest.fixture
def signer(keys: tuple[Path, Path]) -> CheckpointSigner:
    return load_signer(keys[0])


@pytest.fixture
def public_keys(keys: tuple[Path, Path]) -> dict[str, Ed25519PublicKey]:
    """The verifier's view: the public key by its key id."""
    return load_public_keys([keys[1]])


@pytest.fixture
def intact(public_keys: dict[str, Ed25519PublicKey]) -> Intact:
    """Verify a journal folder with the public key, assert it is intact, return the report."""

    def verified(directory: Path) -> VerifyReport:
        report = verify_path(directory, public_keys=public_keys)
        assert report.ok, report.problems
        return report

    return verified


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "journal"
