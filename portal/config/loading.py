"""The configuration: frozen pydantic models in Authelia's shape, and how they are loaded.

Loading reads one or more YAML files, applies `PORTAL_*` / `AUTHELIA_*` environment overrides
(and `*_FILE` for secrets), drops the Authelia keys the portal does not implement with one warning
each, validates everything, and reports every problem at once, each naming its path.
"""

from __future__ import annotations

import copy
import email.errors
import email.headerregistry
import functools
import ipaddress
import logging
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    DirectoryPath,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError

from portal.errors import ConfigError
from portal.patterns import GoPattern
from portal.tls import certificates_directory_problems

ENV_PREFIXES = ("PORTAL_", "AUTHELIA_")
# Variables with these names steer the program itself, not a configuration key.
ENV_NOT_KEYS = frozenset({"CONFIG", "CONFIG_FILTERS", "CONFIG_EXPERIMENTAL_FILTERS"})

# Keys Authelia has and the portal does not implement: one warning each, then ignored.
UNSUPPORTED_KEYS = (
    "default_2fa_method",
    "default_redirection_url",
    "jwt_secret",
    "totp",
    "webauthn",
    "duo_api",
    "identity_providers",
    "ntp",
    "telemetry",
    "definitions",
    "privacy_policy",
    "server.disable_healthcheck",
    "server.buffers",
    "server.timeouts",
    "server.tls",
    "server.headers",
    "server.endpoints.enable_pprof",
    "server.endpoints.enable_expvars",
    "server.endpoints.authz",
    "server.endpoints.rate_limits.second_factor_totp",
    "server.endpoints.rate_limits.second_factor_duo",
    "server.endpoints.rate_limits.session_elevation_start",
    "server.endpoints.rate_limits.session_elevation_finish",
    "log.keep_stdout",
    "identity_validation.elevated_session",
    "authentication_backend.password_change",
    "authentication_backend.file.extra_attributes",
    "authentication_backend.ldap.attributes.extra",
    "session.redis",
    "session.domain",
    "storage.mysql",
)

# Authelia's units (docs: configuration/prologue/common, "Duration") and Go's, which Authelia
# passes to time.ParseDuration; a month is 30 days and a year 365, as in Authelia.
_UNITS = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "M": 2592000, "month": 2592000, "months": 2592000,
    "y": 31536000, "year": 31536000, "years": 31536000,
}  # fmt: skip
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
    """Build a validator that accepts only the given schemes, filling in their default ports."""

    def parse(value: Any) -> Address:
        if isinstance(value, Address):
            return value
        if not isinstance(value, str) or not value:
            raise ValueError("must be an address such as 'tcp://127.0.0.1:9091'")
        text = value if "://" in value else f"{default_scheme}://{value}"
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
PostgresAddress = Annotated[Address, _address_parser({"tcp": 5432, "unix": 0}, "tcp")]


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


def _check_url(value: str, *, what: str) -> str:
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


def _host_in_domain(host: str, domain: str) -> bool:
    """Tell whether host is the cookie domain or one of its subdomains."""
    host, domain = host.lower().rstrip("."), domain.lower().lstrip(".").rstrip(".")
    return host == domain or host.endswith("." + domain)


class Model(BaseModel):
    """A frozen configuration section that refuses unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- server ---------------------------------------------------------------------------------


class RateLimitBucket(Model):
    """At most `requests` in any `period`."""

    period: Duration
    requests: int = Field(gt=0)


class RateLimit(Model):
    """Buckets counted per client IP for one endpoint."""

    enable: bool = True
    buckets: tuple[RateLimitBucket, ...]


def _buckets(*pairs: tuple[int, int]) -> RateLimit:
    return RateLimit(
        buckets=tuple(RateLimitBucket(period=timedelta(seconds=p), requests=r) for p, r in pairs)
    )


class RateLimits(Model):
    """Per-IP limits on the reset endpoints (Authelia's defaults) and per-account ones."""

    reset_password_start: RateLimit = _buckets((600, 5), (900, 10), (1800, 15))
    reset_password_finish: RateLimit = _buckets((60, 10), (120, 15))
    # Not in Authelia: reset mails per identifier typed, per account and per mailbox, and for
    # everyone together; the excess is dropped silently.
    reset_password_identifier: RateLimit = _buckets((900, 3))
    reset_password_global: RateLimit = _buckets((3600, 1000))
    # Not in Authelia: fresh ALTCHA challenges per client IP.
    captcha_challenge: RateLimit = _buckets((60, 20), (600, 60))


class Endpoints(Model):
    """Settings of individual endpoints."""

    rate_limits: RateLimits = RateLimits()


class ServerConfig(Model):
    """Where the portal listens and whom it trusts."""

    address: ServerAddress = Address("tcp", "", 9091)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.IPv4Network("127.0.0.0/8"),
        ipaddress.IPv6Network("::1/128"),
    )
    endpoints: Endpoints = Endpoints()
    # Authelia's: a directory whose logo.png and favicon.ico the pages show instead of the
    # portal's own (only those two files are served from it).
    asset_path: DirectoryPath | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            try:
                return tuple(network(str(v)) for v in value)
            except ValueError as exc:
                raise ValueError(f"must be a list of CIDR networks: {exc}") from exc
        return value


