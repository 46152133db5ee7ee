"""GeoIP: the country and the network owner (ASN) of a caller's address.

The operator gives MaxMind DB files under ``geoip:`` in the config: a Country database
(GeoLite2-Country or GeoIP2-Country; a City database has the country too) as
``country_db``, an ASN database (GeoLite2-ASN) as ``asn_db``, either or both. The request
path asks :meth:`GeoIp.lookup` once per request, and its events carry the answer as
``request.geo`` (see :class:`~keyledger.proxy.audit.events.GeoInfo`).

- Cheap: the databases are memory-mapped and read by maxminddb's C extension where it is
  installed (its wheels carry one); answers are cached per address (bounded, least
  recently used first out), since the same callers call again and again.
- Addresses that only route inside a network (RFC 1918 and unique local, loopback,
  link-local, carrier-grade NAT, multicast, unspecified) are never looked up: they have no
  country. IPv4-mapped IPv6 (``::ffff:203.0.113.7``) is read as the IPv4 it maps, as
  policies read it.
- Weekly updates: a database file replaced (geoipupdate writes a new file and renames it
  over the old one) is reopened by the first lookup at most a minute later; a new file that
  does not open leaves the old one in use, and says so in the log.
- Never in the way: a lookup that fails is no ``geo``, never a failed request.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb
import structlog

from keyledger.policies.conditions import parse_ip
from keyledger.proxy.audit.events import GeoInfo

__all__ = ["CACHE_SIZE", "RECHECK_S", "GeoInfo", "GeoIp", "GeoIpError", "is_internal"]

log = structlog.get_logger("keyledger.geoip")

# Distinct addresses whose answers are kept (a few MB at most).
CACHE_SIZE = 65_536
# How often, at most, the database files are looked at for a replacement.
RECHECK_S = 60.0

# Networks whose addresses have no country of their own, as integer ranges per IP version
# (``is_private`` would also take the documentation ranges, 192.0.2.0/24 and the like:
# those are simply not in a database; and it costs ten times as much).
_INTERNAL: dict[int, tuple[tuple[int, int], ...]] = {
    version: tuple(
        (int(net.network_address), int(net.broadcast_address))
        for net in map(ipaddress.ip_network, nets)
    )
    for version, nets in (
        (
            4,
            (
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
                "127.0.0.0/8",
                "169.254.0.0/16",  # link-local
                "224.0.0.0/4",  # multicast
                "0.0.0.0/8",
                "255.255.255.255/32",
            ),
        ),
        (6, ("fc00::/7", "::1/128", "fe80::/10", "ff00::/8", "::/128")),
    )
}


def is_internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address that only routes inside a network (private, unique local, loopback,
    link-local, carrier-grade NAT, multicast, unspecified), which no database places."""
    number = int(ip)
    return any(low <= number <= high for low, high in _INTERNAL[ip.version])


