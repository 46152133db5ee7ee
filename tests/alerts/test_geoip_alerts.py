"""Alert rules keyed on where callers are (GeoIP's ``request.geo``): a country or a network
owner new for a principal, a call from a country not listed for it; events without geo
are not judged by any of it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keyledger.alerts.rules import AlertRuleError, FirstSeen, UnusualSource, load_alert_files
from tests.alerts.test_engine import T0, Stream, engine, fired

DAY = timedelta(days=1)
GERMANY = {"country": "DE", "asn": 3320, "as_org": "Deutsche Telekom AG"}
FRANCE = {"country": "FR", "asn": 3215, "as_org": "Orange S.A."}
GERMAN_CLOUD = {"country": "DE", "asn": 24940, "as_org": "Hetzner Online GmbH"}
UNITED_STATES = {"country": "US"}

FIRST_COUNTRY = """
    version: 1
    rules:
      - id: new-country
        severity: medium
        suppress: 0s
        first_seen: {of: country, learning: 14d}
"""
FIRST_ASN = FIRST_COUNTRY.replace("new-country", "new-owner").replace("of: country", "of: asn")
COUNTRIES = """
    version: 1
    rules:
      - id: payments-from-home
        severity: high
        suppress: 0s
        unusual_source:
          countries:
            "svc-*": [DE, FR]
"""
BOTH = """
    version: 1
    rules:
      - id: payments-from-home
        severity: high
        suppress: 0s
        unusual_source:
          networks:
            "svc-*": [10.0.0.0/8]
          countries:
            "svc-*": DE
