"""Event filters: who, what, which secret, which decision, when; from options or a query."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from multidict import MultiDict

from keyledger.proxy.audit.filters import (
    EventFilter,
    add_filter_arguments,
    effect_of,
    filter_from_args,
    filter_from_query,
    parse_time,
)
from tests.audit_records import access_event, auth_failure_event, lifecycle_event

NOW = datetime(2026, 11, 23, 21, 55, 1, 123456, tzinfo=UTC)


def access(
    *,
    principal: str = "svc-payments",
    secret: str | None = "prod/db/password",
    action: str = "read",
    effect: str = "allow",
    protocol: str = "aws-json",
    at: datetime = NOW,
) -> dict[str, Any]:
    return access_event(
        at=at,
        protocol=protocol,
        principal=principal,
        action=action,
        secret=secret,
        effect=effect,
        rule="r",
        reason="because",
    ).to_record()


def auth_failure() -> dict[str, Any]:
    return auth_failure_event(at=NOW, principal="AKIAEXAMPLE", code="InvalidSignature").to_record()


def lifecycle() -> dict[str, Any]:
    return lifecycle_event(NOW).to_record()


class TestEventFilter:
    def test_empty_filter_keeps_everything(self) -> None:
        """With no conditions every event passes, even one missing most fields."""
        keep = EventFilter()
        assert keep.matches(access())
        assert keep.matches(lifecycle())
        assert keep.matches({})

    def test_principal_exact_and_glob(self) -> None:
        """--principal takes an identity or a glob of identities."""
        assert EventFilter(principals=frozenset({"svc-payments"})).matches(access())
        assert EventFilter(principals=frozenset({"svc-*"})).matches(access())
        assert not EventFilter(principals=frozenset({"svc-pay"})).matches(access())
        assert not EventFilter(principals=frozenset({"SVC-*"})).matches(access())

    def test_secret_glob_crosses_slashes(self) -> None:
        """A secret glob's '*' matches across '/' so prod/* covers every prod secret."""
        prod = EventFilter(secrets=frozenset({"prod/*"}))
        assert prod.matches(access(secret="prod/db/password"))
        assert not prod.matches(access(secret="staging/db/password"))
        assert EventFilter(secrets=frozenset({"*/password"})).matches(access())
        assert EventFilter(secrets=frozenset({"prod/db/p?ssword"})).matches(access())

    def test_secret_glob_may_name_the_backend(self) -> None:
        """A pattern written as policies write it (aws:prod/*) matches too."""
        assert EventFilter(secrets=frozenset({"aws:prod/*"})).matches(access())
        assert not EventFilter(secrets=frozenset({"gcp:prod/*"})).matches(access())

    def test_several_globs_are_alternatives(self) -> None:
        """Repeating --secret keeps events matching any of the patterns."""
        either = EventFilter(secrets=frozenset({"staging/*", "prod/db/*"}))
        assert either.matches(access(secret="staging/x"))
        assert either.matches(access(secret="prod/db/password"))
        assert not either.matches(access(secret="prod/api/key"))

    def test_event_without_the_field_does_not_match(self) -> None:
        """Events with no secret or principal are left out when one is asked for."""
        assert not EventFilter(secrets=frozenset({"*"})).matches(lifecycle())
        assert not EventFilter(secrets=frozenset({"*"})).matches(access(secret=None))
        assert not EventFilter(principals=frozenset({"*"})).matches(lifecycle())

    def test_action(self) -> None:
        """--action keeps only calls that did that to a secret."""
        writes = EventFilter(actions=frozenset({"write", "rotate"}))
        assert writes.matches(access(action="rotate"))
        assert not writes.matches(access(action="read"))
        assert not writes.matches(lifecycle())

    def test_effect(self) -> None:
        """--effect keeps allowed or denied calls by what policy decided."""
        denied = EventFilter(effects=frozenset({"deny"}))
        assert denied.matches(access(effect="deny"))
        assert not denied.matches(access(effect="allow"))
        assert EventFilter(effects=frozenset({"allow"})).matches(access(effect="allow"))

    def test_auth_failure_counts_as_deny(self) -> None:
        """A failed sign-in has no decision but is shown among the denials."""
        assert effect_of(auth_failure()) == "deny"
        assert EventFilter(effects=frozenset({"deny"})).matches(auth_failure())
        assert not EventFilter(effects=frozenset({"allow"})).matches(auth_failure())
        assert not EventFilter(effects=frozenset({"deny"})).matches(lifecycle())

    def test_protocol(self) -> None:
        """--protocol keeps calls that came in on that wire protocol."""
        aws = EventFilter(protocols=frozenset({"aws-json"}))
        assert aws.matches(access(protocol="aws-json"))
        assert not aws.matches(access(protocol="gcp-rest"))
        assert not aws.matches(lifecycle())

    def test_type(self) -> None:
        """--type keeps events of those kinds."""
        kinds = EventFilter(types=frozenset({"auth_failure", "lifecycle"}))
        assert kinds.matches(auth_failure())
        assert kinds.matches(lifecycle())
        assert not kinds.matches(access())

    def test_since_is_inclusive_and_until_exclusive(self) -> None:
        """Consecutive windows [since, until) neither overlap nor leave a gap."""
        window = EventFilter(since=NOW, until=NOW + timedelta(seconds=1))
        assert window.matches(access(at=NOW))
        assert window.matches(access(at=NOW + timedelta(microseconds=999_999)))
        assert not window.matches(access(at=NOW + timedelta(seconds=1)))
        assert not window.matches(access(at=NOW - timedelta(microseconds=1)))

    def test_times_in_other_zones_compare_as_instants(self) -> None:
        """A since given with an offset is converted to UTC before comparing."""
        plus_two = timezone(timedelta(hours=2))
        since = (NOW + timedelta(minutes=1)).astimezone(plus_two)
        assert not EventFilter(since=since).matches(access(at=NOW))
        assert EventFilter(until=since).matches(access(at=NOW))

    def test_conditions_must_all_hold(self) -> None:
        """Different kinds of condition combine: every one must match."""
        both = EventFilter(principals=frozenset({"svc-payments"}), effects=frozenset({"deny"}))
        assert both.matches(access(effect="deny"))
        assert not both.matches(access(effect="allow"))
        assert not both.matches(access(principal="svc-other", effect="deny"))

    def test_malformed_fields_do_not_match_or_crash(self) -> None:
        """A record with fields of the wrong shape is simply left out."""
        odd: dict[str, Any] = {
            "type": ["access"],
            "time": 5,
            "principal": "svc-payments",
            "resource": {"secret": 7},
            "action": {"read": True},
            "decision": "allow",
        }
        for keep in (
            EventFilter(types=frozenset({"access"})),
            EventFilter(since=NOW),
            EventFilter(principals=frozenset({"*"})),
            EventFilter(secrets=frozenset({"*"})),
            EventFilter(actions=frozenset({"read"})),
            EventFilter(effects=frozenset({"allow"})),
        ):
            assert not keep.matches(odd)

    def test_unknown_choice_is_refused_with_a_suggestion(self) -> None:
        """A misspelt action fails loudly instead of silently matching nothing."""
        with pytest.raises(ValueError, match=r"unknown action 'reed'.*did you mean 'read'"):
            EventFilter(actions=frozenset({"reed"}))
        with pytest.raises(ValueError, match="unknown effect 'permit'"):
            EventFilter(effects=frozenset({"permit"}))

    def test_naive_times_are_refused(self) -> None:
        """A time without a zone is ambiguous, so the filter will not guess."""
        with pytest.raises(ValueError, match="aware"):
            EventFilter(since=datetime(2026, 11, 23))

    def test_filters_with_the_same_conditions_are_equal(self) -> None:
        """Two filters asking for the same events compare and hash equal."""
        one = EventFilter(actions=frozenset({"read", "list"}), since=NOW)
        two = EventFilter(actions=frozenset({"list", "read"}), since=NOW)
        assert one == two
        assert hash(one) == hash(two)


