"""Rate limits (limits.rate) as boto3 meets them: ThrottlingException past the limit, other
callers untouched, and every throttled call in the journal, one by one or in its flood's
aggregate. Google's and Azure's answers are tested beside their other end-to-end tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.config
import pytest
from botocore.exceptions import ClientError

from tests.conftest import RunningProxy, running_proxy

SECRET = "app/db/password"


def code_of(client: Any) -> str:
    try:
        client.get_secret_value(SecretId=SECRET)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "served"


def throttled(proxy: RunningProxy) -> tuple[list[dict[str, Any]], int]:
    """The throttled calls' events one by one, and how many calls the aggregates count."""
    events = [e for e in proxy.events("access") if e["outcome"]["code"] == "throttled"]
    single = [e for e in events if not (e.get("detail") or {}).get("aggregate")]
    folded = sum(e["detail"]["count"] for e in events if e not in single)
    return single, folded


@pytest.fixture
def secret(store: Any, store_credentials: None) -> None:
    store.create_secret(Name=SECRET, SecretString="rate-limited-value")


def test_a_principal_past_its_limit_is_throttled_and_others_are_not(
    tmp_path: Path, moto_url: str, secret: None
) -> None:
    """app may make 3 calls in a burst (1/s, burst_s 3): its next calls are
    ThrottlingException, while auditor goes on being served; each throttled call is
    recorded (the first ten alone the rest in one aggregate naming app)."""
    limits = {"rate": {"per_principal": 1, "burst_s": 3}, "flood_delay_s": 0}
    with running_proxy(tmp_path, moto_url, limits=limits) as proxy:
        app, auditor = proxy.client("app"), proxy.client("auditor")
        codes = [code_of(app) for _ in range(15)]
        others = [auditor.describe_secret(SecretId=SECRET)["Name"] for _ in range(3)]
    single, folded = throttled(proxy)

    assert codes == ["served"] * 3 + ["ThrottlingException"] * 12
    assert others == [SECRET] * 3
    assert len(single) == 10
    assert folded == 2
    assert {e["principal"]["id"] for e in single} == {"app"}
    assert {e["resource"]["secret"] for e in single} == {SECRET}
    assert all(e["outcome"]["status"] == "denied" for e in single)
    (aggregate,) = [e for e in proxy.events("access") if (e.get("detail") or {}).get("aggregate")]
    assert aggregate["detail"]["claimed"] == ["app"]


def test_a_source_past_its_limit_is_throttled_before_its_signature_is_checked(
    tmp_path: Path, moto_url: str, secret: None
) -> None:
    """Past per_source, even a forged signature gets ThrottlingException, not
    InvalidSignatureException: the flood no longer costs a verification or an event each."""
    limits = {"rate": {"per_source": 1, "burst_s": 5}, "flood_delay_s": 0}
    with running_proxy(tmp_path, moto_url, limits=limits) as proxy:
        forged = proxy.client("app", aws_secret_access_key="not-the-secret")
        codes = [code_of(forged) for _ in range(40)]
    failures = proxy.events("auth_failure")
    single, folded = throttled(proxy)

    assert codes == ["InvalidSignatureException"] * 5 + ["ThrottlingException"] * 35
    assert [e["outcome"]["code"] for e in failures] == ["signature_mismatch"] * 5
    assert len(single) + folded == 35
    assert all(e["principal"]["id"] is None for e in single)


def test_botocore_backs_off_and_is_served(tmp_path: Path, moto_url: str, secret: None) -> None:
    """An SDK with its default retries gets its value: botocore knows ThrottlingException,
    waits and tries again once the bucket has refilled."""
    limits = {"rate": {"per_principal": 4, "burst_s": 0.5}}
    retrying = botocore.config.Config(retries={"total_max_attempts": 10, "mode": "standard"})
    with running_proxy(tmp_path, moto_url, limits=limits) as proxy:
        client = proxy.client("app", config=retrying)
        values = [client.get_secret_value(SecretId=SECRET)["SecretString"] for _ in range(6)]
    single, folded = throttled(proxy)

    assert values == ["rate-limited-value"] * 6
    assert len(single) + folded >= 1  # some attempts were throttled on the way