"""


@pytest.fixture
def stream() -> Stream:
    return Stream()


class TestFirstSeenCountry:
    def test_a_country_new_for_the_principal_after_learning(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        """Learning from DE for 14 days; then DE is known, FR is new (once), a call without
        geo says nothing, and DE is new for another principal."""
        armed = engine(tmp_path, FIRST_COUNTRY)
        learning = [
            stream.event(T0, geo=GERMANY),
            stream.event(T0 + 13 * DAY, geo=GERMAN_CLOUD),
            stream.event(T0 + 13 * DAY, principal="svc-b", geo=FRANCE),
        ]
        assert fired(armed, learning) == []

        later = [
            stream.event(T0 + 14 * DAY, geo=GERMANY),
            stream.event(T0 + 15 * DAY, geo=FRANCE),
            stream.event(T0 + 15 * DAY, geo=FRANCE),
            stream.event(T0 + 16 * DAY, source="10.0.0.5"),  # internal: no geo
            stream.event(T0 + 16 * DAY, principal="svc-b", geo=GERMANY),
        ]
        alerts = fired(armed, later)

        assert [(a.key, a.time) for a in alerts] == [
            ("principal svc-a country FR", T0 + 15 * DAY),
            ("principal svc-b country DE", T0 + 16 * DAY),
        ]
        assert alerts[0].summary == "svc-a called from country FR, not seen for it in 14d"
        assert alerts[0].detail == {"country": "FR", "last_seen": None}
        assert alerts[0].detector == "first_seen"

    def test_learning_starts_with_the_first_event_that_has_a_country(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        """Weeks of calls before GeoIP was configured do not count as learning: a country
        is not flagged until 14 days of events with countries have been seen."""
        armed = engine(tmp_path, FIRST_COUNTRY)
        before = [stream.event(T0 + n * DAY, source=f"203.0.113.{n}") for n in range(30)]
        assert fired(armed, before) == []

        start = T0 + 30 * DAY
        assert fired(armed, [stream.event(start, geo=GERMANY)]) == []
        assert fired(armed, [stream.event(start + 13 * DAY, geo=FRANCE)]) == []
        (alert,) = fired(armed, [stream.event(start + 14 * DAY, geo=UNITED_STATES)])
        assert alert.key == "principal svc-a country US"

    def test_a_country_unseen_for_longer_than_learning_is_new_again(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        armed = engine(tmp_path, FIRST_COUNTRY)
        events = [
            stream.event(T0, geo=FRANCE),
            stream.event(T0 + 13 * DAY, geo=GERMANY),
            stream.event(T0 + 29 * DAY, geo=FRANCE),
        ]

        (alert,) = fired(armed, events)

        assert alert.key == "principal svc-a country FR"
        assert alert.detail["last_seen"] == "2026-03-02T10:00:00+00:00"

    def test_failed_sign_ins_are_not_first_seen(self, tmp_path: Path, stream: Stream) -> None:
        """As for secrets and networks, only calls that got through are learnt from."""
        armed = engine(tmp_path, FIRST_COUNTRY)
        fired(armed, [stream.event(T0, geo=GERMANY)])

        late = stream.event(T0 + 20 * DAY, kind="auth_failure", geo=UNITED_STATES)
        assert fired(armed, [late]) == []


class TestFirstSeenAsn:
    def test_a_network_owner_new_for_the_principal(self, tmp_path: Path, stream: Stream) -> None:
        """The same country from another network owner (a cloud instead of the office's
        ISP) is new; events with a country but no ASN are not looked at."""
        armed = engine(tmp_path, FIRST_ASN)
        events = [
            stream.event(T0, geo=GERMANY),
            stream.event(T0 + 14 * DAY, geo=GERMANY),
            stream.event(T0 + 15 * DAY, geo=UNITED_STATES),
            stream.event(T0 + 15 * DAY, geo=GERMAN_CLOUD),
        ]

        (alert,) = fired(armed, events)

        assert alert.key == "principal svc-a asn 24940"
        assert alert.summary == (
            "svc-a called from AS24940 (Hetzner Online GmbH), not seen for it in 14d"
        )
        assert alert.detail == {"asn": 24940, "as_org": "Hetzner Online GmbH", "last_seen": None}

    def test_an_owner_without_a_name(self, tmp_path: Path, stream: Stream) -> None:
        armed = engine(tmp_path, FIRST_ASN)
        events = [stream.event(T0, geo=GERMANY), stream.event(T0 + 15 * DAY, geo={"asn": 64496})]

        (alert,) = fired(armed, events)

        assert alert.summary == "svc-a called from AS64496, not seen for it in 14d"
        assert alert.detail == {"asn": 64496, "last_seen": None}


class TestUnusualSourceCountries:
    def test_a_call_from_a_country_not_listed(self, tmp_path: Path, stream: Stream) -> None:
        """DE and FR pass; US fires, keyed by the country; a call GeoIP did not place and a
        principal no glob names are not judged; failed sign-ins are judged too."""
        alerts = fired(
            engine(tmp_path, COUNTRIES),
            [
                stream.event(T0, geo=GERMANY),
                stream.event(T0, geo=FRANCE),
                stream.event(T0, source="198.51.100.9", geo=UNITED_STATES),
                stream.event(T0, source="192.0.2.1"),  # no geo: not judged
                stream.event(T0, principal="web-1", geo=UNITED_STATES),  # not named
                stream.event(T0, kind="auth_failure", geo=UNITED_STATES),
            ],
        )

        assert [a.key for a in alerts] == ["principal svc-a country US"] * 2
        assert alerts[0].summary == "svc-a called from 198.51.100.9 (US), outside DE, FR"
        assert alerts[0].detail == {"source_ip": "198.51.100.9", "country": "US"}

    def test_networks_and_countries_are_each_judged(self, tmp_path: Path, stream: Stream) -> None:
        """Inside the networks and in Germany: quiet. Off the networks: fires by source, as
        without countries. On the networks but placed abroad: fires by country."""
        alerts = fired(
            engine(tmp_path, BOTH),
            [
                stream.event(T0, source="10.0.0.5"),
                stream.event(T0, source="10.0.0.6", geo=GERMANY),
                stream.event(T0, source="203.0.113.7", geo=GERMANY),
                stream.event(T0, source="203.0.113.8", geo=UNITED_STATES),
                stream.event(T0, source="10.0.0.7", geo=FRANCE),
            ],
        )

        assert [(a.key, a.summary) for a in alerts] == [
            ("principal svc-a source 203.0.113.7", "svc-a called from 203.0.113.7 (DE), outside "
             "10.0.0.0/8"),
            ("principal svc-a source 203.0.113.8", "svc-a called from 203.0.113.8 (US), outside "
             "10.0.0.0/8 and DE"),
            ("principal svc-a country FR", "svc-a called from 10.0.0.7 (FR), outside DE"),
        ]  # fmt: skip

    def test_each_table_has_its_own_globs(self, tmp_path: Path, stream: Stream) -> None:
        """A principal only the countries name is judged by country alone."""
        text = BOTH.replace('"svc-*": DE', '"svc-*": DE\n            "web-*": [US]')
        alerts = fired(
            engine(tmp_path, text),
            [
                stream.event(T0, principal="web-1", source="198.51.100.9", geo=UNITED_STATES),
                stream.event(T0, principal="web-1", source="203.0.113.9", geo=GERMANY),
            ],
        )
        assert [a.key for a in alerts] == ["principal web-1 country DE"]


def load(tmp_path: Path, block: str) -> Any:
    path = tmp_path / "alerts.yaml"
    path.write_text(f"rules:\n  - id: x\n    severity: low\n{block}")
    return load_alert_files([path])


class TestRuleFiles:
    def test_what_the_loader_reads(self, tmp_path: Path) -> None:
        rules = load(
            tmp_path,
            "    unusual_source:\n      countries:\n        svc-*: [DE, FR]\n        ci-*: US\n",
        )
        (rule,) = rules
        assert rule.detector == UnusualSource(
            countries=(("svc-*", frozenset({"DE", "FR"})), ("ci-*", frozenset({"US"})))
        )
        (asn,) = load(tmp_path, "    first_seen: {of: asn, learning: 30d}\n")
        assert asn.detector == FirstSeen("asn", timedelta(days=30))

    @pytest.mark.parametrize(
        ("block", "problem"),
        [
            (
                "    unusual_source:\n      countries:\n        svc-*: [DE, de]\n",
                "6:21: bad country 'de': a country is its ISO 3166-1 alpha-2 code, two "
                "upper-case letters (DE, US, GB)",
            ),
            (
                "    unusual_source:\n      countries:\n        svc-*: DEU\n",
                "6:16: bad country 'DEU'",
            ),
            (
                "    unusual_source:\n      countries:\n        svc-*: []\n",
                "6:16: svc-* needs at least one country (DE)",
            ),
            (
                "    unusual_source:\n      countries:\n        svc-*: [49]\n",
                "6:16: unusual_source.countries.svc-* must be a list of strings",
            ),
            (
                "    unusual_source:\n      networks: {svc-*: 10.0.0.0/8}\n      countries: {}\n",
                "5:7: unusual_source needs countries: {principal glob: [DE, FR]}",
            ),
            (
                "    unusual_source: {}\n",
                "4:21: unusual_source needs networks: {principal glob: [networks]}, countries: "
                "{principal glob: [countries]}, or both",
            ),
            (
                "    unusual_source: {country: {svc-*: DE}}\n",
                "4:22: unknown key 'country' in unusual_source (did you mean 'countries'?)",
            ),
            (
                "    first_seen: {of: contry}\n",
                "4:22: first_seen is of secret, network, country or asn, not 'contry' (did "
                "you mean 'country'?)",
            ),
        ],
    )
    def test_mistakes_are_reported_where_they_are(
        self, tmp_path: Path, block: str, problem: str
    ) -> None:
        with pytest.raises(AlertRuleError) as caught:
            load(tmp_path, block)
        assert any(
            p.startswith(f"{tmp_path}/alerts.yaml:{problem}") for p in caught.value.problems
        ), caught.value.problems
