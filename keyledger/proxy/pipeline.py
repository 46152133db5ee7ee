"""The request path, top to bottom in one function: :meth:`Gateway.handle`.

    authenticate -> parse -> authorise -> call the backend -> filter -> record -> respond

Every call ends in at least one audit event, and a response is only returned once its
events are durable. If they cannot be made durable, the caller gets an error instead of
the result (fail closed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from keyledger.backends import Backend, BackendError
from keyledger.model import Principal, SecretItem, SecretRef
from keyledger.policies import Decision, PolicyEngine
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
from keyledger.proxy.errors import AccessDenied, AuditUnavailable, AuthError, ProxyError
from keyledger.proxy.wire import Authenticator, Call, Frontend, WireRequest, WireResponse

__all__ = ["Gateway", "PolicyHolder"]

log = structlog.get_logger("keyledger.request")


class PolicyHolder:
    """The policy engine in force; replaced whole on reload, read once per request."""

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What every event of one request shares."""

    request: RequestInfo
    started: float

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)


def _principal_info(principal: Principal) -> PrincipalInfo:
    return PrincipalInfo(
        id=principal.id,
        auth_method=principal.auth_method,
        groups=principal.groups,
        attributes=principal.attributes,
    )


def _decision_info(decision: Decision) -> DecisionInfo:
    return DecisionInfo(
        effect=decision.effect.value,
        rule=decision.rule,
        policy_hash=decision.policy_hash,
        reason=decision.reason,
    )


