"""The rate limiter's token buckets: a burst, then the rate; memory bounded by keys."""

from __future__ import annotations

import itertools

from keyledger.proxy.ratelimit import Limits, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestRateLimiter:
    def test_a_burst_then_the_rate(self) -> None:
        """10/s with burst_s 0.5: five calls at once, then one per 0.1 s."""
        clock = Clock()
        limiter = RateLimiter(10, burst_s=0.5, clock=clock)

        burst = [limiter.allow("a") for _ in range(7)]
        clock.now += 0.1
        after_a_tick = [limiter.allow("a") for _ in range(2)]

        assert burst == [True] * 5 + [False] * 2
        assert after_a_tick == [True, False]

    def test_keys_have_buckets_of_their_own(self) -> None:
        """One caller's flood does not spend another's tokens."""
        limiter = RateLimiter(1, burst_s=1, clock=Clock())

        assert [limiter.allow("flood") for _ in range(3)] == [True, False, False]
        assert limiter.allow("quiet") is True

    def test_a_slow_rate_still_lets_one_call_through(self) -> None:
        """0.1/s with burst_s 2 would hold 0.2 tokens: a bucket holds at least one call."""
        limiter = RateLimiter(0.1, burst_s=2, clock=Clock())

        assert [limiter.allow("a") for _ in range(2)] == [True, False]

    def test_a_refused_call_does_not_spend_tokens(self) -> None:
        """A caller hammering an empty bucket is let in as soon as it has refilled."""
        clock = Clock()
        limiter = RateLimiter(1, burst_s=1, clock=clock)
        limiter.allow("a")
        for _ in range(100):
            clock.now += 0.001
            limiter.allow("a")

        clock.now += 0.91
        assert limiter.allow("a") is True

    def test_memory_is_bounded_and_the_flood_stays_throttled(self) -> None:
        """Half a million one-off sources (5 s of them) keep the table within max_keys,
        and a source flooding all along gets its 1/s and no more: pruning never forgets
        the caller it is throttling."""
        clock = Clock()
        limiter = RateLimiter(1, burst_s=1, max_keys=1000, clock=clock)
        greedy, largest = [], 0
        for i in range(500_000):
            if i % 100 == 0:
                clock.now += 0.001
                greedy.append(limiter.allow("greedy"))
            limiter.allow(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
            largest = max(largest, len(limiter))

        assert largest <= 1000
        assert len(greedy) == 5000
        assert greedy[0] is True
        allowed = [step for step, ok in enumerate(greedy) if ok]
        assert len(allowed) >= 4  # about one a second (a step is 1 ms)...
        assert all(b - a >= 999 for a, b in itertools.pairwise(allowed))  # ...never more


def test_no_limits_configured_means_nothing_to_check() -> None:
    """Without a rate, the gateway gets None and spends nothing per call."""
    assert Limits.of(None, None, burst_s=2) is None
    limits = Limits.of(5, None, burst_s=2)
    assert limits is not None
    assert limits.per_source is not None
    assert limits.per_principal is None
