"""GeoIP: events carry the country and the network owner of the caller's address when the
operator gives MaxMind DB files, and nothing changes without them.

The databases are small ones written here with mmdb-writer, in the layout MaxMind's own
have (an IPv6 tree with IPv4 under ::/96, ``country.iso_code``, ``autonomous_system_*``).
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from mmdb_writer import MMDBWriter
from multidict import CIMultiDict
from netaddr import IPSet

from keyledger.policies.conditions import parse_ip
from keyledger.proxy.app import GATEWAYS, StartupError, load_geoip
from keyledger.proxy.audit.events import AuditEvent, EventType, GeoInfo, RequestInfo
from keyledger.proxy.audit.verify import verify_path
from keyledger.proxy.config import ConfigError, load_config
from keyledger.proxy.geoip import GeoIp, GeoIpError, is_internal
from keyledger.proxy.wire import WireRequest, WireResponse
from tests.conftest import RunningProxy, running_proxy

COUNTRIES = {
    "203.0.113.0/24": "DE",
    "198.51.100.0/24": "US",
    "2001:db8::/32": "FR",
    # Never asked: internal addresses are not looked up, whatever a database says.
    "10.0.0.0/8": "ZZ",
    "127.0.0.0/8": "ZZ",
}
NETWORK_OWNERS = {"203.0.113.0/24": (3320, "Deutsche Telekom AG"), "2001:db8::/32": (64496, "")}


def write_country_db(path: Path, countries: Mapping[str, str] = COUNTRIES) -> Path:
    """A Country database as GeoLite2-Country lays it out (names in two languages)."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-Country",
        languages=["en", "de"],
        description="keyledger test countries",
    )
    for network, code in countries.items():
        writer.insert_network(
            IPSet([network]),
            {
                "continent": {"code": "EU", "names": {"en": "Europe", "de": "Europa"}},
                "country": {"iso_code": code, "names": {"en": code, "de": code}},
                "registered_country": {"iso_code": code},
            },
        )
    writer.to_db_file(str(path))
    return path


