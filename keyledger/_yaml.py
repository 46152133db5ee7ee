"""YAML that remembers where each value came from, so errors can say ``file:line:col``.

Used by the config loader and the policy loader; a plain ``yaml.safe_load`` loses the
positions a user needs to find the mistake.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Located", "YamlError", "did_you_mean", "load_located", "where", "where_key"]


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class LocatedDict(dict[str, Any]):
    """A mapping that also knows the position of itself, of each key and of each value."""

    position: Position
    key_positions: dict[str, Position]
    value_positions: dict[str, Position]


class LocatedList(list[Any]):
    position: Position
    item_positions: list[Position]


Located = LocatedDict | LocatedList


_CLOCK = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$")


class YamlError(ValueError):
    """A YAML file that cannot be read; the message starts with ``file:line:col``."""


def _pos(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


# libyaml's parser where PyYAML was built with it (~5x faster on large policy sets); the
# pure-Python one otherwise. Both give the same nodes and positions.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Builder:
    """What turning one file's nodes into located values needs."""

    def __init__(self, file: str) -> None:
        self.file = file
        # One constructor for all scalars: building one per scalar dominated load time.
        self.scalars = yaml.constructor.SafeConstructor()
        # An alias is the same node again: build it once (no exponential "billion laughs"),
        # and refuse one that contains itself.
        self.built: dict[int, Any] = {}
        self.building: set[int] = set()


def _construct(builder: _Builder, node: yaml.Node) -> Any:
    key = id(node)
    if key in builder.built:
        return builder.built[key]
    if key in builder.building:
        raise YamlError(f"{_pos(builder.file, node)}: an alias that contains itself")
    builder.building.add(key)
    try:
        value = _build(builder, node)
    finally:
        builder.building.discard(key)
    builder.built[key] = value
    return value


def _build(builder: _Builder, node: yaml.Node) -> Any:
    file = builder.file
    if isinstance(node, yaml.MappingNode):
        out = LocatedDict()
        out.position = _pos(file, node)
        out.key_positions = {}
        out.value_positions = {}
        for key_node, value_node in node.value:
            key = _construct(builder, key_node)
            if not isinstance(key, str):
                raise YamlError(f"{_pos(file, key_node)}: keys must be strings, not {key!r}")
            if key in out:
                raise YamlError(f"{_pos(file, key_node)}: duplicate key {key!r}")
            out[key] = _construct(builder, value_node)
            out.key_positions[key] = _pos(file, key_node)
            out.value_positions[key] = _pos(file, value_node)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LocatedList(_construct(builder, n) for n in node.value)
        seq.position = _pos(file, node)
        seq.item_positions = [_pos(file, n) for n in node.value]
        return seq
    # A plain scalar has style None (pure-Python parser) or "" (libyaml).
    if isinstance(node, yaml.ScalarNode) and not node.style and _CLOCK.match(node.value):
        # YAML 1.1 reads an unquoted 22:00 as the base-60 integer 1320; YAML 1.2 dropped
        # that, and in our files it is always a time of day.
        return node.value
    # Scalars: let the safe constructor resolve ints, bools, nulls, timestamps.
    try:
        return builder.scalars.construct_object(node)
    except (yaml.YAMLError, ValueError) as exc:
        # `<<: *merge`, `!tag`, `!!int abc`: YAML we do not read, said where it is.
        reason = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"{_pos(file, node)}: cannot read this value: {reason}") from None


def load_located(path: Path, text: str | None = None) -> Any:
    """Parse one YAML document, keeping positions; raise YamlError with file:line:col."""
    file = str(path)
    if text is None:
        text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where_ = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise YamlError(f"{where_}: {exc.problem}") from None
    except yaml.YAMLError as exc:  # e.g. a control character in the file
        raise YamlError(f"{file}: {exc}") from None
    if node is None:
        return None
    return _construct(_Builder(file), node)


def where(container: Any, key: str | int | None = None) -> str:
    """The ``file:line:col`` of the value ``container[key]`` (or of the container)."""
    if isinstance(container, LocatedDict):
        if isinstance(key, str) and key in container.value_positions:
            return str(container.value_positions[key])
        return str(container.position)
    if isinstance(container, LocatedList):
        if isinstance(key, int) and 0 <= key < len(container.item_positions):
            return str(container.item_positions[key])
        return str(container.position)
    return "<unknown>"


def where_key(container: Any, key: str) -> str:
    """The ``file:line:col`` of the key itself (for "unknown key" errors)."""
    if isinstance(container, LocatedDict) and key in container.key_positions:
        return str(container.key_positions[key])
    return where(container, key)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'read'?)`` for the closest option, or nothing."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
