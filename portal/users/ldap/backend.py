"""An LDAP directory as the user backend (Authelia's `authentication_backend.ldap`).

Lookups run as the service account over a small pool of bound connections; a password check binds
as the user on a fresh connection; a new password goes through the Password Modify extended
operation when the server announces it (Active Directory: `unicodePwd`; otherwise a `{CRYPT}`
SHA-512 `userPassword`), sent with the password-policy control so that the directory's own rules
come back as sentences a person understands.

ldap3 runs with its SYNC strategy: a connection is only ever used by one worker thread of the
backend's own executor at a time, never by the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import secrets
import ssl
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import quote

from passlib.hash import sha512_crypt

# pyasn1 (ldap3's own dependency) ships no type information.
from pyasn1.codec.ber import decoder as ber_decoder  # type: ignore[import-untyped]
from pyasn1.error import PyAsn1Error  # type: ignore[import-untyped]
from pyasn1.type import namedtype, tag, univ  # type: ignore[import-untyped]

from portal.config import LdapBackendConfig, TlsConfig
from portal.errors import (
    BackendUnavailableError,
    PasswordChangeRequiredError,
    PasswordRejectedError,
    PasswordWriteError,
    StartupCheckError,
    UserBackendError,
)
from portal.tls import client_context
from portal.users.base import User
from portal.users.ldap.state import change_required, read_state, state_attributes
from portal.users.passwords import normalize_password, password_candidates

with warnings.catch_warnings():
    # ldap3 2.9.1 imports names that pyasn1 0.6 deprecated (tagMap, typeMap): harmless, but under
    # warnings-as-errors (the test suite) the import itself would fail.
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    from ldap3 import (
        AUTO_BIND_NONE,
        BASE,
        MODIFY_REPLACE,
        NONE,
        SIMPLE,
        SUBTREE,
        SYNC,
        Connection,
        Server,
        Tls,
    )
    from ldap3.core.exceptions import (
        LDAPCommunicationError,
        LDAPException,
        LDAPResponseTimeoutError,
        LDAPStartTLSError,
    )
    from ldap3.operation.search import parse_filter
    from ldap3.protocol.sasl.sasl import sasl_prep
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

T = TypeVar("T")

WHERE = "authentication_backend.ldap"
PASSWORD_MODIFY_OID = "1.3.6.1.4.1.4203.1.11.1"  # noqa: S105 - RFC 3062, an OID
PPOLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"  # draft-behera-ldap-password-policy
AD_POLICY_HINTS_OID = "1.2.840.113556.1.4.2239"  # AD: apply history/age rules to a reset too
AD_POLICY_HINTS_VALUE = bytes.fromhex("3003020101")  # SEQUENCE { INTEGER 1 }
SHA512_CRYPT_ROUNDS = 50000  # Authelia's sha2crypt default

# LDAP result codes the backend tells apart.
SUCCESS, SIZE_LIMIT_EXCEEDED, NO_SUCH_OBJECT = 0, 4, 32
CONSTRAINT_VIOLATION, INSUFFICIENT_ACCESS, BUSY, UNAVAILABLE = 19, 50, 51, 52

# ppolicy's PasswordPolicyResponseValue error codes, as sentences for the reset form.
PPOLICY_SENTENCES: Mapping[int, str] = MappingProxyType(
    {
        0: "The current password has expired; ask your administrator to reset it.",
        1: "This account is locked; ask your administrator to unlock it.",
        2: "The directory requires this password to be changed by signing in first.",
        3: "The directory does not allow this password to be changed here.",
        4: "The directory requires the current password to change it.",
        5: "The directory found this password too weak.",
        6: "The directory requires a longer password.",
        7: "The password was changed too recently; try again later.",
        8: "You used this password recently; choose another one.",
        9: "The directory requires a shorter password.",
    }
)
AD_RULES_SENTENCE = (
    "The password does not meet the directory's rules (length, complexity or history)."
)
GENERIC_REJECTION = "The directory did not accept this password; choose a different one."
_AD_NEEDS_TLS = (
    "Active Directory only accepts a new password over an encrypted connection; use an "
    "ldaps:// address or start_tls, or password resets will fail"
)
UNSTORABLE_SENTENCE = "The password contains characters the directory cannot store."

# OpenLDAP's ppolicy texts for a constraintViolation sent without the response control.
_CONSTRAINT_TEXTS = (
    ("too short", PPOLICY_SENTENCES[6]),
    ("too long", PPOLICY_SENTENCES[9]),
    ("history", PPOLICY_SENTENCES[8]),
    ("quality", PPOLICY_SENTENCES[5]),
    ("too young", PPOLICY_SENTENCES[7]),
)

# Failures of the connection itself (as opposed to a request the server answered).
_CONNECTION_ERRORS = (
    LDAPCommunicationError,
    LDAPStartTLSError,
    LDAPResponseTimeoutError,
    OSError,
)

_SEARCH_PLACEHOLDER = re.compile(
    r"\{(input|username|dn|memberof:(?:dn|rdn)|date-time:(?:generalized|unix|microsoft-nt))\}"
)
_DN_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)
_NT_EPOCH_OFFSET = 11644473600  # seconds from 1601-01-01 (NT epoch) to 1970-01-01


# --- implementation defaults -------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    """Hold what an `implementation` fills in for keys the configuration leaves out."""

    users_filter: str | None = None
    groups_filter: str | None = None
    additional_users_dn: str | None = None
    additional_groups_dn: str | None = None
    distinguished_name: str | None = None
    username: str = "uid"
    display_name: str = "displayName"
    mail: str = "mail"
    member_of: str | None = None
    group_name: str = "cn"


_EITHER = "(|({username_attribute}={input})({mail_attribute}={input}))"

# Authelia's DefaultLDAPAuthenticationBackendConfigurationImplementation* values
# (internal/configuration/schema/authentication.go); the reference guide
# docs/content/reference/guides/ldap.md lists the same, see the unit tests for where they differ.
# One deliberate difference: Authelia's Active Directory users filter also leaves out disabled
# accounts, expired accounts and pwdLastSet=0 ("must change at next logon"). The portal finds
# them and reads those states from the entry (ldap/state.py) instead, so that a user who must
# change their password can reset it, while disabled and expired accounts still get no mail,
# no reset and no session.
IMPLEMENTATION_DEFAULTS: Mapping[str, Defaults] = MappingProxyType(
    {
        "custom": Defaults(),
        "activedirectory": Defaults(
            users_filter=f"(&{_EITHER}(sAMAccountType=805306368))",
            groups_filter="(&(member={dn})(|(sAMAccountType=268435456)(sAMAccountType=536870912)))",
            distinguished_name="distinguishedName",
            username="sAMAccountName",
            member_of="memberOf",
        ),
        "rfc2307bis": Defaults(
            users_filter=(
                f"(&{_EITHER}(|(objectClass=inetOrgPerson)(objectClass=organizationalPerson)))"
            ),
            groups_filter=(
                "(&(|(member={dn})(uniqueMember={dn}))(|(objectClass=groupOfNames)"
                "(objectClass=groupOfUniqueNames)(objectClass=groupOfMembers)))"
            ),
            member_of="memberOf",
        ),
        "freeipa": Defaults(
            users_filter=(
                f"(&{_EITHER}(objectClass=person)(!(nsAccountLock=TRUE))"
                "(krbPasswordExpiration>={date-time:generalized})"
                "(|(!(krbPrincipalExpiration=*))(krbPrincipalExpiration>={date-time:generalized})))"
            ),
            groups_filter="(&(member={dn})(objectClass=groupOfNames))",
            member_of="memberOf",
        ),
        "lldap": Defaults(
            users_filter=f"(&{_EITHER}(objectClass=person))",
            groups_filter="(&(member={dn})(objectClass=groupOfUniqueNames))",
            additional_users_dn="OU=people",
            additional_groups_dn="OU=groups",
            display_name="cn",
            member_of="memberOf",
        ),
        "glauth": Defaults(
            users_filter=f"(&{_EITHER}(objectClass=posixAccount)(!(accountStatus=inactive)))",
            groups_filter="(&(uniqueMember={dn})(objectClass=posixGroup))",
            username="cn",
            display_name="description",
            member_of="memberOf",
        ),
    }
)


@dataclass(frozen=True)
class Settings:
    """Hold the effective search settings: configured values, else the implementation's."""

    users_base: str
    groups_base: str
    users_filter: str  # startup placeholders ({username_attribute}, ...) already replaced
    groups_filter: str | None
    group_search_mode: str
    distinguished_name: str | None
    username: str
    display_name: str
    mail: str
    member_of: str | None
    group_name: str