class TestParseTime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-23", datetime(2026, 11, 23, tzinfo=UTC)),
            ("2026-11-23T10:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),
            ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
            ("2026-11-23 10:00:00+02:00", datetime(2026, 11, 23, 8, tzinfo=UTC)),
            ("2026-11-23T10:00:00.5-01:00", datetime(2026, 11, 23, 11, 0, 0, 500000, tzinfo=UTC)),
        ],
    )
    def test_absolute_times(self, text: str, expected: datetime) -> None:
        """Dates and RFC 3339 times are accepted; without an offset they are UTC."""
        parsed = parse_time(text, NOW)
        assert parsed == expected
        assert parsed.utcoffset() is not None

    @pytest.mark.parametrize(
        ("text", "ago"),
        [
            ("90s", timedelta(seconds=90)),
            ("15m", timedelta(minutes=15)),
            ("2h", timedelta(hours=2)),
            ("7d", timedelta(days=7)),
            ("1w", timedelta(weeks=1)),
            (" 2H ", timedelta(hours=2)),
            ("now", timedelta(0)),
        ],
    )
    def test_relative_ages(self, text: str, ago: timedelta) -> None:
        """An age such as 15m means that long before now."""
        assert parse_time(text, NOW) == NOW - ago

    @pytest.mark.parametrize("text", ["yesterday", "15 minutes", "-5m", "2026-13-01", "1.5h", ""])
    def test_bad_input_says_what_is_accepted(self, text: str) -> None:
        """Unreadable times are refused with the forms that would work."""
        with pytest.raises(ValueError, match=r"2026-11-23|age") as caught:
            parse_time(text, NOW)
        assert "15m" in str(caught.value)

    def test_an_age_beyond_the_calendar_is_refused(self) -> None:
        """An absurd age is a clear error, not an overflow traceback."""
        with pytest.raises(ValueError, match="further back"):
            parse_time("999999999d", NOW)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="keyledger audit tail")
    add_filter_arguments(parser)
    return parser.parse_args(argv)


