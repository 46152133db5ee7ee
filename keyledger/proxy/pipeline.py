"""The request path, top to bottom in one function: :meth:`Gateway.handle`.

    authenticate -> parse -> gate -> resolve aliases -> authorise -> (write ahead)
        -> call the backend -> filter -> record -> respond

Every call ends in at least one audit event, and a response is only returned once its
events are durable. If they cannot be made durable, the caller gets an error instead of
the result (fail closed).

A gateway may front several backends (two AWS accounts, several GCP projects). The call is
executed by the backend its secrets were authorised on, and only by it: a call whose
targets name another backend than the one it would run on is refused, and an answer that
names a secret of another backend is never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import structlog

from keyledger.backends import Backend, BackendError, BackendUnavailable, SecretNotFound
from keyledger.model import Action, Principal, SecretItem, SecretRef
from keyledger.policies import Context, Decision, Effect, PolicyEngine
from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    Fingerprinter,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    ResourceInfo,
    Status,
)
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.cache import MISS, STALE, CacheKey, CacheRule, SecretCache
from keyledger.proxy.errors import (
    AccessDenied,
    AuditUnavailable,
    AuthError,
    ErrorKind,
    ProxyError,
    RequestError,
    Throttled,
)
from keyledger.proxy.failures import FailureFold
from keyledger.proxy.ratelimit import Limits
from keyledger.proxy.wire import Authenticator, Call, Frontend, Locate, WireRequest, WireResponse

__all__ = ["Gateway", "PolicyHolder", "RequestObserver", "RequestTrace"]

log = structlog.get_logger("keyledger.request")

T = TypeVar("T")


class PolicyHolder:
    """The policy engine in force; replaced whole on reload, read once per request."""

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine


@dataclass(slots=True, kw_only=True)
class RequestTrace:
    """How one request went, for metrics: filled in along the path, read once at the end.

    Every field has few possible values (no secret names, no caller text), so each can be a
    metric label.
    """

    protocol: str
    backend: str  # "none" until a call names a configured backend
    operation: str  # "unknown" unless the frontend serves it
    effect: str = "none"  # allow | deny | none (no policy decided: failed auth, bad input)
    # success | denied | error | challenged (an auth handshake) | throttled (limits.rate)
    status: str = "success"
    auth_failure: str | None = None  # the reason, when authentication failed
    backend_error: str | None = None  # the backend's error kind, when it failed
    total_s: float = 0.0
    store_called: bool = False  # the request went as far as the store
    backend_s: float = 0.0  # waiting on the store (alias lookups included)
    audit_s: float = 0.0  # waiting for audit events to be durable


class RequestObserver(Protocol):
    """Told about every request once it is answered (the metrics); must not block."""

    def observe(self, trace: RequestTrace) -> None: ...


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What every event of one request shares."""

    request: RequestInfo
    started: float
    trace: RequestTrace = field(compare=False)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)


def _decision_info(decision: Decision) -> DecisionInfo:
    return DecisionInfo(
        effect=decision.effect.value,
        rule=decision.rule,
        policy_hash=decision.policy_hash,
        reason=decision.reason,
    )


