"""Minimisation: the journal records only the personal data the configuration keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keyledger.proxy.audit.events import AuditEvent, EventType, PrincipalInfo, RequestInfo
from keyledger.proxy.audit.minimise import IpHandling, MinimiseConfig, Minimiser
from keyledger.proxy.config import ConfigError, parse_config
from tests.conftest import running_proxy

KEY = b"k" * 32


def record(source_ip: str | None = "203.0.113.77", user_agent: str | None = "Boto3/1.34") -> Any:
    return AuditEvent(
        type=EventType.ACCESS,
        request=RequestInfo(
            id="r1",
            protocol="aws-json",
            operation="GetSecretValue",
            source_ip=source_ip,
            user_agent=user_agent,
        ),
        principal=PrincipalInfo(
            id="ci", auth_method="oidc", attributes={"repo": "acme/api", "email": "a@acme.test"}
        ),
    ).to_record()


def minimised(config: MinimiseConfig, rec: Any | None = None) -> Any:
    return Minimiser(config, key=KEY)(rec if rec is not None else record())


class TestMinimiser:
    def test_default_keeps_everything(self) -> None:
        """Without minimise settings, every field is recorded as the request carried it."""
        config = MinimiseConfig()

        assert config.keeps_everything
        out = minimised(config)
        assert out["request"]["source_ip"] == "203.0.113.77"
        assert out["request"]["user_agent"] == "Boto3/1.34"
        assert out["principal"]["attributes"] == {"repo": "acme/api", "email": "a@acme.test"}

    def test_user_agent_dropped(self) -> None:
        """user_agent: drop leaves the field null."""
        out = minimised(MinimiseConfig(user_agent=False))

        assert out["request"]["user_agent"] is None
        assert out["request"]["source_ip"] == "203.0.113.77"

    @pytest.mark.parametrize(
        ("address", "kept"),
        [
            ("203.0.113.77", "203.0.113.0/24"),
            ("::ffff:203.0.113.77", "203.0.113.0/24"),
            ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
            ("not-an-address", None),
        ],
    )
    def test_source_ip_truncated_to_its_network(self, address: str, kept: str | None) -> None:
        """truncate keeps the /24 (IPv4, also when IPv4-mapped) or the /48 (IPv6)."""
        out = minimised(MinimiseConfig(source_ip=IpHandling.TRUNCATE), record(source_ip=address))

        assert out["request"]["source_ip"] == kept

    def test_source_ip_pseudonymised_is_stable_and_keyed(self) -> None:
        """pseudonymise gives the same token for the same address and key, another otherwise."""
        config = MinimiseConfig(source_ip=IpHandling.PSEUDONYMISE)
        first = minimised(config)["request"]["source_ip"]
        again = minimised(config)["request"]["source_ip"]
        other_ip = minimised(config, record(source_ip="203.0.113.78"))["request"]["source_ip"]
        other_key = Minimiser(config, key=b"x" * 32)(record())["request"]["source_ip"]

        assert first == again
        assert first.startswith("ip-hmac:")
        assert "203.0.113" not in first
        assert len({first, other_ip, other_key}) == 3

    def test_source_ip_dropped(self) -> None:
        """drop leaves no trace of the address."""
        out = minimised(MinimiseConfig(source_ip=IpHandling.DROP))

        assert out["request"]["source_ip"] is None

    def test_only_listed_principal_attributes_are_kept(self) -> None:
        """principal_attributes keeps the listed claims and drops the rest (an e-mail)."""
        out = minimised(MinimiseConfig(principal_attributes=frozenset({"repo"})))

        assert out["principal"]["attributes"] == {"repo": "acme/api"}

    @pytest.mark.parametrize("claimed", ["access_key_id", "token_id"])
    def test_the_credential_a_failed_sign_in_tried_is_kept(self, claimed: str) -> None:
        """The key or token id a failed sign-in presented survives any attribute list: it
        is what an investigation starts from, and no personal data."""
        failed = AuditEvent(
            type=EventType.AUTH_FAILURE,
            principal=PrincipalInfo(
                id=None, auth_method="token", attributes={claimed: "id-1", "email": "a@b.test"}
            ),
        ).to_record()

        out = minimised(MinimiseConfig(principal_attributes=frozenset()), failed)

        assert out["principal"]["attributes"] == {claimed: "id-1"}

    def test_events_without_a_request_pass_untouched(self) -> None:
        """Lifecycle events carry no personal data and are left as they are."""
        lifecycle = AuditEvent(type=EventType.LIFECYCLE, detail={"event": "start"}).to_record()
        config = MinimiseConfig(user_agent=False, source_ip=IpHandling.DROP)

        assert Minimiser(config, key=KEY)(dict(lifecycle)) == lifecycle


class TestConfig:
    def doc(self, minimise: Any) -> dict[str, Any]:
        return {
            "policies": ["p/"],
            "backends": {"aws": {"type": "aws"}},
            "audit": {"journal": "a", "chain_id": "c", "minimise": minimise},
        }

    def test_parsed(self, tmp_path: Path) -> None:
        """The minimise section maps onto the minimiser's settings."""
        config = parse_config(
            self.doc(
                {"user_agent": "drop", "source_ip": "truncate", "principal_attributes": ["repo"]}
            ),
            base=tmp_path,
            source="k.yaml",
        )

        assert config.audit.minimise == MinimiseConfig(
            user_agent=False,
            source_ip=IpHandling.TRUNCATE,
            principal_attributes=frozenset({"repo"}),
        )

    @pytest.mark.parametrize(
        ("section", "message"),
        [
            ({"source_ip": "hash"}, "audit.minimise.source_ip: expected one of keep, truncate"),
            ({"user_agent": "hide"}, "audit.minimise.user_agent: expected keep or drop"),
            ({"principal_attributes": "repo"}, "principal_attributes: expected a list"),
            ({"ip": "drop"}, "audit.minimise.ip: unknown key"),
        ],
    )
    def test_mistakes_are_named(self, tmp_path: Path, section: Any, message: str) -> None:
        """A wrong minimise setting stops start-up with the key and what is allowed."""
        with pytest.raises(ConfigError, match=message):
            parse_config(self.doc(section), base=tmp_path, source="k.yaml")


def test_minimised_fields_never_reach_the_journal(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> None:
    """Through a real proxy, the journal holds the truncated address and no user agent."""
    store.create_secret(Name="app/db", SecretString="x")
    minimise = {"user_agent": "drop", "source_ip": "truncate"}
    with running_proxy(tmp_path, moto_url, audit={"minimise": minimise}) as proxy:
        proxy.client().get_secret_value(SecretId="app/db")
        (access,) = proxy.events("access")
        journal = b"".join(p.read_bytes() for p in proxy.journal.glob("*.jsonl"))

    assert access["request"]["source_ip"] == "127.0.0.0/24"
    assert access["request"]["user_agent"] is None
    assert b"Boto3" not in journal
    assert b"127.0.0.1" not in journal
