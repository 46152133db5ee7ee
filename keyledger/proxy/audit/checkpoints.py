"""Signed checkpoints: an Ed25519 signature over a point of the chain.

A hash chain alone shows an edited line, but not a rewrite that recomputes every hash after
it, nor events cut off the end. A checkpoint signs ``(chain id, seq, hash, time, previous
checkpoint)`` with a key the journal never holds, so both become visible to anyone with the
public key:

- a rewritten line changes every later hash, and a signed checkpoint still names the old one;
- each checkpoint is also appended to ``<chain>.checkpoints.jsonl``; a journal cut below a
  checkpoint in that file no longer reaches the seq it seals.

The signed bytes are the domain tag ``keyledger.checkpoint/v1`` and a newline, then the
compact, key-sorted JSON of ``{chain, seq, hash, time, previous}``; ``previous`` is the
``{seq, hash}`` the checkpoint before it sealed (``null`` for a chain's first), so the
checkpoints form a signed chain of their own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keyledger.proxy.audit.segments import keep_aside

__all__ = [
    "SCHEMA",
    "Checkpoint",
    "CheckpointFile",
    "CheckpointSigner",
    "Seal",
    "generate_key_pair",
    "key_id",
    "load_private_key",
    "load_public_keys",
]

SCHEMA = "keyledger.checkpoint/v1"
_DOMAIN = SCHEMA.encode() + b"\n"


@dataclass(frozen=True, slots=True)
class Seal:
    """A point of a chain: the seq of an event and its hash."""

    seq: int
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}

    @classmethod
    def from_json(cls, data: Any) -> Seal | None:
        if data is None:
            return None
        return cls(_int(data["seq"]), _str(data["hash"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """What a checkpoint signs, the signature, and the id of the key that made it."""

    chain: str
    seq: int  # the last event sealed
    hash: str  # ... and its hash
    time: str
    previous: Seal | None
    key_id: str
    signature: str  # base64

    @property
    def seal(self) -> Seal:
        return Seal(self.seq, self.hash)

    def signed_bytes(self) -> bytes:
        return _signed_bytes(self.chain, self.seal, self.time, self.previous)

    def verify(self, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
        """None if a key in ``keys`` made the signature; else why not."""
        key = keys.get(self.key_id)
        if key is None:
            known = ", ".join(sorted(keys)) or "none"
            return f"signed with another key (key id {self.key_id}; given: {known})"
        try:
            key.verify(base64.b64decode(self.signature, validate=True), self.signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            return f"bad signature (key id {self.key_id}): the checkpoint was altered"
        return None

    # -- in the journal: the detail of a ``checkpoint`` event ------------------------------

    def to_detail(self) -> dict[str, Any]:
        return {
            "seals": self.seal.to_json(),
            "previous": None if self.previous is None else self.previous.to_json(),
            "time": self.time,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_event(cls, record: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint a ``checkpoint`` event carries; ValueError if it is malformed."""
        try:
            detail = record["detail"]
            seals = Seal.from_json(detail["seals"])
            if seals is None:
                raise TypeError("no seal")
            return cls(
                chain=_str(record["chain"]["id"]),
                seq=seals.seq,
                hash=seals.hash,
                time=_str(detail["time"]),
                previous=Seal.from_json(detail["previous"]),
                key_id=_str(detail["key_id"]),
                signature=_str(detail["signature"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed checkpoint event ({exc})") from None

    # -- in the checkpoint file: one JSON line each ----------------------------------------

    def to_line(self) -> bytes:
        return (
            orjson.dumps(
                {
                    "schema": SCHEMA,
                    "chain": self.chain,
                    "seq": self.seq,
                    "hash": self.hash,
                    "time": self.time,
                    "previous": None if self.previous is None else self.previous.to_json(),
                    "key_id": self.key_id,
                    "signature": self.signature,
                }
            )
            + b"\n"
        )

    @classmethod
    def from_line(cls, line: bytes) -> Checkpoint:
        try:
            data = orjson.loads(line)
            if data["schema"] != SCHEMA:
                raise ValueError(f"schema is {data['schema']!r}, not {SCHEMA}")
            return cls(
                chain=_str(data["chain"]),
                seq=_int(data["seq"]),
                hash=_str(data["hash"]),
                time=_str(data["time"]),
                previous=Seal.from_json(data["previous"]),
                key_id=_str(data["key_id"]),
                signature=_str(data["signature"]),
            )
        except orjson.JSONDecodeError:
            raise ValueError("not JSON") from None
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a keyledger checkpoint ({exc})") from None


class CheckpointSigner:
    """Signs checkpoints with one Ed25519 private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, *, chain: str, seal: Seal, time: str, previous: Seal | None) -> Checkpoint:
        signature = self._key.sign(_signed_bytes(chain, seal, time, previous))
        return Checkpoint(
            chain=chain,
            seq=seal.seq,
            hash=seal.hash,
            time=time,
            previous=previous,
            key_id=self.key_id,
            signature=base64.b64encode(signature).decode(),
        )


def _signed_bytes(chain: str, seal: Seal, time: str, previous: Seal | None) -> bytes:
    body = {
        "chain": chain,
        "seq": seal.seq,
        "hash": seal.hash,
        "time": time,
        "previous": None if previous is None else previous.to_json(),
    }
    return _DOMAIN + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


# -- keys --------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the start of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(pem: bytes, *, source: str) -> Ed25519PrivateKey:
    """The Ed25519 key in PKCS#8 PEM ``pem``; ValueError naming ``source`` otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{source}: checkpoints need an Ed25519 key, not {type(key).__name__}")
    return key


def load_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id, from PEM files; ValueError naming the file that is not one."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"{path}: cannot read public key: {exc.strerror}") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
        keys[key_id(key)] = key
    return keys


def generate_key_pair(prefix: Path) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (mode 0600) and ``PREFIX.pub``; never overwrite either."""
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; keyledger never overwrites a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: created here with 0600 from the first byte, or not at all.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(public_pem)
    return private_path, public_path


class CheckpointFile:
    """``<chain>.checkpoints.jsonl``: every checkpoint again, appended and fsynced.

    Blocking I/O: the journal calls it from a worker thread.
    """

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self._fsync = fsync
        self.last: Checkpoint | None = None
        self.torn_moved_to: str | None = None
        self.unreadable_last_line = False

    def open(self) -> None:
        """Read the newest record; set a torn last line aside (a crash mid-append)."""
        try:
            handle = self.path.open("r+b")
        except FileNotFoundError:
            return
        with handle:
            size = handle.seek(0, os.SEEK_END)
            # The file grows by a line per thousand events: read only its end, a record
            # being well under 4 KiB; widen the window until two line ends are in it.
            window = 1 << 16
            while True:
                start = max(0, size - window)
                handle.seek(start)
                data = handle.read()
                if data.count(b"\n") >= 2 or start == 0:
                    break
                window *= 4
            end = data.rfind(b"\n") + 1
            if end < len(data):
                self.torn_moved_to = keep_aside(self.path, start + end, data[end:])
                handle.truncate(start + end)
                os.fsync(handle.fileno())
        last = data[data.rfind(b"\n", 0, end - 1) + 1 : end]
        if last:
            try:
                self.last = Checkpoint.from_line(last)
            except ValueError:
                self.unreadable_last_line = True  # verify will say where; keep appending

    def append(self, checkpoints: Sequence[Checkpoint]) -> None:
        if not checkpoints:
            return
        data = b"".join(c.to_line() for c in checkpoints)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.last = checkpoints[-1]