class Gateway:
    """One protocol's request path: frontend, authenticator, policy, backend, journal."""

    def __init__(
        self,
        *,
        frontend: Frontend,
        authenticator: Authenticator,
        policies: PolicyHolder,
        backend: Backend,
        journal: Journal,
        fingerprint: Fingerprinter,
    ) -> None:
        self._frontend = frontend
        self._auth = authenticator
        self._policies = policies
        self._backend = backend
        self._journal = journal
        self._fingerprint = fingerprint

    def _context(self, wire: WireRequest) -> _Ctx:
        return _Ctx(
            RequestInfo(
                id=wire.request_id,
                protocol=self._frontend.protocol,
                operation=self._frontend.operation_name(wire),
                source_ip=wire.source_ip,
                user_agent=wire.user_agent,
            ),
            time.perf_counter(),
        )

    async def handle(self, wire: WireRequest) -> WireResponse:
        """Serve one request; always returns a response in the frontend's protocol."""
        try:
            return await self._handle(self._context(wire), wire)
        except AuditUnavailable as exc:
            log.error("audit_unavailable", request_id=wire.request_id, error=exc.message)
            return self._frontend.render_error(exc, request_id=wire.request_id)

    async def refuse(self, wire: WireRequest, error: ProxyError) -> WireResponse:
        """Record and reject a request that was refused before it could be read."""
        ctx = self._context(wire)
        nobody = PrincipalInfo(id=None, auth_method=self._auth.method)
        try:
            await self._record(
                [self._event(ctx, nobody, None, None, None, Status.ERROR, code=error.kind.value)]
            )
        except AuditUnavailable as exc:
            return self._frontend.render_error(exc, request_id=wire.request_id)
        return self._frontend.render_error(error, request_id=wire.request_id)

    async def _handle(self, ctx: _Ctx, wire: WireRequest) -> WireResponse:
        # 1. Authenticate.
        try:
            principal = self._auth.authenticate(wire)
        except AuthError as exc:
            await self._record_auth_failure(ctx, exc)
            return self._frontend.render_error(exc, request_id=wire.request_id)
        who = _principal_info(principal)

        # 2. Parse the operation.
        try:
            call = self._frontend.parse(wire)
        except ProxyError as exc:
            await self._record(
                [self._event(ctx, who, None, None, None, Status.ERROR, code=exc.kind.value)]
            )
            return self._frontend.render_error(exc, request_id=wire.request_id)

        # 3. Authorise: every named secret on its own; listings need some permission first.
        engine = self._policies.engine
        decisions = {
            ref: engine.decide(principal.id, principal.groups, call.action, ref)
            for ref in call.targets
        }
        denied = {ref for ref, d in decisions.items() if not d.allowed}
        gate = None
        if not call.targets:
            gate = engine.decide_any(principal.id, principal.groups, call.action, call.backend)
        refused = (
            (None, gate) if gate is not None and not gate.allowed
            else next(((r, decisions[r]) for r in call.targets if r in denied), None)
            if not call.partial
            else None
        )  # fmt: skip
        if refused is not None:
            ref, decision = refused
            await self._record(
                [self._event(ctx, who, call, ref, decision, Status.DENIED, code="AccessDenied")]
            )
            error = AccessDenied(
                principal=principal.id, operation=call.operation, ref=ref,
                explicit=decision.rule is not None,
            )  # fmt: skip
            return self._frontend.render_error(error, request_id=wire.request_id)
        events: list[AuditEvent] = [
            self._event(ctx, who, call, ref, decisions[ref], Status.DENIED, code="AccessDenied")
            for ref in call.targets
            if ref in denied
        ]
        if call.targets and len(denied) == len(call.targets):
            # A batch of which nothing may be read: answer with only the per-secret errors.
            await self._record(events)
            return self._frontend.render(
                call, self._frontend.empty_result(call), hidden=set(), denied=denied,
                request_id=wire.request_id,
            )  # fmt: skip

        # Fail closed before touching the store if the journal is known to be failing.
        if not self._journal.healthy:
            raise AuditUnavailable("keyledger cannot write its audit journal; request refused")

        # 4. Call the backend.
        request = self._frontend.narrow(call, set(decisions) - denied) if denied else call.request
        try:
            result = await self._backend.call(request)
        except BackendError as exc:
            ref = call.targets[0] if len(call.targets) == 1 else None
            decision = decisions.get(ref) if ref is not None else gate
            code = exc.code or exc.kind
            await self._record(
                [*events, self._event(ctx, who, call, ref, decision, Status.ERROR, code=code)]
            )
            return self._frontend.render_error(exc, request_id=wire.request_id)

        # 5. Filter what came back and record one event per secret served.
        hidden: set[SecretRef] = set()
        if call.filter_results:
            for item in result.items:
                item_decision = decisions.get(item.ref) or engine.decide(
                    principal.id, principal.groups, call.action, item.ref
                )
                if not item_decision.allowed:
                    hidden.add(item.ref)
                    if item.value is not None:  # fetched, withheld: worth an event
                        events.append(
                            self._event(ctx, who, call, item.ref, item_decision, Status.DENIED,
                                        code="AccessDenied")  # fmt: skip
                        )
                elif item.value is not None:
                    events.append(self._served(ctx, who, call, item, item_decision))
            for ref, code in self._frontend.item_errors(call, result):
                events.append(
                    self._event(ctx, who, call, ref, decisions.get(ref), Status.ERROR, code=code)
                )
            if gate is not None and not any(i.value is not None for i in result.items):
                # A listing serves no values: one event for the call.
                events.append(self._event(ctx, who, call, None, gate, Status.SUCCESS))
        else:
            ref = call.targets[0]
            item = _matching_item(result.items, ref)
            if result.items and item is None:
                # The store resolved the id to another secret than the one authorised
                # (e.g. a crafted ARN): never serve it.
                await self._record(
                    [self._event(ctx, who, call, ref, decisions[ref], Status.ERROR,
                                 code="ResolvedNameMismatch")]  # fmt: skip
                )
                error = AccessDenied(
                    principal=principal.id, operation=call.operation, ref=ref, explicit=False
                )
                return self._frontend.render_error(error, request_id=wire.request_id)
            events.append(
                self._served(ctx, who, call, item or SecretItem(ref=ref), decisions[ref])
            )

        # 6. Durable first, then respond.
        await self._record(events)
        return self._frontend.render(
            call, result, hidden=hidden, denied=denied, request_id=wire.request_id
        )

    # -- events -----------------------------------------------------------------------

    async def _record(self, events: Sequence[AuditEvent]) -> None:
        try:
            await self._journal.append_many(events)
        except JournalUnavailable as exc:
            raise AuditUnavailable(
                "keyledger could not record the audit event for this request, so it was refused"
            ) from exc
        for event in events:
            log.info(
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

    async def _record_auth_failure(self, ctx: _Ctx, exc: AuthError) -> None:
        await self._record(
            [
                AuditEvent(
                    type=EventType.AUTH_FAILURE,
                    request=ctx.request,
                    principal=PrincipalInfo(id=exc.principal_hint, auth_method=self._auth.method),
                    outcome=Outcome(
                        status=Status.DENIED, code=exc.kind.value, latency_ms=ctx.elapsed_ms()
                    ),
                    detail={"reason": exc.message[:200]},
                )
            ]
        )

    def _event(
        self,
        ctx: _Ctx,
        who: PrincipalInfo,
        call: Call | None,
        ref: SecretRef | None,
        decision: Decision | None,
        status: Status,
        *,
        code: str | None = None,
        item: SecretItem | None = None,
    ) -> AuditEvent:
        backend = call.backend if call is not None else self._backend.name
        return AuditEvent(
            type=EventType.ACCESS,
            request=ctx.request,
            principal=who,
            action=call.action.value if call is not None else None,
            resource=ResourceInfo(
                backend=backend,
                secret=ref.name if ref is not None else None,
                version=call.request.version if call is not None else None,
            ),
            decision=_decision_info(decision) if decision is not None else None,
            outcome=Outcome(
                status=status,
                code=code,
                latency_ms=ctx.elapsed_ms(),
                version_id=item.version_id if item is not None else None,
                value_fingerprint=self._fingerprint(item.value) if item is not None else None,
            ),
        )

    def _served(
        self, ctx: _Ctx, who: PrincipalInfo, call: Call, item: SecretItem, decision: Decision
    ) -> AuditEvent:
        return self._event(ctx, who, call, item.ref, decision, Status.SUCCESS, item=item)


def _matching_item(items: Sequence[SecretItem], ref: SecretRef) -> SecretItem | None:
    return next((i for i in items if i.ref == ref), None)
