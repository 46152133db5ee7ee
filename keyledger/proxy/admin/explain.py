"""``policy explain`` for a recorded call, against the policy in force now.

GET /v1/explain?chain=&seq=[&at=event|now]

The event names who called (id, sign-in method, groups, attributes as recorded), what it
did to which secret, from where and over which protocol; the engine in force now
(the data plane's :class:`PolicyHolder`) decides that request again, rule by rule, as
``keyledger policy explain`` does. ``at=event`` (the default) evaluates time conditions at
the event's own time, so that only the policy differs from what was decided then;
``at=now`` asks how the same call would fare today.

What the event does not record is taken as a plain SDK call would send it (the
request attributes of :func:`~keyledger.policies.testing.request_attributes`): an AWS read
is taken to ask for the stage ``AWSCURRENT``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from keyledger.model import Action, Principal, SecretRef
from keyledger.policies.conditions import Context
from keyledger.policies.engine import Explanation, PolicyEngine
from keyledger.policies.model import Decision
from keyledger.policies.testing import as_decided, default_protocol, request_attributes
from keyledger.proxy import app as app_keys
from keyledger.proxy.admin.http import check_known, json_error, json_response, one, required
from keyledger.proxy.admin.keys import CONFIG_BASE, JOURNAL_DIR, READS
from keyledger.proxy.admin.query import seq_param
from keyledger.proxy.admin.reads import Busy, find
from keyledger.proxy.admin.report import call_json
from keyledger.proxy.audit.events import parse_time

__all__ = ["POLICIES", "explain"]

POLICIES = app_keys.POLICIES  # the data plane's holder: the policy in force, reloads included


class _Unexplainable(ValueError):
    """The event records no policy decision that could be asked again."""


def _part(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = record.get(name)
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def explain(request: web.Request) -> web.Response:
    query = request.query
    try:
        check_known(query, {"chain", "seq", "at"})
        chain, seq = required(query, "chain"), seq_param(required(query, "seq"))
        at = one(query, "at") or "event"
        if at not in ("event", "now"):
            raise ValueError(f"query parameter 'at': expected event or now, not {at!r}")
    except ValueError as exc:
        return json_error(400, str(exc))
    holder = request.app.get(POLICIES)
    if holder is None:
        return json_error(503, "this admin API was started without the data plane's policy")
    try:
        found = await request.app[READS].run(find, request.app[JOURNAL_DIR], {chain: {seq}})
    except Busy as exc:
        return json_error(503, str(exc), **{"Retry-After": "1"})
    line = found.get((chain, seq))
    if line is None:
        return json_error(404, f"no event {seq} in chain {chain!r}")
    record = orjson.loads(line)
    try:
        answer = _explain(record, holder.engine, now=at == "now", base=request.app.get(CONFIG_BASE))
    except _Unexplainable as exc:
        return json_error(422, str(exc))
    return json_response(answer)


def _explain(
    record: Mapping[str, Any], engine: PolicyEngine, *, now: bool, base: Path | None = None
) -> dict[str, Any]:
    who, resource = _part(record, "principal"), _part(record, "resource")
    req, recorded = _part(record, "request"), _part(record, "decision")
    principal_id, action_text = _text(who.get("id")), _text(record.get("action"))
    backend = _text(resource.get("backend"))
    if record.get("type") != "access" or principal_id is None or action_text is None:
        raise _Unexplainable(
            f"event {record.get('type')!r} records no policy decision to explain: only an "
            "access event by a signed-in principal does"
        )
    if backend is None:
        raise _Unexplainable("the event names no backend: its request was not understood")
    try:
        action = Action(action_text)
    except ValueError:
        raise _Unexplainable(
            f"the event's action {action_text!r} is not one policy knows"
        ) from None
    groups = who.get("groups")
    attributes = who.get("attributes")
    principal = Principal(
        id=principal_id,
        auth_method=_text(who.get("auth_method")) or "unknown",
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        attributes={k: v for k, v in attributes.items() if isinstance(v, str)}
        if isinstance(attributes, dict)
        else {},
    )
    protocol = _text(req.get("protocol")) or default_protocol(backend)
    ctx = Context(
        source_ip=_text(req.get("source_ip")),
        at=datetime.now(UTC) if now else parse_time(record.get("time")) or datetime.now(UTC),
        request=request_attributes(
            action, protocol=protocol, operation=_text(req.get("operation"))
        ),
    )
    name = _text(resource.get("secret"))
    if name is None:
        # A listing names no secret: policy asks whether anything on the backend may be listed.
        decision = engine.decide_any(principal, action, backend, ctx)
        explanation: Explanation | None = None
        secret = f"{backend}:*"
    else:
        ref = as_decided(SecretRef(backend, name), protocol)
        explanation = engine.explain(principal, action, ref, ctx)
        decision = explanation.decision
        secret = str(ref)
    then = {
        "effect": _text(recorded.get("effect")),
        "rule": _text(recorded.get("rule")),
        "policy_hash": _text(recorded.get("policy_hash")),
        "reason": _text(recorded.get("reason")),
        "status": _text(_part(record, "outcome").get("status")),
    }
    asked = {
        "principal": principal.id,
        "auth_method": principal.auth_method,
        "groups": list(principal.groups),
        "attributes": dict(principal.attributes),
        "action": action.value,
        "secret": secret,
        "source_ip": ctx.source_ip,
        "at": ctx.moment().isoformat(),
        **ctx.request,
    }
    return {
        "event": call_json(record),
        "recorded": then,
        "now": _now_json(decision, explanation, asked, base),
        "same_policy": then["policy_hash"] == decision.policy_hash,
        "same_effect": then["effect"] == decision.effect.value,
        "same_rule": then["rule"] == decision.rule,
    }


def _now_json(
    decision: Decision, explanation: Explanation | None, asked: dict[str, Any], base: Path | None
) -> dict[str, Any]:
    """The shape of ``keyledger policy explain --json``."""
    found: dict[str, Any] = {
        "effect": decision.effect.value,
        "rule": decision.rule,
        "reason": decision.reason,
        "policy_hash": decision.policy_hash,
        "request": asked,
        "groups": list(explanation.groups) if explanation else None,
        "roles": [{"role": r, "via": via} for r, via in explanation.roles] if explanation else None,
        "rules": [
            {
                "id": v.rule.id,
                "role": v.rule.role,
                "effect": v.rule.effect.value,
                "source": _shown(v.rule.source, base),
                "applies": v.applies,
                "reasons": list(v.reasons),
            }
            for v in (explanation.verdicts if explanation else ())
        ],
    }
    return found


def _shown(source: str, base: Path | None) -> str:
    """A rule's ``file:line:column``, its file named from the config's folder (as the
    operator wrote it) rather than by where the server keeps it."""
    prefix = f"{base}{os.sep}" if base is not None else None
    return source.removeprefix(prefix) if prefix else source
