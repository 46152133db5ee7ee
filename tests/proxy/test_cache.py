"""The secret cache on its own: what it holds, for how long, within what bounds, and what a
change, a refresh or a store outage does to it. The gateway's use of it (every hit
authorised and recorded) is tested end to end in tests/e2e/test_cache.py."""

from __future__ import annotations

import asyncio

import pytest

from keyledger.backends import BackendUnavailable, SecretNotFound
from keyledger.model import SecretItem, SecretRef, SecretResult
from keyledger.policies.model import ResourcePattern
from keyledger.proxy.cache import HIT, MISS, REFRESH, STALE, CacheKey, CacheRule, SecretCache

DB = SecretRef("aws", "prod/db")
RULE = CacheRule(ResourcePattern.parse("aws:prod/*"), ttl_s=60)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Store:
    """Answers reads of one secret with its current value; counts the reads; can go down."""

    def __init__(self, value: bytes = b"v1") -> None:
        self.value = value
        self.reads = 0
        self.down = False
        self.gate: asyncio.Event | None = None  # when set, reads wait for it

    async def read(self, ref: SecretRef = DB) -> SecretResult:
        self.reads += 1
        value = self.value
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise BackendUnavailable("the store is down", status=503)
        return SecretResult(
            data={"SecretString": value.decode()}, items=(SecretItem(ref=ref, value=value),)
        )


def make(clock: Clock, **settings: float) -> SecretCache:
    return SecretCache([RULE], clock=clock, jitter=lambda: 0.0, **settings)  # type: ignore[arg-type]


def value_of(answer: tuple[SecretResult, str]) -> tuple[bytes | None, str]:
    result, how = answer
    return result.items[0].value, how


class TestReads:
    async def test_a_second_read_is_a_hit_until_the_ttl_ends(self) -> None:
        """Within the TTL the store is asked once; after it, again."""
        clock, store = Clock(), Store()
        cache = make(clock)
        key = CacheKey(DB, ("", "AWSCURRENT"))

        first = value_of(await cache.read(key, RULE, store.read))
        clock.now += 30
        second = value_of(await cache.read(key, RULE, store.read))
        clock.now += 31
        third = value_of(await cache.read(key, RULE, store.read))

        assert [first, second, third] == [(b"v1", MISS), (b"v1", HIT), (b"v1", MISS)]
        assert store.reads == 2
        assert (cache.stats.hits, cache.stats.misses) == (1, 2)

    async def test_another_version_or_stage_is_another_entry(self) -> None:
        """Keyed by what the store answers: AWSPREVIOUS is not AWSCURRENT."""
        clock, store = Clock(), Store()
        cache = make(clock)

        await cache.read(CacheKey(DB, ("", "AWSCURRENT")), RULE, store.read)
        _, how = await cache.read(CacheKey(DB, ("", "AWSPREVIOUS")), RULE, store.read)

        assert how == MISS
        assert store.reads == 2

    async def test_a_bypass_asks_the_store_and_keeps_its_answer(self) -> None:
        """A caller bypassing the cache gets the store's answer, which later reads get."""
        clock, store = Clock(), Store()
        cache = make(clock)
        key = CacheKey(DB)
        await cache.read(key, RULE, store.read)
        store.value = b"v2"

        bypassed = value_of(await cache.read(key, RULE, store.read, bypass=True))
        after = value_of(await cache.read(key, RULE, store.read))

        assert (bypassed, after) == ((b"v2", MISS), (b"v2", HIT))

    async def test_a_store_error_is_never_held(self) -> None:
        """Not found is the caller's answer now, not for the next TTL."""
        cache, key = make(Clock()), CacheKey(DB)

        async def missing() -> SecretResult:
            raise SecretNotFound("no such secret")

        with pytest.raises(SecretNotFound):
            await cache.read(key, RULE, missing)
        assert len(cache) == 0

    async def test_an_answer_naming_another_secret_is_not_held(self) -> None:
        """What the store says about another secret is never kept under this one's key."""
        store = Store()
        cache = make(Clock())

        await cache.read(CacheKey(DB), RULE, lambda: store.read(SecretRef("aws", "prod/other")))

        assert len(cache) == 0


