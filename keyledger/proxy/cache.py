"""An audited secret cache: the store's answers to reads, held in memory for a while.

Services read the same few secrets over and over. Answering those reads from memory is
faster than any proxy that must ask the store, and keyledger still authenticates,
authorises and records every one of them exactly as it records a read the store answered:
a hit differs from a miss only by ``outcome.cache``. The cache sits after the policy
decision, so it never decides who may read what.

What is cached is the store's answer to one read of one secret (AWS ``GetSecretValue``,
Google ``AccessSecretVersion``, Key Vault ``GetSecret``), keyed by what the store would
answer: backend, secret, and the version or stage asked for (and whatever else the answer
is written with, as its frontend says). Never by caller: two callers asking the same thing
get the same answer, each recorded as theirs.

Only secrets a rule names are cached (``cache.rules``: backend:glob as policies write them,
each with its TTL); the cache is bounded by entries and by bytes (least recently used out
first), and holds values only in memory, never on disk.

Freshness: a change made through keyledger (write, rotation, stage move, delete) drops the
secret's entries at once; an entry read in the last part of its TTL is refreshed in the
background (once per key at a time, the moment jittered so that a fleet does not refresh
together); past its TTL an entry is not served, except, when ``stale_for_s`` allows, while
the store is unavailable (recorded as ``stale``). A change made outside keyledger is seen
within the TTL.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from keyledger.backends import BackendError, BackendUnavailable
from keyledger.model import SecretRef, SecretResult
from keyledger.policies.model import ResourcePattern

__all__ = [
    "HIT",
    "MISS",
    "REFRESH",
    "STALE",
    "CacheKey",
    "CacheRule",
    "CacheStats",
    "Cached",
    "SecretCache",
]

log = structlog.get_logger("keyledger.cache")

# outcome.cache of a read the cache may answer.
HIT, MISS, REFRESH, STALE = "hit", "miss", "refresh", "stale"

# An entry's size beyond its values: the store's answer around them, the key, the entry.
_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class CacheRule:
    """Cache the secrets ``pattern`` names for ``ttl_s``."""

    pattern: ResourcePattern
    ttl_s: float


@dataclass(frozen=True, slots=True)
class CacheKey:
    """What the store would answer: one secret, and what else the answer depends on, as
    the frontend says (``Call.cache_variant``: the version or stage asked for; for Key
    Vault, the URL its ids are written with)."""

    ref: SecretRef
    variant: tuple[str, ...] = ()


@dataclass(slots=True)
class _Entry:
    result: SecretResult
    size: int
    fresh_until: float  # monotonic
    refresh_after: float  # past this (and before fresh_until) a read refreshes it


@dataclass(frozen=True, slots=True)
class Cached:
    """An answer found in the cache and how it may be served."""

    result: SecretResult
    fresh: bool  # within its TTL; False: only for stale-on-error
    due: bool = False  # fresh, but should be refreshed now


@dataclass(slots=True)
class CacheStats:
    """For metrics."""

    hits: int = 0
    misses: int = 0
    refreshes: int = 0
    evictions: int = 0
    stale: int = 0
    invalidations: int = 0
    bytes: int = 0


class SecretCache:
    """The cache of one proxy process; see the module's docstring."""

    def __init__(
        self,
        rules: Sequence[CacheRule],
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 << 20,
        stale_for_s: float = 0.0,
        refresh_ahead: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """``stale_for_s``: how long past its TTL an entry may answer while the store is
        unavailable; ``refresh_ahead``: the last part of the TTL in which a read refreshes
        its entry; ``jitter()``: a number in [0, 1)."""
        self.rules = tuple(rules)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stale_for_s = stale_for_s
        self.refresh_ahead = refresh_ahead
        self._clock = clock
        self._jitter = jitter
        self.stats = CacheStats()
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        # Bumped by every invalidation: an answer fetched across one is not kept, for it
        # may be older than the change that caused it.
        self._epoch = 0
        self._refreshing: dict[CacheKey, asyncio.Task[None]] = {}

    def rule_for(self, ref: SecretRef) -> CacheRule | None:
        """The first rule naming ``ref``, or None: then it is never cached."""
        return next((r for r in self.rules if r.pattern.matches(ref.backend, ref.name)), None)

    async def read(
        self,
        key: CacheKey,
        rule: CacheRule,
        fetch: Callable[[], Awaitable[SecretResult]],
        *,
        bypass: bool = False,
    ) -> tuple[SecretResult, str]:
        """The answer to a read of ``key`` and how it was had: ``hit``, ``refresh`` (a hit
        that set a background refresh going), ``miss`` (``fetch`` asked the store; also
        when the caller bypassed the cache) or ``stale`` (the store unavailable, an expired
        entry within ``stale_for_s`` answered). ``fetch``'s errors propagate otherwise."""
        found = None if bypass else self.get(key)
        if found is not None and found.fresh:
            self.stats.hits += 1
            if found.due:
                self._refresh(key, rule, fetch)
                return found.result, REFRESH
            return found.result, HIT
        epoch = self._epoch
        try:
            result = await fetch()
        except BackendUnavailable:
            if found is None:
                raise
            self.stats.stale += 1
            return found.result, STALE
        self.stats.misses += 1
        self._keep(key, result, rule, epoch)
        return result, MISS

    def get(self, key: CacheKey) -> Cached | None:
        """The answer held for ``key``, fresh or (within ``stale_for_s``) expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now < entry.fresh_until:
            self._entries.move_to_end(key)
            return Cached(entry.result, fresh=True, due=now >= entry.refresh_after)
        if now < entry.fresh_until + self.stale_for_s:
            return Cached(entry.result, fresh=False)
        self._drop(key)
        return None

    def put(self, key: CacheKey, result: SecretResult, ttl_s: float) -> None:
        """Hold ``result`` for ``ttl_s``; the least recently used go to keep within bounds."""
        size = _OVERHEAD + 2 * sum(len(item.value or b"") for item in result.items)
        if size > self.max_bytes:
            return  # one answer larger than the whole cache: never held
        now = self._clock()
        # Refreshed somewhere in the last part of the TTL: a fleet does not refresh at once.
        ahead = ttl_s * self.refresh_ahead * (0.5 + 0.5 * self._jitter())
        self._drop(key)
        self._entries[key] = _Entry(result, size, now + ttl_s, now + ttl_s - ahead)
        self.stats.bytes += size
        while len(self._entries) > self.max_entries or self.stats.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.stats.evictions += 1

    def invalidate(self, ref: SecretRef) -> int:
        """Drop every version and stage held of ``ref`` (of every secret under a ``prefix/*``
        ref), and keep no answer fetched before now; returns how many entries went."""
        self._epoch += 1
        under = ref.under
        gone = [
            key
            for key in self._entries
            if key.ref.backend == ref.backend
            and (key.ref.name == ref.name if under is None else key.ref.name.startswith(under))
        ]
        for key in gone:
            self._drop(key)
        self.stats.invalidations += len(gone)
        return len(gone)

    async def close(self) -> None:
        """Stop the refreshes under way."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._entries)

    def _refresh(
        self, key: CacheKey, rule: CacheRule, fetch: Callable[[], Awaitable[SecretResult]]
    ) -> None:
        if key in self._refreshing:
            return  # one refresh in flight per key

        async def refresh() -> None:
            epoch = self._epoch
            try:
                result = await fetch()
            except BackendError as exc:
                # The entry serves until its TTL ends; the next read past it asks again.
                log.info("cache_refresh_failed", secret=str(key.ref), error=exc.kind)
                return
            if self._keep(key, result, rule, epoch):
                self.stats.refreshes += 1

        task = asyncio.create_task(refresh(), name=f"keyledger-cache-refresh:{key.ref}")
        self._refreshing[key] = task
        task.add_done_callback(lambda _: self._refreshing.pop(key, None))

    def _keep(self, key: CacheKey, result: SecretResult, rule: CacheRule, epoch: int) -> bool:
        """Hold a fetched answer unless a change came meanwhile or it is not the secret's."""
        if epoch != self._epoch or not any(item.ref == key.ref for item in result.items):
            return False
        self.put(key, result, rule.ttl_s)
        return True

    def _drop(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.stats.bytes -= entry.size
