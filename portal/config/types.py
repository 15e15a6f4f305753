"""Types every section shares: durations, addresses, networks, URLs, the base models."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList
from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

# Authelia's units (docs: configuration/prologue/common, "Duration") and Go's, which Authelia
# passes to time.ParseDuration; a month is 30 days and a year 365, as in Authelia.
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
    "M": 2592000,
    "month": 2592000,
    "months": 2592000,
    "y": 31536000,
    "year": 31536000,
    "years": 31536000,
}
_DURATION_BLOCK = re.compile(r"([0-9]+(?:\.[0-9]+)?)([^0-9.]+)")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def parse_duration(value: Any) -> timedelta:
    """Read a duration as Authelia does; raise ValueError naming the value if it is none.

    Authelia's notation (internal/utils/time.go, ParseDurationString): an integer is seconds,
    the empty string is zero, and a string is otherwise blocks of a quantity and a unit (`90s`,
    `1h30m`, `1d 1h 20m`, `5 minutes`, `1 hour and 30 minutes`) where spaces, leading zeros
    and the word `and` do not count. Units: y, M (30 days), w, d, h, m, s, ms, their long names
    singular or plural, and Go's ns, us, µs. Beyond Authelia the portal also takes decimals
    (`1.5h`), sec/min/hr and units in capitals other than M. Where Authelia's regular expression
    skips what it cannot read (`1h30` is one hour to it, `-5m` five minutes), the portal refuses.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '5 minutes' or '90s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("must be a duration such as '5 minutes' or '90s'")
    if not value.strip():
        return timedelta(0)
    if re.fullmatch(r"[0-9]+", value.strip()):
        return timedelta(seconds=int(value))
    text = "".join(value.split()).replace("and", "")
    total = timedelta(0)
    pos = 0
    for match in _DURATION_BLOCK.finditer(text):
        unit = match.group(2)
        factor = _UNITS.get(unit) or _UNITS.get(unit.lower())  # M (months) is found as is
        if match.start() != pos or factor is None:
            break
        total += timedelta(seconds=float(match.group(1)) * factor)
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(
            f"'{value}' is not a duration; write for example '5 minutes', '1h30m' or '90s'"
        )
    return total


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


@dataclass(frozen=True)
class Address:
    """A parsed `scheme://host:port` address."""

    scheme: str
    host: str
    port: int
    path: str = ""

    def __str__(self) -> str:
        """Show the address as written in the configuration."""
        if self.scheme in ("unix", "ldapi") and self.path:
            return f"{self.scheme}://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _address_parser(default_ports: Mapping[str, int], default_scheme: str) -> Any:
    """Build a validator that accepts only the given schemes, filling in their default ports.

    A value without a scheme takes `default_scheme`, or `unix` when it is an absolute path and
    unix is accepted (Authelia: schema.NewAddressDefault). Raises ValueError naming the problem.
    """

    def parse(value: Any) -> Address:
        if isinstance(value, Address):
            return value
        if not isinstance(value, str) or not value:
            raise ValueError("must be an address such as 'tcp://127.0.0.1:9091'")
        # Authelia's address syntax: without a scheme, an absolute path is a unix socket.
        path_like = value.startswith("/") and "unix" in default_ports
        bare_scheme = "unix" if path_like else default_scheme
        text = value if "://" in value else f"{bare_scheme}://{value}"
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in default_ports:
            allowed = ", ".join(f"'{s}'" for s in default_ports)
            raise ValueError(f"scheme '{scheme}' is not supported; use one of {allowed}")
        if scheme in ("unix", "ldapi"):
            return Address(scheme, "", 0, parts.path)
        try:
            port = parts.port or default_ports[scheme]
        except ValueError as exc:
            raise ValueError(f"'{value}' has an invalid port") from exc
        if parts.path not in ("", "/"):
            raise ValueError(f"'{value}' must not have a path")
        return Address(scheme, parts.hostname or "", port)

    return BeforeValidator(parse)


ServerAddress = Annotated[Address, _address_parser({"tcp": 9091, "unix": 0}, "tcp")]
SmtpAddress = Annotated[
    Address, _address_parser({"smtp": 25, "submission": 587, "submissions": 465}, "smtp")
]
LdapAddress = Annotated[Address, _address_parser({"ldap": 389, "ldaps": 636, "ldapi": 0}, "ldaps")]
# Authelia's ValidateSQL takes tcp4 and tcp6 too; the driver picks the family from the host.
PostgresAddress = Annotated[
    Address, _address_parser({"tcp": 5432, "tcp4": 5432, "tcp6": 5432, "unix": 0}, "tcp")
]


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse a CIDR network; an IPv4-mapped IPv6 one (::ffff:a.b.c.d/104) becomes its IPv4 one.

    Client and proxy addresses are read with IPv4-mapped ones as IPv4 (portal/forwarded.py), so a
    network written the mapped way must be IPv4 too, or it would never match. Raises ValueError.
    """
    parsed = ipaddress.ip_network(text, strict=False)
    if isinstance(parsed, ipaddress.IPv6Network) and parsed.subnet_of(_MAPPED):
        address = parsed.network_address.ipv4_mapped
        assert address is not None  # noqa: S101 - inside ::ffff:0:0/96
        return ipaddress.IPv4Network(f"{address}/{parsed.prefixlen - 96}")
    return parsed


@functools.cache
def public_suffixes() -> PublicSuffixList:
    """Return the Public Suffix List shipped with publicsuffixlist (parsed once: ~0.2 s)."""
    return PublicSuffixList()


def is_loopback_host(host: str) -> bool:
    """Tell whether a host name or address is this machine's loopback."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: str, *, what: str) -> str:
    """Require an absolute https URL (plain http only for a loopback host)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an absolute URL such as 'https://auth.example.com' ({what})")
    # SECURITY: links and cookies over plain http can be read in transit; only loopback skips TLS.
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        raise ValueError("must use https (plain http is only allowed for a loopback host)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return value


def host_in_domain(host: str, domain: str) -> bool:
    """Tell whether host is the cookie domain or one of its subdomains."""
    host, domain = host.lower().rstrip("."), domain.lower().lstrip(".").rstrip(".")
    return host == domain or host.endswith("." + domain)


class Model(BaseModel):
    """A frozen configuration section that refuses unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def problems(self) -> list[str]:
        """Return what is wrong beyond validation, each problem naming its key's full path.

        For checks of a section's filled-in values that name several keys at once (a validator
        reports one problem, at the section's path); the loader reports them with every other
        problem. A top-level section asks its subsections. None by default.
        """
        return []


class ExactlyOneOf(Model):
    """A section that takes exactly one of its alternatives, named in `one_of`.

    As Authelia, which wants one authentication backend (file or ldap), one notifier (smtp or
    filesystem) and one storage (local or postgres). An alternative counts when it is not None;
    none or more than one is a ValueError naming them all, reported at the section's path.
    """

    one_of: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [key for key in self.one_of if getattr(self, key) is not None]
        if len(given) != 1:
            quoted = [f"'{key}'" for key in self.one_of]
            choices = ", ".join(quoted[:-1]) + " or " + quoted[-1]
            raise ValueError(f"configure exactly one of {choices}")
        return self
