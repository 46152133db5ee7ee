"""A flood of bad signatures beside good callers: every good read is served and audited,
the flood's first few failures are events of their own and the rest one aggregate, whose
count accounts for every refused call."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import running_proxy

FLOOD = 200


def test_a_flood_is_folded_and_good_callers_are_served(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> None:
    store.create_secret(Name="app/db/password", SecretString="still-served")
    with running_proxy(tmp_path, moto_url, limits={"flood_delay_s": 0.01}) as proxy:
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


def test_a_floods_answers_are_held_and_good_callers_are_not(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> None:
    """Past the first ten, each refusal of a flood is answered only after flood_delay_s, so
    a flooder's connections spend their time waiting, not taking the event loop's turns;
    good callers beside it are answered at once."""
    store.create_secret(Name="app/db/password", SecretString="still-served")
    with running_proxy(tmp_path, moto_url, limits={"flood_delay_s": 0.5}) as proxy:
        good = proxy.client("app")
        forged = proxy.client("app", aws_secret_access_key="not-the-secret-at-all")

        def refused_in(_: int) -> float:
            started = time.monotonic()
            with pytest.raises(ClientError):
                forged.get_secret_value(SecretId="app/db/password")
            return time.monotonic() - started

        def served_in() -> float:
            started = time.monotonic()
            assert good.get_secret_value(SecretId="app/db/password")["SecretString"]
            return time.monotonic() - started

        first = [refused_in(n) for n in range(10)]  # recorded one by one, answered at once
        with ThreadPoolExecutor(4) as pool:
            held = pool.map(refused_in, range(8))
            served = [served_in() for _ in range(5)]
            held_s = list(held)

    assert all(s < 0.5 for s in first), first
    assert all(s >= 0.5 for s in held_s), held_s
    assert all(s < 0.5 for s in served), served