class Gateway:
    """One protocol's request path: frontend, authenticator, policy, backends, journal."""

    def __init__(
        self,
        *,
        frontend: Frontend,
        authenticator: Authenticator,
        policies: PolicyHolder,
        backends: Mapping[str, Backend],
        journal: Journal,
        fingerprint: Fingerprinter,
        observer: RequestObserver | None = None,
        geo: Locate | None = None,
        failures: FailureFold | None = None,
        limits: Limits | None = None,
        cache: SecretCache | None = None,
    ) -> None:
        """``geo``: where a source address is (the GeoIP databases), asked once per request;
        None when none are configured. ``failures``: folds a flood of sign-in failures
        (and of throttled calls) into aggregate events; ``limits``: the rate limits. Both
        are shared by every protocol's gateway: a flood is one, whichever door it uses.
        ``cache``: the audited secret cache, when configured."""
        self._frontend = frontend
        self._auth = authenticator
        self._policies = policies
        self._backends = dict(backends)
        self._journal = journal
        self._fingerprint = fingerprint
        self._observer = observer
        self._geo = geo
        self._failures = failures
        self._cache = cache
        self._per_source = limits.per_source if limits is not None else None
        self._per_principal = limits.per_principal if limits is not None else None
        # Decided once: building the debug line for every event is not free.
        self._debug = log.is_enabled_for(logging.DEBUG)

    def _context(self, wire: WireRequest) -> _Ctx:
        frontend = self._frontend
        operation = frontend.operation_name(wire)
        return _Ctx(
            wire.audited_as(frontend.protocol, operation, self._geo),
            time.perf_counter(),
            RequestTrace(
                protocol=frontend.protocol,
                backend="none",
                # What a caller typed is a label only if it names an operation we serve.
                operation=operation if operation in frontend.operations else "unknown",
            ),
        )

    def _done(self, ctx: _Ctx, response: WireResponse) -> WireResponse:
        trace = ctx.trace
        if response.status >= 400 and trace.status == "success":
            trace.status = "error"
        if self._observer is not None:
            trace.total_s = time.perf_counter() - ctx.started
            try:
                self._observer.observe(trace)
            except Exception:
                log.exception("request_observer_failed")  # never the caller's problem
        return response

    async def handle(self, wire: WireRequest) -> WireResponse:
        """Serve one request; always returns a response in the frontend's protocol."""
        ctx = self._context(wire)
        try:
            return self._done(ctx, await self._handle(ctx, wire))
        except AuditUnavailable as exc:
            log.error("audit_unavailable", request_id=wire.request_id, error=exc.message)
            return self._done(ctx, self._frontend.render_error(exc, request_id=wire.request_id))
        except Exception:
            # A bug of ours: answer in the caller's protocol, record it, keep serving.
            log.exception("request_failed", request_id=wire.request_id)
            error = ProxyError("keyledger failed to process the request")
            with contextlib.suppress(AuditUnavailable):
                nobody = PrincipalInfo(id=None, auth_method=self._auth.method)
                await self._record(
                    ctx,
                    [self._event(ctx, nobody, None, None, None, Status.ERROR, error.kind.value)],
                )
            return self._done(ctx, self._frontend.render_error(error, request_id=wire.request_id))

    async def screen(self, head: WireRequest) -> WireResponse | None:
        """Before its body is read: the refusal of a caller whose headers alone fail
        authentication (recorded as any failed sign-in), or None to read the body and
        :meth:`handle` the request. ``head`` has no body."""
        if self._frontend.challenge(head) is not None:
            return None  # a handshake: answered once the request is whole, as ever
        try:
            await self._auth.screen(head)
        except AuthError as exc:
            ctx = self._context(head)
            ctx.trace.status, ctx.trace.auth_failure = "denied", exc.kind.value
            error: ProxyError = exc
            try:
                await self._record_auth_failure(ctx, exc)
            except AuditUnavailable as unrecorded:
                error = unrecorded
            return self._done(ctx, self._frontend.render_error(error, request_id=head.request_id))
        return None

    async def refuse(self, wire: WireRequest, error: ProxyError) -> WireResponse:
        """Record and reject a request that was refused before it could be read."""
        ctx = self._context(wire)
        nobody = PrincipalInfo(id=None, auth_method=self._auth.method)
        try:
            await self._record(
                ctx,
                [self._event(ctx, nobody, None, None, None, Status.ERROR, code=error.kind.value)],
            )
        except AuditUnavailable as exc:
            error = exc
        return self._done(ctx, self._frontend.render_error(error, request_id=wire.request_id))

    async def _handle(self, ctx: _Ctx, wire: WireRequest) -> WireResponse:
        rid = wire.request_id
        trace = ctx.trace

        # 1. Authenticate (after the protocol's handshake, if it starts with one).
        challenge = self._frontend.challenge(wire)
        if challenge is not None:
            trace.status = "challenged"
            return challenge
        if self._per_source is not None and not self._per_source.allow(wire.source_ip or ""):
            # Before the signature is checked: a flood's cost stops here.
            return await self._throttle(ctx, None, None, "source address")
        try:
            principal = await self._auth.authenticate(wire)
        except AuthError as exc:
            trace.status, trace.auth_failure = "denied", exc.kind.value
            await self._record_auth_failure(ctx, exc)
            return self._frontend.render_error(exc, request_id=rid)
        who = PrincipalInfo.of(principal)

        # 2. Parse the operation, and find the one backend that may execute it.
        try:
            call = self._frontend.parse(wire)
            backend = self._backend_for(call)
        except ProxyError as exc:
            await self._record(
                ctx, [self._event(ctx, who, None, None, None, Status.ERROR, exc.kind)]
            )
            return self._frontend.render_error(exc, request_id=rid)
        trace.backend = backend.name
        if self._per_principal is not None and not self._per_principal.allow(principal.id):
            return await self._throttle(ctx, who, call, "principal")

        # 3. May the caller do this action on anything at all? Asked before any lookup
        #    in the store, so nobody learns from it what they could not touch anyway.
        #    One engine and one moment decide the whole request, even across a reload.
        engine = self._policies.engine
        facts = Context(
            source_ip=wire.source_ip,
            at=datetime.now(UTC),
            request={
                "protocol": self._frontend.protocol,
                "operation": call.operation,
                **({"version_stage": call.version_stage} if call.version_stage else {}),
            },
        )

        def decide(ref: SecretRef) -> Decision:
            return engine.decide(principal, call.action, ref, facts)

        gate = engine.decide_any(principal, call.action, call.backend, facts)
        trace.effect = gate.effect.value
        if not gate.allowed:
            # Recorded as the caller named them (an ARN stays an ARN): never resolved.
            # Each is decided on its own only to name a deny rule that matched it.
            decided = [(ref, decide(ref) if ref else gate) for ref in call.targets or (None,)]
            await self._record(
                ctx,
                [
                    self._event(ctx, who, call, r, d, Status.DENIED, "AccessDenied")
                    for r, d in decided
                ],
            )
            explicit = decided[0][1].explicit
            return self._denied(ctx, principal, call, call.single, rid, explicit=explicit)

        # 4. Resolve aliases (ARNs) to the store's own names: policies speak in names.
        try:
            names, unresolved = await self._from_store(trace, self._resolve(call, backend))
        except BackendError as exc:
            trace.backend_error = exc.kind
            target = call.targets[0]
            failed = self._event(ctx, who, call, target, None, Status.ERROR, exc.code or exc.kind)
            await self._record(ctx, [failed])
            if isinstance(exc, BackendUnavailable) or any(
                decide(SecretRef(call.backend, name)).allowed for name in exc.names
            ):
                return self._frontend.render_error(exc, request_id=rid)
            # "Not found" would tell the caller whether a secret it may not see exists.
            return self._denied(ctx, principal, call, target, rid)

        # 5. Authorise every named secret, with the policy in force when the request arrived.
        decisions = {
            ref: decide(names[ref])
            if ref not in unresolved
            else _decide_unresolved(ref, unresolved[ref], decide, engine.hash)
            for ref in call.targets
        }
        denied = {ref: d for ref, d in decisions.items() if not d.allowed}
        events = [
            self._event(ctx, who, call, names[ref], decision, Status.DENIED, "AccessDenied")
            for ref, decision in denied.items()
        ]
        if denied and not call.partial:
            # Only a batch read goes ahead with part of its secrets.
            ref, decision = next(iter(denied.items()))
            trace.effect = "deny"
            await self._record(ctx, events[:1])
            return self._denied(ctx, principal, call, ref, rid, explicit=decision.explicit)
        if call.targets and len(denied) == len(call.targets):
            # A batch of which nothing may be read: answer with only the per-secret errors.
            trace.effect, trace.status = "deny", "denied"
            await self._record(ctx, events)
            empty = self._frontend.empty_result(call)
            return self._frontend.render(
                call, empty, hidden=set(), denied=set(denied), request_id=rid
            )
        # The secret a single-target call is about, and what decided it.
        subject = call.single
        subject_name = names[subject] if subject is not None else None
        subject_decision = decisions[subject] if subject is not None else gate

        if call.action in _CHANGES:
            # Write-ahead: the intent is durable before the store changes anything, so a
            # change can never go unrecorded, even if its outcome cannot be written.
            pending = self._event(ctx, who, call, subject_name, subject_decision, Status.PENDING)
            await self._record(ctx, [pending])
        else:
            started = time.perf_counter()
            try:
                # Fail closed before touching the store: its answer could not be recorded.
                await self._journal.ensure_writable()
            except JournalUnavailable as exc:
                raise AuditUnavailable(
                    "keyledger cannot write its audit journal, so it refused the request"
                ) from exc
            finally:
                trace.audit_s += time.perf_counter() - started

        # 6. Call the backend (for a partly denied batch, only for the allowed secrets).
        #    The store is told the names policy decided on, never an alias of them.
        if denied:
            request = self._frontend.narrow(call, set(decisions) - set(denied))
        else:
            request = self._frontend.address(call, names)
        cached: str | None = None  # outcome.cache, for a read the cache may answer
        try:
            lookup = self._cache_lookup(call, subject_name)
            if lookup is None:
                trace.store_called = True
                result = await self._from_store(trace, backend.call(request))
            else:
                cache, key, rule = lookup
                result, cached = await self._from_store(
                    trace,
                    cache.read(
                        key, rule, lambda: backend.call(request), bypass=_bypasses_cache(wire)
                    ),
                )
                trace.store_called = cached in (MISS, STALE)
        except BackendError as exc:
            trace.backend_error = exc.kind
            code = exc.code or exc.kind
            failed = self._event(ctx, who, call, subject_name, subject_decision, Status.ERROR, code)
            await self._record(ctx, [*events, failed])
            return self._frontend.render_error(exc, request_id=rid)
        finally:
            if self._cache is not None and call.action in _CHANGES:
                # Whatever the store did (or may have done), no answer held from before.
                for target in call.targets:
                    self._cache.invalidate(names.get(target, target))

        # 7. Check and filter what came back; one event per secret served.
        hidden: set[SecretRef] = set()
        if any(item.ref.backend != call.backend for item in result.items):
            # The store answered with secrets of another backend: nothing in that answer
            # was authorised where it came from, so none of it is served.
            mismatch = self._event(
                ctx, who, call, subject_name, subject_decision, Status.ERROR, "NameMismatch"
            )
            await self._record(ctx, [*events, mismatch])
            error = ProxyError("the store answered with secrets of another backend")
            return self._frontend.render_error(error, request_id=rid)
        if call.filter_results:
            for item in result.items:
                decision = decisions.get(item.ref) or decide(item.ref)
                if item.value is None:
                    if not decision.allowed:
                        hidden.add(item.ref)
                elif decision.allowed:
                    events.append(
                        self._event(ctx, who, call, item.ref, decision, Status.SUCCESS, None, item)
                    )
                else:
                    # Fetched (a filtered batch read) but withheld: recorded, no fingerprint.
                    hidden.add(item.ref)
                    events.append(
                        self._event(
                            ctx, who, call, item.ref, decision, Status.DENIED, "AccessDenied"
                        )
                    )
            for ref, code in self._frontend.item_errors(call, result):
                name = names.get(ref, ref)
                decision = decisions.get(ref) or decide(name)
                if not decision.allowed:
                    hidden.add(ref)  # its name is not the caller's to learn
                    continue
                events.append(self._event(ctx, who, call, name, decision, Status.ERROR, code))
            if not events:
                # A listing serves no values (or a batch came back empty): one event for
                # the call.
                events.append(self._event(ctx, who, call, None, gate, Status.SUCCESS))
        else:
            (target,) = call.targets  # a call that filters nothing names one secret
            name = names[target]
            found = next((i for i in result.items if i.ref == name), None)
            if result.items and found is None:
                # The store answered for another secret than the one authorised: never
                # serve it.
                mismatch = self._event(
                    ctx, who, call, name, subject_decision, Status.ERROR, "NameMismatch"
                )
                await self._record(ctx, [mismatch])
                if call.action in _CHANGES:
                    # The change reached the store already: do not pretend it was refused.
                    error = ProxyError("the store answered for a different secret")
                    return self._frontend.render_error(error, request_id=rid)
                return self._denied(ctx, principal, call, target, rid)
            served = found or SecretItem(ref=name)
            events.append(
                self._event(
                    ctx, who, call, name, subject_decision, Status.SUCCESS, None, served, cached
                )
            )

        # 8. Durable first, then respond.
        await self._record(ctx, events)
        return self._frontend.render(
            call, result, hidden=hidden, denied=set(denied), request_id=rid
        )

    def _denied(
        self,
        ctx: _Ctx,
        principal: Principal,
        call: Call,
        ref: SecretRef | None,
        request_id: str,
        *,
        explicit: bool = False,
    ) -> WireResponse:
        ctx.trace.status = "denied"
        error = AccessDenied(
            principal=principal.id, operation=call.operation, ref=ref, explicit=explicit
        )
        return self._frontend.render_error(error, request_id=request_id)

    def _cache_lookup(
        self, call: Call, name: SecretRef | None
    ) -> tuple[SecretCache, CacheKey, CacheRule] | None:
        """Where the cache may answer this read from, or None: ask the store."""
        cache = self._cache
        if cache is None or call.cache_variant is None or name is None:
            return None
        rule = cache.rule_for(name)
        return None if rule is None else (cache, CacheKey(name, call.cache_variant), rule)

    @staticmethod
    async def _from_store(trace: RequestTrace, waiting: Awaitable[T]) -> T:
        """``waiting``'s result, its time counted as the request's wait on the store (and
        only its time: what a failure then records is the audit's)."""
        started = time.perf_counter()
        try:
            return await waiting
        finally:
            trace.backend_s += time.perf_counter() - started

    def _backend_for(self, call: Call) -> Backend:
        """The backend that executes ``call``: the one every secret it names is on."""
        backend = self._backends.get(call.backend)
        if backend is None:
            raise RequestError(f"no backend named {call.backend!r} is configured")
        if any(ref.backend != call.backend for ref in call.targets):
            # A frontend's bug, or a crafted request: authorising the targets on one
            # backend and running the call on another must never happen.
            raise RequestError(
                "the request names secrets of another backend than the one it would run on"
            )
        return backend

    async def _resolve(
        self, call: Call, backend: Backend
    ) -> tuple[dict[SecretRef, SecretRef], dict[SecretRef, BackendError]]:
        """Each target's name in the store, looked up concurrently; and in a batch, why
        each target that could not be resolved was not (it stays named as written).

        A name on another backend than the call's is refused: policy would decide on a
        backend that does not execute.
        """
        if len(call.targets) == 1 and not call.partial:
            # The common case: no tasks for what is, for a plain name, no I/O at all.
            (ref,) = call.targets
            return {ref: _same_backend(ref, await backend.resolve(ref))}, {}
        found = await asyncio.gather(
            *(backend.resolve(ref) for ref in call.targets), return_exceptions=True
        )
        names: dict[SecretRef, SecretRef] = {}
        unresolved: dict[SecretRef, BackendError] = {}
        for ref, result in zip(call.targets, found, strict=True):
            if isinstance(result, SecretRef):
                names[ref] = _same_backend(ref, result)
            elif isinstance(result, BackendError) and call.partial:
                names[ref], unresolved[ref] = ref, result
            else:
                raise result
        return names, unresolved

    # -- events -----------------------------------------------------------------------

    async def _record(self, ctx: _Ctx, events: Sequence[AuditEvent]) -> None:
        started = time.perf_counter()
        try:
            await self._journal.append_many(events)
        except JournalUnavailable as exc:
            raise AuditUnavailable(
                "keyledger could not record the audit event for this request, so it was refused"
            ) from exc
        finally:
            ctx.trace.audit_s += time.perf_counter() - started
        if not self._debug:
            return
        for event in events:
            # The journal is the record; this line is for debugging only.
            log.debug(
                "request",
                request_id=event.request.id if event.request else None,
                type=event.type.value,
                principal=event.principal.id if event.principal else None,
                operation=event.request.operation if event.request else None,
                secret=event.resource.secret if event.resource else None,
                status=event.outcome.status.value if event.outcome else None,
                code=event.outcome.code if event.outcome else None,
                latency_ms=event.outcome.latency_ms if event.outcome else None,
            )

    async def _throttle(
        self, ctx: _Ctx, who: PrincipalInfo | None, call: Call | None, per: str
    ) -> WireResponse:
        """Refuse a call past a rate limit; record it, or count it into its flood's
        aggregate (as failed sign-ins are)."""
        ctx.trace.status = "throttled"
        who = who or PrincipalInfo(id=None, auth_method=self._auth.method)
        code = ErrorKind.THROTTLED.value
        failures = self._failures
        if failures is None or failures.admit(
            source=ctx.request.source_ip,
            reason=code,
            request=ctx.request,
            principal=who,
            type=EventType.ACCESS,
        ):
            target = call.single if call is not None else None
            await self._record(
                ctx, [self._event(ctx, who, call, target, None, Status.DENIED, code)]
            )
        else:
            await failures.hold()
        error = Throttled(f"Rate exceeded: too many requests from this {per}")
        return self._frontend.render_error(error, request_id=ctx.request.id)

    async def _record_auth_failure(self, ctx: _Ctx, exc: AuthError) -> None:
        who = PrincipalInfo(
            id=exc.principal_hint,
            auth_method=exc.method or self._auth.method,
            attributes=exc.claimed,
        )
        reason = exc.kind.value
        if self._failures is not None and not self._failures.admit(
            source=ctx.request.source_ip, reason=reason, request=ctx.request, principal=who
        ):
            # One of a flood: counted into its window's aggregate event, answered late.
            await self._failures.hold()
            return
        await self._record(
            ctx,
            [
                AuditEvent(
                    type=EventType.AUTH_FAILURE,
                    request=ctx.request,
                    principal=who,
                    outcome=Outcome(status=Status.DENIED, code=reason, latency_ms=ctx.elapsed_ms()),
                    detail={"reason": exc.message[:200]},
                )
            ],
        )

    def _event(
        self,
        ctx: _Ctx,
        who: PrincipalInfo,
        call: Call | None,
        ref: SecretRef | None,
        decision: Decision | None,
        status: Status,
        code: str | None = None,
        item: SecretItem | None = None,
        cache: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            type=EventType.ACCESS,
            request=ctx.request,
            principal=who,
            action=call.action.value if call is not None else None,
            resource=None
            if call is None
            else ResourceInfo(
                backend=call.backend,
                secret=ref.name if ref is not None else None,
                version=call.request.version,
            ),
            decision=_decision_info(decision) if decision is not None else None,
            outcome=Outcome(
                status=status,
                code=code,
                latency_ms=ctx.elapsed_ms(),
                version_id=item.version_id if item is not None else None,
                value_fingerprint=self._fingerprint(item.value) if item is not None else None,
                cache=cache,
            ),
        )


