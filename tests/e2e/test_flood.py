"""A flood of bad signatures beside good callers: every good read is served and audited,
the flood's first few failures are events of their own and the rest one aggregate, whose
count accounts for every refused call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from tests.conftest import running_proxy

FLOOD = 200


def test_a_flood_is_folded_and_good_callers_are_served(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> None:
    store.create_secret(Name="app/db/password", SecretString="still-served")
    with running_proxy(tmp_path, moto_url) as proxy:
        good = proxy.client("app")
        key = proxy.keys["app"].access_key_id
        forged = proxy.client("app", aws_secret_access_key="not-the-secret-at-all")

        def bad(_: int) -> str:
            try:
                forged.get_secret_value(SecretId="app/db/password")
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            return "served"

        with ThreadPoolExecutor(8) as pool:
            flood = pool.map(bad, range(FLOOD))
            reads = [good.get_secret_value(SecretId="app/db/password")["SecretString"]]
            reads += [
                good.get_secret_value(SecretId="app/db/password")["SecretString"] for _ in range(20)
            ]
            codes = list(flood)
    events = proxy.events("access", "auth_failure")  # after the stop: the last aggregate in

    assert reads == ["still-served"] * 21
    assert codes == ["InvalidSignatureException"] * FLOOD
    served = [e for e in events if e["type"] == "access"]
    assert [e["outcome"]["status"] for e in served] == ["success"] * 21
    single = [e for e in events if e["type"] == "auth_failure" and not e["detail"].get("aggregate")]
    folded = [e for e in events if e["type"] == "auth_failure" and e["detail"].get("aggregate")]
    assert len(single) == 10  # limits.auth_failures_recorded, per source and reason
    assert all(e["principal"]["attributes"] == {"access_key_id": key} for e in single)
    assert len(single) + sum(e["detail"]["count"] for e in folded) == FLOOD
    assert {e["outcome"]["code"] for e in folded} == {"signature_mismatch"}
    assert all(e["detail"]["claimed"] == ["app"] for e in folded)