class TestChanges:
    async def test_a_change_drops_every_version_held(self) -> None:
        """A write through keyledger invalidates the secret at once, all stages of it."""
        clock, store = Clock(), Store()
        cache = make(clock)
        for stage in ("AWSCURRENT", "AWSPREVIOUS"):
            await cache.read(CacheKey(DB, ("", stage)), RULE, store.read)
        other = CacheKey(SecretRef("aws", "prod/other"))
        await cache.read(other, RULE, lambda: store.read(other.ref))

        assert cache.invalidate(DB) == 2
        assert len(cache) == 1

    async def test_a_restore_of_a_whole_vault_drops_all_of_it(self) -> None:
        """A ``prefix/*`` ref (a Key Vault restore) invalidates every secret under it."""
        store, cache = Store(), make(Clock())
        for name in ("prod/a", "prod/b"):
            ref = SecretRef("aws", name)
            await cache.read(CacheKey(ref), RULE, lambda ref=ref: store.read(ref))  # type: ignore[misc]

        assert cache.invalidate(SecretRef("aws", "prod/*")) == 2

    async def test_an_answer_fetched_across_a_change_is_not_kept(self) -> None:
        """A read that left for the store before a write and came back after it may carry
        the old value: it answers its caller but is not held for the next."""
        store, cache = Store(), make(Clock())
        store.gate = asyncio.Event()
        key = CacheKey(DB)
        slow = asyncio.create_task(cache.read(key, RULE, store.read))
        await asyncio.sleep(0)
        cache.invalidate(DB)  # the write through keyledger completes meanwhile
        store.gate.set()

        assert value_of(await slow) == (b"v1", MISS)
        assert len(cache) == 0


class TestFreshness:
    async def test_a_read_late_in_the_ttl_refreshes_in_the_background_once(self) -> None:
        """In the last fifth of the TTL a read is still a hit, and sets one refresh going
        however many reads come meanwhile; the refreshed answer serves a full TTL more."""
        clock, store = Clock(), Store()
        cache = make(clock)
        key = CacheKey(DB)
        await cache.read(key, RULE, store.read)
        store.value, store.gate = b"v2", asyncio.Event()
        clock.now += 55  # refresh_ahead 0.2, no jitter: from 50 s on

        late = [value_of(await cache.read(key, RULE, store.read)) for _ in range(3)]
        store.gate.set()
        await asyncio.sleep(0.01)
        clock.now += 50

        assert late == [(b"v1", REFRESH)] * 3
        assert store.reads == 2
        assert value_of(await cache.read(key, RULE, store.read)) == (b"v2", HIT)
        assert cache.stats.refreshes == 1

    async def test_stale_answers_serve_only_while_the_store_is_down_and_only_so_long(
        self,
    ) -> None:
        """Past its TTL, an entry answers (as stale) only when the store is unavailable,
        and only within stale_for_s; then the outage is the caller's error."""
        clock, store = Clock(), Store()
        cache = make(clock, stale_for_s=30)
        key = CacheKey(DB)
        await cache.read(key, RULE, store.read)
        store.down = True

        clock.now += 70
        during = value_of(await cache.read(key, RULE, store.read))
        clock.now += 25
        with pytest.raises(BackendUnavailable):
            await cache.read(key, RULE, store.read)

        assert during == (b"v1", STALE)
        assert cache.stats.stale == 1

    async def test_without_stale_for_an_outage_is_the_callers_error(self) -> None:
        """stale_for_s 0 (the default): an expired entry never answers."""
        clock, store = Clock(), Store()
        cache = make(clock)
        key = CacheKey(DB)
        await cache.read(key, RULE, store.read)
        store.down = True
        clock.now += 61

        with pytest.raises(BackendUnavailable):
            await cache.read(key, RULE, store.read)


class TestBounds:
    async def test_entries_past_the_limit_go_least_recently_used_first(self) -> None:
        """max_entries 2: the entry read longest ago goes."""
        store = Store()
        cache = make(Clock(), max_entries=2)
        keys = [CacheKey(SecretRef("aws", f"prod/{n}")) for n in "abc"]
        for key in keys[:2]:
            await cache.read(key, RULE, lambda key=key: store.read(key.ref))  # type: ignore[misc]
        await cache.read(keys[0], RULE, store.read)  # a is used again: b is the oldest
        await cache.read(keys[2], RULE, lambda: store.read(keys[2].ref))

        assert cache.get(keys[1]) is None
        assert cache.get(keys[0]) is not None
        assert cache.stats.evictions == 1

    async def test_the_bytes_bound_holds(self) -> None:
        """However many large values are read, the bytes held stay within max_bytes; a value
        larger than the whole cache is never held."""
        store = Store(b"x" * 20_000)
        cache = make(Clock(), max_bytes=100_000)
        for n in range(50):
            ref = SecretRef("aws", f"prod/{n}")
            await cache.read(CacheKey(ref), RULE, lambda ref=ref: store.read(ref))  # type: ignore[misc]
            assert cache.stats.bytes <= 100_000
        huge = Store(b"y" * 200_000)

        await cache.read(CacheKey(DB), RULE, huge.read)

        assert cache.get(CacheKey(DB)) is None
        assert len(cache) == 2  # two 41 KiB answers fit in 100 KB


def test_only_secrets_a_rule_names_are_cached() -> None:
    """No rule, no caching: the first matching rule gives the TTL."""
    cache = SecretCache(
        [RULE, CacheRule(ResourcePattern.parse("*:shared/*"), ttl_s=5)], clock=Clock()
    )

    assert cache.rule_for(SecretRef("aws", "dev/db")) is None
    assert cache.rule_for(DB) is RULE
    rule = cache.rule_for(SecretRef("gcp", "shared/key"))
    assert rule is not None
    assert rule.ttl_s == 5