def write_asn_db(path: Path, owners: Mapping[str, tuple[int, str]] = NETWORK_OWNERS) -> Path:
    """An ASN database as GeoLite2-ASN lays it out."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    for network, (number, name) in owners.items():
        record: dict[str, Any] = {"autonomous_system_number": number}
        if name:
            record["autonomous_system_organization"] = name
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def databases(tmp_path: Path) -> tuple[Path, Path]:
    geo = tmp_path / "geo"
    geo.mkdir()
    return write_country_db(geo / "country.mmdb"), write_asn_db(geo / "asn.mmdb")


@pytest.fixture
def geoip(databases: tuple[Path, Path]) -> GeoIp:
    country, asn = databases
    return GeoIp(country_db=country, asn_db=asn)


INTERNAL = ["10.1.2.3", "::ffff:10.1.2.3", "192.168.0.9", "100.64.0.1", "fd00::1"]
INTERNAL += ["127.0.0.1", "::1", "fe80::1", "169.254.0.1", "0.0.0.0", "224.0.0.1"]
# What a request record holds without geo, in its order.
PLAIN_REQUEST = ["id", "protocol", "operation", "source_ip", "user_agent"]


class TestLookup:
    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("203.0.113.7", GeoInfo(country="DE", asn=3320, as_org="Deutsche Telekom AG")),
            ("::ffff:203.0.113.7", GeoInfo(country="DE", asn=3320, as_org="Deutsche Telekom AG")),
            ("198.51.100.9", GeoInfo(country="US")),
            ("2001:db8::5", GeoInfo(country="FR", asn=64496)),
        ],
    )
    def test_what_the_databases_know(self, geoip: GeoIp, address: str, expected: GeoInfo) -> None:
        """IPv4, IPv4-mapped IPv6 (read as IPv4) and IPv6: the country from one database,
        the network owner from the other, only the fields found."""
        assert geoip.lookup(address) == expected

    @pytest.mark.parametrize(
        "address",
        INTERNAL,
    )
    def test_internal_addresses_are_not_looked_up(self, geoip: GeoIp, address: str) -> None:
        """Private, loopback, link-local, CGNAT, multicast: no country, not even the one a
        database claims for them (10/8 and 127/8 are in the test database as ZZ)."""
        assert geoip.lookup(address) is None

    @pytest.mark.parametrize("address", ["192.0.2.1", "8.8.8.8", "2001:db9::1", "", "a-socket"])
    def test_unknown_addresses_and_non_addresses_give_nothing(
        self, geoip: GeoIp, address: str
    ) -> None:
        assert geoip.lookup(address) is None

    def test_either_database_alone(self, databases: tuple[Path, Path]) -> None:
        """With only a country database events carry the country; with only the ASN
        database, the network owner."""
        country, asn = databases
        assert GeoIp(country_db=country).lookup("203.0.113.7") == GeoInfo(country="DE")
        assert GeoIp(asn_db=asn).lookup("203.0.113.7") == GeoInfo(
            asn=3320, as_org="Deutsche Telekom AG"
        )
        assert GeoIp(asn_db=asn).lookup("198.51.100.9") is None

    def test_the_c_extension_reads_the_databases(self, geoip: GeoIp) -> None:
        """maxminddb's wheels carry the C extension, and MODE_AUTO picks it."""
        assert geoip.extension

    def test_an_ipv4_only_database_answers_nothing_for_ipv6(self, tmp_path: Path) -> None:
        writer = MMDBWriter(ip_version=4, database_type="GeoLite2-Country")
        writer.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "DE"}})
        writer.to_db_file(str(tmp_path / "v4.mmdb"))
        geoip = GeoIp(country_db=tmp_path / "v4.mmdb")

        assert geoip.lookup("2001:db8::5") is None
        assert geoip.lookup("203.0.113.7") == GeoInfo(country="DE")

    @pytest.mark.parametrize(
        ("address", "internal"),
        [
            ("::ffff:192.168.1.1", True),  # read as the IPv4 it maps, as policies read it
            ("172.31.255.255", True),
            ("172.32.0.0", False),
            ("100.127.255.255", True),
            ("100.128.0.0", False),
            ("fbff:ffff::1", False),
            ("fdff:ffff::1", True),
            ("192.0.2.1", False),  # documentation: not in a database, but not internal
            ("::", True),
            ("2001:db8::1", False),
        ],
    )
    def test_internal_at_the_edges(self, address: str, internal: bool) -> None:
        ip = parse_ip(address)
        assert ip is not None
        assert is_internal(ip) is internal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replace_file(path: Path, write: Any) -> None:
    """As geoipupdate does: a new file, renamed over the old one."""
    fresh = path.with_suffix(".new")
    write(fresh)
    os.replace(fresh, path)


class TestReload:
    def test_a_replaced_database_is_read_within_a_minute(
        self, databases: tuple[Path, Path]
    ) -> None:
        """The weekly update renamed over the file: answers (cached ones too) stay as they
        were until the next check, then come from the new file."""
        country, asn = databases
        clock = Clock()
        geoip = GeoIp(country_db=country, asn_db=asn, clock=clock)
        assert geoip.lookup("198.51.100.9") == GeoInfo(country="US")

        replace_file(country, lambda p: write_country_db(p, {"198.51.100.0/24": "CA"}))
        clock.now += 59
        assert geoip.lookup("198.51.100.9") == GeoInfo(country="US")
        clock.now += 1
        assert geoip.lookup("198.51.100.9") == GeoInfo(country="CA")
        assert geoip.lookup("203.0.113.7") == GeoInfo(asn=3320, as_org="Deutsche Telekom AG")

    def test_a_broken_replacement_keeps_the_database_in_use(
        self, databases: tuple[Path, Path]
    ) -> None:
        """A file that is not a database (a failed download) does not take the place of
        the one in use; a good one later does."""
        country, _ = databases
        clock = Clock()
        geoip = GeoIp(country_db=country, clock=clock)

        replace_file(country, lambda p: p.write_bytes(b"<html>rate limited</html>"))
        clock.now += 60
        assert geoip.lookup("203.0.113.7") == GeoInfo(country="DE")

        replace_file(country, lambda p: write_country_db(p, {"203.0.113.0/24": "AT"}))
        clock.now += 60
        assert geoip.lookup("203.0.113.7") == GeoInfo(country="AT")

    def test_a_missing_file_keeps_the_database_in_use(self, databases: tuple[Path, Path]) -> None:
        country, _ = databases
        clock = Clock()
        geoip = GeoIp(country_db=country, clock=clock)
        country.unlink()
        clock.now += 60

        assert geoip.lookup("203.0.113.7") == GeoInfo(country="DE")


