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
    value = nested(depth)
    assert too_deep(value) is deep
    assert too_deep(value, orjson.dumps(value)) is deep


def test_brackets_inside_strings_do_not_make_a_body_deep() -> None:
    """Counting the body's brackets only settles shallow bodies; a name full of brackets
    is then judged by its structure."""
    value = {"SecretId": "{[" * MAX_DEPTH}
    assert not too_deep(value, orjson.dumps(value))


def test_whatever_is_not_too_deep_can_be_sent_on() -> None:
    """orjson writes 254 levels: everything under the limit re-encodes."""
    assert orjson.loads(orjson.dumps(nested(MAX_DEPTH))) == nested(MAX_DEPTH)


def test_wide_is_not_deep() -> None:
    assert not too_deep({"a": [{"b": [1, 2, {"c": {}}]}] * 10_000})
