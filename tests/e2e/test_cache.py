"""The audited cache as boto3 meets it: reads answered from memory are authorised and
recorded exactly as the store's answers are (but for outcome.cache), a change through
keyledger is seen at once, a store outage is bridged only within stale_for, and the value
never reaches a file, a log line or a metric.

The store is moto behind a forwarder that counts the reads it passes on and can hold the
store's answers back (an outage, as keyledger sees it: no answer within the timeout)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from keyledger.proxy.app import JOURNAL
from tests.conftest import RunningProxy, running_proxy
from tests.e2e.test_shutdown import HoldingForwarder
from tests.proxy.test_operate import Metrics

SECRET = "app/db/password"
CACHE = {"rules": [{"secrets": ["aws:app/*"], "ttl": "60s"}], "stale_for": "30s"}


class Cached:
    def __init__(self, proxy: RunningProxy, store_link: HoldingForwarder) -> None:
        self.proxy, self.store_link = proxy, store_link

    def read(self, who: str = "app", **params: Any) -> str:
        answer = self.proxy.client(who).get_secret_value(SecretId=SECRET, **params)
        return str(answer["SecretString"])

    def reads(self) -> list[dict[str, Any]]:
        return [
            e for e in self.proxy.events("access") if e["request"]["operation"] == "GetSecretValue"
        ]


@pytest.fixture
def cached(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    moto_url: str,
    store: Any,
    store_credentials: None,
) -> Iterator[Cached]:
    """keyledger caching app/* (a test's indirect parameter: another cache config) in
    front of the forwarder to moto; the store gives up after 1 s."""
    store.create_secret(Name=SECRET, SecretString="first-value")
    cache = getattr(request, "param", CACHE)
    with (
        HoldingForwarder(moto_url) as store_link,
        running_proxy(
            tmp_path, store_link.url, backend={"timeout_s": 1}, extra={"cache": cache}
        ) as proxy,
    ):
        yield Cached(proxy, store_link)


def without_what_differs(event: dict[str, Any]) -> dict[str, Any]:
    """An access event without what differs between two calls anyway."""
    kept = {k: v for k, v in event.items() if k not in ("id", "time", "chain")}
    kept["request"] = {k: v for k, v in event["request"].items() if k != "id"}
    kept["outcome"] = {
        k: v for k, v in event["outcome"].items() if k not in ("latency_ms", "cache")
    }
    return kept


def test_hits_are_authorised_and_recorded_as_misses_are(cached: Cached) -> None:
    """Three reads: the store is asked once; each read has its event, the same in every
    field (principal, decision, version, value fingerprint) but outcome.cache."""
    values = [cached.read() for _ in range(3)]
    reads = cached.reads()

    assert values == ["first-value"] * 3
    assert cached.store_link.seen == 1
    assert [e["outcome"]["cache"] for e in reads] == ["miss", "hit", "hit"]
    first, *rest = (without_what_differs(e) for e in reads)
    assert all(other == first for other in rest)
    assert first["outcome"]["value_fingerprint"].startswith("hmac-sha256:")
    metrics = Metrics(cached.proxy)
    assert metrics.value("keyledger_cache_hits_total") == 2
    assert metrics.value("keyledger_cache_misses_total") == 1


def test_a_caller_policy_denies_gets_nothing_from_the_cache(cached: Cached) -> None:
    """A value in the cache is still only for callers policy lets read it."""
    cached.read()
    with pytest.raises(ClientError) as denied:
        cached.read("stranger")

    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "first-value" not in str(denied.value)
    assert Metrics(cached.proxy).value("keyledger_cache_hits_total") == 0


def test_another_stage_is_asked_of_the_store(cached: Cached) -> None:
    """AWSPREVIOUS is not AWSCURRENT's answer: keyed by what the store would answer."""
    cached.proxy.client().put_secret_value(SecretId=SECRET, SecretString="second-value")

    assert cached.read(VersionStage="AWSPREVIOUS") == "first-value"
    assert cached.read() == "second-value"
    assert [e["outcome"]["cache"] for e in cached.reads()] == ["miss", "miss"]


@pytest.mark.parametrize(
    "change", ["PutSecretValue", "UpdateSecretVersionStage", "RotateSecret", "DeleteSecret"]
)
def test_a_change_through_keyledger_is_seen_at_once(
    cached: Cached, store: Any, change: str
) -> None:
    """After a write, a stage move, a rotation or a delete through keyledger, the next read
    is asked of the store and gets its answer, never the value held before."""
    client = cached.proxy.client()
    (first,) = client.describe_secret(SecretId=SECRET)["VersionIdsToStages"]
    client.put_secret_value(SecretId=SECRET, SecretString="second-value")
    assert [cached.read(), cached.read()] == ["second-value"] * 2  # held
    if change == "PutSecretValue":
        client.put_secret_value(SecretId=SECRET, SecretString="third-value")
    elif change == "UpdateSecretVersionStage":
        stages = client.describe_secret(SecretId=SECRET)["VersionIdsToStages"]
        current = next(v for v, s in stages.items() if "AWSCURRENT" in s)
        client.update_secret_version_stage(
            SecretId=SECRET,
            VersionStage="AWSCURRENT",
            MoveToVersionId=first,
            RemoveFromVersionId=current,
        )
    elif change == "RotateSecret":
        client.rotate_secret(SecretId=SECRET, RotationRules={"AutomaticallyAfterDays": 1})
    else:
        client.delete_secret(SecretId=SECRET, ForceDeleteWithoutRecovery=True)
    seen = cached.store_link.seen

    try:
        after: str | tuple[str, str] = cached.read()
    except ClientError as exc:
        after = ("error", exc.response["Error"]["Code"])
    try:
        truth: str | tuple[str, str] = store.get_secret_value(SecretId=SECRET)["SecretString"]
    except ClientError as exc:  # moto's rotation without a Lambda leaves no AWSCURRENT value
        truth = ("error", exc.response["Error"]["Code"])

    assert after == truth
    assert cached.store_link.seen == seen + 1  # asked of the store
    assert Metrics(cached.proxy).value("keyledger_cache_invalidations_total") >= 1


@pytest.mark.parametrize(
    "cached", [{"rules": [{"secrets": "aws:app/*", "ttl": "1s"}], "stale_for": "2s"}], indirect=True
)
def test_an_outage_is_bridged_only_within_stale_for(cached: Cached) -> None:
    """The store stops answering: past its TTL (1 s) an entry answers, recorded as stale,
    within stale_for (2 s); after that the outage is the caller's error, as without a
    cache."""
    cached.read()
    cached.store_link.hold()
    time.sleep(1.1)

    assert cached.read() == "first-value"  # after the store's 1 s timeout
    assert cached.reads()[-1]["outcome"]["cache"] == "stale"
    time.sleep(1.5)
    with pytest.raises(ClientError) as outage:
        cached.read()
    cached.store_link.release()

    assert outage.value.response["Error"]["Code"] == "InternalServiceError"
    assert Metrics(cached.proxy).value("keyledger_cache_stale_total") == 1


def test_a_hit_is_refused_when_it_cannot_be_recorded(cached: Cached) -> None:
    """Fail closed holds for hits: with the journal closed, a value held in memory is not
    served either."""
    assert cached.proxy.app is not None
    cached.read()
    journal = cached.proxy.app[JOURNAL]
    asyncio.run_coroutine_threadsafe(journal.close(), cached.proxy._loop).result(30)

    with pytest.raises(ClientError) as refused:
        cached.read()

    assert refused.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert "first-value" not in str(refused.value)


def test_the_value_is_in_no_file_log_or_metric(
    cached: Cached, capfd: pytest.CaptureFixture[str]
) -> None:
    """A canary read through the cache many times appears in no journal file, no log line
    and no metric."""
    canary = f"cache-canary-{secrets.token_hex(8)}"
    cached.proxy.client().put_secret_value(SecretId=SECRET, SecretString=canary)
    assert {cached.read() for _ in range(5)} == {canary}
    metrics = Metrics(cached.proxy)
    logged = capfd.readouterr()

    for path in cached.proxy.journal.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path
    assert canary not in logged.out + logged.err
    assert all(canary not in str(sample) for sample in metrics.samples)


def test_a_caller_can_ask_for_the_stores_answer(cached: Cached) -> None:
    """boto3 with an X-Keyledger-Cache: bypass header (added by an event hook, as the README
    shows) is answered by the store, and later reads get that fresher answer."""
    client = cached.proxy.client()

    def bypass(request: Any, **_: Any) -> None:
        request.headers["X-Keyledger-Cache"] = "bypass"

    cached.read()
    seen = cached.store_link.seen
    client.meta.events.register("before-sign.secrets-manager.GetSecretValue", bypass)
    client.get_secret_value(SecretId=SECRET)

    assert cached.store_link.seen == seen + 1
    assert [e["outcome"]["cache"] for e in cached.reads()] == ["miss", "miss"]
