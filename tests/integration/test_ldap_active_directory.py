"""The LDAP backend with implementation 'activedirectory' against a real Samba AD domain controller.

One domain controller for the session (provisioning takes seconds, the fixture lives in
conftest.py); every test makes its own users. The backend is configured as an operator would:
Authelia's AD defaults (sAMAccountName, the users filter on sAMAccountType; the portal reads
userAccountControl, pwdLastSet and accountExpires from the entry instead of filtering on them),
the domain's Administrator as service account, ldaps:// trusting the CA Samba generated.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from portal.config import LdapBackendConfig
from portal.errors import (
    PasswordChangeRequiredError,
    PasswordRejectedError,
    PasswordWriteError,
    StartupCheckError,
)
from portal.users.base import AccountState
from portal.users.ldap import AD_RULES_SENTENCE, LdapUserBackend
from tests.integration.samba_ad import (
    ADMIN_USER,
    BASE_DN,
    SERVER_NAME,
    AdUser,
    SambaDc,
    strong_password,
)

SUCCESS, STRONGER_AUTH_REQUIRED, INVALID_CREDENTIALS = 0, 8, 49

BackendFactory = Callable[..., LdapUserBackend]


@pytest.fixture
def user(make_user: Callable[..., AdUser]) -> AdUser:
    """An enabled user with a mail address and a password that needs no change."""
    return make_user()


def ad_config(samba_dc: SambaDc, *, scheme: str = "ldaps", **overrides: Any) -> LdapBackendConfig:
    """Return the configuration an operator would write for this domain."""
    block: dict[str, Any] = {
        "address": samba_dc.url(scheme),
        "implementation": "activedirectory",
        "base_dn": BASE_DN,
        "user": ADMIN_USER,
        "password": samba_dc.admin_password,
        "tls": {"server_name": SERVER_NAME},
    }
    block.update(overrides)
    return LdapBackendConfig.model_validate(block)


@pytest.fixture
async def make_backend(samba_dc: SambaDc) -> AsyncIterator[BackendFactory]:
    """Build backends for the domain; all are closed after the test."""
    made: list[LdapUserBackend] = []

    def make(**overrides: Any) -> LdapUserBackend:
        backend = LdapUserBackend(
            ad_config(samba_dc, **overrides), certificates_directory=samba_dc.ca_directory
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(make_backend: BackendFactory) -> LdapUserBackend:
    """A started backend on ldaps://, verifying Samba's certificate."""
    started = make_backend()
    await started.startup_check()
    return started


# --- the fixture itself ------------------------------------------------------------------------


def test_samba_answers_binds_over_ldaps(samba_dc: SambaDc, user: AdUser) -> None:
    assert samba_dc.simple_bind(ADMIN_USER, samba_dc.admin_password) == SUCCESS
    assert samba_dc.simple_bind(user.upn, user.password) == SUCCESS
    assert samba_dc.simple_bind(user.dn, user.password) == SUCCESS
    assert samba_dc.simple_bind(user.upn, "Wrong-Passw0rd!") == INVALID_CREDENTIALS


# --- startup and TLS ---------------------------------------------------------------------------


async def test_startup_check_passes_and_names_unicodepwd(
    backend: LdapUserBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="portal.users.ldap")
    await backend.startup_check()
    assert "Samba Team" in caplog.text
    assert "password changes use unicodePwd" in caplog.text


async def test_startup_check_fails_on_a_certificate_for_another_name(
    make_backend: BackendFactory, samba_dc: SambaDc
) -> None:
    wrong = make_backend(tls={"server_name": "evil.test"})
    with pytest.raises(StartupCheckError, match="certificate|hostname|cannot connect"):
        await wrong.startup_check()


async def test_startup_check_fails_on_a_wrong_service_password(
    make_backend: BackendFactory,
) -> None:
    with pytest.raises(StartupCheckError, match="service account bind failed"):
        await make_backend(password="Not-The-Passw0rd!").startup_check()


# --- lookups -----------------------------------------------------------------------------------


async def test_get_user_by_username_and_by_mail(
    backend: LdapUserBackend, samba_dc: SambaDc, user: AdUser
) -> None:
    group = f"g{secrets.token_hex(6)}"
    samba_dc.create_group(group, user.name)
    for identifier in (user.name, user.mail, user.name.upper()):
        found = await backend.get_user(identifier)
        assert found is not None, identifier
        assert found.username == user.name
        assert found.display_name == f"{user.name.capitalize()} Tester"
        assert found.emails == (user.mail,)
        # Domain Users is the primary group (primaryGroupID), not a member value: not listed.
        assert found.groups == (group,)


async def test_unknown_user_is_none(backend: LdapUserBackend) -> None:
    assert await backend.get_user("nobody-here") is None
    assert await backend.get_user("*") is None