class TestEvents:
    def request(self, geo: GeoInfo | None) -> dict[str, Any]:
        event = AuditEvent(
            type=EventType.ACCESS,
            request=RequestInfo(
                id="r1",
                protocol="aws-json",
                operation="GetSecretValue",
                source_ip="203.0.113.7",
                user_agent=None,
                geo=geo,
            ),
        )
        request: dict[str, Any] = event.to_record()["request"]
        return request

    def test_without_geo_the_record_is_as_before(self) -> None:
        assert list(self.request(None)) == PLAIN_REQUEST

    def test_only_the_fields_found(self) -> None:
        assert self.request(GeoInfo(country="DE", asn=3320, as_org="DTAG"))["geo"] == {
            "country": "DE",
            "asn": 3320,
            "as_org": "DTAG",
        }
        assert self.request(GeoInfo(asn=64496))["geo"] == {"asn": 64496}


def write_config(tmp_path: Path, geoip: str) -> Path:
    path = tmp_path / "conf" / "keyledger.yaml"
    path.parent.mkdir(exist_ok=True)
    text = """
        policies: [policies/]
        backends:
          aws: {region: eu-west-1}
    """
    path.write_text(textwrap.dedent(text).lstrip() + geoip, encoding="utf-8")
    return path


class TestConfig:
    def test_paths_are_read_from_the_configs_folder(self, tmp_path: Path) -> None:
        path = write_config(tmp_path, "geoip:\n  country_db: geo/c.mmdb\n  asn_db: /srv/a.mmdb\n")

        config = load_config(path)

        assert config.geoip.country_db == path.parent / "geo" / "c.mmdb"
        assert config.geoip.asn_db == Path("/srv/a.mmdb")
        assert config.geoip.enabled

    def test_without_the_section_nothing_is_opened(self, tmp_path: Path) -> None:
        config = load_config(write_config(tmp_path, ""))

        assert not config.geoip.enabled
        assert load_geoip(config) is None

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("geoip:\n  city_db: c.mmdb\n", "5:3: geoip.city_db: unknown key (did you mean"),
            ("geoip:\n  country_db: ''\n", "5:15: geoip.country_db: expected the path of a"),
            ("geoip:\n  asn_db: [a.mmdb]\n", "5:11: geoip.asn_db: expected a string, got list"),
            ("geoip: GeoLite2-Country.mmdb\n", "4:8: geoip: expected a mapping"),
        ],
    )
    def test_mistakes_are_refused_where_they_are(
        self, tmp_path: Path, text: str, expected: str
    ) -> None:
        path = write_config(tmp_path, text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert str(caught.value).startswith(f"{path}:{expected}"), str(caught.value)

    @pytest.mark.parametrize(
        ("setting", "content", "problem"),
        [
            ("country_db", None, "cannot read {path}: No such file or directory (it should be"),
            ("asn_db", b"", "{path} is not a MaxMind DB file (.mmdb); expected a GeoLite2-ASN"),
            ("country_db", b"<html>", "{path} is not a MaxMind DB file (.mmdb); expected a"),
            ("country_db", "asn", "{path} is a GeoLite2-ASN database; country_db expects"),
            ("asn_db", "country", "{path} is a GeoLite2-Country database; asn_db expects"),
        ],
    )
    def test_a_database_that_cannot_be_used_stops_the_start(
        self, tmp_path: Path, setting: str, content: bytes | str | None, problem: str
    ) -> None:
        """A missing file, a file that is not a MaxMind DB, or the two settings swapped:
        keyledger does not start, and says where the setting is and what it wants."""
        database = tmp_path / "conf" / "geo.mmdb"
        path = write_config(tmp_path, f"geoip:\n  {setting}: geo.mmdb\n")
        if content == "asn":
            write_asn_db(database)
        elif content == "country":
            write_country_db(database)
        elif isinstance(content, bytes):
            database.write_bytes(content)
        config = load_config(path)

        with pytest.raises(StartupError) as caught:
            load_geoip(config)

        assert str(caught.value).startswith(
            f"{path}:5:{len(setting) + 5}: geoip.{setting}: " + problem.format(path=database)
        ), str(caught.value)

    def test_the_error_names_the_setting(self, tmp_path: Path) -> None:
        with pytest.raises(GeoIpError) as caught:
            GeoIp(country_db=write_country_db(tmp_path / "c.mmdb"), asn_db=tmp_path / "none")
        assert caught.value.setting == "asn_db"


# -- through a running proxy -------------------------------------------------------------


def signed_wire(
    proxy: RunningProxy, operation: str, body: Mapping[str, Any], *, source_ip: str, key: str
) -> WireRequest:
    """A request as the proxy's listener hands it on, from ``source_ip``, signed by botocore
    with ``key``'s credentials (or made-up ones, for a key that is not one)."""
    data = orjson.dumps(body)
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8443/",
        data=data,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"secretsmanager.{operation}",
        },
    )
    issued = proxy.keys.get(key)
    credentials = (
        Credentials(issued.access_key_id, issued.secret_access_key)
        if issued is not None
        else Credentials("AKKLNOBODY0000000000", "x" * 40)
    )
    SigV4Auth(credentials, "secretsmanager", "us-east-1").add_auth(request)
    headers = CIMultiDict((name.lower(), value) for name, value in request.headers.items())
    headers["host"] = "127.0.0.1:8443"
    return WireRequest(
        method="POST",
        path="/",
        query=(),
        headers=headers,
        body=data,
        source_ip=source_ip,
        user_agent="botocore",
        request_id=f"req-{source_ip}",
    )