class GeoIpError(Exception):
    """A GeoIP database that cannot be used; ``setting`` names it (``country_db``)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting
        self.message = message


# database_type words that say what a database holds, to catch the two settings swapped.
_HOLDS = {
    "country_db": (("Country", "City", "Enterprise"), ("ASN", "ISP")),
    "asn_db": (("ASN", "ISP", "Enterprise"), ("Country", "City")),
}
_GET_FROM = {
    "country_db": "a GeoLite2-Country, GeoIP2-Country or City database",
    "asn_db": "a GeoLite2-ASN database",
}


@dataclass(slots=True)
class _Opened:
    reader: Any  # maxminddb's Reader: the C extension's or the pure Python one
    signature: tuple[int, int, int]  # inode, size, mtime: a replaced file has another


class _Database:
    """One .mmdb file, reopened when it is replaced."""

    def __init__(self, setting: str, path: Path) -> None:
        self.setting = setting
        self.path = path
        self.current = self._open()
        self._refused: tuple[int, int, int] | None = None  # a replacement that did not open

    def _open(self) -> _Opened:
        try:
            signature = _signature(self.path)
            reader = maxminddb.open_database(str(self.path), maxminddb.MODE_AUTO)
        except OSError as exc:
            raise GeoIpError(
                self.setting,
                f"cannot read {self.path}: {exc.strerror or exc} "
                f"(it should be {_GET_FROM[self.setting]}, see docs/alerts.md#geoip)",
            ) from exc
        except (maxminddb.InvalidDatabaseError, ValueError) as exc:
            raise GeoIpError(
                self.setting,
                f"{self.path} is not a MaxMind DB file (.mmdb); expected {_GET_FROM[self.setting]}",
            ) from exc
        kind = str(reader.metadata().database_type)
        holds, other = _HOLDS[self.setting]
        if not any(word in kind for word in holds) and any(word in kind for word in other):
            reader.close()
            raise GeoIpError(
                self.setting,
                f"{self.path} is a {kind} database; {self.setting} expects "
                f"{_GET_FROM[self.setting]}",
            )
        return _Opened(reader, signature)

    def get(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, Any] | None:
        try:
            found = self.current.reader.get(ip)
        except (ValueError, maxminddb.InvalidDatabaseError):
            # An IPv6 address in an IPv4-only database, or a damaged record.
            return None
        return found if isinstance(found, dict) else None

    def reopen_if_replaced(self) -> bool:
        """Open the file anew if another one is in its place; True if it was."""
        try:
            signature = _signature(self.path)
        except OSError:
            return False  # gone for now (being replaced?): keep the one we have
        if signature in (self.current.signature, self._refused):
            return False
        try:
            fresh = self._open()
        except GeoIpError as exc:
            self._refused = signature
            log.warning("geoip_reload_failed", setting=self.setting, problem=exc.message)
            return False
        old, self.current, self._refused = self.current, fresh, None
        old.reader.close()  # lookups are synchronous: nothing is reading it now
        log.info("geoip_reloaded", setting=self.setting, path=str(self.path))
        return True

    def close(self) -> None:
        self.current.reader.close()


def _signature(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class GeoIp:
    """Country and ASN of addresses, from the operator's MaxMind DB files.

    Raises :class:`GeoIpError` when a database cannot be opened or is of the wrong kind.
    """

    def __init__(
        self,
        *,
        country_db: Path | None = None,
        asn_db: Path | None = None,
        cache_size: int = CACHE_SIZE,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        country = _Database("country_db", country_db) if country_db else None
        try:
            asn = _Database("asn_db", asn_db) if asn_db else None
        except GeoIpError:
            if country is not None:
                country.close()
            raise
        self._country, self._asn = country, asn
        self._recheck_s = recheck_s
        self._clock = clock
        self._next_check = clock() + recheck_s
        self._cached = functools.lru_cache(maxsize=cache_size)(self._lookup)

    @property
    def extension(self) -> bool:
        """The databases are read by the C extension (else in pure Python, ~20x slower)."""
        readers = [db.current.reader for db in (self._country, self._asn) if db is not None]
        return all(type(r).__module__ == "maxminddb.extension" for r in readers)

    def lookup(self, ip: str) -> GeoInfo | None:
        """What the databases know of ``ip``; None for an internal address, one they do not
        know, or text that is no address."""
        if self._clock() >= self._next_check:
            self._recheck()
        return self._cached(ip)

    def _recheck(self) -> None:
        self._next_check = self._clock() + self._recheck_s
        replaced = False
        for db in (self._country, self._asn):
            if db is not None and db.reopen_if_replaced():
                replaced = True
        if replaced:
            self._cached.cache_clear()

    def _lookup(self, text: str) -> GeoInfo | None:
        ip = parse_ip(text)
        if ip is None or is_internal(ip):
            return None
        country = asn = as_org = None
        if self._country is not None:
            record = self._country.get(ip)
            place = record.get("country") if record is not None else None
            code = place.get("iso_code") if isinstance(place, dict) else None
            if isinstance(code, str) and len(code) == 2:
                country = code.upper()
        if self._asn is not None:
            record = self._asn.get(ip)
            if record is not None and "autonomous_system_number" not in record:
                traits = record.get("traits")  # GeoIP2-Enterprise keeps it there
                record = traits if isinstance(traits, dict) else None
            if record is not None:
                number = record.get("autonomous_system_number")
                name = record.get("autonomous_system_organization")
                if isinstance(number, int) and not isinstance(number, bool):
                    asn = number
                if isinstance(name, str) and name:
                    as_org = name
        if country is None and asn is None and as_org is None:
            return None
        return GeoInfo(country=country, asn=asn, as_org=as_org)

    def close(self) -> None:
        for db in (self._country, self._asn):
            if db is not None:
                db.close()
