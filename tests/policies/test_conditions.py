"""Rule conditions: `when:` and `unless:` on source address, time, principal and request."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest

from keyledger.model import Action, Principal
from keyledger.policies import (
    Context,
    Decision,
    Effect,
    PolicyEngine,
    PolicyError,
    load_policy_files,
)
from keyledger.policies import principal_of as who
from keyledger.policies.testing import parse_secret as ref

APP = who("svc-app")
PROD_DB = "aws:prod/db"
ALLOWED = ("allow", "guarded")
DEFAULT_DENY = ("deny", None)
BERLIN = ZoneInfo("Europe/Berlin")
PLUS_TWO = timezone(timedelta(hours=2))
T = TypeVar("T")

# A week in January 2024 (no DST in Europe): MON is Monday 2024-01-15 ... SUN 2024-01-21.
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def engine_for(tmp_path: Path, text: str) -> PolicyEngine:
    return PolicyEngine(load_policy_files([write(tmp_path, "policy.yaml", text)]))


def app_role(tmp_path: Path, rules: str) -> PolicyEngine:
    """Role `app`, bound to svc-app, with these rules (a YAML list)."""
    rules = textwrap.indent(textwrap.dedent(rules).strip("\n"), " " * 6)
    bindings = "bindings:\n  - role: app\n    principals: [svc-app]\n"
    return engine_for(tmp_path, f"roles:\n  - id: app\n    rules:\n{rules}\n{bindings}")


def guarded(tmp_path: Path, conditions: str, *, key: str = "when") -> PolicyEngine:
    """Role `app` with one rule, `guarded`: it allows read and list on aws:prod/* under the
    given `when:` (or `unless:`) block."""
    block = textwrap.indent(textwrap.dedent(conditions).strip("\n"), " " * 4)
    return app_role(
        tmp_path,
        f'- id: guarded\n  actions: [read, list]\n  resources: ["aws:prod/*"]\n  {key}:\n{block}',
    )


def problems_of(path: Path) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as caught:
        load_policy_files([path])
    return caught.value.problems


def utc(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A moment in the January 2024 week, in UTC; ``day`` is MON..SUN."""
    return datetime(2024, 1, 15 + day, hour, minute, second, tzinfo=UTC)


def decide(
    engine: PolicyEngine,
    ctx: Context,
    principal: Principal = APP,
    secret: str = PROD_DB,
    action: Action = Action.READ,
) -> Decision:
    """``engine.decide``, checking that ``explain`` reaches the very same decision."""
    decision = engine.decide(principal, action, ref(secret), ctx)
    assert engine.explain(principal, action, ref(secret), ctx).decision == decision
    return decision


def outcome(
    engine: PolicyEngine,
    ctx: Context,
    principal: Principal = APP,
    secret: str = PROD_DB,
    action: Action = Action.READ,
) -> tuple[str, str | None]:
    """(effect, deciding rule id) of a decision."""
    decision = decide(engine, ctx, principal, secret, action)
    return str(decision.effect), decision.rule


def assert_splits(
    outcome_of: Callable[[T], tuple[str, str | None]], allowed: Iterable[T], denied: Iterable[T]
) -> None:
    """``outcome_of`` is ALLOWED for each of ``allowed`` and DEFAULT_DENY for each of ``denied``."""
    expected = [(x, ALLOWED) for x in allowed] + [(x, DEFAULT_DENY) for x in denied]
    assert [(x, outcome_of(x)) for x, _ in expected] == expected


def reasons_of(
    engine: PolicyEngine, rule_id: str, ctx: Context, principal: Principal = APP
) -> tuple[bool, tuple[str, ...]]:
    """(applies, reasons) of one rule's verdict in ``explain`` for a read of aws:prod/db."""
    explanation = engine.explain(principal, Action.READ, ref(PROD_DB), ctx)
    assert explanation.decision == engine.decide(principal, Action.READ, ref(PROD_DB), ctx)
    (verdict,) = (v for v in explanation.verdicts if v.rule.id == rule_id)
    return verdict.applies, verdict.reasons


def ip(address: str | None) -> Context:
    return Context(source_ip=address, at=utc(MON, 12))


def claims(**attributes: str) -> Principal:
    return who("svc-app", (), attributes)


def request(**attributes: str) -> Context:
    return Context(source_ip="10.1.2.3", at=utc(MON, 12), request=attributes)


class TestSourceIp:
    @pytest.mark.parametrize(
        ("conditions", "inside", "outside"),
        [
            pytest.param(
                "source_ip: [10.0.0.0/8]",
                ["10.1.2.3", "10.255.255.255"],
                ["11.0.0.1", "192.0.2.1"],
                id="ipv4_cidr",
            ),
            pytest.param(
                "source_ip: 10.0.0.0/8",
                ["10.9.9.9"],
                ["172.16.0.1"],
                id="single_network_as_a_plain_string",
            ),
            pytest.param(
                'source_ip: ["2001:db8::/32"]',
                ["2001:db8::1", "2001:db8:ffff::abcd"],
                ["2001:db9::1", "10.1.2.3"],
                id="ipv6_cidr",
            ),
            # `::ffff:10.1.2.3` (a dual-stack socket's view of 10.1.2.3) is inside 10.0.0.0/8.
            pytest.param(
                "source_ip: [10.0.0.0/8]",
                ["::ffff:10.1.2.3"],
                ["::ffff:192.0.2.1"],
                id="ipv4_mapped_ipv6_counts_as_ipv4",
            ),
        ],
    )
    def test_networks(
        self, tmp_path: Path, conditions: str, inside: list[str], outside: list[str]
    ) -> None:
        """A caller inside the networks is allowed; one outside them is denied by default."""
        engine = guarded(tmp_path, conditions)

        assert_splits(lambda address: outcome(engine, ip(address)), inside, outside)

    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("10.1.2.3", ALLOWED),
            ("2001:db8::5", ALLOWED),
            ("192.168.0.1", DEFAULT_DENY),
            ("fd00::1", DEFAULT_DENY),
        ],
    )
    def test_mixed_ipv4_and_ipv6_list(
        self, tmp_path: Path, address: str, expected: tuple[str, str | None]
    ) -> None:
        """A list mixing IPv4 and IPv6 networks (unquoted, block style) admits both families."""
        engine = guarded(
            tmp_path,
            """
            source_ip:
              - 10.0.0.0/8
              - 2001:db8::/32
            """,
        )

        assert outcome(engine, ip(address)) == expected

    @pytest.mark.parametrize("address", [None, "", "not-an-address", "10.1.2"])
    def test_unknown_source_ip_does_not_hold(self, tmp_path: Path, address: str | None) -> None:
        """Without a readable caller address a source_ip condition fails: the call is denied."""
        engine = guarded(tmp_path, "source_ip: [0.0.0.0/0]")

        assert outcome(engine, ip(address)) == DEFAULT_DENY
        assert outcome(engine, ip("203.0.113.9")) == ALLOWED


class TestTime:
    def test_time_zone_follows_daylight_saving(self, tmp_path: Path) -> None:
        """06:00-07:00 Europe/Berlin means 06:30 local in winter (05:30 UTC) and in summer
        (04:30 UTC), whatever zone the request time is given in."""
        engine = guarded(
            tmp_path,
            """
            time:
              days: mon-fri
              from: "06:00"
              to: "07:00"
              timezone: Europe/Berlin
            """,
        )
        winter = datetime(2024, 1, 15, 5, 30, tzinfo=UTC)  # Monday, 06:30 CET
        summer = datetime(2024, 7, 15, 4, 30, tzinfo=UTC)  # Monday, 06:30 CEST

        assert outcome(engine, Context(at=winter)) == ALLOWED
        assert outcome(engine, Context(at=summer)) == ALLOWED
        # 05:30 UTC in summer is 07:30 in Berlin: outside, though it is 06:30 in winter.
        assert outcome(engine, Context(at=summer + timedelta(hours=1))) == DEFAULT_DENY
        # 04:30 UTC in winter is 05:30 in Berlin: outside, though it is 06:30 in summer.
        assert outcome(engine, Context(at=winter - timedelta(hours=1))) == DEFAULT_DENY
        new_york = datetime(2024, 1, 15, 0, 30, tzinfo=ZoneInfo("America/New_York"))
        assert outcome(engine, Context(at=new_york)) == ALLOWED
        assert outcome(engine, Context(at=datetime(2024, 7, 15, 6, 30, tzinfo=BERLIN))) == ALLOWED
        # The local day counts: Saturday 06:30 in Berlin is outside mon-fri.
        saturday = datetime(2024, 1, 20, 6, 30, tzinfo=BERLIN)
        assert outcome(engine, Context(at=saturday)) == DEFAULT_DENY

    @pytest.mark.parametrize(
        ("days", "allowed_days"),
        [
            ("mon-fri", {MON, TUE, WED, THU, FRI}),
            ("[mon, wed]", {MON, WED}),
            ('"mon,tue"', {MON, TUE}),
            ("fri-mon", {FRI, SAT, SUN, MON}),
            ("[sat-sun, wed]", {WED, SAT, SUN}),
            ("Thu", {THU}),
        ],
    )
    def test_days(self, tmp_path: Path, days: str, allowed_days: set[int]) -> None:
        """Days are single names, ranges (wrapping past Sunday), lists or comma strings."""
        engine = guarded(tmp_path, f"time: {{days: {days}}}")

        allowed = {d for d in range(7) if outcome(engine, Context(at=utc(d, 12))) == ALLOWED}

        assert allowed == allowed_days

    @pytest.mark.parametrize(
        ("conditions", "inside", "outside"),
        [
            # The weekday is taken in the window's zone: Friday 23:30 UTC is Saturday in Berlin.
            pytest.param(
                "time: {days: sat, timezone: Europe/Berlin}",
                [utc(FRI, 23, 30)],
                [utc(FRI, 22, 30)],
                id="local_day_differs_from_utc_day",
            ),
            # fri 22:00-06:00 (unquoted times) holds Friday night and early Saturday only.
            pytest.param(
                "time: {days: fri, from: 22:00, to: 06:00}",
                [
                    utc(FRI, 22, 0),
                    utc(FRI, 23, 59),
                    utc(SAT, 0, 0),
                    utc(SAT, 3, 0),
                    utc(SAT, 5, 59, 59),
                ],
                [
                    utc(SAT, 6, 0),
                    utc(FRI, 3, 0),
                    utc(FRI, 21, 59),
                    utc(SAT, 22, 30),
                    utc(THU, 23, 0),
                ],
                id="overnight_window_belongs_to_the_day_it_starts",
            ),
            # With thu listed too, Friday 03:00 is inside (the tail of Thursday's night).
            pytest.param(
                "time: {days: [thu, fri], from: 22:00, to: 06:00}",
                [utc(FRI, 3, 0), utc(SAT, 3, 0)],
                [utc(THU, 3, 0), utc(SUN, 3, 0)],
                id="overnight_window_early_hours_need_the_previous_day",
            ),
            # sun-mon 20:00-04:00 covers Sunday night into Monday (Monday 02:00) and Monday
            # night into Tuesday (Tuesday 02:00); Sunday 02:00 is Saturday's night.
            pytest.param(
                "time: {days: sun-mon, from: 20:00, to: 04:00}",
                [utc(SUN, 21, 0), utc(MON, 2, 0), utc(TUE, 2, 0)],
                [utc(SUN, 2, 0), utc(TUE, 21, 0)],
                id="overnight_window_with_wrapping_day_range",
            ),
            # With several windows, a moment inside any one of them is enough. Saturday 09:30
            # UTC is 10:30 in Berlin (inside), 11:00 UTC is 12:00 there (outside).
            pytest.param(
                """
                time:
                  - {days: mon-fri, from: 09:00, to: 17:00}
                  - {days: sat, from: "10:00", to: "12:00", timezone: Europe/Berlin}
                """,
                [utc(WED, 9, 0), utc(WED, 16, 59), utc(SAT, 9, 30)],
                [utc(WED, 17, 0), utc(SAT, 11, 0), utc(SUN, 10, 0)],
                id="list_of_windows",
            ),
            # `to: 24:00` runs to the last instant of the day and not into the next one.
            pytest.param(
                "time: {days: mon, from: 18:00, to: 24:00}",
                [utc(MON, 18, 0), datetime(2024, 1, 15, 23, 59, 59, 999999, tzinfo=UTC)],
                [utc(TUE, 0, 0), utc(MON, 17, 59)],
                id="end_of_day_24_00",
            ),
            # A window with only days runs from 00:00 to 24:00 UTC, whatever zone `at` is in:
            # Saturday 01:30 at +02:00 is still Friday 23:30 in UTC.
            pytest.param(
                "time: {days: sat-sun}",
                [utc(SAT, 0, 0), utc(SUN, 23, 59), datetime(2024, 1, 20, 2, 30, tzinfo=PLUS_TWO)],
                [utc(MON, 0, 0), datetime(2024, 1, 20, 1, 30, tzinfo=PLUS_TWO)],
                id="defaults_are_the_whole_day_in_utc",
            ),
        ],
    )
    def test_window(
        self, tmp_path: Path, conditions: str, inside: list[datetime], outside: list[datetime]
    ) -> None:
        """A request at a moment inside the window is allowed; outside it, denied by default."""
        engine = guarded(tmp_path, conditions)

        assert_splits(lambda at: outcome(engine, Context(at=at)), inside, outside)


class TestPrincipalAttributes:
    @pytest.mark.parametrize(
        ("conditions", "address", "allowed", "denied"),
        [
            pytest.param(
                "principal: {repository: acme/payments}",
                "10.1.2.3",
                [claims(repository="acme/payments")],
                [claims(repository="acme/payments-fork"), claims(repository="Acme/Payments")],
                id="exact_value",
            ),
            # `acme/*` matches nested paths; `prod-?` matches one character; whole value only.
            pytest.param(
                'principal: {repository: "acme/*", environment: "prod-?"}',
                "10.1.2.3",
                [
                    claims(repository="acme/shop", environment="prod-1"),
                    claims(repository="acme/team/shop", environment="prod-a"),
                ],
                [
                    claims(repository="other/acme/shop", environment="prod-1"),
                    claims(repository="acme/shop", environment="prod-12"),
                    claims(repository="acme/shop", environment="prod-"),
                ],
                id="glob_star_crosses_slashes_and_question_mark_is_one_character",
            ),
            pytest.param(
                "principal: {namespace: [payments, billing]}",
                None,
                [claims(namespace="payments"), claims(namespace="billing")],
                [claims(namespace="search")],
                id="list_of_values",
            ),
            # A principal without the attribute (even with `*` as the pattern) is denied.
            pytest.param(
                'principal: {namespace: "*"}',
                None,
                [claims(namespace="")],
                [claims(repository="acme/shop"), who("svc-app")],
                id="missing_attribute_does_not_hold",
            ),
            pytest.param(
                "principal: {repository: acme/shop, ref: refs/heads/main}",
                None,
                [claims(repository="acme/shop", ref="refs/heads/main")],
                [
                    claims(repository="acme/shop"),
                    claims(repository="acme/shop", ref="refs/heads/dev"),
                ],
                id="every_listed_attribute_must_match",
            ),
        ],
    )
    def test_principal(
        self,
        tmp_path: Path,
        conditions: str,
        address: str | None,
        allowed: list[Principal],
        denied: list[Principal],
    ) -> None:
        """A principal whose attributes match is allowed; any other is denied by default."""
        engine = guarded(tmp_path, conditions)

        assert_splits(lambda principal: outcome(engine, ip(address), principal), allowed, denied)


class TestRequestAttributes:
    @pytest.mark.parametrize(
        ("conditions", "allowed", "denied"),
        [
            pytest.param(
                "request: {version_stage: AWSCURRENT}",
                [request(version_stage="AWSCURRENT")],
                [request(version_stage="AWSPREVIOUS"), request(protocol="aws-json")],
                id="version_stage",
            ),
            # Exact values and globs; every key must match.
            pytest.param(
                'request: {protocol: aws-json, operation: ["Get*", DescribeSecret]}',
                [
                    request(protocol="aws-json", operation="GetSecretValue"),
                    request(protocol="aws-json", operation="DescribeSecret"),
                ],
                [
                    request(protocol="aws-json", operation="PutSecretValue"),
                    request(protocol="gcp-grpc", operation="GetSecretValue"),
                    request(operation="GetSecretValue"),
                ],
                id="protocol_and_operation_with_globs",
            ),
        ],
    )
    def test_request(
        self, tmp_path: Path, conditions: str, allowed: list[Context], denied: list[Context]
    ) -> None:
        """A request whose attributes match is allowed; any other is denied by default."""
        engine = guarded(tmp_path, conditions)

        assert_splits(lambda ctx: outcome(engine, ctx), allowed, denied)


DENY_OUTSIDE = """
    roles:
      - id: reader
        rules:
          - id: deny-prod-outside
            effect: deny
            actions: [read]
            resources: ["aws:prod/*"]
            unless:
              source_ip: [10.0.0.0/8]
          - id: read-prod
            actions: [read, list]
            resources: ["aws:prod/*", "aws:staging/*"]
    bindings:
      - role: reader
        principals: [svc-app]
"""


class TestUnless:
    def test_allow_unless(self, tmp_path: Path) -> None:
        """An allow rule with `unless:` stops applying when its condition holds."""
        engine = guarded(tmp_path, "source_ip: [203.0.113.0/24]", key="unless")

        assert outcome(engine, ip("10.1.2.3")) == ALLOWED
        assert outcome(engine, ip(None)) == ALLOWED
        assert outcome(engine, ip("203.0.113.7")) == DEFAULT_DENY

    def test_unless_any_condition_holding_is_enough(self, tmp_path: Path) -> None:
        """Under `unless:`, one condition holding is enough to switch the rule off."""
        engine = guarded(
            tmp_path,
            """
            source_ip: [203.0.113.0/24]
            principal: {environment: sandbox}
            """,
            key="unless",
        )

        assert outcome(engine, ip("10.1.2.3"), claims(environment="prod")) == ALLOWED
        assert outcome(engine, ip("203.0.113.7"), claims(environment="prod")) == DEFAULT_DENY
        assert outcome(engine, ip("10.1.2.3"), claims(environment="sandbox")) == DEFAULT_DENY

    def test_deny_unless_from_the_internal_network(self, tmp_path: Path) -> None:
        """Prod reads from 10/8 are allowed by the allow rule; from anywhere else, or from an
        unknown address, the deny rule decides and is named."""
        engine = engine_for(tmp_path, DENY_OUTSIDE)

        assert outcome(engine, ip("10.1.2.3")) == ("allow", "read-prod")
        assert outcome(engine, ip("::ffff:10.1.2.3")) == ("allow", "read-prod")
        assert outcome(engine, ip("192.0.2.1")) == ("deny", "deny-prod-outside")
        assert outcome(engine, ip(None)) == ("deny", "deny-prod-outside")
        denied = decide(engine, ip("192.0.2.1"))
        assert denied.explicit
        assert denied.reason == "rule deny-prod-outside denies read on aws:prod/db"

    def test_deny_unless_leaves_other_resources_alone(self, tmp_path: Path) -> None:
        """The conditional deny covers prod only: staging reads from outside stay allowed."""
        engine = engine_for(tmp_path, DENY_OUTSIDE)

        assert outcome(engine, ip("192.0.2.1"), secret="aws:staging/db") == ("allow", "read-prod")

    def test_deny_when(self, tmp_path: Path) -> None:
        """A deny rule with `when:` denies only while its condition holds (weekend freeze)."""
        engine = engine_for(
            tmp_path,
            """
            roles:
              - id: deployer
                rules:
                  - id: write-prod
                    actions: [write]
                    resources: ["aws:prod/*"]
                  - id: weekend-freeze
                    effect: deny
                    actions: [write]
                    resources: ["aws:prod/*"]
                    when:
                      time: {days: sat-sun, timezone: Europe/Berlin}
            bindings:
              - role: deployer
                principals: [svc-app]
            """,
        )

        def write_at(moment: datetime) -> tuple[str, str | None]:
            return outcome(engine, Context(at=moment), action=Action.WRITE)

        assert write_at(utc(WED, 12)) == ("allow", "write-prod")
        assert write_at(utc(SAT, 12)) == ("deny", "weekend-freeze")
        assert write_at(utc(FRI, 23, 30)) == ("deny", "weekend-freeze")  # Saturday in Berlin
        assert write_at(utc(SUN, 23, 30)) == ("allow", "write-prod")  # Monday in Berlin


class TestCombined:
    COMBINED = """
        source_ip: [10.0.0.0/8]
        time: {days: mon-fri, from: 08:00, to: 18:00}
        principal: {team: payments}
        request: {version_stage: AWSCURRENT}
    """

    def test_all_when_conditions_hold(self, tmp_path: Path) -> None:
        """A rule whose four `when:` conditions all hold allows the call."""
        engine = guarded(tmp_path, self.COMBINED)
        ctx = Context(source_ip="10.1.2.3", at=utc(TUE, 9), request={"version_stage": "AWSCURRENT"})

        assert outcome(engine, ctx, claims(team="payments")) == ALLOWED

    @pytest.mark.parametrize(
        ("source_ip", "at", "team", "stage"),
        [
            ("192.0.2.1", utc(TUE, 9), "payments", "AWSCURRENT"),
            ("10.1.2.3", utc(TUE, 19), "payments", "AWSCURRENT"),
            ("10.1.2.3", utc(SAT, 9), "payments", "AWSCURRENT"),
            ("10.1.2.3", utc(TUE, 9), "search", "AWSCURRENT"),
            ("10.1.2.3", utc(TUE, 9), "payments", "AWSPENDING"),
        ],
        ids=["source_ip", "time", "day", "principal", "request"],
    )
    def test_one_failing_when_condition_denies(
        self, tmp_path: Path, source_ip: str, at: datetime, team: str, stage: str
    ) -> None:
        """If any one `when:` condition fails, the rule does not apply."""
        engine = guarded(tmp_path, self.COMBINED)
        ctx = Context(source_ip=source_ip, at=at, request={"version_stage": stage})

        assert outcome(engine, ctx, claims(team=team)) == DEFAULT_DENY

    def test_when_and_unless_together(self, tmp_path: Path) -> None:
        """`when:` must hold and `unless:` must not: office hours, but not from the guest Wi-Fi."""
        engine = app_role(
            tmp_path,
            """
            - id: guarded
              actions: [read]
              resources: ["aws:prod/*"]
              when:
                source_ip: [10.0.0.0/8]
              unless:
                source_ip: [10.99.0.0/16]
            """,
        )

        assert outcome(engine, ip("10.1.2.3")) == ALLOWED
        assert outcome(engine, ip("10.99.1.1")) == DEFAULT_DENY
        assert outcome(engine, ip("192.0.2.1")) == DEFAULT_DENY

    def test_first_applying_rule_decides(self, tmp_path: Path) -> None:
        """Among conditional rules, the first written one whose conditions hold is named."""
        engine = app_role(
            tmp_path,
            """
            - id: from-office
              actions: [read]
              resources: ["aws:prod/*"]
              when: {source_ip: [10.0.0.0/8]}
            - id: from-ci
              actions: [read]
              resources: ["aws:prod/db"]
              when: {principal: {repository: "acme/*"}}
            - id: block-sandbox
              effect: deny
              actions: [read]
              resources: ["aws:prod/*"]
              when: {principal: {environment: sandbox}}
            - id: block-night
              effect: deny
              actions: ["*"]
              resources: ["aws:*"]
              when: {time: {from: "00:00", to: "05:00"}}
            """,
        )
        ci = claims(repository="acme/shop")
        day, night = utc(MON, 12), utc(MON, 1)

        assert outcome(engine, Context(source_ip="10.1.2.3", at=day), ci) == (
            "allow",
            "from-office",
        )
        assert outcome(engine, Context(source_ip="192.0.2.1", at=day), ci) == ("allow", "from-ci")
        assert outcome(engine, Context(source_ip="192.0.2.1", at=day)) == DEFAULT_DENY
        sandbox = claims(repository="acme/shop", environment="sandbox")
        assert outcome(engine, Context(at=night), sandbox) == ("deny", "block-sandbox")
        assert outcome(engine, Context(at=night), ci) == ("deny", "block-night")


class TestDecideAny:
    def test_listing_respects_source_ip(self, tmp_path: Path) -> None:
        """Listing a backend from outside the allowed network is denied; from inside allowed."""
        engine = guarded(tmp_path, "source_ip: [10.0.0.0/8]")

        inside = engine.decide_any(APP, Action.LIST, "aws", ip("10.1.2.3"))
        outside = engine.decide_any(APP, Action.LIST, "aws", ip("192.0.2.1"))
        unknown = engine.decide_any(APP, Action.LIST, "aws", ip(None))

        assert (inside.effect, inside.rule) == (Effect.ALLOW, "guarded")
        assert (outside.effect, outside.rule) == (Effect.DENY, None)
        assert outside.reason == "no rule allows list on anything in aws (default deny)"
        assert (unknown.effect, unknown.rule) == (Effect.DENY, None)

    def test_listing_respects_unless_and_time(self, tmp_path: Path) -> None:
        """A listing is allowed only in the rule's window and not when `unless:` holds."""
        engine = app_role(
            tmp_path,
            """
            - id: guarded
              actions: [list]
              resources: ["aws:prod/*"]
              when: {time: {days: mon-fri}}
              unless: {principal: {environment: sandbox}}
            """,
        )

        def listing(at: datetime, principal: Principal = APP) -> bool:
            return engine.decide_any(principal, Action.LIST, "aws", Context(at=at)).allowed

        assert listing(utc(WED, 12))
        assert not listing(utc(SUN, 12))
        assert not listing(utc(WED, 12), claims(environment="sandbox"))


RULE_HEAD = """\
roles:
  - id: app
    rules:
      - id: guarded
        actions: [read]
        resources: ["aws:prod/*"]
        when:
"""
# Lines 1-7 above; the `when:` block written after it starts on line 8, keys in column 11.


class TestLoadErrors:
    @pytest.mark.parametrize(
        ("when_block", "messages"),
        [
            # line 8: 10 spaces and "source_ip: " (11 chars): the network is in column 22.
            pytest.param(
                "source_ip: 10.0.0.0/33\n",
                [
                    "8:22: bad network '10.0.0.0/33': '10.0.0.0/33' does not appear to be an "
                    "IPv4 or IPv6 network"
                ],
                id="bad_cidr",
            ),
            pytest.param(
                "source_ip: 10.0.0.1/8\n",
                ["8:22: bad network '10.0.0.1/8': 10.0.0.1/8 has host bits set"],
                id="cidr_with_host_bits",
            ),
            # At the bad network's line, not the list's first item: 12 spaces and "- ": column 15.
            pytest.param(
                "source_ip:\n  - 10.0.0.0/8\n  - 2001:db8::1/32\n",
                ["10:15: bad network '2001:db8::1/32': 2001:db8::1/32 has host bits set"],
                id="bad_ipv6_cidr_in_block_list",
            ),
            # line 10: 12 spaces, "timezone: " (10 chars), value in column 23.
            pytest.param(
                "time:\n  days: mon-fri\n  timezone: Europe/Berln\n",
                ["10:23: unknown time zone 'Europe/Berln' (e.g. Europe/Berlin)"],
                id="unknown_time_zone",
            ),
            # line 8: "          time: {" is 17 chars, "from: " 6 more: 25:00 in column 24, and
            # ", to: " (6 chars) after its 5 characters puts 26:00 in column 35.
            pytest.param(
                "time: {from: 25:00, to: 26:00}\n",
                [
                    "8:24: from must be a time of day HH:MM, not '25:00'",
                    "8:35: to must be a time of day HH:MM, not '26:00'",
                ],
                id="hour_25",
            ),
            # from == to, reported at `to`: '          time: {from: "08:00", to: ' is 36 chars.
            pytest.param(
                'time: {from: "08:00", to: 08:00}\n',
                ["8:37: an empty time window: from and to are the same"],
                id="empty_window",
            ),
            # line 8: "          time: {days: " is 23 chars: "thurs" in column 24.
            pytest.param(
                "time: {days: thurs}\n",
                [
                    "8:24: unknown day 'thurs' (did you mean 'thu'?); use mon..sun or ranges "
                    "like mon-fri"
                ],
                id="unknown_day_suggests_the_closest",
            ),
            pytest.param(
                "time:\n  days: mon-fry\n",
                [
                    "9:19: unknown day 'fry' (did you mean 'fri'?); use mon..sun or ranges "
                    "like mon-fri"
                ],
                id="unknown_day_at_the_end_of_a_range",
            ),
            pytest.param(
                "request:\n  versionstage: AWSCURRENT\n",
                [
                    "9:13: unknown request attribute 'versionstage' (did you mean "
                    "'version_stage'?); one of protocol, operation, version_stage"
                ],
                id="unknown_request_attribute_suggests_the_closest",
            ),
            pytest.param(
                "source_ip: [10.0.0.0/8]\nsourceip: [10.0.0.0/8]\n",
                ["9:11: unknown key 'sourceip' in when: (did you mean 'source_ip'?)"],
                id="unknown_key_in_when",
            ),
            # line 8: "          time: {days: mon-fri, " is 32 chars: "zone" in column 33.
            pytest.param(
                "time: {days: mon-fri, zone: UTC}\n",
                ["8:33: unknown key 'zone' in a time window (did you mean 'timezone'?)"],
                id="unknown_key_in_time_window",
            ),
            # `principal: {}` names no attribute: an error at the value, not a condition that
            # always holds. line 8: "          principal: " is 21 chars: "{" in column 22.
            pytest.param(
                "principal: {}\n",
                ["8:22: principal must map attribute names to values"],
                id="empty_principal_mapping",
            ),
            pytest.param(
                "source_ip: 300.0.0.0/8\ntime: {days: mon, timezone: Nowhere/City}\n",
                [
                    "8:22: bad network '300.0.0.0/8': '300.0.0.0/8' does not appear to be an "
                    "IPv4 or IPv6 network",
                    "9:39: unknown time zone 'Nowhere/City' (e.g. Europe/Berlin)",
                ],
                id="errors_in_one_rule_are_all_reported",
            ),
            # A time window written as a string (or a list of them) is located too.
            pytest.param(
                'time: "mon-fri 09:00-17:00"\n',
                ["8:17: a time window must be a mapping"],
                id="time-string",
            ),
            pytest.param(
                "time: [mon-fri]\n",
                ["8:18: a time window must be a mapping"],
                id="time-list-of-strings",
            ),
        ],
    )
    def test_when_block_problems(
        self, tmp_path: Path, when_block: str, messages: list[str]
    ) -> None:
        """A mistake in a rule's `when:` block (written from line 8, indented 10 spaces, so its
        keys are in column 11) is reported at its file:line:col, like every policy error."""
        path = write(tmp_path, "p.yaml", RULE_HEAD + textwrap.indent(when_block, " " * 10))

        assert problems_of(path) == tuple(f"{path}:{message}" for message in messages)

    def test_unknown_key_in_unless(self, tmp_path: Path) -> None:
        """The same check applies to `unless:`, and the message says which block."""
        path = write(
            tmp_path,
            "p.yaml",
            RULE_HEAD.replace("when:", "unless:") + "          principals: {team: x}\n",
        )

        assert problems_of(path) == (
            f"{path}:8:11: unknown key 'principals' in unless: (did you mean 'principal'?)",
        )

    def test_when_that_is_not_a_mapping_has_a_position(self, tmp_path: Path) -> None:
        """`when: source_ip` (a plain string) is reported at its file:line:col."""
        path = write(tmp_path, "p.yaml", RULE_HEAD.replace("when:", "when: source_ip"))

        # line 7: "        when: " is 14 chars: "source_ip" in column 15.
        assert problems_of(path) == (f"{path}:7:15: when: must be a mapping",)


class TestExplain:
    def test_failed_source_ip_names_the_address_seen(self, tmp_path: Path) -> None:
        """`explain` says which address was seen and which networks it is not in."""
        engine = guarded(tmp_path, "source_ip: [10.0.0.0/8]")

        applies, reasons = reasons_of(engine, "guarded", ip("192.0.2.1"))

        assert not applies
        assert reasons == ("when: source_ip 192.0.2.1 not in [10.0.0.0/8]",)
        assert reasons_of(engine, "guarded", ip(None)) == (
            False,
            ("when: source_ip (unknown) not in [10.0.0.0/8]",),
        )
        assert reasons_of(engine, "guarded", ip("10.1.2.3")) == (
            True,
            ("when: source_ip 10.1.2.3 in [10.0.0.0/8]",),
        )

    def test_failed_time_names_the_local_moment(self, tmp_path: Path) -> None:
        """`explain` shows the request time in the window's zone and the window as written."""
        engine = guarded(
            tmp_path, "time: {days: mon-fri, from: 09:00, to: 17:00, timezone: Europe/Berlin}"
        )

        applies, reasons = reasons_of(engine, "guarded", Context(at=utc(SAT, 12)))

        assert not applies
        assert reasons == (
            "when: time Sat 2024-01-20 13:00 CET outside mon-fri 09:00-17:00 Europe/Berlin",
        )

    def test_attribute_reasons(self, tmp_path: Path) -> None:
        """`explain` names a missing attribute and quotes a mismatching one."""
        engine = guarded(
            tmp_path,
            """
            principal: {repository: "acme/*"}
            request: {version_stage: AWSCURRENT}
            """,
        )

        applies, reasons = reasons_of(
            engine, "guarded", request(version_stage="AWSPREVIOUS"), claims(repository="evil/x")
        )

        assert not applies
        assert reasons == (
            "when: principal.repository 'evil/x' does not match [acme/*]",
            "when: request.version_stage 'AWSPREVIOUS' does not match [AWSCURRENT]",
        )
        assert reasons_of(engine, "guarded", request())[1] == (
            "when: principal.repository is not set (wanted acme/*)",
            "when: request.version_stage is not set (wanted AWSCURRENT)",
        )

    def test_unless_reasons_on_a_deny_rule(self, tmp_path: Path) -> None:
        """For a deny switched off by `unless:`, explain says the condition held; otherwise
        it says it did not, and the deny decides."""
        engine = engine_for(tmp_path, DENY_OUTSIDE)

        assert reasons_of(engine, "deny-prod-outside", ip("10.1.2.3")) == (
            False,
            ("unless: source_ip 10.1.2.3 in [10.0.0.0/8]",),
        )
        assert reasons_of(engine, "deny-prod-outside", ip("192.0.2.1")) == (
            True,
            ("unless: source_ip 192.0.2.1 not in [10.0.0.0/8]",),
        )
        explanation = engine.explain(APP, Action.READ, ref(PROD_DB), ip("192.0.2.1"))
        assert [(v.rule.id, v.applies) for v in explanation.verdicts] == [
            ("deny-prod-outside", True),
            ("read-prod", True),
        ]
        assert explanation.decision.rule == "deny-prod-outside"

    def test_every_reason_is_listed_even_after_the_first_miss(self, tmp_path: Path) -> None:
        """All conditions are explained, not just up to the first that fails."""
        engine = guarded(tmp_path, TestCombined.COMBINED)
        ctx = Context(source_ip="192.0.2.1", at=utc(SAT, 3), request={"version_stage": "x"})

        applies, reasons = reasons_of(engine, "guarded", ctx, claims(team="search"))

        assert not applies
        assert reasons == (
            "when: source_ip 192.0.2.1 not in [10.0.0.0/8]",
            "when: time Sat 2024-01-20 03:00 UTC outside mon-fri 08:00-18:00 UTC",
            "when: principal.team 'search' does not match [payments]",
            "when: request.version_stage 'x' does not match [AWSCURRENT]",
        )


class TestMappedNetworks:
    def test_an_ipv4_mapped_network_matches_the_ipv4_callers_it_names(self, tmp_path: Path) -> None:
        """`::ffff:203.0.113.0/120` is 203.0.113.0/24: callers' mapped addresses are read as
        IPv4, so the network is too (else an `unless:` on it would never hold)."""
        engine = guarded(tmp_path, 'source_ip: ["::ffff:203.0.113.0/120"]', key="unless")

        assert outcome(engine, Context(source_ip="203.0.113.5")) == DEFAULT_DENY
        assert outcome(engine, Context(source_ip="::ffff:203.0.113.5")) == DEFAULT_DENY
        assert outcome(engine, Context(source_ip="198.51.100.5")) == ALLOWED
