"""Audit events for people and pipes: one readable terminal line, or one JSON line.

Everything in an event can come from a caller -- a secret name, a user agent, a claimed
principal -- so nothing from it reaches a terminal raw: :func:`sanitize` turns control
characters (ESC, CSI, ...) and bidirectional overrides into visible escapes, and lines are
built from :class:`rich.text.Text` pieces with :class:`rich.style.Style` objects, never
from markup, so ``[bold]`` in a secret name is only text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson
from rich.style import Style
from rich.text import Text

from keyledger.proxy.audit.filters import effect_of

__all__ = ["render_json", "render_line", "sanitize"]

# C0 controls (ESC among them), DEL, C1 controls (CSI \x9b among them), the bidi
# embeddings, overrides, isolates and marks, line/paragraph separators, lone surrogates;
# and the backslash, so that an escape shown can only have come from this function.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\\\\\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}
# What JSON leaves raw that a terminal may still act on: DEL, C1, bidi, separators.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

_MAX_FIELD = 120  # characters kept of one free-text value (a user agent, a reason)
_MAX_DETAIL = 6  # detail entries shown for non-access events
_HASH_SHOWN = 12

_EFFECT_LABEL = {"allow": "ALLOW", "deny": "DENY"}
_LABEL_STYLE = {
    "ALLOW": Style(color="green", bold=True),
    "DENY": Style(color="red", bold=True),
    "ERROR": Style(color="yellow", bold=True),
    "ALERT": Style(color="magenta", bold=True, reverse=True),
}
_OTHER_LABEL = Style(color="cyan", bold=True)
_STATUS_STYLE = {
    "success": Style(color="green"),
    "denied": Style(color="red"),
    "error": Style(color="yellow"),
    "pending": Style(color="blue"),
}
_TIME = Style(dim=True)
_QUIET = Style(dim=True)
_SECRET = Style(bold=True)
_WHO = Style(color="cyan")


def sanitize(text: str) -> str:
    r"""``text`` safe to print: control characters and bidi overrides as visible escapes.

    ESC becomes ``\x1b``, CSI ``\x9b``, a right-to-left override ``\u202e``, tab and
    newline ``\t`` and ``\n``; a backslash is doubled, so escapes cannot be forged.
    """
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def render_json(record: Mapping[str, Any]) -> str:
    """``record`` as compact JSON on one line, with nothing a terminal would act on.

    JSON already escapes C0 controls (ESC is ``\\u001b``); DEL, C1 controls and bidi
    overrides are legal raw in JSON, so they are escaped here too. The value is unchanged.
    """
    try:
        text = orjson.dumps(record).decode()
    except TypeError:
        # Not what orjson can write (a lone surrogate): the standard library escapes all.
        return json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str)
    if _JSON_UNSAFE.search(text) is None:
        return text
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# -- one line per event -------------------------------------------------------------------


class _Line:
    """A Text built from pieces separated by two spaces; styles only with colour on."""

    def __init__(self, *, color: bool) -> None:
        self.text = Text()
        self._color = color

    def add(self, value: str, style: Style | None = None, *, width: int = 0) -> None:
        if self.text:
            self.text.append("  ")
        self.text.append(value, style if self._color else None)
        if len(value) < width:
            self.text.append(" " * (width - len(value)))

    def pair(self, key: str, value: str, style: Style | None = _QUIET) -> None:
        self.add(f"{key}={value}", style)


def _part(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = record.get(name)
    return value if isinstance(value, Mapping) else {}


def _text(value: Any, limit: int = _MAX_FIELD) -> str:
    """A scalar from the event as safe, bounded text ('' for None)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        raw = "true" if value else "false"
    elif isinstance(value, str | int | float):
        raw = str(value)
    elif isinstance(value, list | tuple):
        raw = ",".join(str(v) for v in value if isinstance(v, str | int | float | bool))
    else:
        raw = "{...}"
    # Cut before escaping, so an escape is never cut in half.
    if len(raw) > limit:
        raw = raw[: limit - 1] + "…"
    return sanitize(raw)