_CHANGES = frozenset({Action.WRITE, Action.ROTATE, Action.DELETE})


# A caller asking for the store's answer, not the cache's (documented per protocol).
BYPASS_HEADER = "x-keyledger-cache"


def _bypasses_cache(wire: WireRequest) -> bool:
    return wire.headers.get(BYPASS_HEADER, "").strip().lower() in ("bypass", "no-cache")


def _decide_unresolved(
    ref: SecretRef,
    failure: BackendError,
    decide: Callable[[SecretRef], Decision],
    policy_hash: str,
) -> Decision:
    """A batch target the store could not resolve, decided never on its text (an ARN's
    text would skip the own-account-and-region check): one the store does not know, on
    the names it may stand for, as a single read is; any other, refused outright."""
    if isinstance(failure, SecretNotFound):
        verdicts = [decide(SecretRef(ref.backend, name)) for name in failure.names]
        return next((v for v in verdicts if v.allowed), verdicts[0] if verdicts else decide(ref))
    return Decision(
        effect=Effect.DENY, rule=None, policy_hash=policy_hash, reason=failure.message[:200]
    )


def _same_backend(asked: SecretRef, resolved: SecretRef) -> SecretRef:
    if resolved.backend != asked.backend:
        raise BackendError(
            f"the store resolved a secret of backend {asked.backend!r} to one of "
            f"{resolved.backend!r}",
            code="NameMismatch",
        )
    return resolved