def effective_settings(config: LdapBackendConfig) -> Settings:
    """Merge the configuration over its implementation's defaults; raise StartupCheckError."""
    defaults = IMPLEMENTATION_DEFAULTS[config.implementation]
    attrs = config.attributes
    # An empty string means "not set", as in Authelia (its LDAP suite sets distinguished_name: '').
    settings = Settings(
        users_base=_join_dn(
            config.additional_users_dn or defaults.additional_users_dn, config.base_dn
        ),
        groups_base=_join_dn(
            config.additional_groups_dn or defaults.additional_groups_dn, config.base_dn
        ),
        users_filter=config.users_filter or defaults.users_filter or "",
        groups_filter=config.groups_filter or defaults.groups_filter,
        group_search_mode=config.group_search_mode,
        distinguished_name=attrs.distinguished_name or defaults.distinguished_name,
        username=attrs.username or defaults.username,
        display_name=attrs.display_name or defaults.display_name,
        mail=attrs.mail or defaults.mail,
        member_of=attrs.member_of or defaults.member_of,
        group_name=attrs.group_name or defaults.group_name,
    )
    problems = []
    if not config.base_dn:
        problems.append(f"{WHERE}.base_dn: is required")
    if not settings.users_filter:
        problems.append(f"{WHERE}.users_filter: is required with implementation 'custom'")
    elif "{input}" not in settings.users_filter:
        problems.append(f"{WHERE}.users_filter: must contain the {{input}} placeholder")
    if settings.group_search_mode == "filter" and not settings.groups_filter:
        problems.append(f"{WHERE}.groups_filter: is required with implementation 'custom'")
    problems.extend(_memberof_problems(settings))
    if problems:
        raise StartupCheckError("\n".join(problems))
    settings = replace(
        settings,
        users_filter=_startup_placeholders(settings.users_filter, settings),
        groups_filter=settings.groups_filter
        and _startup_placeholders(settings.groups_filter, settings),
    )
    _check_filter_syntax("users_filter", settings.users_filter)
    if settings.groups_filter:
        _check_filter_syntax("groups_filter", settings.groups_filter)
    return settings


def _memberof_problems(settings: Settings) -> list[str]:
    """Authelia's checks of the {memberof:*} placeholders (validator/authentication.go,
    validateLDAPGroupFilter): memberof mode needs one of them in groups_filter, {memberof:dn}
    needs attributes.distinguished_name, either needs attributes.member_of."""
    groups_filter = settings.groups_filter or ""
    by_dn, by_rdn = (p in groups_filter for p in ("{memberof:dn}", "{memberof:rdn}"))
    problems = []
    if settings.group_search_mode == "memberof" and not (by_dn or by_rdn):
        problems.append(
            f"{WHERE}.groups_filter: must contain the {{memberof:rdn}} or {{memberof:dn}} "
            "placeholder with group_search_mode memberof"
        )
    if by_dn and not settings.distinguished_name:
        problems.append(
            f"{WHERE}.attributes.distinguished_name: is required when groups_filter uses "
            "{memberof:dn} (OpenLDAP: entryDN; Active Directory: distinguishedName)"
        )
    if (by_dn or by_rdn) and not settings.member_of:
        problems.append(
            f"{WHERE}.attributes.member_of: is required when groups_filter uses "
            "{memberof:rdn} or {memberof:dn}"
        )
    return problems


def _join_dn(prefix: str | None, base: str | None) -> str:
    return f"{prefix},{base}" if prefix and base else (base or prefix or "")


def _startup_placeholders(template: str, settings: Settings) -> str:
    """Replace the attribute-name placeholders, which come from the configuration."""
    for name, value in (
        ("username_attribute", settings.username),
        ("mail_attribute", settings.mail),
        ("display_name_attribute", settings.display_name),
        ("distinguished_name_attribute", settings.distinguished_name),
        ("member_of_attribute", settings.member_of),
    ):
        if value:
            template = template.replace(f"{{{name}}}", value)
    return template