def served(proxy: RunningProxy, wire: WireRequest) -> WireResponse:
    """``wire`` through the proxy's own AWS request path, on its loop."""
    assert proxy.app is not None
    gateway = proxy.app[GATEWAYS]["aws-json"]
    return asyncio.run_coroutine_threadsafe(gateway.handle(wire), proxy._loop).result(30)


class TestThroughTheProxy:
    def test_events_carry_where_the_caller_is(
        self,
        tmp_path: Path,
        moto_url: str,
        store: Any,
        store_credentials: None,
        databases: tuple[Path, Path],
    ) -> None:
        """With both databases configured: a read from a German address records DE and its
        network owner; a failed sign-in from a US address records US; boto3 over loopback
        (the tests' own socket) records no geo at all."""
        store.create_secret(Name="app/db", SecretString="s3cret")
        geoip = {"country_db": "geo/country.mmdb", "asn_db": "geo/asn.mmdb"}
        with running_proxy(tmp_path, moto_url, extra={"geoip": geoip}) as proxy:
            assert proxy.client().get_secret_value(SecretId="app/db")["SecretString"] == "s3cret"
            read = signed_wire(
                proxy, "GetSecretValue", {"SecretId": "app/db"}, source_ip="203.0.113.7", key="app"
            )
            assert served(proxy, read).status == 200
            stranger = signed_wire(
                proxy, "GetSecretValue", {"SecretId": "app/db"}, source_ip="::ffff:198.51.100.9",
                key="nobody",
            )  # fmt: skip
            assert served(proxy, stranger).status == 400
            events = proxy.events("access", "auth_failure")

        local, german, american = events
        assert local["request"]["source_ip"] == "127.0.0.1"
        assert "geo" not in local["request"]
        assert german["type"] == "access"
        assert german["request"]["geo"] == {
            "country": "DE",
            "asn": 3320,
            "as_org": "Deutsche Telekom AG",
        }
        assert german["outcome"]["status"] == "success"
        assert american["type"] == "auth_failure"
        assert american["request"]["geo"] == {"country": "US"}
        assert verify_path(proxy.journal).ok  # the chain covers geo like any other field

    def test_without_a_database_events_are_unchanged(
        self, tmp_path: Path, moto_url: str, store: Any, store_credentials: None
    ) -> None:
        """No geoip section: a call from a public address records no geo."""
        store.create_secret(Name="app/db", SecretString="s3cret")
        with running_proxy(tmp_path, moto_url) as proxy:
            read = signed_wire(
                proxy, "GetSecretValue", {"SecretId": "app/db"}, source_ip="203.0.113.7", key="app"
            )
            assert served(proxy, read).status == 200
            (event,) = proxy.events("access")

        assert list(event["request"]) == PLAIN_REQUEST
