"""The LDAP backend's pieces that need no server: filters, defaults, encodings, policy."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from portal.config import LdapBackendConfig
from portal.errors import PasswordRejectedError, PasswordWriteError, StartupCheckError
from portal.users.base import AccountState
from portal.users.ldap import (
    AD_RULES_SENTENCE,
    GENERIC_REJECTION,
    LdapUserBackend,
    bind_passwords,
    decode_ppolicy,
    decode_ppolicy_error,
    effective_settings,
    fill_filter,
    memberof_fragments,
    policy_sentence,
    prepare_password,
    same_dn_key,
    unicode_pwd,
)
from portal.users.ldap.state import change_required, read_state

NOW = datetime(2024, 5, 17, 12, 30, 45, tzinfo=UTC)
BY_UID = "(uid={input})"

# Authelia's LDAP suite block (suites/LDAP/configuration.yml), address and secrets aside.
AUTHELIA_SUITE = {
    "base_dn": "dc=example,dc=com",
    "additional_users_dn": "ou=users",
    "users_filter": "(&(|({username_attribute}={input})({mail_attribute}={input}))"
    "(objectClass=person)(objectClass=inetOrgPerson))",
    "additional_groups_dn": "ou=groups",
    "groups_filter": "(&(member={dn})(objectClass=groupOfNames))",
    "attributes": {
        "distinguished_name": "",
        "username": "uid",
        "display_name": "displayName",
        "mail": "mail",
        "member_of": "memberOf",
        "group_name": "cn",
    },
}


def ldap_config(**values: Any) -> LdapBackendConfig:
    """Build an LDAP configuration with a service account and the given keys."""
    raw: dict[str, Any] = {
        "address": "ldap://127.0.0.1:1",
        "base_dn": "dc=example,dc=com",
        "user": "cn=pwmanager,dc=example,dc=com",
        "password": "password",
    }
    raw.update(values)
    return LdapBackendConfig.model_validate(raw)


def users_filter(value: str, template: str = BY_UID) -> str:
    """Fill a users filter the way a lookup does."""
    return fill_filter(template, {"input": value}, NOW)


# --- filters -------------------------------------------------------------------------------------


def test_an_ordinary_username_goes_in_as_it_is() -> None:
    assert users_filter("john") == "(uid=john)"
    assert users_filter("jöhn.dœ@example.com") == "(uid=jöhn.dœ@example.com)"


def test_an_injection_attempt_stays_a_value() -> None:
    # `*)(uid=*` would otherwise close the assertion and match every user.
    assert users_filter("*)(uid=*") == r"(uid=\2a\29\28uid=\2a)"
    assert users_filter("john*") == r"(uid=john\2a)"


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("a\\b", r"a\5cb"),
        ("a\x00b", r"a\00b"),
        ("(admin)", r"\28admin\29"),
        ("*", r"\2a"),
        (r"\2a", r"\5c2a"),  # an escape sequence typed by the user is escaped, not honoured
    ],
)
def test_every_rfc4515_special_character_is_escaped(value: str, escaped: str) -> None:
    assert users_filter(value) == f"(uid={escaped})"


def test_groups_filter_values_are_escaped_too() -> None:
    template = "(&(|(member={dn})(memberUid={username}))(cn={input}))"
    values = {"dn": "cn=A (x),dc=e", "username": "j*", "input": "j)"}
    assert (
        fill_filter(template, values, NOW)
        == r"(&(|(member=cn=A \28x\29,dc=e)(memberUid=j\2a))(cn=j\29))"
    )


def test_a_placeholder_inside_a_value_is_not_filled_again() -> None:
    template = "(&(member={dn})(cn={input}))"
    assert (
        fill_filter(template, {"input": "{dn}", "dn": "cn=x"}, NOW) == "(&(member=cn=x)(cn={dn}))"
    )


def test_date_time_placeholders() -> None:
    template = "({date-time:generalized})({date-time:unix})({date-time:microsoft-nt})"
    unix = int(NOW.timestamp())
    assert fill_filter(template, {}, NOW) == (
        f"(20240517123045.0Z)({unix})({(unix + 11644473600) * 10_000_000})"
    )


def test_attribute_placeholders_are_filled_from_the_configuration() -> None:
    settings = effective_settings(ldap_config(**AUTHELIA_SUITE))
    assert settings.users_filter == (
        "(&(|(uid={input})(mail={input}))(objectClass=person)(objectClass=inetOrgPerson))"
    )
    assert settings.groups_filter == "(&(member={dn})(objectClass=groupOfNames))"
    assert settings.users_base == "ou=users,dc=example,dc=com"
    assert settings.groups_base == "ou=groups,dc=example,dc=com"
    assert settings.distinguished_name is None  # '' means "not set", as in Authelia


# --- per-implementation defaults -----------------------------------------------------------------

# Authelia's defaults, from internal/configuration/schema/authentication.go
# (DefaultLDAPAuthenticationBackendConfigurationImplementation*, authelia/authelia at ebe3b195) and
# docs/content/reference/guides/ldap.md ("Defaults": search bases, attributes, filters). Where the
# two disagree the code wins, as that is what Authelia runs: the guide lists the rfc2307bis
# `(!(pwdReset=TRUE))` clause in the users filter (the code has it in the groups filter, a no-op
# there, so it is left out), lldap's groups filter as groupOfNames (the code: groupOfUniqueNames),
# and custom's username as N/A (the code: uid).
EITHER = "(|({username_attribute}={input})({mail_attribute}={input}))"
DOCUMENTED: dict[str, dict[str, str | None]] = {
    "custom": {
        "users_filter": None,
        "groups_filter": None,
        "additional_users_dn": None,
        "additional_groups_dn": None,
        "username": "uid",
        "display_name": "displayName",
        "mail": "mail",
        "member_of": None,
        "group_name": "cn",
        "distinguished_name": None,
    },
    "activedirectory": {
        "users_filter": f"(&{EITHER}(sAMAccountType=805306368)"
        "(!(userAccountControl:1.2.840.113556.1.4.803:=2))(!(pwdLastSet=0))"
        "(|(!(accountExpires=*))(accountExpires=0)(accountExpires>={date-time:microsoft-nt})))",
        "groups_filter": "(&(member={dn})(|(sAMAccountType=268435456)(sAMAccountType=536870912)))",
        "additional_users_dn": None,
        "additional_groups_dn": None,
        "username": "sAMAccountName",
        "display_name": "displayName",
        "mail": "mail",
        "member_of": "memberOf",
        "group_name": "cn",
        "distinguished_name": "distinguishedName",
    },
    "rfc2307bis": {
        "users_filter": f"(&{EITHER}"
        "(|(objectClass=inetOrgPerson)(objectClass=organizationalPerson)))",
        "groups_filter": "(&(|(member={dn})(uniqueMember={dn}))(|(objectClass=groupOfNames)"
        "(objectClass=groupOfUniqueNames)(objectClass=groupOfMembers)))",
        "additional_users_dn": None,
        "additional_groups_dn": None,
        "username": "uid",
        "display_name": "displayName",
        "mail": "mail",
        "member_of": "memberOf",
        "group_name": "cn",
        "distinguished_name": None,
    },
    "freeipa": {
        "users_filter": f"(&{EITHER}(objectClass=person)(!(nsAccountLock=TRUE))"
        "(krbPasswordExpiration>={date-time:generalized})"
        "(|(!(krbPrincipalExpiration=*))(krbPrincipalExpiration>={date-time:generalized})))",
        "groups_filter": "(&(member={dn})(objectClass=groupOfNames))",
        "additional_users_dn": None,
        "additional_groups_dn": None,
        "username": "uid",
        "display_name": "displayName",
        "mail": "mail",
        "member_of": "memberOf",
        "group_name": "cn",
        "distinguished_name": None,
    },
    "lldap": {
        "users_filter": f"(&{EITHER}(objectClass=person))",
        "groups_filter": "(&(member={dn})(objectClass=groupOfUniqueNames))",
        "additional_users_dn": "OU=people",
        "additional_groups_dn": "OU=groups",
        "username": "uid",
        "display_name": "cn",
        "mail": "mail",
        "member_of": "memberOf",
        "group_name": "cn",
        "distinguished_name": None,
    },
    "glauth": {
        "users_filter": f"(&{EITHER}(objectClass=posixAccount)(!(accountStatus=inactive)))",
        "groups_filter": "(&(uniqueMember={dn})(objectClass=posixGroup))",
        "additional_users_dn": None,
        "additional_groups_dn": None,
        "username": "cn",
        "display_name": "description",
        "mail": "mail",
        "member_of": "memberOf",
        "group_name": "cn",
        "distinguished_name": None,
    },
}


def _expected_filter(template: str | None, doc: dict[str, str | None]) -> str | None:
    if template is None:
        return None
    for name in ("username", "mail", "display_name", "distinguished_name", "member_of"):
        if doc[name]:
            template = template.replace(f"{{{name}_attribute}}", str(doc[name]))
    return template


# The portal's one deliberate difference: Authelia's AD users filter leaves out disabled and
# expired accounts and pwdLastSet=0; the portal finds them and reads those states from the entry,
# so that a user who must change their password can reset it (see ldap/settings.py).
AD_STATE_CLAUSES = (
    "(!(userAccountControl:1.2.840.113556.1.4.803:=2))(!(pwdLastSet=0))"
    "(|(!(accountExpires=*))(accountExpires=0)(accountExpires>={date-time:microsoft-nt}))"
)


@pytest.mark.parametrize("implementation", sorted(set(DOCUMENTED) - {"custom"}))
def test_each_implementation_has_authelias_defaults(implementation: str) -> None:
    doc = DOCUMENTED[implementation]
    settings = effective_settings(ldap_config(implementation=implementation))
    for name in ("username", "display_name", "mail", "member_of", "group_name"):
        assert getattr(settings, name) == doc[name], name
    assert settings.distinguished_name == doc["distinguished_name"]
    users_filter = _expected_filter(doc["users_filter"], doc)
    if implementation == "activedirectory":
        assert users_filter is not None and AD_STATE_CLAUSES in users_filter
        users_filter = users_filter.replace(AD_STATE_CLAUSES, "")
    assert settings.users_filter == users_filter
    assert settings.groups_filter == _expected_filter(doc["groups_filter"], doc)
    users_dn, groups_dn = doc["additional_users_dn"], doc["additional_groups_dn"]
    assert settings.users_base == (
        f"{users_dn},dc=example,dc=com" if users_dn else "dc=example,dc=com"
    )
    assert settings.groups_base == (
        f"{groups_dn},dc=example,dc=com" if groups_dn else "dc=example,dc=com"
    )


def test_custom_has_authelias_attribute_defaults_and_no_filters() -> None:
    doc = DOCUMENTED["custom"]
    settings = effective_settings(ldap_config(users_filter=BY_UID, groups_filter="(member={dn})"))
    for name in ("username", "display_name", "mail", "member_of", "group_name"):
        assert getattr(settings, name) == doc[name], name
    assert settings.users_base == "dc=example,dc=com"


def test_custom_without_users_filter_names_the_key() -> None:
    with pytest.raises(StartupCheckError, match=r"authentication_backend\.ldap\.users_filter"):
        effective_settings(ldap_config(groups_filter="(member={dn})"))


def test_configured_values_override_the_defaults() -> None:
    settings = effective_settings(
        ldap_config(
            implementation="lldap",
            additional_users_dn="ou=staff",
            users_filter="(&(cn={input})(objectClass=person))",
            attributes={"username": "cn", "display_name": "displayName", "group_name": "ou"},
        )
    )
    assert settings.users_base == "ou=staff,dc=example,dc=com"
    assert settings.groups_base == "OU=groups,dc=example,dc=com"
    assert settings.users_filter == "(&(cn={input})(objectClass=person))"
    assert (settings.username, settings.display_name, settings.group_name) == (
        "cn",
        "displayName",
        "ou",
    )
    assert settings.mail == "mail"


def test_an_unparsable_filter_is_refused_at_start() -> None:
    with pytest.raises(StartupCheckError, match=r"users_filter: is not a valid LDAP filter"):
        effective_settings(ldap_config(users_filter="(&(uid={input})", groups_filter="(cn=x)"))


# --- group_search_mode memberof ------------------------------------------------------------------

MEMBER_OF = [r"cn=a*b(c),ou=groups,dc=example,dc=com", r"CN=x\,y+uid=q\2A,DC=example,DC=com"]


def test_memberof_dn_is_one_escaped_assertion_per_group() -> None:
    filled = fill_filter("(|{memberof:dn})", {}, NOW, memberof_fragments(MEMBER_OF, "entryDN"))
    assert filled == (
        r"(|(entryDN=cn=a\2ab\28c\29,ou=groups,dc=example,dc=com)"
        r"(entryDN=CN=x\5c,y+uid=q\5c2A,DC=example,DC=com))"
    )


def test_memberof_rdn_is_each_first_rdn_read_as_a_dn() -> None:
    # A comma escaped in the DN stays in the value; a multi-valued RDN needs both parts.
    filled = fill_filter("(|{memberof:rdn})", {}, NOW, memberof_fragments(MEMBER_OF, "entryDN"))
    assert filled == r"(|(cn=a\2ab\28c\29)(&(CN=x,y)(uid=q\2a)))"


def test_memberof_values_are_not_filled_again() -> None:
    fragments = memberof_fragments(["cn={input},dc=e"], "entryDN")
    filled = fill_filter("(&{memberof:rdn}(uid={input}))", {"input": "j"}, NOW, fragments)
    assert filled == "(&(cn={input})(uid=j))"


def test_dns_compare_whatever_their_case_and_escapes() -> None:
    assert same_dn_key(r"CN=x\2Cy, DC=Example") == same_dn_key(r"cn=x\,y,dc=example")
    assert same_dn_key("cn=x,dc=example") != same_dn_key("cn=x,ou=y,dc=example")


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"group_search_mode": "memberof", "groups_filter": "(member={dn})"},
            r"ldap\.groups_filter: must contain the \{memberof:rdn\} or \{memberof:dn\} "
            "placeholder with group_search_mode memberof",
        ),
        (
            {"group_search_mode": "memberof", "groups_filter": "(|{memberof:dn})"},
            r"ldap\.attributes\.distinguished_name: is required when groups_filter uses "
            r"\{memberof:dn\}",
        ),
        (
            {
                "group_search_mode": "memberof",
                "groups_filter": "(|{memberof:rdn})",
                "attributes": {"member_of": ""},
            },
            r"ldap\.attributes\.member_of: is required when groups_filter uses",
        ),
    ],
)
def test_memberof_mode_needs_what_its_placeholders_use(
    values: dict[str, Any], problem: str
) -> None:
    with pytest.raises(StartupCheckError, match=problem):
        effective_settings(ldap_config(users_filter=BY_UID, **values))


def test_memberof_mode_with_its_placeholders_starts() -> None:
    for implementation, groups_filter in (
        ("activedirectory", "(&(objectClass=group)(|{memberof:dn}))"),
        ("rfc2307bis", "(|{memberof:rdn})"),
    ):
        settings = effective_settings(
            ldap_config(
                implementation=implementation,
                group_search_mode="memberof",
                groups_filter=groups_filter,
            )
        )
        assert settings.groups_filter == groups_filter


# --- password encodings --------------------------------------------------------------------------


def test_unicode_pwd_is_the_quoted_password_in_utf16le() -> None:
    assert unicode_pwd("Pässwörd€1") == (
        b'"\x00P\x00\xe4\x00s\x00s\x00w\x00\xf6\x00r\x00d\x00\xac\x201\x00"\x00'
    )
    assert unicode_pwd("😀") == b'"\x00=\xd8\x00\xde"\x00'  # a surrogate pair


def test_passwords_are_prepared_as_binds_prepare_them() -> None:
    assert prepare_password("Pässwörd€1") == "Pässwörd€1"
    assert prepare_password("a\u00a0b") == "a b"  # SASLprep maps a no-break space
    with pytest.raises(PasswordRejectedError):
        prepare_password("a\u0007b")  # a control character SASLprep prohibits


def test_a_bind_sends_a_second_form_only_when_saslprep_alone_would_differ() -> None:
    assert bind_passwords("wrong password") == ("wrong password",)
    # SASLprep already applies NFKC (Unicode 3.2): what binds sent before normalization.
    assert bind_passwords("A\u0308 \ufb01sh") == ("\u00c4 fish",)
    # A compatibility character newer than Unicode 3.2 only the portal's NFKC changes.
    assert bind_passwords("x\U0001f130") == ("xA", "x\U0001f130")
    assert bind_passwords("a\u0007b") == ()  # nothing SASLprep accepts: no bind at all


# --- password-policy answers ---------------------------------------------------------------------

SENTENCES = {
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


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_each_ppolicy_error_decodes_to_its_sentence(code: int) -> None:
    # SEQUENCE { error [1] ENUMERATED code }, as OpenLDAP sends it.
    value = bytes([0x30, 0x03, 0x81, 0x01, code])
    assert decode_ppolicy_error(value) == code
    assert policy_sentence(code, "Password fails quality checking policy", 19) == SENTENCES[code]


def test_a_ppolicy_warning_alone_is_no_error() -> None:
    # SEQUENCE { warning [0] { timeBeforeExpiration [0] 300 } }
    assert decode_ppolicy_error(bytes.fromhex("3006a0048002012c")) is None
    assert decode_ppolicy_error(bytes.fromhex("3000")) is None


def test_a_warning_and_an_error_together() -> None:
    # SEQUENCE { warning [0] { graceAuthNsRemaining [1] 2 }, error [1] passwordInHistory }
    assert decode_ppolicy_error(bytes.fromhex("3008a0038101028101" + "08")) == 8


def test_garbage_in_the_control_is_no_error() -> None:
    assert decode_ppolicy_error(b"\x04\x02hi") is None
    assert decode_ppolicy_error(b"") is None


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("3000", (None, None)),  # a bind with nothing to say
        ("3005a003810101", (None, 1)),  # a grace login, one left (as slapd 2.5 sends it)
        ("3005a003810100", (None, 0)),  # the last grace login
        ("3006a0048002012c", (None, None)),  # timeBeforeExpiration: not expired yet
        ("3003810102", (2, None)),  # changeAfterReset
        ("3003810100", (0, None)),  # passwordExpired
    ],
)
def test_the_ppolicy_answer_to_a_bind_decodes_error_and_grace(
    value: str, decoded: tuple[int | None, int | None]
) -> None:
    assert decode_ppolicy(bytes.fromhex(value)) == decoded


# --- account states (ldap/state.py) --------------------------------------------------------------

NT_NOW = (int(NOW.timestamp()) + 11644473600) * 10_000_000
AD_ERROR = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data "


def state_of(attributes: dict[str, str], *, active_directory: bool) -> tuple[bool, AccountState]:
    def values(name: str) -> list[str]:
        return [attributes[name]] if name in attributes else []

    return read_state(values, active_directory=active_directory, now=NOW)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({}, (False, AccountState(0))),
        ({"pwdAccountLockedTime": "000001010000Z"}, (True, AccountState(0))),
        ({"pwdAccountLockedTime": "00000101000000Z"}, (True, AccountState(0))),
        ({"pwdAccountLockedTime": "20240517120000Z"}, (False, AccountState.LOCKED_OUT)),
        ({"pwdAccountLockedTime": "00000101000001Z"}, (False, AccountState.LOCKED_OUT)),
        ({"pwdReset": "TRUE"}, (False, AccountState.MUST_CHANGE)),
        ({"pwdReset": "FALSE"}, (False, AccountState(0))),
        ({"pwdEndTime": "20240517123045Z"}, (True, AccountState(0))),  # ends now
        ({"pwdEndTime": "20240517123046Z"}, (False, AccountState(0))),
        ({"pwdStartTime": "20240517123046.5Z"}, (True, AccountState(0))),  # not yet
        ({"pwdStartTime": "20240517123045Z"}, (False, AccountState(0))),
        ({"pwdEndTime": "yesterday"}, (True, AccountState(0))),  # unreadable: slapd locks too
        (
            {"pwdAccountLockedTime": "20240517120000Z", "pwdReset": "TRUE"},
            (False, AccountState.LOCKED_OUT | AccountState.MUST_CHANGE),
        ),
    ],
)
def test_ppolicy_states(attributes: dict[str, str], expected: tuple[bool, AccountState]) -> None:
    assert state_of(attributes, active_directory=False) == expected


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"userAccountControl": "512", "accountExpires": str(2**63 - 1)}, (False, AccountState(0))),
        ({"userAccountControl": "514"}, (True, AccountState(0))),  # ACCOUNTDISABLE
        ({"accountExpires": "0"}, (False, AccountState(0))),  # never
        ({"accountExpires": str(NT_NOW)}, (True, AccountState(0))),  # expires now
        ({"accountExpires": str(NT_NOW + 10_000_000)}, (False, AccountState(0))),
        ({"pwdLastSet": "0"}, (False, AccountState.MUST_CHANGE)),
        (
            {"pwdLastSet": "0", "msDS-User-Account-Control-Computed": str(0x800000)},
            (False, AccountState.MUST_CHANGE),  # Samba flags pwdLastSet=0 as expired too
        ),
        (
            {"pwdLastSet": "1", "msDS-User-Account-Control-Computed": str(0x800000)},
            (False, AccountState.PASSWORD_EXPIRED),
        ),
        (
            {"lockoutTime": "133000000000000000", "msDS-User-Account-Control-Computed": "16"},
            (False, AccountState.LOCKED_OUT),
        ),
        (  # the domain's lockout duration has passed: the computed flags say so
            {"lockoutTime": "133000000000000000", "msDS-User-Account-Control-Computed": "0"},
            (False, AccountState(0)),
        ),
        ({"lockoutTime": "133000000000000000"}, (False, AccountState.LOCKED_OUT)),
        ({"lockoutTime": "0"}, (False, AccountState(0))),
    ],
)
def test_active_directory_states(
    attributes: dict[str, str], expected: tuple[bool, AccountState]
) -> None:
    assert state_of(attributes, active_directory=True) == expected


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"code": 0, "message": "", "ppolicy_error": None, "ppolicy_grace": None}, None),
        ({"code": 0, "message": "", "ppolicy_error": 2, "ppolicy_grace": None}, "must_change"),
        ({"code": 0, "message": "", "ppolicy_error": None, "ppolicy_grace": 0}, "expired"),
        ({"code": 49, "message": "", "ppolicy_error": 0, "ppolicy_grace": None}, "expired"),
        ({"code": 49, "message": "", "ppolicy_error": 1, "ppolicy_grace": None}, None),  # locked
        ({"code": 49, "message": "", "ppolicy_error": None, "ppolicy_grace": None}, None),
        (
            {
                "code": 49,
                "message": f"{AD_ERROR}773, v1db1",
                "ppolicy_error": None,
                "ppolicy_grace": None,
            },
            "must_change",
        ),
        (
            {
                "code": 49,
                "message": f"{AD_ERROR}532, v1db1",
                "ppolicy_error": None,
                "ppolicy_grace": None,
            },
            "expired",
        ),
        *[
            (
                {
                    "code": 49,
                    "message": f"{AD_ERROR}{data}, v1db1",
                    "ppolicy_error": None,
                    "ppolicy_grace": None,
                },
                None,
            )
            for data in ("52e", "533", "701", "775")  # wrong, disabled, expired account, locked
        ],
    ],
)
def test_which_bind_answers_demand_a_new_password(
    answer: dict[str, Any], reason: str | None
) -> None:
    assert change_required(**answer) == reason


@pytest.mark.parametrize(
    ("message", "sentence"),
    [
        ("Password is too short for policy", SENTENCES[6]),
        ("Password is in history of old passwords", SENTENCES[8]),
        ("Password fails quality checking policy", SENTENCES[5]),
        ("Password is too young to change", SENTENCES[7]),
        ("something else entirely", GENERIC_REJECTION),
    ],
)
def test_a_constraint_violation_without_control_maps_its_text(message: str, sentence: str) -> None:
    assert policy_sentence(None, message, 19) == sentence


def test_active_directorys_password_rules_failure() -> None:
    message = (
        "0000052D: Constraint violation - check_password_restrictions: the password does not "
        "meet the complexity criteria!"
    )
    assert policy_sentence(None, message, 19) == AD_RULES_SENTENCE
    assert policy_sentence(None, "0000052D: SvcErr: DSID-031A12D2, problem 5003", 53) == (
        AD_RULES_SENTENCE
    )


def test_other_refusals_are_not_policy() -> None:
    assert policy_sentence(None, "no write access to parent", 50) is None


# --- empty passwords -----------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback socket that records whether anything connected to it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


async def test_an_empty_password_is_false_without_contacting_the_server(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    backend = LdapUserBackend(
        ldap_config(
            address=f"ldap://127.0.0.1:{port}", users_filter=BY_UID, groups_filter="(member={dn})"
        )
    )
    try:
        assert await backend.check_password("john", "") is False
    finally:
        await backend.close()
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


def test_a_service_account_without_password_is_refused() -> None:
    config = ldap_config(password="", users_filter=BY_UID, groups_filter="(member={dn})")
    with pytest.raises(StartupCheckError, match=r"authentication_backend\.ldap\.password"):
        LdapUserBackend(config)
    unauthenticated = ldap_config(
        password="", permit_unauthenticated_bind=True, users_filter=BY_UID, groups_filter="(cn=x)"
    )
    with pytest.raises(StartupCheckError, match="a service account with a password is required"):
        LdapUserBackend(unauthenticated)


async def test_active_directory_never_gets_a_password_over_plain_ldap(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    config = ldap_config(address=f"ldap://127.0.0.1:{port}", implementation="activedirectory")
    backend = LdapUserBackend(config)
    try:
        with pytest.raises(PasswordWriteError, match="encrypted connection"):
            await backend.set_password("john", "a new password")
    finally:
        await backend.close()
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