# --- log ------------------------------------------------------------------------------------


class LogConfig(Model):
    """How much the portal logs and where."""

    level: Literal["trace", "debug", "info", "warn", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file_path: Path | None = None


# --- identity validation ------------------------------------------------------------------


DEFAULT_QUESTIONS = (
    "What was the name of your first stuffed animal or toy?",
    "What was the first concert you went to?",
    "What was the first dish you learned to cook?",
    "What was the name of your childhood best friend?",
    "What was the first film you saw in a cinema?",
    "What is the title of the first book you remember reading?",
    "What was the destination of your most memorable school trip?",
    "What was the name of your favourite teacher at primary school?",
)


class SecurityQuestionsConfig(Model):
    """Security questions asked at reset, before the mail goes out (a portal key)."""

    enabled: bool = False
    questions: tuple[str, ...] = DEFAULT_QUESTIONS
    setup: int = Field(3, ge=1)  # how many a user answers in the settings
    asked: int = Field(2, ge=1)  # how many of those a reset asks
    # A user who never set any up: mail the link anyway (`send_email`) or not at all (`deny`).
    without_questions: Literal["send_email", "deny"] = "send_email"
    min_answer_length: int = Field(3, ge=1, le=64)
    # Wrong answers per account before answers are no longer checked, within failure_window.
    max_failures: int = Field(5, ge=1)
    failure_window: Duration = timedelta(hours=1)

    @field_validator("questions")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        value = tuple(" ".join(q.split()) for q in value)
        if not value:
            raise ValueError("must list at least one question")
        if any(not q or len(q) > 200 for q in value):
            raise ValueError("every question must have 1 to 200 characters")
        seen: set[str] = set()
        for question in value:
            if question.casefold() in seen:
                raise ValueError(f"lists the same question twice: {question!r}")
            seen.add(question.casefold())
        return value

    @model_validator(mode="after")
    def _counts(self) -> SecurityQuestionsConfig:
        if self.setup > len(self.questions):
            raise ValueError(
                f"setup ({self.setup}) must not exceed the number of questions "
                f"({len(self.questions)})"
            )
        if self.asked > self.setup:
            raise ValueError(f"asked ({self.asked}) must not exceed setup ({self.setup})")
        return self


class ResetPasswordConfig(Model):
    """The signed reset link."""

    jwt_secret: SecretStr
    jwt_lifespan: Duration = timedelta(minutes=5)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    security_questions: SecurityQuestionsConfig = SecurityQuestionsConfig()

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        # SECURITY: a short HMAC secret can be brute-forced offline from one reset link.
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (generate one: portal crypto rand)")
        return value

    @model_validator(mode="after")
    def _long_enough_for_the_algorithm(self) -> ResetPasswordConfig:
        # SECURITY: RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
        needed = {"HS256": 32, "HS384": 48, "HS512": 64}[self.jwt_algorithm]
        if len(self.jwt_secret.get_secret_value().encode()) < needed:
            raise ValueError(f"jwt_secret must be at least {needed} bytes for {self.jwt_algorithm}")
        return self

    @field_validator("jwt_lifespan")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1 second")
        if value > timedelta(days=1):
            raise ValueError("must be at most 1 day (reset links should be short-lived)")
        return value


class IdentityValidationConfig(Model):
    """How users prove who they are before sensitive actions."""

    reset_password: ResetPasswordConfig


# --- authentication backend ---------------------------------------------------------------


class PasswordResetConfig(Model):
    """Whether the reset flow is offered, and where; what a successful reset also ends."""

    disable: bool = False
    custom_url: str | None = None
    # A portal key: true keeps a lockout from failed sign-ins in place after a successful reset
    # (Active Directory's lockoutTime; OpenLDAP's ppolicy lifts its own at every password change).
    disable_unlock: bool = False

    @field_validator("custom_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if not value else _check_url(value, what="custom_url")


class Argon2Config(Model):
    """argon2 parameters (Authelia's defaults)."""

    variant: Literal["argon2id", "argon2i", "argon2d"] = "argon2id"
    iterations: int = Field(3, ge=1)
    memory: int = Field(65536, ge=8, description="KiB")
    parallelism: int = Field(4, ge=1, le=255)
    key_length: int = Field(32, ge=16, le=1024)
    salt_length: int = Field(16, ge=8, le=1024)


class Sha2CryptConfig(Model):
    """SHA-crypt parameters (Authelia's defaults)."""

    variant: Literal["sha512", "sha256"] = "sha512"
    iterations: int = Field(50000, ge=1000, le=999999999)
    salt_length: int = Field(16, ge=1, le=16)


class Pbkdf2Config(Model):
    """PBKDF2 parameters (Authelia's defaults)."""

    variant: Literal["sha1", "sha224", "sha256", "sha384", "sha512"] = "sha512"
    iterations: int = Field(310000, ge=100000)
    salt_length: int = Field(16, ge=8, le=1024)


class BcryptConfig(Model):
    """bcrypt parameters (Authelia's defaults)."""

    variant: Literal["standard", "sha256"] = "standard"
    cost: int = Field(12, ge=10, le=31)


class ScryptConfig(Model):
    """scrypt parameters (Authelia's defaults); iterations is log2 of N."""

    variant: Literal["scrypt"] = "scrypt"
    iterations: int = Field(16, ge=1, le=58)
    block_size: int = Field(8, ge=1)
    parallelism: int = Field(1, ge=1)
    key_length: int = Field(32, ge=16, le=1024)
    salt_length: int = Field(16, ge=8, le=1024)


class PasswordConfig(Model):
    """How the file backend hashes new passwords."""

    algorithm: Literal["argon2", "sha2crypt", "pbkdf2", "bcrypt", "scrypt"] = "argon2"
    argon2: Argon2Config = Argon2Config()
    sha2crypt: Sha2CryptConfig = Sha2CryptConfig()
    pbkdf2: Pbkdf2Config = Pbkdf2Config()
    bcrypt: BcryptConfig = BcryptConfig()
    scrypt: ScryptConfig = ScryptConfig()


class FileSearchConfig(Model):
    """How sign-in and reset identifiers are matched against the users file."""

    email: bool = False
    case_insensitive: bool = False


class FileBackendConfig(Model):
    """The YAML users file."""

    path: Path
    watch: bool = False
    search: FileSearchConfig = FileSearchConfig()
    password: PasswordConfig = PasswordConfig()


TlsVersion = Literal["TLS1.0", "TLS1.1", "TLS1.2", "TLS1.3"]


class TlsConfig(Model):
    """Client TLS to a server (Authelia's `tls` block under ldap, smtp, postgres, redis).

    certificate_chain + private_key are the client certificate for mutual TLS, never a CA to
    trust (that is the top-level certificates_directory). What cannot be used (a key that does
    not match, one without the other, minimum above maximum version) is refused by
    portal.tls.client_context, which validate-config and start-up both call, so that it is
    reported together with the section's other problems.
    """

    server_name: str | None = None
    skip_verify: bool = False
    minimum_version: TlsVersion = "TLS1.2"
    maximum_version: TlsVersion = "TLS1.3"
    certificate_chain: str | None = None
    private_key: SecretStr | None = None


class LdapPoolingConfig(Model):
    """Connection pooling to the directory server."""

    enable: bool = False
    count: int = Field(5, ge=1)
    retries: int = Field(2, ge=0)
    timeout: Duration = timedelta(seconds=10)


class LdapAttributesConfig(Model):
    """Which LDAP attributes hold what (defaults depend on the implementation)."""

    distinguished_name: str | None = None
    username: str | None = None
    display_name: str | None = None
    mail: str | None = None
    member_of: str | None = None
    group_name: str | None = None


class LdapBackendConfig(Model):
    """An LDAP directory (schema only for now)."""

    address: LdapAddress
    implementation: Literal[
        "custom", "activedirectory", "rfc2307bis", "freeipa", "lldap", "glauth"
    ] = "custom"
    timeout: Duration = timedelta(seconds=5)
    start_tls: bool = False
    tls: TlsConfig = TlsConfig()
    pooling: LdapPoolingConfig = LdapPoolingConfig()
    base_dn: str | None = None
    additional_users_dn: str | None = None
    users_filter: str | None = None
    additional_groups_dn: str | None = None
    groups_filter: str | None = None
    group_search_mode: Literal["filter", "memberof"] = "filter"
    permit_referrals: bool = False
    permit_unauthenticated_bind: bool = False
    permit_feature_detection_failure: bool = False
    user: str | None = None
    password: SecretStr | None = None
    attributes: LdapAttributesConfig = LdapAttributesConfig()


class AuthenticationBackendConfig(Model):
    """Where users and their passwords live: exactly one of file or ldap."""

    password_reset: PasswordResetConfig = PasswordResetConfig()
    # How often a session's groups, addresses and name are read again from the backend, and a
    # session of a deleted or disabled user ended: a duration, 'always' or 'disable'. Unset:
    # Authelia's defaults, 'always' for the file backend (a memory lookup) and 5 minutes for LDAP.
    refresh_interval: timedelta | Literal["always", "disable"] | None = None
    file: FileBackendConfig | None = None
    ldap: LdapBackendConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AuthenticationBackendConfig:
        if (self.file is None) == (self.ldap is None):
            raise ValueError("configure exactly one of 'file' or 'ldap'")
        return self

    @field_validator("refresh_interval", mode="before")
    @classmethod
    def _refresh_interval(cls, value: Any) -> Any:
        if value is None or value in ("always", "disable"):
            return value
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither a duration (like '5 minutes') nor 'always' or 'disable'"
            ) from None

    @property
    def refresh_seconds(self) -> float | None:
        """Return the refresh interval in seconds (0: every request), or None when disabled."""
        value = self.refresh_interval
        if value is None:
            return 0.0 if self.file is not None else 300.0
        if value == "always":
            return 0.0
        if value == "disable":
            return None
        assert isinstance(value, timedelta)  # noqa: S101 - the field's type leaves only this
        return value.total_seconds()


# --- password policy ------------------------------------------------------------------------


class StandardPolicyConfig(Model):
    """Length and character-class rules."""

    enabled: bool = False
    min_length: int = Field(8, ge=1, le=1024)
    max_length: int = Field(0, ge=0, le=1024)
    require_uppercase: bool = False
    require_lowercase: bool = False
    require_number: bool = False
    require_special: bool = False

    @model_validator(mode="after")
    def _lengths(self) -> StandardPolicyConfig:
        if self.max_length and self.max_length < self.min_length:
            raise ValueError("max_length must be 0 (no limit) or at least min_length")
        return self


class ZxcvbnPolicyConfig(Model):
    """Strength estimation with zxcvbn."""

    enabled: bool = False
    min_score: int = Field(3, ge=0, le=4)


class PasswordPolicyConfig(Model):
    """Rules a new password must meet."""

    standard: StandardPolicyConfig = StandardPolicyConfig()
    zxcvbn: ZxcvbnPolicyConfig = ZxcvbnPolicyConfig()


# --- notifier -------------------------------------------------------------------------------


_ONE_MAIL_ADDRESS = (
    "must be one email address such as 'Portal <portal@example.com>'; quote a display name "
    "holding a comma or another special character: '\"Doe, John\" <portal@example.com>'"
)


def parse_mail_address(value: object) -> email.headerregistry.Address:
    """Read exactly one RFC 5322 address ('addr' or 'Name <addr>'), refusing anything loose.

    A configuration error is better than a guess: 'Doe, John <portal@example.com>' is two
    addresses, and a lenient parser would send every mail from 'Doe'.
    """
    if isinstance(value, email.headerregistry.Address):
        return value
    if not isinstance(value, str):
        raise ValueError(_ONE_MAIL_ADDRESS)
    # SECURITY: a line break would let the value add headers to every mail.
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError(_ONE_MAIL_ADDRESS)
    try:
        header = email.headerregistry.HeaderRegistry()("from", value.strip())
    except (IndexError, ValueError, email.errors.HeaderParseError) as exc:
        raise ValueError(_ONE_MAIL_ADDRESS) from exc
    groups = header.groups  # type: ignore[attr-defined]
    # Any defect (an unterminated '<', a bare word, obsolete syntax) means the text is not one
    # clean address; so do a group ('Team: a@b;') and a list.
    if header.defects or len(groups) != 1 or groups[0].display_name is not None:
        raise ValueError(_ONE_MAIL_ADDRESS)
    [address] = groups[0].addresses
    if not address.username or not address.domain:
        raise ValueError(_ONE_MAIL_ADDRESS)
    result: email.headerregistry.Address = address
    return result


# An address as both headers and envelopes need it: str() is the From header, .addr_spec the
# envelope sender.
MailAddress = Annotated[email.headerregistry.Address, PlainValidator(parse_mail_address)]

# The Subject every notifier gives a mail: {title} is the mail's own title.
DEFAULT_SUBJECT = "[Portal] {title}"


class SmtpConfig(Model):
    """An SMTP relay."""

    address: SmtpAddress
    sender: MailAddress
    timeout: Duration = timedelta(seconds=5)
    username: str | None = None
    password: SecretStr | None = None
    identifier: str = "localhost"
    subject: str = DEFAULT_SUBJECT
    startup_check_address: str = "test@example.com"
    disable_require_tls: bool = False
    disable_starttls: bool = False
    disable_html_emails: bool = False
    tls: TlsConfig = TlsConfig()


class FilesystemNotifierConfig(Model):
    """Append every mail to a file (for tests and homelabs)."""

    filename: Path


class NotifierConfig(Model):
    """How mail reaches users: exactly one of smtp or filesystem."""

    disable_startup_check: bool = False
    template_path: Path | None = None
    smtp: SmtpConfig | None = None
    filesystem: FilesystemNotifierConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> NotifierConfig:
        if (self.smtp is None) == (self.filesystem is None):
            raise ValueError("configure exactly one of 'smtp' or 'filesystem'")
        return self


# --- session --------------------------------------------------------------------------------

SameSite = Literal["lax", "strict", "none"]


class SessionCookieConfig(Model):
    """One cookie domain the portal protects; unset values come from the session section."""

    domain: str
    authelia_url: str
    default_redirection_url: str | None = None
    name: str | None = None
    same_site: SameSite | None = None
    expiration: Duration | None = None
    inactivity: Duration | None = None
    remember_me: Duration | None = None

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower()
        if not value or "/" in value or ":" in value or value.startswith("."):
            raise ValueError("must be a bare domain such as 'example.com'")
        # SECURITY: browsers refuse a cookie for a public suffix (co.uk, github.io): a session
        # cookie scoped there never comes back, and could be shared with strangers if it did.
        bare = value.rstrip(".")
        if public_suffixes().publicsuffix(bare, accept_unknown=False) == bare:
            raise ValueError(
                f"'{value}' is a public suffix (publicsuffix.org): browsers refuse cookies for it;"
                " use your own domain under it, such as 'example.co.uk'"
            )
        return value

    @field_validator("authelia_url")
    @classmethod
    def _authelia_url(cls, value: str) -> str:
        _check_url(value, what="the portal's public address")
        return value.rstrip("/")

    @field_validator("default_redirection_url")
    @classmethod
    def _redirection(cls, value: str | None) -> str | None:
        return None if not value else _check_url(value, what="default_redirection_url")

    @model_validator(mode="after")
    def _urls_in_domain(self) -> SessionCookieConfig:
        portal_host = urlsplit(self.authelia_url).hostname or ""
        if not _host_in_domain(portal_host, self.domain) and not is_loopback_host(portal_host):
            raise ValueError(f"authelia_url must be on the domain '{self.domain}' or below it")
        if self.default_redirection_url:
            host = urlsplit(self.default_redirection_url).hostname or ""
            if not _host_in_domain(host, self.domain) and not is_loopback_host(host):
                raise ValueError(
                    f"default_redirection_url must be on the domain '{self.domain}' or below it"
                )
            if self.default_redirection_url.rstrip("/") == self.authelia_url:
                raise ValueError("default_redirection_url must not be the authelia_url")
        return self


class SessionConfig(Model):
    """Sessions and their cookies."""

    secret: SecretStr | None = None
    name: str = "portal_session"
    same_site: SameSite = "lax"
    expiration: Duration = timedelta(hours=1)
    inactivity: Duration = timedelta(minutes=5)
    remember_me: Duration = timedelta(days=30)
    cookies: tuple[SessionCookieConfig, ...]

    @field_validator("cookies")
    @classmethod
    def _at_least_one(cls, value: tuple[SessionCookieConfig, ...]) -> Any:
        if not value:
            raise ValueError("list at least one cookie domain with its authelia_url")
        return value

    @model_validator(mode="after")
    def _fill_cookies(self) -> SessionConfig:
        inherited = ("name", "same_site", "expiration", "inactivity", "remember_me")
        filled = tuple(
            cookie.model_copy(
                update={k: getattr(self, k) for k in inherited if getattr(cookie, k) is None}
            )
            for cookie in self.cookies
        )
        object.__setattr__(self, "cookies", filled)
        return self


# --- storage --------------------------------------------------------------------------------


class LocalStorageConfig(Model):
    """SQLite."""

    path: Path


class PostgresStorageConfig(Model):
    """PostgreSQL (schema only: not implemented yet)."""

    address: PostgresAddress
    database: str = "authelia"
    schema_: str = Field("public", alias="schema")
    username: str = "authelia"
    password: SecretStr | None = None
    timeout: Duration = timedelta(seconds=5)
    tls: TlsConfig | None = None


class StorageConfig(Model):
    """Where the portal keeps its state: exactly one of local or postgres."""

    encryption_key: SecretStr
    local: LocalStorageConfig | None = None
    postgres: PostgresStorageConfig | None = None

    @field_validator("encryption_key")
    @classmethod
    def _key_length(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 20:
            raise ValueError("must be at least 20 characters (generate one: portal crypto rand)")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> StorageConfig:
        if (self.local is None) == (self.postgres is None):
            raise ValueError("configure exactly one of 'local' or 'postgres'")
        return self


# --- regulation -----------------------------------------------------------------------------


# --- access control -------------------------------------------------------------------------

Policy = Literal["bypass", "one_factor", "two_factor", "deny"]
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "COPY",
     "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "UNLOCK"}
)  # fmt: skip


def _as_tuple(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    return value


def _go_regex(pattern: str) -> str:
    """Return pattern if Go's regexp (Authelia's) takes it; raise ValueError saying why not."""
    # SECURITY: rules are matched against URLs an attacker chooses, with RE2's semantics
    # (portal.patterns); a pattern that only Python's re would take is refused at start-up.
    try:
        GoPattern.compile(pattern)
    except ValueError as exc:
        raise ValueError(
            f"{pattern!r} is not a regular expression in RE2 syntax (Go's, as Authelia): {exc}"
        ) from None
    return pattern


GoRegex = Annotated[str, AfterValidator(_go_regex)]


class AccessControlRule(Model):
    """One rule: the first rule whose every criterion matches decides."""

    domain: tuple[str, ...] = ()
    domain_regex: tuple[GoRegex, ...] = ()
    policy: Policy
    # OR of ANDs, as Authelia: 'user:a' | ['user:a', 'group:b'] | [['group:a', 'group:b'], ...]
    subject: tuple[tuple[str, ...], ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    resources: tuple[GoRegex, ...] = ()
    methods: tuple[str, ...] = ()

    @field_validator("domain", "domain_regex", "resources", "methods", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_tuple(value)

    @field_validator("domain")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.strip().lower() for d in value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in value)
        unknown = [m for m in upper if m not in _METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method(s): {', '.join(unknown)}")
        return upper

    @field_validator("subject", mode="before")
    @classmethod
    def _subjects(cls, value: Any) -> Any:
        if isinstance(value, str):
            return ((value,),)
        if isinstance(value, list | tuple):
            return tuple(_as_tuple(item) for item in value)
        return value

    @field_validator("subject")
    @classmethod
    def _subject_kinds(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        for group in value:
            for item in group:
                if not item.startswith(("user:", "group:")) or len(item.split(":", 1)[1]) == 0:
                    raise ValueError(f"{item!r} must be 'user:<name>' or 'group:<name>'")
        return value

    @field_validator("networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        value = _as_tuple(value)
        if isinstance(value, list | tuple):
            try:
                return tuple(network(str(v)) for v in value)
            except ValueError as exc:
                raise ValueError(
                    f"must be CIDR networks (named networks from 'definitions' are not "
                    f"supported): {exc}"
                ) from None
        return value

    @model_validator(mode="after")
    def _has_a_domain(self) -> AccessControlRule:
        if not self.domain and not self.domain_regex:
            raise ValueError("a rule needs 'domain' or 'domain_regex'")
        return self


class AccessControlConfig(Model):
    """Who may reach what behind nginx."""

    default_policy: Policy = "deny"
    rules: tuple[AccessControlRule, ...] = ()


# --- captcha ----------------------------------------------------------------------------------

CaptchaEndpoint = Literal["reset_password_start", "reset_password_finish", "login"]
CaptchaProvider = Literal["altcha", "turnstile", "hcaptcha", "recaptcha", "none"]
REMOTE_CAPTCHAS = ("turnstile", "hcaptcha", "recaptcha")


class AltchaConfig(Model):
    """The self-hosted proof of work: signed, expiring, single-use challenges."""

    # Absent: derived from identity_validation.reset_password.jwt_secret (never the raw secret).
    hmac_key: SecretStr | None = None
    algorithm: Literal[
        "PBKDF2/SHA-256", "PBKDF2/SHA-384", "PBKDF2/SHA-512", "SHA-256", "SHA-384", "SHA-512"
    ] = "PBKDF2/SHA-256"
    # Work per try (KDF iterations) and the largest secret counter a browser must reach; the
    # counter is drawn from [max_number / 2, max_number], so the work is cost x ~0.75 max_number.
    cost: int = Field(5000, ge=1, le=1_000_000)
    max_number: int = Field(1000, ge=1, le=10_000_000)
    expiration: Duration = timedelta(minutes=5)

    @field_validator("hmac_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes")
        return value

    @field_validator("expiration")
    @classmethod
    def _sane_expiration(cls, value: timedelta) -> timedelta:
        # Accepted challenges are remembered in the rate-limit table, purged after a day.
        if not timedelta(seconds=10) <= value <= timedelta(hours=1):
            raise ValueError("must be between 10 seconds and 1 hour")
        return value


class CaptchaConfig(Model):
    """An anti-robot check on the reset and sign-in forms (off unless enabled_on names one)."""

    provider: CaptchaProvider = "altcha"
    enabled_on: tuple[CaptchaEndpoint, ...] = ()
    # Sign-in asks for the CAPTCHA only after this many recent failures (0: always).
    login_after_failures: int = Field(0, ge=0)
    altcha: AltchaConfig = AltchaConfig()
    site_key: str | None = None
    secret_key: SecretStr | None = None
    verify_url: str | None = None
    timeout: Duration = timedelta(seconds=5)

    @field_validator("verify_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, what="the vendor's siteverify URL")

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0) or value > timedelta(seconds=60):
            raise ValueError("must be more than 0 and at most 60 seconds")
        return value

    @model_validator(mode="after")
    def _provider_needs(self) -> CaptchaConfig:
        if self.provider == "none" and self.enabled_on:
            raise ValueError("enabled_on needs a provider (altcha, turnstile, hcaptcha, recaptcha)")
        if self.provider in REMOTE_CAPTCHAS:
            missing = [k for k in ("site_key", "secret_key") if not getattr(self, k)]
            if missing:
                raise ValueError(f"provider {self.provider} needs {' and '.join(missing)}")
        return self


class RegulationConfig(Model):
    """Bans after repeated failed sign-ins (Authelia's defaults)."""

    modes: tuple[Literal["user", "ip"], ...] = ("user", "ip")
    max_retries: int = Field(3, ge=0)
    find_time: Duration = timedelta(minutes=2)
    ban_time: Duration = timedelta(minutes=5)


class Config(Model):
    """The whole configuration."""

    server: ServerConfig = ServerConfig()
    # Authelia's: every certificate in this folder joins the system's trust store for outgoing TLS.
    certificates_directory: Path | None = None
    # Authelia's `theme` (its default too); `auto` follows the browser's light or dark setting.
    theme: Literal["light", "dark", "grey", "auto"] = "light"
    # A portal key: the organisation the pages say they belong to (beside the logo, in titles).
    organization_name: str | None = Field(default=None, min_length=1, max_length=100)
    log: LogConfig = LogConfig()
    identity_validation: IdentityValidationConfig
    authentication_backend: AuthenticationBackendConfig
    password_policy: PasswordPolicyConfig = PasswordPolicyConfig()
    notifier: NotifierConfig
    session: SessionConfig
    storage: StorageConfig
    regulation: RegulationConfig = RegulationConfig()
    captcha: CaptchaConfig = CaptchaConfig()
    access_control: AccessControlConfig = AccessControlConfig()

    @field_validator("certificates_directory")
    @classmethod
    def _certificates_directory(cls, value: Path | None) -> Path | None:
        problems = [] if value is None else certificates_directory_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @property
    def portal_url(self) -> str:
        """Return the public address links in mails are built from (the first cookie's)."""
        return self.session.cookies[0].authelia_url


# --- loading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]  # "*" stands for a list index
    secret: bool
    is_list: bool


def _unwrap(annotation: Any) -> list[Any]:
    """Return the non-None members of an Optional/Union/Annotated annotation."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _unwrap(arg) if a is not None]
    return [] if annotation is type(None) else [annotation]


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[_Leaf]:
    """Walk a model and yield every key an environment variable may set."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        for member in _unwrap(field.annotation):
            origin = typing.get_origin(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                yield from _leaves(member, (*prefix, key))
            elif origin is tuple:
                inner = typing.get_args(member)[0]
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _leaves(inner, (*prefix, key, "*"))
                else:
                    yield _Leaf((*prefix, key), False, True)
            else:
                yield _Leaf((*prefix, key), member is SecretStr, False)
            break


def _env_pattern(leaf: _Leaf) -> re.Pattern[str]:
    parts = [r"(\d+)" if p == "*" else re.escape(p.upper()) for p in leaf.path]
    return re.compile("_".join(parts))


def _set_path(raw: dict[str, Any], path: Sequence[str | int], value: Any) -> None:
    node: Any = raw
    for step, nxt in zip(path, path[1:], strict=False):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(step, int):
            while len(node) <= step:
                node.append({})
            if not isinstance(node[step], type(empty)):
                node[step] = empty
            node = node[step]
        else:
            if not isinstance(node.get(step), type(empty)):
                node[step] = empty
            node = node[step]
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


@dataclass(frozen=True)
class _Variable:
    """One environment variable that sets a key."""

    name: str
    value: str
    from_file: bool  # a *_FILE variable: value is the path of a file holding the secret


# Stands in for a secret that could not be read, or was given twice, so that validation reports
# nothing that follows from it ('option is required', 'provider ... needs secret_key').
_UNREAD_SECRET = "unread" * 11


def _env_name(path: Sequence[str | int]) -> str:
    return "PORTAL_" + "_".join(str(p).upper() for p in path)


def _environment_variables(
    environ: Mapping[str, str], warnings: list[str]
) -> dict[tuple[str | int, ...], tuple[_Leaf, list[_Variable]]]:
    """Find the variables that set each key, AUTHELIA_ ones before PORTAL_ ones."""
    leaves = [(leaf, _env_pattern(leaf)) for leaf in _leaves(Config)]
    found: dict[tuple[str | int, ...], tuple[_Leaf, list[_Variable]]] = {}
    for prefix in reversed(ENV_PREFIXES):  # PORTAL_ comes last, so it wins
        for name, value in sorted(environ.items()):
            if not name.startswith(prefix) or name[len(prefix) :] in ENV_NOT_KEYS:
                continue
            rest = name[len(prefix) :]
            from_file = rest.endswith("_FILE")
            for leaf, pattern in leaves:
                match = pattern.fullmatch(rest[:-5] if from_file else rest)
                if match is None or (from_file and not leaf.secret):
                    continue
                indexes = iter(int(g) for g in match.groups())
                path = tuple(next(indexes) if p == "*" else p for p in leaf.path)
                found.setdefault(path, (leaf, []))[1].append(_Variable(name, value, from_file))
                break
            else:
                if prefix == "PORTAL_":
                    warnings.append(f"environment variable {name} matches no configuration key")
    return found


def _get_path(data: Any, path: Sequence[str | int]) -> Any:
    for step in path:
        if isinstance(step, int):
            data = data[step] if isinstance(data, list) and step < len(data) else None
        else:
            data = data.get(step) if isinstance(data, dict) else None
    return data


def _in_places(places: Sequence[str]) -> str:
    """Say 'in A and in B', 'in A, in B and in C'."""
    named = [f"in {place}" for place in places]
    return ", ".join(named[:-1]) + " and " + named[-1]


def _apply_environment(
    raw: dict[str, Any],
    documents: Sequence[tuple[Path, Mapping[str, Any]]],
    environ: Mapping[str, str],
    problems: list[str],
    warnings: list[str],
) -> set[str]:
    """Override keys from PORTAL_* (or AUTHELIA_*) variables, and secrets from *_FILE.

    A secret comes from one place: a *_FILE variable with a value in the YAML, or two variables
    for one secret (a value and its file, or both prefixes), is a problem naming every place, as
    Authelia refuses a secret "already defined in other configuration sources" (an empty value
    does not count). A plain variable overrides the YAML, for secrets as for every key; for other
    keys PORTAL_ wins over AUTHELIA_. Return the sections holding a secret that was not read.
    """
    unread: set[str] = set()
    for path, (leaf, variables) in _environment_variables(environ, warnings).items():
        dotted = _format_location(path)
        given = [v for v in variables if v.from_file or v.value]
        if leaf.secret:
            files = [str(p) for p, data in documents if _get_path(data, path) not in (None, "")]
            places = [*files[-1:], *sorted(v.name for v in given)]
            if len(given) > 1 or (files and any(v.from_file for v in given)):
                problems.append(
                    f"{dotted}: given {_in_places(places)}; give a secret in one place only"
                )
                _set_path(raw, path, _UNREAD_SECRET)
                unread.add(str(path[0]))
                continue
        variable = (given or variables)[-1]
        value: Any = variable.value
        if variable.from_file:
            try:
                value = Path(value).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                problems.append(
                    f"{dotted}: cannot read the file {variable.name} names ({value}): {reason}"
                )
                value = _UNREAD_SECRET
                unread.add(str(path[0]))
        elif leaf.is_list:
            value = [v.strip() for v in value.split(",") if v.strip()]
        _set_path(raw, path, value)
    return unread


def _drop_unsupported(raw: dict[str, Any], warnings: list[str]) -> None:
    """Remove keys Authelia has and the portal does not implement, warning once for each."""
    for dotted in UNSUPPORTED_KEYS:
        *parents, last = dotted.split(".")
        node: Any = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            del node[last]
            warnings.append(f"{dotted}: not supported by the portal; ignored")


def _format_location(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "configuration"


@functools.cache
def _secret_keys() -> frozenset[str]:
    return frozenset(".".join(leaf.path) for leaf in _leaves(Config) if leaf.secret)


def _format_error(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    message = str(error["msg"])
    loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    if kind == "missing" and _format_location(loc) in _secret_keys():
        variable = _env_name(loc)
        message = (
            f"option is required: write it into a file named by {variable}_FILE (or set "
            f"{variable}, or write it in the configuration file); generate one with "
            "'portal crypto rand'"
        )
    elif kind == "missing":
        message = "option is required"
    elif kind == "extra_forbidden":
        message = "unknown option (check the spelling and the indentation)"
    elif kind == "string_too_short":
        message = f"must be at least {error['ctx']['min_length']} characters"
    elif kind == "too_short":
        message = f"must have at least {error['ctx']['min_length']} item(s)"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    elif message.startswith("Input should be"):
        message = "must be" + message.removeprefix("Input should be")
    return f"{_format_location(loc)}: {message}"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def describe_yaml_error(exc: YAMLError) -> str:
    """Say what is wrong with a YAML text and where, on one line and quoting no value."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    if isinstance(exc, DuplicateKeyError):
        # SECURITY: ruamel's own message quotes the values, which may be secrets or hashes.
        return f"a key appears twice in the same mapping{where}"
    problem = " ".join(str(getattr(exc, "problem", None) or type(exc).__name__).split())
    return f"{problem}{where}"


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    yaml = YAML(typ="safe", pure=True)
    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.load(handle)
    except OSError as exc:
        problems.append(f"{path}: cannot read the configuration file: {exc.strerror}")
        return {}
    except UnicodeDecodeError:
        problems.append(f"{path}: the configuration file is not UTF-8 text")
        return {}
    except YAMLError as exc:
        problems.append(f"{path}: not valid YAML: {describe_yaml_error(exc)}")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: the configuration must be a mapping of sections")
        return {}
    return data


@dataclass(frozen=True)
class Reading:
    """What reading the configuration found.

    `config` is the validated configuration, or None when there are `problems` (each naming
    its path). `sections` holds every top-level section (`server`, `storage`, ...) that is valid
    on its own, so that checks of the files it names can run alongside the other problems.
    """

    config: Config | None
    sections: Mapping[str, BaseModel]
    problems: list[str]
    warnings: list[str]


def _valid_sections(raw: Mapping[str, Any], skip: set[str]) -> dict[str, BaseModel]:
    """Validate each top-level section on its own; keep those that pass."""
    sections: dict[str, BaseModel] = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if name in skip or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        if name not in raw:
            if not field.is_required():
                sections[name] = field.get_default(call_default_factory=True)
            continue
        try:
            sections[name] = model.model_validate(raw[name])
        except ValidationError:
            continue
    return sections


def read_sections(paths: Sequence[Path], environ: Mapping[str, str]) -> Reading:
    """Load and validate the configuration, collecting every problem instead of raising.

    Files are read in order, later ones winning, then `PORTAL_*` / `AUTHELIA_*` variables
    override keys. A file that cannot be read or parsed is reported alone: what else could be
    said would follow from it.
    """
    problems: list[str] = []
    warnings: list[str] = []
    documents = [(path, _read_yaml(path, problems)) for path in paths]
    if problems:
        return Reading(None, {}, problems, warnings)
    raw: dict[str, Any] = {}
    for _, data in documents:
        _merge(raw, copy.deepcopy(data))
    unread = _apply_environment(raw, documents, environ, problems, warnings)
    _drop_unsupported(raw, warnings)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems.extend(_format_error(e) for e in errors)
        broken = {str(e["loc"][0]) for e in errors if e["loc"]}
        return Reading(None, _valid_sections(raw, unread | broken), problems, warnings)
    sections = {name: getattr(config, name) for name in Config.model_fields if name not in unread}
    if problems:
        return Reading(None, sections, problems, warnings)
    warnings.extend(_two_factor_warnings(config))
    return Reading(config, sections, problems, warnings)


def read_config(
    paths: Sequence[Path], environ: Mapping[str, str]
) -> tuple[Config, list[str]]:
    """Load and validate the configuration; return it with its warnings or raise ConfigError."""
    reading = read_sections(paths, environ)
    if reading.config is None:
        raise ConfigError(reading.problems)
    return reading.config, reading.warnings


def _two_factor_warnings(config: Config) -> list[str]:
    """Warn about two_factor policies, which act as deny until second factors exist."""
    access = config.access_control
    places = [f"access_control.rules[{i}]" for i, r in enumerate(access.rules)
              if r.policy == "two_factor"]  # fmt: skip
    if access.default_policy == "two_factor":
        places.insert(0, "access_control.default_policy")
    return [
        f"{place}: two_factor is treated as deny (the portal has no second factor yet)"
        for place in places
    ]


def load_config(paths: Sequence[Path], environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration from files and the process environment, logging its warnings."""
    config, warnings = read_config(paths, os.environ if environ is None else environ)
    for warning in warnings:
        logging.getLogger("portal.config").warning("configuration: %s", warning)
    return config