@pytest.mark.parametrize(
    "groups_filter",
    [
        "(&(|{memberof:dn})(objectClass=group))",  # distinguishedName: the AD default
        "(&(objectClass=group)(|{memberof:rdn}))",
        # Filters that match every security group: only those in memberOf count.
        "(|(sAMAccountType=268435456){memberof:dn})",
        "(|(sAMAccountType=268435456){memberof:rdn})",
    ],
)
async def test_memberof_mode_finds_exactly_the_users_groups(
    make_backend: BackendFactory,
    samba_dc: SambaDc,
    make_user: Callable[..., AdUser],
    groups_filter: str,
) -> None:
    member, other, loner = make_user(), make_user(), make_user()
    tag = secrets.token_hex(4)
    plain, strange, others = f"g{tag}", f"s{tag}", f"o{tag}"
    samba_dc.create_group(plain, member.name)
    samba_dc.create_group(strange, member.name)
    # Filter characters in the group's CN (a sAMAccountName cannot hold `*`).
    samba_dc.tool("group", "rename", strange, f"--force-new-cn=a*b(c) {tag}")
    samba_dc.create_group(others, other.name)
    backend = make_backend(group_search_mode="memberof", groups_filter=groups_filter)
    await backend.startup_check()
    found = await backend.get_user(member.name)
    assert found is not None and sorted(found.groups) == sorted([plain, f"a*b(c) {tag}"])
    found = await backend.get_user(other.name)
    assert found is not None and found.groups == (others,)
    found = await backend.get_user(loner.name)  # Domain Users is primaryGroupID, not memberOf
    assert found is not None and found.groups == ()


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the AD default: (&(member={dn})(|(sAMAccountType=268435456)(...)))
        {
            "group_search_mode": "memberof",
            "groups_filter": "(&(|{memberof:dn})(objectClass=group))",
        },
        {
            "group_search_mode": "memberof",
            "groups_filter": "(|(sAMAccountType=268435456){memberof:rdn})",
        },
    ],
    ids=["filter", "memberof-dn", "memberof-rdn"],
)
async def test_users_list_gives_each_user_the_groups_their_own_search_finds(
    samba_dc: SambaDc, make_user: Callable[..., AdUser], overrides: dict[str, Any]
) -> None:
    # `portal users list` reads every user's groups with one search; get_user with the user's
    # own. Pages of two entries, so both searches take several pages.
    member, other, loner = make_user(), make_user(), make_user()
    tag = secrets.token_hex(4)
    samba_dc.create_group(f"g{tag}", member.name)
    samba_dc.create_group(f"h{tag}", member.name)
    samba_dc.create_group(f"o{tag}", other.name)
    config = ad_config(samba_dc, **overrides)
    paged = LdapUserBackend(config, certificates_directory=samba_dc.ca_directory, page_size=2)
    await paged.startup_check()
    try:
        users = await paged.list_users()
        assert users == [await paged.get_user(user.username) for user in users]
    finally:
        await paged.close()
    by_name = {user.username: sorted(user.groups) for user in users}
    assert by_name[member.name] == [f"g{tag}", f"h{tag}"]
    assert by_name[other.name] == [f"o{tag}"]
    assert by_name[loner.name] == []


@pytest.mark.parametrize("how", ["disabled", "account-expired"])
async def test_disabled_and_expired_accounts_are_found_disabled(
    backend: LdapUserBackend, samba_dc: SambaDc, user: AdUser, how: str
) -> None:
    """Authelia's filter leaves them out; the portal finds them and reads why (the audit says
    so), then treats them as disabled everywhere."""
    found = await backend.get_user(user.name)
    assert found is not None and not found.disabled  # accountExpires: never (2**63 - 1)
    if how == "disabled":
        samba_dc.tool("user", "disable", user.name)  # userAccountControl bit 2
    else:
        samba_dc.tool("user", "setexpiry", user.name, "--days=-1")  # expired yesterday
    found = await backend.get_user(user.name)
    assert found is not None and found.disabled
    assert await backend.check_password(user.name, user.password) is False


async def test_must_change_is_found_and_told_only_with_the_right_password(
    backend: LdapUserBackend, make_user: Callable[..., AdUser]
) -> None:
    must_change = make_user("--must-change-at-next-login")  # pwdLastSet=0
    found = await backend.get_user(must_change.name)
    assert found is not None and not found.disabled
    assert found.state == AccountState.MUST_CHANGE
    with pytest.raises(PasswordChangeRequiredError) as told:  # bind: "data 773"
        await backend.check_password(must_change.name, must_change.password)
    assert told.value.reason == "must_change"
    assert await backend.check_password(must_change.name, must_change.password + "x") is False


async def test_a_lockout_is_read_and_cleared(
    backend: LdapUserBackend, samba_dc: SambaDc, user: AdUser
) -> None:
    samba_dc.apply_policy(user.name, "--account-lockout-threshold=2")
    for _ in range(2):
        assert samba_dc.simple_bind(user.upn, "Guessed-Wr0ng!") == INVALID_CREDENTIALS
    found = await backend.get_user(user.name)
    assert found is not None and found.state == AccountState.LOCKED_OUT and not found.disabled
    assert await backend.check_password(user.name, user.password) is False  # "data 775"
    assert await backend.clear_lockout(user.name) is True
    assert samba_dc.simple_bind(user.upn, user.password) == SUCCESS
    found = await backend.get_user(user.name)
    assert found is not None and found.state == AccountState(0)