def _check_filter_syntax(key: str, template: str) -> None:
    values = {"input": "x", "username": "x", "dn": "cn=x"}
    fragments = memberof_fragments(["cn=x"], "entryDN")
    sample = fill_filter(template, values, datetime.now(UTC), fragments)
    try:
        parse_filter(sample, None, True, True, None, False)
    except LDAPException as exc:
        raise StartupCheckError(f"{WHERE}.{key}: is not a valid LDAP filter: {exc}") from None


def fill_filter(
    template: str,
    values: Mapping[str, str],
    now: datetime,
    fragments: Mapping[str, str] | None = None,
) -> str:
    """Put RFC 4515-escaped values and the time into a filter's search-time placeholders.

    `values` are escaped here; `fragments` ({memberof:dn}, {memberof:rdn}, built by
    memberof_fragments) are filter text whose values are escaped already and go in as they are.
    A placeholder with neither stays as written.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("date-time:"):
            return _date_time(name.removeprefix("date-time:"), now)
        if fragments is not None and name in fragments:
            return fragments[name]
        if name not in values:
            return match.group(0)
        # SECURITY: RFC 4515 escaping (\ * ( ) NUL) keeps input a value: `*)(uid=*` finds nobody.
        return str(escape_filter_chars(values[name]))

    # One pass, so that text inside a value (say "{dn}") is never substituted again.
    return _SEARCH_PLACEHOLDER.sub(value, template)


def memberof_fragments(member_of: Sequence[str], dn_attribute: str | None) -> dict[str, str]:
    """Build the filter text of {memberof:dn} and {memberof:rdn} from a user's memberOf DNs.

    As Authelia's resolveGroupsFilter (internal/authentication/ldap_user_provider.go):
    {memberof:dn} is `(<dn_attribute>=<dn1>)(<dn_attribute>=<dn2>)...` and {memberof:rdn} is
    `(<rdn1>)(<rdn2>)...`, the first RDN of each DN, every value RFC 4515-escaped so that a
    group named `a*b(c)` matches only itself. Unlike Authelia, the RDN is read with a DN parser
    (RFC 4514: `cn=a\\,b` is one RDN; a multi-valued RDN becomes an `(&...)`). A value that is
    not a DN has no RDN and is left out of {memberof:rdn}.
    """
    by_dn = "".join(f"({dn_attribute}={escape_filter_chars(dn)})" for dn in member_of)
    by_rdn = []
    for dn in member_of:
        try:
            parts = parse_dn(dn)
        except LDAPException:
            continue
        rdn = [f"({kind}={escape_filter_chars(_dn_value(value))})" for kind, value, _ in parts[:1]]
        for (kind, value, _), (_, _, before) in zip(parts[1:], parts, strict=False):
            if before != "+":
                break
            rdn.append(f"({kind}={escape_filter_chars(_dn_value(value))})")
        by_rdn.append(rdn[0] if len(rdn) == 1 else f"(&{''.join(rdn)})")
    return {"memberof:dn": by_dn, "memberof:rdn": "".join(by_rdn)}


def _dn_value(text: str) -> str:
    """Undo RFC 4514 section 2.4 escaping (`\\,` and `\\2C` are both a comma) in one DN value."""
    raw, start = bytearray(), 0
    for match in _DN_ESCAPE.finditer(text):
        raw += text[start : match.start()].encode()
        escaped = match.group(1)
        raw += bytes.fromhex(escaped) if len(escaped) == 2 else escaped.encode()  # noqa: PLR2004
        start = match.end()
    raw += text[start:].encode()
    return raw.decode("utf-8", "replace")


def same_dn_key(dn: str) -> tuple[tuple[str, str], ...] | str:
    """Return a key under which two spellings of one DN compare equal (case, escapes, spaces).

    Authelia compares a group's DN with the memberOf values case-insensitively
    (utils.IsStringInSliceFold); this also forgives `\\2C` against `\\,`. Not a DN: the text
    itself, case-folded.
    """
    try:
        parts = parse_dn(dn, strip=True)
    except LDAPException:
        return dn.casefold()
    return tuple((kind.casefold(), _dn_value(value).casefold()) for kind, value, _ in parts)


def _is_dn(text: str) -> bool:
    key = same_dn_key(text)
    return isinstance(key, tuple) and bool(key)


def _date_time(kind: str, now: datetime) -> str:
    seconds = int(now.timestamp())
    if kind == "generalized":
        return now.astimezone(UTC).strftime("%Y%m%d%H%M%S.0Z")
    if kind == "unix":
        return str(seconds)
    return str((seconds + _NT_EPOCH_OFFSET) * 10_000_000)  # microsoft-nt: 100 ns ticks


# --- password encodings and policy answers -----------------------------------------------------


def unicode_pwd(password: str) -> bytes:
    """Encode a password as Active Directory's unicodePwd wants it: in quotes, UTF-16LE."""
    return f'"{password}"'.encode("utf-16-le")


def prepare_password(password: str) -> str:
    """Apply SASLprep as ldap3 does to bind passwords; raise PasswordRejectedError if it fails."""
    # Binds send sasl_prep(password): anything stored another way (our own hash, unicodePwd)
    # must be prepared the same way or the user could not sign in with what they typed. Callers
    # pass the normalized password (normalize_password); SASLprep's own NFKC uses Unicode 3.2.
    try:
        prepared = sasl_prep(password)
    except LDAPException:
        raise PasswordRejectedError([UNSTORABLE_SENTENCE]) from None
    return str(prepared)


def bind_passwords(password: str) -> tuple[str, ...]:
    """Return what binds send, in order: the normalized form, then as typed if that differs."""
    prepared: dict[str, None] = {}
    for candidate in password_candidates(password):
        with contextlib.suppress(PasswordRejectedError):  # a form SASLprep refuses cannot bind
            prepared[prepare_password(candidate)] = None
    # SECURITY: equal forms after SASLprep bind once: one failure per wrong password for lockout.
    return tuple(prepared)


