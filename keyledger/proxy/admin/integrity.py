"""Proof of integrity for the console: where each chain stands, the sinks, a verification.

GET  /v1/integrity  per chain in the journal folder: last seq and time, newest checkpoint
                    (the seq it seals, its time and age), unsealed events; each remote
                    sink's state (as ``/v1/sinks``); the verification's state
POST /v1/verify     start one verification of the whole folder: 202, or 409 while one runs
GET  /v1/verify     idle, running (with progress) or done (with the result)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from keyledger.proxy import app as app_keys
from keyledger.proxy.admin.console_auth import CONSOLE_SESSION
from keyledger.proxy.admin.http import check_known, json_error, json_response
from keyledger.proxy.admin.keys import JOURNAL_DIR, READS
from keyledger.proxy.admin.reads import Busy, ChainEnd, chain_ends
from keyledger.proxy.admin.verify import AlreadyRunning, Verifier
from keyledger.proxy.audit.events import format_time, parse_time
from keyledger.proxy.audit.sinks import Shipper

__all__ = ["JOURNAL", "SHIPPERS", "VERIFIER", "add_integrity_routes", "sinks_json"]

SHIPPERS = app_keys.SHIPPERS
JOURNAL = app_keys.JOURNAL  # the data plane's: the chain this process writes
VERIFIER = web.AppKey("verifier", Verifier)


def add_integrity_routes(app: web.Application) -> None:
    app.router.add_get("/v1/integrity", integrity)
    app.router.add_get("/v1/verify", verify_state)
    app.router.add_post("/v1/verify", verify_start)


def sinks_json(shippers: tuple[Shipper, ...]) -> list[dict[str, Any]]:
    sinks = []
    for shipper in shippers:
        status = shipper.status
        sinks.append(
            {
                "sink": status.sink,
                "ready": status.prepared,
                "shipped_seq": status.shipped_seq,
                "lag_events": shipper.lag_events,
                "lag_seconds": round(status.lag_seconds(), 3),
                "alarm": status.alarm,
                "batches": status.batches,
                "failures": status.failures,
                "last_error": status.last_error,
            }
        )
    return sinks


def _age(moment: str | None, now: datetime) -> float | None:
    parsed = parse_time(moment)
    return None if parsed is None else round((now - parsed).total_seconds(), 3)


def _chain_json(end: ChainEnd, now: datetime, local: str | None) -> dict[str, Any]:
    sealed = end.checkpoint
    if end.last_seq is None:
        unsealed = None
    elif sealed is None:
        unsealed = end.last_seq - end.first_seq + 1
    else:
        # The checkpoint event follows the event it seals: events after it are unsealed.
        unsealed = max(end.last_seq - (sealed.seq + 1), 0)
    return {
        "chain": end.chain,
        "local": end.chain == local,
        "segments": end.segments,
        "bytes": end.bytes,
        "first_seq": end.first_seq,
        "last_seq": end.last_seq,
        "last_time": end.last_time,
        "last_event_age_s": _age(end.last_time, now),
        "checkpoint": None
        if sealed is None
        else {
            "seals_seq": sealed.seq,
            "time": sealed.time,
            "age_s": _age(sealed.time, now),
            "key_id": sealed.key_id,
        },
        "unsealed": unsealed,
    }


async def integrity(request: web.Request) -> web.Response:
    try:
        check_known(request.query, ())
    except ValueError as exc:
        return json_error(400, str(exc))
    try:
        ends = await request.app[READS].run(chain_ends, request.app[JOURNAL_DIR])
    except Busy as exc:
        return json_error(503, str(exc), **{"Retry-After": "1"})
    now = datetime.now(UTC)
    journal = request.app.get(JOURNAL)
    local = journal.chain_id if journal is not None else None
    return json_response(
        {
            "now": format_time(now),
            "chains": [_chain_json(end, now, local) for end in ends],
            "sinks": sinks_json(request.app[SHIPPERS]),
            "verification": request.app[VERIFIER].state_json(),
        }
    )


async def verify_state(request: web.Request) -> web.Response:
    try:
        check_known(request.query, ())
    except ValueError as exc:
        return json_error(400, str(exc))
    return json_response(request.app[VERIFIER].state_json())


async def verify_start(request: web.Request) -> web.Response:
    try:
        check_known(request.query, ())
    except ValueError as exc:
        return json_error(400, str(exc))
    verifier = request.app[VERIFIER]
    try:
        session = request.get(CONSOLE_SESSION)
        by = f"console session {session.handle}" if session is not None else "admin-api"
        verifier.start(requested_from=request.remote, requested_by=by)
    except AlreadyRunning as exc:
        return json_error(409, str(exc))
    return json_response(verifier.state_json(), status=202, Location="/v1/verify")