def _short(value: Any) -> str:
    """A hash or signature as its first few characters, like a short git commit id."""
    return sanitize(value[:_HASH_SHOWN]) if isinstance(value, str) else _text(value)


def _time(record: Mapping[str, Any]) -> str:
    time = record.get("time")
    if isinstance(time, str) and len(time) >= 23 and time[10] == "T":
        # "2026-11-23T21:55:01.123456Z" -> "2026-11-23 21:55:01.123" (UTC)
        return sanitize(f"{time[:10]} {time[11:23]}")
    return _text(time, 32) or "-"


def _latency(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    return f"{value:.1f}ms"


def render_line(record: Mapping[str, Any], *, color: bool) -> Text:
    """One line for a terminal, e.g.::

        2026-11-23 21:55:01.123  ALLOW  read      prod/db/password  svc-payments (sigv4)
        10.0.0.7  aws/GetSecretValue  success 3.2ms  rule=payments-read  ua=Boto3/1.34

    (on one line). The label is the policy effect, or ERROR when the call failed; failed
    sign-ins, policy reloads, checkpoints, alerts and lifecycle events get their own
    summaries. Every value taken from the event passes through :func:`sanitize`.
    """
    line = _Line(color=color)
    line.add(_time(record), _TIME)
    kind = record.get("type")
    if kind == "access":
        _access(line, record)
    elif kind == "auth_failure":
        _auth_failure(line, record)
    elif kind == "policy_reload":
        _policy_reload(line, record)
    elif kind == "checkpoint":
        _checkpoint(line, record)
    elif kind == "alert" and "rule" in _part(record, "detail"):
        _alert(line, record)
    else:
        label = _text(kind.upper() if isinstance(kind, str) else kind, 24) or "EVENT"
        line.add(label, _LABEL_STYLE.get(label, _OTHER_LABEL))
        _detail(line, record)
    return line.text


def _access(line: _Line, record: Mapping[str, Any]) -> None:
    outcome = _part(record, "outcome")
    status = outcome.get("status")
    if status == "error":
        label = "ERROR"  # whatever policy said, the call failed
    else:
        label = _EFFECT_LABEL.get(effect_of(record) or "") or (
            "DENY" if status == "denied" else "-"
        )
    line.add(label, _LABEL_STYLE.get(label), width=5)
    line.add(_text(record.get("action"), 16) or "-", width=8)
    line.add(_text(_part(record, "resource").get("secret")) or "-", _SECRET)
    _caller(line, record)
    _outcome(line, outcome)
    decision = _part(record, "decision")
    if decision.get("rule"):
        line.pair("rule", _text(decision.get("rule")))
    elif decision.get("effect") == "deny" and decision.get("reason"):
        line.pair("reason", _text(decision.get("reason")))
    version = _part(record, "resource").get("version") or outcome.get("version_id")
    if version:
        line.pair("version", _text(version, 64))
    _user_agent(line, record)


def _alert(line: _Line, record: Mapping[str, Any]) -> None:
    """``ALERT  HIGH  stranger-denied  3 denials for principal stranger within 1m  events=3``"""
    detail = _part(record, "detail")
    line.add("ALERT", _LABEL_STYLE["ALERT"])
    line.add(_text(str(detail.get("severity", "")).upper(), 12) or "-", width=8)
    line.add(_text(detail.get("rule"), 80) or "-", _SECRET)
    line.add(_text(detail.get("summary"), 200))
    events = detail.get("events")
    if isinstance(events, list):
        line.pair("events", str(len(events)))
    suppressed = detail.get("suppressed")
    if isinstance(suppressed, int) and suppressed > 0:
        line.pair("suppressed", str(suppressed))


def _auth_failure(line: _Line, record: Mapping[str, Any]) -> None:
    line.add("DENY", _LABEL_STYLE["DENY"], width=5)
    line.add("sign-in failed")
    _caller(line, record)
    _outcome(line, _part(record, "outcome"))
    reason = _part(record, "detail").get("reason")
    if reason:
        line.pair("reason", _text(reason))
    _user_agent(line, record)


def _caller(line: _Line, record: Mapping[str, Any]) -> None:
    """Who (and how they signed in), from where, through which operation."""
    principal = _part(record, "principal")
    who = _text(principal.get("id"), 80) or "?"
    method = _text(principal.get("auth_method"), 24)
    line.add(f"{who} ({method})" if method else who, _WHO)
    request = _part(record, "request")
    line.add(_text(request.get("source_ip"), 64) or "-")
    where = _text(_part(record, "resource").get("backend"), 24) or _text(
        request.get("protocol"), 24
    )
    operation = _text(request.get("operation"), 64)
    if where or operation:
        line.add(f"{where}/{operation}" if where and operation else where or operation, _QUIET)


def _outcome(line: _Line, outcome: Mapping[str, Any]) -> None:
    status = _text(outcome.get("status"), 24)
    if not status:
        return
    words = [status, _text(outcome.get("code"), 64), _latency(outcome.get("latency_ms"))]
    line.add(" ".join(w for w in words if w), _STATUS_STYLE.get(status))


def _user_agent(line: _Line, record: Mapping[str, Any]) -> None:
    agent = _text(_part(record, "request").get("user_agent"), 60)
    if agent:
        line.pair("ua", agent)


def _policy_reload(line: _Line, record: Mapping[str, Any]) -> None:
    detail = _part(record, "detail")
    status = _part(record, "outcome").get("status")
    failed = status == "error" or (not detail.get("new_hash") and "problems" in detail)
    line.add("POLICY", _LABEL_STYLE["ERROR"] if failed else _OTHER_LABEL)
    old = _short(detail.get("kept_hash") or detail.get("old_hash"))
    if failed:
        line.add(f"rejected, kept {old or '?'}", _STATUS_STYLE["error"])
        problems = detail.get("problems")
        if isinstance(problems, list) and problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            line.add(_text(problems[0]) + more)
    else:
        new = _short(detail.get("new_hash"))
        line.add(f"reloaded {old or '?'} -> {new or '?'}", _STATUS_STYLE["success"])
        for key in ("rules", "files"):
            if detail.get(key) is not None:
                line.pair(key, _text(detail.get(key)))
        warnings = detail.get("warnings")
        if isinstance(warnings, list) and warnings:
            line.pair("warnings", str(len(warnings)), _STATUS_STYLE["error"])
    if detail.get("cause"):
        line.pair("cause", _text(detail.get("cause"), 40))


def _checkpoint(line: _Line, record: Mapping[str, Any]) -> None:
    """``CHECKPOINT  sealed seq 1200 (3fa2c1…)  key=1a2b…``: a signature, not checked here."""
    detail = _part(record, "detail")
    seals = detail.get("seals")
    line.add("CHECKPOINT", _OTHER_LABEL)
    if isinstance(seals, Mapping):
        line.add(f"sealed seq {_text(seals.get('seq'), 20)}")
        line.add(f"({_short(seals.get('hash'))})", _QUIET)
    line.pair("key", _text(detail.get("key_id"), 40))


def _detail(line: _Line, record: Mapping[str, Any]) -> None:
    """A summary of ``detail``: its event or message first, then a few key=value pairs."""
    detail = dict(_part(record, "detail"))
    headline = detail.pop("event", None) or detail.pop("message", None)
    if headline is not None:
        line.add(_text(headline))
    outcome = _part(record, "outcome")
    if outcome:
        _outcome(line, outcome)
    shown = 0
    for key, value in detail.items():
        if value is None or value == [] or value == {}:
            continue
        if shown == _MAX_DETAIL:
            line.add("…", _QUIET)
            break
        name = _text(key, 40)
        short = name.endswith(("hash", "signature"))
        line.pair(name, _short(value) if short else _text(value, 60))
        shown += 1