def _ppolicy_response_spec() -> Any:
    """Build pyasn1's description of PasswordPolicyResponseValue."""
    context = tag.tagClassContext
    warning = univ.Choice(
        componentType=namedtype.NamedTypes(
            namedtype.NamedType(
                "timeBeforeExpiration",
                univ.Integer().subtype(implicitTag=tag.Tag(context, tag.tagFormatSimple, 0)),
            ),
            namedtype.NamedType(
                "graceAuthNsRemaining",
                univ.Integer().subtype(implicitTag=tag.Tag(context, tag.tagFormatSimple, 1)),
            ),
        )
    ).subtype(explicitTag=tag.Tag(context, tag.tagFormatConstructed, 0))
    error = univ.Enumerated().subtype(implicitTag=tag.Tag(context, tag.tagFormatSimple, 1))
    return univ.Sequence(
        componentType=namedtype.NamedTypes(
            namedtype.OptionalNamedType("warning", warning),
            namedtype.OptionalNamedType("error", error),
        )
    )


def decode_ppolicy_error(value: bytes) -> int | None:
    """Return the error code in a password-policy response control value, or None."""
    return decode_ppolicy(value)[0]


def decode_ppolicy(value: bytes) -> tuple[int | None, int | None]:
    """Return (error, graceAuthNsRemaining) from a password-policy response control value."""
    try:
        decoded, rest = ber_decoder.decode(value, asn1Spec=_ppolicy_response_spec())
    except PyAsn1Error:
        return None, None
    if rest:
        return None, None
    error, warning = decoded["error"], decoded["warning"]
    grace = None
    if warning.isValue and warning.getName() == "graceAuthNsRemaining":
        grace = int(warning.getComponent())
    return (int(error) if error.isValue else None), grace


def policy_sentence(code: int | None, message: str, result_code: int) -> str | None:
    """Turn the directory's answer to a password write into a sentence, or None if not policy."""
    if code is not None:
        return PPOLICY_SENTENCES.get(code, GENERIC_REJECTION)
    # Active Directory names its password rules failure in the diagnostic text.
    if "0000052d" in message.lower():
        return AD_RULES_SENTENCE
    if result_code == CONSTRAINT_VIOLATION:
        lowered = message.lower()
        for text, sentence in _CONSTRAINT_TEXTS:
            if text in lowered:
                return sentence
        return GENERIC_REJECTION
    return None


# --- ldap3 plumbing ----------------------------------------------------------------------------


class _Down(Exception):
    """The server could not be reached or dropped the connection; the message names no secret."""


class _CannotConnect(_Down):
    """No connection could be opened (refused, reset, timed out): nothing was sent on it yet."""


class _BindRefused(Exception):
    """The server answered a bind with something other than success."""

    def __init__(self, code: int, description: str, answer: _Answer | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.words = re.sub(r"(?<!^)(?=[A-Z])", " ", description).lower() or f"result {code}"
        self.answer = answer


@dataclass(frozen=True)
class _Entry:
    dn: str
    raw: Mapping[str, Sequence[bytes]]  # attribute name in lower case -> values

    def values(self, attribute: str | None) -> list[str]:
        if not attribute:
            return []
        return [v.decode("utf-8", "replace") for v in self.raw.get(attribute.lower(), ())]


@dataclass(frozen=True)
class _Answer:
    """What the server said to one request: result code, texts, entries, response controls."""

    code: int
    description: str
    message: str
    entries: tuple[_Entry, ...] = ()
    ppolicy_error: int | None = None
    ppolicy_grace: int | None = None  # graceAuthNsRemaining: a grace login was used


@dataclass(frozen=True)
class _Features:
    extensions: frozenset[str]
    controls: frozenset[str]
    vendor: str


def _answer(conn: Any, entries: tuple[_Entry, ...] = ()) -> _Answer:
    result = conn.result or {}
    control = (result.get("controls") or {}).get(PPOLICY_OID) or {}
    value = control.get("value")
    error, grace = decode_ppolicy(bytes(value)) if value else (None, None)
    return _Answer(
        code=int(result.get("result", -1)),
        description=str(result.get("description") or ""),
        message=str(result.get("message") or ""),
        entries=entries,
        ppolicy_error=error,
        ppolicy_grace=grace,
    )


def _entries(conn: Any) -> tuple[_Entry, ...]:
    found = []
    for item in conn.response or ():
        if item.get("type") != "searchResEntry":
            continue  # referrals (searchResRef) are never followed unless permitted
        raw = {str(k).lower(): [bytes(v) for v in vs] for k, vs in item["raw_attributes"].items()}
        found.append(_Entry(str(item["dn"]), raw))
    return tuple(found)


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.unbind()
    # ldap3's unbind leaves the socket open when sending the request fails (a dropped connection).
    with contextlib.suppress(Exception):
        conn.socket.close()


class _Tls(Tls):  # type: ignore[misc]  # ldap3 is untyped
    """ldap3's Tls, wrapping sockets with our own SSLContext.

    ldap3 turns the context's hostname check off and calls ssl.match_hostname itself (deprecated,
    gone in Python 3.12, and it ignores tls.server_name); the context below checks the certificate
    and the name during the handshake, with the configured TLS versions.
    """

    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        super().__init__()
        self._context = context
        self._server_name = server_name

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        """Wrap the connection's socket in TLS."""
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._server_name,
        )


def _ssl_context(tls: TlsConfig, certificates_directory: Path | None) -> ssl.SSLContext:
    """Build the client context (portal.tls): system CAs + certificates_directory, client cert."""
    return client_context(tls, certificates_directory, f"{WHERE}.tls")


def _service_account_problem(config: LdapBackendConfig) -> str | None:
    if not config.user or config.password is None or not config.password.get_secret_value():
        # SECURITY: without a password a simple bind is anonymous; an anonymous service
        # account could not write passwords anyway, so permit_unauthenticated_bind is not used.
        return f"{WHERE}.user and {WHERE}.password: a service account with a password is required"
    return None


def _uses_tls(config: LdapBackendConfig) -> bool:
    scheme = config.address.scheme
    return scheme == "ldaps" or (config.start_tls and scheme == "ldap")


def check_ldap_settings(config: LdapBackendConfig) -> list[str]:
    """Return every problem the backend would refuse before connecting, each naming its key.

    The same checks as LdapUserBackend's constructor: the search settings over the
    implementation's defaults, the service account, and the TLS trust and client key.
    """
    problems = []
    try:
        effective_settings(config)
    except StartupCheckError as exc:
        problems.extend(str(exc).splitlines())
    problem = _service_account_problem(config)
    if problem is not None:
        problems.append(problem)
    if _uses_tls(config):
        try:
            # certificates_directory is the top-level Config's to check, not this section's.
            _ssl_context(config.tls, None)
        except StartupCheckError as exc:
            problems.extend(str(exc).splitlines())
    return problems