class TestFilterFromArgs:
    def test_options_build_the_filter(self) -> None:
        """Every option is repeatable and lands in the filter."""
        args = parse(
            "--principal",
            "svc-*",
            "--secret",
            "prod/*",
            "--secret",
            "staging/*",
            "--action",
            "read",
            "--effect",
            "deny",
            "--protocol",
            "aws-json",
            "--type",
            "access",
            "--since",
            "2h",
            "--until",
            "now",
        )
        built = filter_from_args(args, NOW)
        assert built == EventFilter(
            principals=frozenset({"svc-*"}),
            secrets=frozenset({"prod/*", "staging/*"}),
            actions=frozenset({"read"}),
            effects=frozenset({"deny"}),
            protocols=frozenset({"aws-json"}),
            types=frozenset({"access"}),
            since=NOW - timedelta(hours=2),
            until=NOW,
        )

    def test_no_options_keep_everything(self) -> None:
        """Without options the filter is the empty one."""
        assert filter_from_args(parse(), NOW) == EventFilter()

    def test_closed_sets_are_choices(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A misspelt --effect is an argparse usage error listing the choices."""
        with pytest.raises(SystemExit):
            parse("--effect", "alow")
        assert "allow" in capsys.readouterr().err

    def test_bad_time_names_the_option(self) -> None:
        """An unreadable --since is reported against --since."""
        with pytest.raises(ValueError, match=r"^--since: 'soon' is not a time"):
            filter_from_args(parse("--since", "soon"), NOW)

    def test_since_after_until_is_refused(self) -> None:
        """A window that ends before it starts is an error, not an empty result."""
        with pytest.raises(ValueError, match=r"--since .* is after --until"):
            filter_from_args(parse("--since", "1h", "--until", "2h"), NOW)

    def test_help_explains_every_option(self) -> None:
        """--help documents the filter options and the time forms."""
        parser = argparse.ArgumentParser(prog="keyledger audit tail")
        add_filter_arguments(parser)
        text = parser.format_help()
        for option in ("--principal", "--secret", "--action", "--effect", "--protocol"):
            assert option in text
        assert "15m" in text
        assert "'*' crosses '/'" in text


class TestFilterFromQuery:
    def test_comma_separated_and_repeated_values(self) -> None:
        """?action=read,list&action=write asks for any of the three."""
        query = MultiDict([("action", "read,list"), ("action", "write"), ("secret", "prod/*")])
        built = filter_from_query(query, NOW)
        assert built.actions == {"read", "list", "write"}
        assert built.secrets == {"prod/*"}

    def test_plain_mapping(self) -> None:
        """A plain dict of parameters works as well as a multidict."""
        built = filter_from_query({"effect": "deny", "since": "15m", "type": "access"}, NOW)
        assert built == EventFilter(
            effects=frozenset({"deny"}),
            types=frozenset({"access"}),
            since=NOW - timedelta(minutes=15),
        )

    def test_other_parameters_are_left_to_the_handler(self) -> None:
        """Parameters the filter does not know (format, last) are ignored."""
        assert filter_from_query({"format": "json", "last": "10"}, NOW) == EventFilter()

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ({"effect": "alow"}, r"query parameter 'effect': unknown effect 'alow'"),
            ({"type": "acces"}, r"query parameter 'type': .*did you mean 'access'"),
            ({"action": "read,reed"}, r"query parameter 'action': unknown action 'reed'"),
            ({"since": "tomorrow"}, r"query parameter 'since': 'tomorrow' is not a time"),
            ({"since": "1h", "until": "2h"}, r"'since' .* is after query parameter 'until'"),
        ],
    )
    def test_bad_values_name_the_parameter(self, query: dict[str, str], message: str) -> None:
        """A bad value is refused with a message naming the parameter."""
        with pytest.raises(ValueError, match=message):
            filter_from_query(query, NOW)

    def test_one_time_per_bound(self) -> None:
        """since given twice is ambiguous and refused."""
        with pytest.raises(ValueError, match="query parameter 'since': give one time"):
            filter_from_query(MultiDict([("since", "1h"), ("since", "2h")]), NOW)
