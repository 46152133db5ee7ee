"""What every JSON body a frontend takes must also be: shallow enough to send on.

orjson reads 1,024 levels of nesting but writes only 254, so a body between the two would
be accepted, authorised, and then fail on its way to the store. No secret store's API nests
anywhere near that deep: a body past ``MAX_DEPTH`` is the caller's error, in its protocol.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_DEPTH", "too_deep"]

MAX_DEPTH = 64


def too_deep(value: Any, body: bytes | None = None, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests objects and arrays more than ``limit`` deep.

    ``body``, the text ``value`` was parsed from, settles almost every call at C speed: it
    cannot nest deeper than it has brackets.
    """
    if body is not None and body.count(b"{") + body.count(b"[") <= limit:
        return False
    level: list[Any] = [value]
    for _ in range(limit):
        inner: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                inner.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                inner.extend(v for v in item if isinstance(v, dict | list))
        if not inner:
            return False
        level = inner
    return True
