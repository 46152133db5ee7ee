"""A body nested past what can be sent on is the caller's error, in every protocol."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keyledger.proxy.frontends.json_body import MAX_DEPTH, too_deep


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for n in range(depth):
        value = {"k": value} if n % 2 else [value]
    return value


@pytest.mark.parametrize(("depth", "deep"), [(0, False), (MAX_DEPTH, False), (MAX_DEPTH + 1, True)])
def test_the_limit(depth: int, deep: bool) -> None:
    assert too_deep(nested(depth)) is deep


def test_whatever_is_not_too_deep_can_be_sent_on() -> None:
    """orjson writes 254 levels: everything under the limit re-encodes."""
    assert orjson.loads(orjson.dumps(nested(MAX_DEPTH))) == nested(MAX_DEPTH)


def test_wide_is_not_deep() -> None:
    assert not too_deep({"a": [{"b": [1, 2, {"c": {}}]}] * 10_000})
