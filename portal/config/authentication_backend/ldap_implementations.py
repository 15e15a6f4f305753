"""What each LDAP `implementation` fills in, and the checks that need the filled-in values.

Authelia: the DefaultLDAPAuthenticationBackendConfigurationImplementation* values in
internal/configuration/schema/authentication.go, applied by its validator
(internal/configuration/validator/authentication.go: setDefaultImplementationLDAPAuthentication
BackendProfileAttributes, validateLDAPRequiredParameters, validateLDAPGroupFilter). As there, an
empty string means "not set" (Authelia's LDAP suite sets `distinguished_name: ''`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portal.config.authentication_backend.ldap import LdapBackendConfig

WHERE = "authentication_backend.ldap"


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
# them and reads those states from the entry (users/ldap/state.py) instead, so that a user who
# must change their password can reset it, while disabled and expired accounts still get no
# mail, no reset and no session.
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

_FILLED = ("users_filter", "groups_filter", "additional_users_dn", "additional_groups_dn")
_ATTRIBUTES = ("distinguished_name", "username", "display_name", "mail", "member_of", "group_name")


def implementation_values(config: LdapBackendConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the keys to set on the section and on its `attributes`: each configured value,
    else the implementation's default, else None (an empty string counts as not set)."""
    defaults = IMPLEMENTATION_DEFAULTS[config.implementation]
    section = {key: getattr(config, key) or getattr(defaults, key) for key in _FILLED}
    attributes = {
        key: getattr(config.attributes, key) or getattr(defaults, key) for key in _ATTRIBUTES
    }
    return section, attributes


def ldap_problems(config: LdapBackendConfig) -> list[str]:
    """Return what the filled-in section lacks, each problem naming its key's full path.

    base_dn is required; users_filter (and groups_filter with group_search_mode filter) too when
    the implementation has none ('custom'); users_filter must hold {input}; the {memberof:*}
    checks; and a service account with a password. Authelia's validateLDAPRequiredParameters and
    validateLDAPGroupFilter.
    """
    problems = []
    if not config.base_dn:
        problems.append(f"{WHERE}.base_dn: is required")
    if not config.users_filter:
        problems.append(f"{WHERE}.users_filter: is required with implementation 'custom'")
    elif "{input}" not in config.users_filter:
        problems.append(f"{WHERE}.users_filter: must contain the {{input}} placeholder")
    if config.group_search_mode == "filter" and not config.groups_filter:
        problems.append(f"{WHERE}.groups_filter: is required with implementation 'custom'")
    problems.extend(_memberof_problems(config))
    problem = service_account_problem(config)
    return problems if problem is None else [*problems, problem]


def _memberof_problems(config: LdapBackendConfig) -> list[str]:
    """Authelia's checks of the {memberof:*} placeholders (validateLDAPGroupFilter): memberof
    mode needs one of them in groups_filter, {memberof:dn} needs attributes.distinguished_name,
    either needs attributes.member_of."""
    groups_filter = config.groups_filter or ""
    by_dn, by_rdn = (p in groups_filter for p in ("{memberof:dn}", "{memberof:rdn}"))
    problems = []
    if config.group_search_mode == "memberof" and not (by_dn or by_rdn):
        problems.append(
            f"{WHERE}.groups_filter: must contain the {{memberof:rdn}} or {{memberof:dn}} "
            "placeholder with group_search_mode memberof"
        )
    if by_dn and not config.attributes.distinguished_name:
        problems.append(
            f"{WHERE}.attributes.distinguished_name: is required when groups_filter uses "
            "{memberof:dn} (OpenLDAP: entryDN; Active Directory: distinguishedName)"
        )
    if (by_dn or by_rdn) and not config.attributes.member_of:
        problems.append(
            f"{WHERE}.attributes.member_of: is required when groups_filter uses "
            "{memberof:rdn} or {memberof:dn}"
        )
    return problems


def service_account_problem(config: LdapBackendConfig) -> str | None:
    """Return the problem with `user` and `password` (Authelia's keys), or None if both are set."""
    if not config.user or config.password is None or not config.password.get_secret_value():
        # SECURITY: without a password a simple bind is anonymous; an anonymous service
        # account could not write passwords anyway, so permit_unauthenticated_bind is not used.
        return f"{WHERE}.user and {WHERE}.password: a service account with a password is required"
    return None
