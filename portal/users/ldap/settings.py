"""The LDAP search settings read from the configuration, and the filters' placeholders.

The configuration already holds the effective values (portal.config fills in what the
`implementation` provides and reports what is missing: ldap_implementations.py); this module
reads them into Settings, replaces the startup placeholders ({username_attribute},
{mail_attribute}, ...) once and checks the filters' syntax with ldap3. Search-time placeholders
({input}, {username}, {dn}, {memberof:dn}, {memberof:rdn}, {date-time:*}) are filled for each
search by fill_filter, every value escaped as RFC 4515 says. check_ldap_settings is what
`portal validate-config` adds to the loader's problems. Nothing here talks to a server.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from portal.config import LdapBackendConfig, TlsConfig
from portal.config.authentication_backend.ldap_implementations import WHERE
from portal.errors import StartupCheckError
from portal.tls import client_context
from portal.users.ldap.ldap3_names import LDAPException, escape_filter_chars, parse_dn, parse_filter

_SEARCH_PLACEHOLDER = re.compile(
    r"\{(input|username|dn|memberof:(?:dn|rdn)|date-time:(?:generalized|unix|microsoft-nt))\}"
)
_DN_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)
_NT_EPOCH_OFFSET = 11644473600  # seconds from 1601-01-01 (NT epoch) to 1970-01-01


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
    """Read the search settings from a validated section; raise StartupCheckError.

    A section the loader would refuse (config.problems(): a required key, a placeholder, the
    service account) is refused here too, for a configuration built in code; then a filter that
    is no valid LDAP filter (RFC 4515) once its placeholders are filled.
    """
    problems = config.problems()
    if problems:
        raise StartupCheckError("\n".join(problems))
    settings = _read(config)
    problems = _filter_problems(settings)
    if problems:
        raise StartupCheckError("\n".join(problems))
    return settings


def _read(config: LdapBackendConfig) -> Settings:
    """Read the filled-in section; replace the filters' startup placeholders."""
    attrs = config.attributes
    settings = Settings(
        users_base=_join_dn(config.additional_users_dn, config.base_dn),
        groups_base=_join_dn(config.additional_groups_dn, config.base_dn),
        users_filter=config.users_filter or "",
        groups_filter=config.groups_filter,
        group_search_mode=config.group_search_mode,
        distinguished_name=attrs.distinguished_name,
        username=attrs.username or "",
        display_name=attrs.display_name or "",
        mail=attrs.mail or "",
        member_of=attrs.member_of,
        group_name=attrs.group_name or "",
    )
    return replace(
        settings,
        users_filter=_startup_placeholders(settings.users_filter, settings),
        groups_filter=settings.groups_filter
        and _startup_placeholders(settings.groups_filter, settings),
    )


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


def _filter_problems(settings: Settings) -> list[str]:
    """Say which of the filters given is no valid LDAP filter once its placeholders are filled."""
    values = {"input": "x", "username": "x", "dn": "cn=x"}
    fragments = memberof_fragments(["cn=x"], "entryDN")
    problems = []
    filters = {"users_filter": settings.users_filter, "groups_filter": settings.groups_filter}
    for key, template in filters.items():
        if not template:
            continue
        sample = fill_filter(template, values, datetime.now(UTC), fragments)
        try:
            parse_filter(sample, None, True, True, None, False)
        except LDAPException as exc:
            problems.append(f"{WHERE}.{key}: is not a valid LDAP filter: {exc}")
    return problems


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


# --- TLS ---------------------------------------------------------------------------------------


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
    """Return what the backend would refuse before connecting beyond the loader's problems.

    The filters' syntax and the TLS trust and client key, each naming its key. The section's
    own problems (config.problems(): required keys, placeholders, the service account) are the
    loader's to report, so that validate-config lists each once.
    """
    problems = _filter_problems(_read(config))
    if uses_tls(config):
        try:
            # certificates_directory is the top-level Config's to check, not this section's.
            ssl_context(config.tls, None)
        except StartupCheckError as exc:
            problems.extend(str(exc).splitlines())
    return problems