def test_authelias_filter_hiding_must_change_users_is_warned_about(
    samba_dc: SambaDc, caplog: pytest.LogCaptureFixture
) -> None:
    authelias = (
        "(&(|({username_attribute}={input})({mail_attribute}={input}))"
        "(sAMAccountType=805306368)(!(userAccountControl:1.2.840.113556.1.4.803:=2))"
        "(!(pwdLastSet=0))(|(!(accountExpires=*))(accountExpires=0)"
        "(accountExpires>={date-time:microsoft-nt})))"
    )
    LdapUserBackend(
        ad_config(samba_dc, users_filter=authelias), certificates_directory=samba_dc.ca_directory
    )
    assert "leaves out users who must change their password" in caplog.text
    caplog.clear()
    LdapUserBackend(ad_config(samba_dc), certificates_directory=samba_dc.ca_directory)
    assert "must change" not in caplog.text


# --- passwords ---------------------------------------------------------------------------------


async def test_check_password(backend: LdapUserBackend, user: AdUser) -> None:
    assert await backend.check_password(user.name, user.password) is True
    assert await backend.check_password(user.mail, user.password) is True
    assert await backend.check_password(user.name, user.password + "x") is False
    assert await backend.check_password(user.name, "") is False
    assert await backend.check_password("nobody-here", user.password) is False


async def test_set_password_over_ldaps(
    backend: LdapUserBackend, samba_dc: SambaDc, user: AdUser
) -> None:
    before = await backend.password_state(user.name)
    new = strong_password()
    await backend.set_password(user.name, new)
    assert samba_dc.simple_bind(user.upn, new) == SUCCESS
    assert samba_dc.simple_bind(user.upn, user.password) == INVALID_CREDENTIALS
    assert await backend.check_password(user.name, new) is True
    assert await backend.password_state(user.name) != before  # pwdLastSet moved
    found = await backend.get_user(user.name)
    assert found is not None and found.state == AccountState(0)  # pwdLastSet is not 0


async def test_set_password_over_start_tls(
    make_backend: BackendFactory, samba_dc: SambaDc, user: AdUser
) -> None:
    started = make_backend(address=samba_dc.url("ldap"), start_tls=True)
    await started.startup_check()
    new = strong_password()
    await started.set_password(user.name, new)
    assert samba_dc.simple_bind(user.upn, new) == SUCCESS


async def test_non_ascii_password_is_stored_as_typed(
    backend: LdapUserBackend, samba_dc: SambaDc, user: AdUser
) -> None:
    new = "Grüße-ÆØÅ-Passw0rd-€"
    await backend.set_password(user.name, new)
    assert samba_dc.simple_bind(user.upn, new) == SUCCESS
    assert await backend.check_password(user.name, new) is True


@pytest.mark.parametrize(
    "weak",
    [
        pytest.param("Sh0rt!", id="shorter-than-7"),
        pytest.param("alllowercaseletters", id="one-character-class"),
        pytest.param("lowercaseanddigits123", id="two-character-classes"),
    ],
)
async def test_set_password_refused_by_the_domain_policy(
    backend: LdapUserBackend, samba_dc: SambaDc, user: AdUser, weak: str
) -> None:
    with pytest.raises(PasswordRejectedError) as refused:
        await backend.set_password(user.name, weak)
    assert refused.value.reasons == [AD_RULES_SENTENCE]
    assert samba_dc.simple_bind(user.upn, user.password) == SUCCESS


async def test_reset_to_the_current_password_is_accepted_without_policy_hints(
    backend: LdapUserBackend, samba_dc: SambaDc, user: AdUser
) -> None:
    """An administrative reset (replace unicodePwd) skips password history in AD unless the
    LDAP_SERVER_POLICY_HINTS control (1.2.840.113556.1.4.2239) is sent. Samba 4.17 neither
    announces nor implements it (marked critical it fails with unavailableCriticalExtension), so
    the backend does not send it and the domain accepts the current password again. Against a
    Windows DC that announces the control, the same call raises PasswordRejectedError."""
    await backend.set_password(user.name, user.password)
    assert samba_dc.simple_bind(user.upn, user.password) == SUCCESS


async def test_set_password_refused_without_encryption(
    make_backend: BackendFactory, samba_dc: SambaDc, user: AdUser
) -> None:
    plain = make_backend(address=samba_dc.url("ldap"))
    with pytest.raises(PasswordWriteError, match="encrypted connection"):
        await plain.set_password(user.name, strong_password())
    assert samba_dc.simple_bind(user.upn, user.password) == SUCCESS


def test_samba_refuses_simple_binds_in_clear(samba_dc: SambaDc) -> None:
    """Samba's default `ldap server require strong auth = yes`: over plain ldap:// a simple bind
    gets strongerAuthRequired, so an AD backend without TLS could not even sign people in."""
    result = subprocess.run(
        [
            "ldapwhoami",
            "-x",
            "-H",
            samba_dc.url("ldap"),
            "-D",
            ADMIN_USER,
            "-w",
            samba_dc.admin_password,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == STRONGER_AUTH_REQUIRED, result.stderr