# --- the backend -------------------------------------------------------------------------------


class LdapUserBackend:
    """Find users in an LDAP directory, check their passwords and write new ones."""

    def __init__(
        self,
        config: LdapBackendConfig,
        *,
        certificates_directory: Path | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """Check the configuration and prepare TLS; nothing connects until it is needed.

        certificates_directory: Authelia's top-level key, whose certificates join the system's
        trust store for the directory's certificate. Raise StartupCheckError on what cannot work.
        """
        self._config = config
        self._logger = logger or logging.getLogger("portal.users.ldap")
        self._settings = effective_settings(config)
        self._address = str(config.address)
        self._ad = config.implementation == "activedirectory"
        if self._ad and "(!(pwdlastset=0))" in self._settings.users_filter.lower():
            self._logger.warning(
                "%s.users_filter leaves out users who must change their password "
                "((!(pwdLastSet=0)), as Authelia's default does), so they cannot reset it; the "
                "portal reads pwdLastSet itself and gives them no session until they do: remove "
                "that clause", WHERE,
            )  # fmt: skip
        problem = _service_account_problem(config)
        if problem is not None:
            raise StartupCheckError(problem)
        assert config.user and config.password is not None  # noqa: S101 - checked just above
        self._service_dn = config.user
        self._service_password = config.password.get_secret_value()
        scheme = config.address.scheme
        self._encrypted = scheme == "ldaps" or config.start_tls or scheme == "ldapi"
        self._start_tls = config.start_tls and scheme == "ldap"
        if config.implementation == "activedirectory" and not self._encrypted:
            self._logger.warning("%s: %s", WHERE, _AD_NEEDS_TLS)
        self._tls: _Tls | None = None
        self._tls_hint = ""
        if _uses_tls(config) and not config.tls.certificate_chain:
            self._tls_hint = (
                " (a server that demands a client certificate needs tls.certificate_chain and "
                "tls.private_key)"
            )
        if _uses_tls(config):
            if config.tls.skip_verify:
                # SECURITY: anyone on the path can read the service password and every write.
                self._logger.warning(
                    "%s.tls.skip_verify is on: the directory's certificate is not checked", WHERE
                )
            server_name = config.tls.server_name or config.address.host
            self._tls = _Tls(_ssl_context(config.tls, certificates_directory), server_name)
        seconds = config.timeout.total_seconds()
        self._connect_timeout = seconds or None
        # ldap3 packs receive_timeout into SO_RCVTIMEO as an integer: a float would crash it.
        self._receive_timeout = max(1, math.ceil(seconds)) if seconds else None
        self._size = config.pooling.count if config.pooling.enable else 2
        self._pool_wait = config.pooling.timeout.total_seconds()
        # Authelia (ldap_client_factory.go): pooling.retries splits pooling.timeout into the pause
        # between attempts to connect; 0 means its default, 2. Without pooling, one attempt.
        retries = config.pooling.retries or 2
        self._retry_pause = self._pool_wait / retries if config.pooling.enable else None
        self._slots = asyncio.Semaphore(self._size)
        self._idle: list[Any] = []
        self._executor = ThreadPoolExecutor(self._size + 2, thread_name_prefix="portal-ldap")
        self._features: _Features | None = None
        self._warned: set[str] = set()
        self._closed = False

    # --- the UserBackend protocol -------------------------------------------------------------

    async def startup_check(self) -> None:
        """Connect and bind as the service account, read the RootDSE, try the search filters."""
        try:
            rootdse, users, groups = await self._run(self._probe)
        except (BackendUnavailableError, UserBackendError) as exc:
            raise StartupCheckError(str(exc)) from None
        self._features = self._read_features(rootdse)
        s = self._settings
        for key, base, answer in (
            ("users_filter", s.users_base, users),
            ("groups_filter", s.groups_base, groups),
        ):
            if answer is None or answer.code in (SUCCESS, SIZE_LIMIT_EXCEEDED):
                continue
            if answer.code == NO_SUCH_OBJECT:
                raise StartupCheckError(
                    f"{WHERE}: the search base {base!r} does not exist (check base_dn and "
                    f"additional_{key.split('_')[0]}_dn)"
                )
            raise StartupCheckError(f"{WHERE}.{key}: the search failed: {_describe(answer)}")
        self._logger.info(
            "%s: connected to %s (%s); password changes use %s",
            WHERE, self._address, self._features.vendor or "unknown vendor", self._write_method(),
        )  # fmt: skip

    async def close(self) -> None:
        """Unbind every pooled connection and stop the worker threads."""
        self._closed = True
        idle, self._idle = self._idle, []
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _close, conn) for conn in idle),
            return_exceptions=True,
        )
        self._executor.shutdown(wait=False)

    async def get_user(self, identifier: str) -> User | None:
        """Find a user by whatever users_filter matches {input} against (username, mail)."""
        s = self._settings
        attributes = [s.username, s.display_name, s.mail, *state_attributes(self._ad)]
        if s.group_search_mode == "memberof" and s.member_of:
            attributes.append(s.member_of)
        entry = await self._find(identifier, attributes)
        if entry is None:
            return None
        names = entry.values(s.username)
        if not names:
            self._logger.warning("%s: %s has no %s; ignoring it", WHERE, entry.dn, s.username)
            return None
        # A multi-valued username attribute: prefer the value the person typed.
        username = next((n for n in names if n.casefold() == identifier.casefold()), names[0])
        display = entry.values(s.display_name)
        disabled, state = read_state(entry.values, active_directory=self._ad, now=datetime.now(UTC))
        return User(
            username=username,
            display_name=display[0] if display else username,
            emails=tuple(entry.values(s.mail)),
            groups=await self._groups(entry, identifier, username),
            disabled=disabled,
            state=state,
        )

    async def check_password(self, username: str, password: str) -> bool:
        """Bind as the user with the password on a fresh connection; False if it is refused."""
        # SECURITY: an empty password would make an unauthenticated bind, which "succeeds".
        if not password:
            return False
        entry = await self._find(username, [])
        if entry is None or self._closed:
            return False
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._user_binds, entry.dn, password
        )
        try:
            return await future
        except _Down as exc:
            raise BackendUnavailableError(str(exc)) from None

    async def set_password(self, username: str, password: str) -> None:
        """Write a new password the way the directory wants it; raise on any refusal."""
        if self._config.implementation == "activedirectory" and not self._encrypted:
            # SECURITY: the new password would cross the network in clear (AD refuses it too).
            raise PasswordWriteError(f"{WHERE}: {_AD_NEEDS_TLS}")
        # Normalizing can be slow for long input (NFKC expands some characters 18-fold).
        prepared = await asyncio.to_thread(lambda: prepare_password(normalize_password(password)))
        if not prepared:
            raise PasswordRejectedError(["The password must not be empty."])
        entry = await self._find(username, [])
        if entry is None:
            raise PasswordWriteError(f"{WHERE}: no user {username!r} in the directory")
        features = await self._known_features()
        method = self._write_method()
        if method == "userPassword" and "crypt" not in self._warned:
            self._warned.add("crypt")
            self._logger.warning(
                "%s: %s does not announce the Password Modify operation; writing userPassword as "
                "a {CRYPT} SHA-512 hash, without the server's own password policy",
                WHERE, self._address,
            )  # fmt: skip
        controls: list[tuple[str, bool, bytes | None]] = [(PPOLICY_OID, False, None)]
        if method == "unicodePwd" and AD_POLICY_HINTS_OID in features.controls:
            controls.append((AD_POLICY_HINTS_OID, False, AD_POLICY_HINTS_VALUE))

        def write(conn: Any) -> _Answer:
            if method == "unicodePwd":
                changes = {"unicodePwd": [(MODIFY_REPLACE, [unicode_pwd(prepared)])]}
                self._ldap(lambda: conn.modify(entry.dn, changes, controls=controls))
            elif method == "passwordModify":
                new = prepared.encode("utf-8")  # bytes: ldap3 sends them as they are
                self._ldap(
                    lambda: conn.extend.standard.modify_password(
                        user=entry.dn, new_password=new, controls=controls
                    )
                )
            else:
                digest = sha512_crypt.using(rounds=SHA512_CRYPT_ROUNDS).hash(prepared)
                # SECURITY: only ever a hash; a clear-text userPassword is readable by many.
                changes = {"userPassword": [(MODIFY_REPLACE, ["{CRYPT}" + digest])]}
                self._ldap(lambda: conn.modify(entry.dn, changes, controls=controls))
            return _answer(conn)

        # Not on a reused connection: a write sent on a dead one must not be retried blindly.
        answer = await self._run(write, reuse=False)
        if answer.code == SUCCESS:
            self._logger.info("%s: new password written for %s (%s)", WHERE, entry.dn, method)
            return
        sentence = policy_sentence(answer.ppolicy_error, answer.message, answer.code)
        if sentence is not None:
            self._logger.info(
                "%s: the directory refused the new password for %s: %s",
                WHERE, entry.dn, _describe(answer),
            )  # fmt: skip
            raise PasswordRejectedError([sentence])
        if answer.code in (BUSY, UNAVAILABLE):
            raise BackendUnavailableError(f"{WHERE}: {self._address} is {answer.description}")
        hint = " (the service account may not write passwords)"
        raise PasswordWriteError(
            f"{WHERE}: the directory refused the new password for {entry.dn}: {_describe(answer)}"
            + (hint if answer.code == INSUFFICIENT_ACCESS else "")
        )

    async def healthy(self) -> bool:
        """Tell whether the directory answers the service account right now (a RootDSE read)."""
        try:
            answer = await self._run(self._read_rootdse)
        except (BackendUnavailableError, UserBackendError):
            return False
        return answer.code == SUCCESS

    async def password_state(self, username: str) -> str | None:
        """Return a digest of what changes with the password; None for an unknown user."""
        # Operational attributes only come back when asked for by name.
        attributes = ["pwdChangedTime", "pwdLastSet", "userPassword"]
        entry = await self._find(username, attributes)
        if entry is None:
            return None
        parts = [entry.dn]
        for name in attributes:
            parts.extend(f"{name}:{value.hex()}" for value in entry.raw.get(name.lower(), ()))
        if len(parts) == 1 and "state" not in self._warned:
            self._warned.add("state")
            self._logger.warning(
                "%s: the service account cannot read pwdChangedTime (OpenLDAP ppolicy), pwdLastSet "
                "(Active Directory) or userPassword of %s; grant it read access to one of them, or "
                "reset links will not die when a password is changed elsewhere",
                WHERE, entry.dn,
            )  # fmt: skip
        # SECURITY: the parts may hold the stored hash; only a digest of them leaves this module.
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    async def clear_lockout(self, username: str) -> bool:
        """End a lockout from failed binds: AD's lockoutTime=0 (MS-ADA1 2.373: zero is "not
        locked out"; MS-SAMR 3.1.1.8.3: writing it also resets badPwdCount).

        OpenLDAP's ppolicy needs nothing: it deletes pwdAccountLockedTime and pwdFailureTime with
        every password change (ppolicy.c, ppolicy_modify), so this returns False there.
        """
        if not self._ad:
            return False
        entry = await self._find(username, [])
        if entry is None:
            return False
        changes = {"lockoutTime": [(MODIFY_REPLACE, ["0"])]}

        def unlock(conn: Any) -> _Answer:
            self._ldap(lambda: conn.modify(entry.dn, changes))
            return _answer(conn)

        answer = await self._run(unlock, reuse=False)
        if answer.code != SUCCESS:
            hint = " (the service account needs write access to lockoutTime)"
            raise UserBackendError(
                f"{WHERE}: the directory refused to unlock {entry.dn}: {_describe(answer)}"
                + (hint if answer.code == INSUFFICIENT_ACCESS else "")
            )
        self._logger.info("%s: lockout of %s cleared after a password reset", WHERE, entry.dn)
        return True

    # --- lookups ------------------------------------------------------------------------------

    async def _find(self, identifier: str, attributes: list[str]) -> _Entry | None:
        """Search users_filter for the identifier: the one entry it names, or None."""
        if not identifier or not _is_utf8(identifier):
            return None
        s = self._settings
        search = fill_filter(s.users_filter, {"input": identifier}, datetime.now(UTC))
        answer = await self._run(lambda c: self._search(c, s.users_base, search, attributes, 2))
        if answer.code not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise self._search_failed("users", answer)
        if len(answer.entries) > 1:
            # SECURITY: a reset link must never reach the wrong person: pick nobody.
            self._logger.warning(
                "%s: users_filter matches several entries for %r; refusing to pick one",
                WHERE, identifier,
            )  # fmt: skip
            return None
        return answer.entries[0] if answer.entries else None

    async def _groups(self, entry: _Entry, identifier: str, username: str) -> tuple[str, ...]:
        """Search groups_filter for the user's groups; their group_name values, in order.

        memberof mode (Authelia's getUserGroupsRequestMemberOf): the filter gets the user's
        memberOf values through {memberof:dn}/{memberof:rdn}, and only entries whose DN is one
        of those values count. No memberOf value: no groups, and no search.
        """
        s = self._settings
        if not s.groups_filter:
            return ()
        member_of: list[str] = []
        if s.group_search_mode == "memberof":
            # A value that is not a DN can name no entry: it counts as no value.
            member_of = [dn for dn in entry.values(s.member_of) if _is_dn(dn)]
            if not member_of:
                return ()
        values = {"input": identifier, "username": username, "dn": entry.dn}
        fragments = memberof_fragments(member_of, s.distinguished_name)
        search = fill_filter(s.groups_filter, values, datetime.now(UTC), fragments)
        answer = await self._run(
            lambda c: self._search(c, s.groups_base, search, [s.group_name], 0)
        )
        if answer.code not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise self._search_failed("groups", answer)
        groups = answer.entries
        if s.group_search_mode == "memberof":
            mine = {same_dn_key(dn) for dn in member_of}
            groups = tuple(group for group in groups if same_dn_key(group.dn) in mine)
        names = [n for group in groups for n in group.values(s.group_name)]
        return tuple(dict.fromkeys(names))

    def _search_failed(self, what: str, answer: _Answer) -> Exception:
        if answer.code in (BUSY, UNAVAILABLE):
            return BackendUnavailableError(f"{WHERE}: {self._address} is {answer.description}")
        return UserBackendError(f"{WHERE}: the {what} search failed: {_describe(answer)}")

    async def _known_features(self) -> _Features:
        if self._features is None:
            rootdse = await self._run(self._read_rootdse)
            try:
                self._features = self._read_features(rootdse)
            except StartupCheckError as exc:
                raise PasswordWriteError(str(exc)) from None
        return self._features

    def _read_features(self, rootdse: _Answer) -> _Features:
        if rootdse.code == SUCCESS and rootdse.entries:
            entry = rootdse.entries[0]
            return _Features(
                frozenset(entry.values("supportedExtension")),
                frozenset(entry.values("supportedControl")),
                " ".join(entry.values("vendorName") + entry.values("vendorVersion")),
            )
        reason = _describe(rootdse) if rootdse.code != SUCCESS else "not readable"
        problem = f"{WHERE}: cannot read the RootDSE of {self._address}: {reason}"
        if not self._config.permit_feature_detection_failure:
            raise StartupCheckError(f"{problem} (permit_feature_detection_failure allows it)")
        self._logger.warning("%s; assuming no extensions or controls", problem)
        return _Features(frozenset(), frozenset(), "")

    def _write_method(self) -> str:
        if self._config.implementation == "activedirectory":
            return "unicodePwd"
        if self._features is not None and PASSWORD_MODIFY_OID in self._features.extensions:
            return "passwordModify"
        return "userPassword"

    # --- worker-thread side ------------------------------------------------------------------

    def _ldap(self, call: Callable[[], T]) -> T:
        """Run one ldap3 call; turn a failure of the connection itself into _Down."""
        try:
            return call()
        except _CONNECTION_ERRORS as exc:
            raise _Down(f"{WHERE}: lost the connection to {self._address}: {exc}") from None

    def _server(self) -> Any:
        address = self._config.address
        if address.scheme == "ldapi":
            return Server(f"ldapi://{quote(address.path, safe='')}", get_info=NONE)
        return Server(
            address.host,
            port=address.port,
            use_ssl=address.scheme == "ldaps",
            tls=self._tls,
            get_info=NONE,  # the RootDSE is read explicitly, after StartTLS and the bind
            connect_timeout=self._connect_timeout,
        )

    def _connect(
        self, dn: str, password: str, controls: list[tuple[str, bool, bytes | None]] | None = None
    ) -> Any:
        """Open a connection (StartTLS if configured) and bind; raise _Down or _BindRefused."""
        # SECURITY: a simple bind with an empty password is an unauthenticated bind
        # (RFC 4513 5.1.2) that many servers answer with success: never send one.
        if not password:
            raise _BindRefused(-1, "emptyPassword")
        conn = Connection(
            self._server(),
            user=dn,
            password=password,
            authentication=SIMPLE,
            client_strategy=SYNC,
            auto_bind=AUTO_BIND_NONE,
            raise_exceptions=False,
            receive_timeout=self._receive_timeout,
            auto_referrals=self._config.permit_referrals,  # ldap3 follows referrals by default
            return_empty_attributes=False,
        )
        try:
            conn.open()
            if self._start_tls:
                conn.start_tls()
            bound = conn.bind(controls=controls)
        except ssl.SSLError as exc:  # a certificate or protocol problem: retrying will not help
            _close(conn)
            raise _Down(
                f"{WHERE}: cannot connect to {self._address}: {exc}{self._tls_hint}"
            ) from None
        except _CONNECTION_ERRORS as exc:
            _close(conn)
            raise _CannotConnect(
                f"{WHERE}: cannot connect to {self._address}: {exc}{self._tls_hint}"
            ) from None
        except LDAPException:
            _close(conn)
            raise
        if not bound:
            answer = _answer(conn)
            _close(conn)
            raise _BindRefused(answer.code, answer.description, answer)
        return conn

    def _user_bind(self, dn: str, password: str) -> bool:
        # The password-policy control asks slapd why; AD says it in the diagnostic text.
        try:
            conn = self._connect(dn, password, [(PPOLICY_OID, False, None)])
        except _BindRefused as refused:
            answer = refused.answer
            if answer is not None:
                _raise_if_change_required(answer)
            if refused.code != 49:  # invalidCredentials is the common case; others are worth a note
                self._logger.info("%s: bind as %s refused: %s", WHERE, dn, refused.words)
            return False
        except LDAPException:  # a password ldap3 will not send (SASLprep)
            return False
        answer = _answer(conn)
        _close(conn)
        _raise_if_change_required(answer)
        return True

    def _user_binds(self, dn: str, password: str) -> bool:
        """Bind with each form of the password in turn (one from before may be as typed)."""
        return any(self._user_bind(dn, form) for form in bind_passwords(password))

    def _search(
        self, conn: Any, base: str, search: str, attributes: list[str], size_limit: int
    ) -> _Answer:
        self._ldap(
            lambda: conn.search(
                base,
                search,
                search_scope=SUBTREE,
                attributes=attributes or ["1.1"],
                size_limit=size_limit,
                time_limit=self._receive_timeout or 0,
            )
        )
        return _answer(conn, _entries(conn))

    def _read_rootdse(self, conn: Any) -> _Answer:
        attributes = ["supportedExtension", "supportedControl", "vendorName", "vendorVersion"]
        self._ldap(
            lambda: conn.search("", "(objectClass=*)", search_scope=BASE, attributes=attributes)
        )
        return _answer(conn, _entries(conn))

    def _probe(self, conn: Any) -> tuple[_Answer, _Answer, _Answer | None]:
        """Read the RootDSE and run both filters once, with input that matches nobody."""
        s = self._settings
        nobody = f"portal-startup-check-{secrets.token_hex(8)}"
        now = datetime.now(UTC)
        users_filter = fill_filter(s.users_filter, {"input": nobody}, now)
        users = self._search(conn, s.users_base, users_filter, [], 1)
        groups = None
        if s.groups_filter:
            values = {"input": nobody, "username": nobody, "dn": f"cn={nobody},{s.users_base}"}
            fragments = memberof_fragments([f"cn={nobody},{s.groups_base}"], s.distinguished_name)
            groups_filter = fill_filter(s.groups_filter, values, now, fragments)
            groups = self._search(conn, s.groups_base, groups_filter, [], 1)
        return self._read_rootdse(conn), users, groups

    def _use(self, conn: Any | None, op: Callable[[Any], T]) -> tuple[Any | None, T]:
        """Run op on a pooled connection (or a new one); return the connection to keep."""
        if conn is not None:
            try:
                return self._keep(conn), op(conn)
            except _Down:
                _close(conn)  # the server dropped it (restart, idle timeout): try a new one
            except BaseException:
                _close(conn)
                raise
        conn = self._connect(self._service_dn, self._service_password)
        try:
            value = op(conn)
        except BaseException:
            _close(conn)
            raise
        return self._keep(conn), value

    def _keep(self, conn: Any) -> Any | None:
        if self._closed:
            _close(conn)
            return None
        return conn

    # --- the pool (event-loop side) -----------------------------------------------------------

    async def _run(self, op: Callable[[Any], T], *, reuse: bool = True) -> T:
        """Borrow a service connection, run op on it in a worker thread, hand it back.

        Waits up to pooling.timeout (seconds) for a free connection. With pooling enabled, a
        connection that cannot be opened (server down or restarting) is tried again every
        pooling.timeout / pooling.retries seconds until pooling.timeout has passed since the
        call began, as Authelia's pool does (ldap_client_factory.go: acquire, backoff); op
        itself is never sent twice. Raises BackendUnavailableError when no connection came
        in time, UserBackendError for a request ldap3 refuses.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._pool_wait
        while True:
            try:
                return await self._attempt(op, reuse=reuse, wait=max(0.0, deadline - loop.time()))
            except _CannotConnect as exc:
                pause = self._retry_pause
                if pause is None or self._closed or loop.time() + pause > deadline:
                    raise BackendUnavailableError(str(exc)) from None
                self._logger.info("%s; trying again in %gs", exc, pause)
                await asyncio.sleep(pause)

    async def _attempt(self, op: Callable[[Any], T], *, reuse: bool, wait: float) -> T:
        """Run op once on a pooled (or new) connection; raise _CannotConnect if none opens."""
        if self._closed:
            raise BackendUnavailableError(f"{WHERE}: the backend is closed")
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise BackendUnavailableError(
                f"{WHERE}: all {self._size} connections to {self._address} stayed busy for "
                f"{self._pool_wait:g}s"
            ) from None
        conn = self._idle.pop() if reuse and self._idle else None
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._use, conn, op)
        except BaseException:
            self._slots.release()
            raise
        # The slot and the connection come back when the thread is done, even if the caller
        # was cancelled meanwhile: a connection is never used by two threads at once.
        future.add_done_callback(self._hand_back)
        try:
            _, value = await asyncio.shield(future)
        except _Down as exc:
            stale, self._idle = self._idle, []  # likely dead too (the server went away)
            for conn in stale:
                self._discard(conn)
            if isinstance(exc, _CannotConnect):
                raise
            raise BackendUnavailableError(str(exc)) from None
        except _BindRefused as exc:
            raise BackendUnavailableError(
                f"{WHERE}: service account bind failed: {exc.words}"
            ) from None
        except LDAPException as exc:
            raise UserBackendError(f"{WHERE}: {type(exc).__name__}: {exc}") from None
        return value

    def _hand_back(self, future: asyncio.Future[tuple[Any | None, Any]]) -> None:
        self._slots.release()
        if future.cancelled() or future.exception() is not None:
            return
        conn, _ = future.result()
        if conn is None:
            return
        if self._closed or len(self._idle) >= self._size:
            self._discard(conn)
        else:
            self._idle.append(conn)

    def _discard(self, conn: Any) -> None:
        """Unbind a connection in a worker thread (unbinding sends a request)."""
        with contextlib.suppress(RuntimeError):  # the executor is shut down: the socket just goes
            self._executor.submit(_close, conn)


def _raise_if_change_required(answer: _Answer) -> None:
    """Raise PasswordChangeRequiredError if a bind proved the password but demands a new one."""
    reason = change_required(
        code=answer.code,
        message=answer.message,
        ppolicy_error=answer.ppolicy_error,
        ppolicy_grace=answer.ppolicy_grace,
    )
    if reason is not None:
        # SECURITY: a bind that succeeded only to change the password (or used a grace login)
        # must not open a session; the state goes only to who proved the password.
        raise PasswordChangeRequiredError(reason)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: nothing in the directory can match them
        return False
    return True


def _describe(answer: _Answer) -> str:
    text = answer.description or f"result {answer.code}"
    return f"{text}: {answer.message}" if answer.message else text
