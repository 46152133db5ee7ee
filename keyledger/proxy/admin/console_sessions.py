"""The console's sessions: the admin token, once shown, buys a random session id for a while.

A session lives only here, in memory: the browser holds its id (an HttpOnly cookie), the
server holds the SHA-256 of that id, so a dump of this table opens no session. Ids are 32
random bytes; a lookup hashes the id given and finds its session by that hash. Sessions end at
their expiry (``ttl_s`` after sign-in, never extended), at sign-out, when the process
stops, or when ``limit`` newer sessions push them out (the oldest goes first): the table
never grows past ``limit``, however many sign-ins there are.

Each session has a *handle*, the first 16 hex digits of its hash: audit events name the
session by it, and it cannot be turned back into the id.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Session", "SessionStore"]

_ID_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    handle: str  # names the session in audit events; not the id
    started: float  # wall clock (time.time()), for events and expiry shown to users
    expires: float  # wall clock
    source_ip: str | None
    digest: bytes  # SHA-256 of the id: what the table keeps

    def expired(self, now: float) -> bool:
        return now >= self.expires


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).digest()


class SessionStore:
    """At most ``limit`` live sessions, each ending ``ttl_s`` after it began."""

    def __init__(self, *, ttl_s: float, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._clock = clock
        self._sessions: dict[bytes, Session] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        self._prune()
        return len(self._sessions)

    def create(self, *, source_ip: str | None) -> tuple[str, Session, Session | None]:
        """A new session: its id (for the cookie only), itself, and the session it pushed
        out to stay within the limit (None if none)."""
        self._prune()
        evicted = None
        if len(self._sessions) >= self.limit:
            oldest = next(iter(self._sessions))
            evicted = self._sessions.pop(oldest)
        session_id = secrets.token_urlsafe(_ID_BYTES)
        digest = _digest(session_id)
        now = self._clock()
        session = Session(
            handle=digest.hex()[:16],
            started=now,
            expires=now + self.ttl_s,
            source_ip=source_ip,
            digest=digest,
        )
        self._sessions[digest] = session
        return session_id, session, evicted

    def get(self, session_id: str | None) -> Session | None:
        """The live session ``session_id`` names, or None (unknown, expired, ended)."""
        if not session_id or len(session_id) > 256:
            return None
        digest = _digest(session_id)
        # Looked up by the id's SHA-256, which a caller cannot steer toward a live one:
        # nothing about a guess's closeness shows in the time it takes.
        session = self._sessions.get(digest)
        if session is None:
            return None
        if session.expired(self._clock()):
            del self._sessions[digest]
            return None
        return session

    def alive(self, session: Session) -> bool:
        """Whether ``session`` is still live (not ended, not expired, not pushed out)."""
        return session.digest in self._sessions and not session.expired(self._clock())

    def end(self, session: Session) -> bool:
        """End ``session``; False if it had ended already."""
        return self._sessions.pop(session.digest, None) is not None

    def clear(self) -> None:
        self._sessions.clear()

    def _prune(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._sessions.items() if s.expired(now)]:
            del self._sessions[digest]
