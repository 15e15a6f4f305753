"""The effective LDAP settings: the configuration over its `implementation`'s defaults, the
"required with implementation X" and {memberof:*} checks, the service account and TLS checks
(check_ldap_settings, which `portal validate-config` runs too), and the filters' placeholders.

Startup placeholders ({username_attribute}, {mail_attribute}, ...) are replaced once, when the
settings are made; search-time placeholders ({input}, {username}, {dn}, {memberof:dn},
{memberof:rdn}, {date-time:*}) are filled for each search by fill_filter, every value escaped as
RFC 4515 says. Nothing here talks to a server.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from portal.config import LdapBackendConfig, TlsConfig
from portal.errors import StartupCheckError
from portal.tls import client_context
from portal.users.ldap.ldap3_names import LDAPException, escape_filter_chars, parse_dn, parse_filter

WHERE = "authentication_backend.ldap"
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


# --- filling the filters at search time ------------------------------------------------------


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


def is_dn(text: str) -> bool:
    """Tell whether the text parses as a DN of at least one RDN (RFC 4514)."""
    key = same_dn_key(text)
    return isinstance(key, tuple) and bool(key)


def _date_time(kind: str, now: datetime) -> str:
    seconds = int(now.timestamp())
    if kind == "generalized":
        return now.astimezone(UTC).strftime("%Y%m%d%H%M%S.0Z")
    if kind == "unix":
        return str(seconds)
    return str((seconds + _NT_EPOCH_OFFSET) * 10_000_000)  # microsoft-nt: 100 ns ticks


# --- the service account and TLS -----------------------------------------------------------------


def service_account_problem(config: LdapBackendConfig) -> str | None:
    """Return the problem with `user` and `password` (Authelia's keys), or None if both are set."""
    if not config.user or config.password is None or not config.password.get_secret_value():
        # SECURITY: without a password a simple bind is anonymous; an anonymous service
        # account could not write passwords anyway, so permit_unauthenticated_bind is not used.
        return f"{WHERE}.user and {WHERE}.password: a service account with a password is required"
    return None


def uses_tls(config: LdapBackendConfig) -> bool:
    """Tell whether the connection is wrapped in TLS: ldaps://, or ldap:// with start_tls."""
    scheme = config.address.scheme
    return scheme == "ldaps" or (config.start_tls and scheme == "ldap")


def ssl_context(tls: TlsConfig, certificates_directory: Path | None) -> ssl.SSLContext:
    """Build the client context (portal.tls): system CAs + certificates_directory, client cert.

    Raises StartupCheckError naming the `tls` key and file that cannot be used.
    """
    return client_context(tls, certificates_directory, f"{WHERE}.tls")


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
    problem = service_account_problem(config)
    if problem is not None:
        problems.append(problem)
    if uses_tls(config):
        try:
            # certificates_directory is the top-level Config's to check, not this section's.
            ssl_context(config.tls, None)
        except StartupCheckError as exc:
            problems.extend(str(exc).splitlines())
    return problems
