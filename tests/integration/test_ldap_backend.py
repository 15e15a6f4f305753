"""The LDAP backend against a real slapd holding the test directory, configured with the
`authentication_backend.ldap` block of tests/fixtures/configuration-ldap.yml, shaped as Authelia's
LDAP suite (only address, TLS and the service account's secret point at the test server)."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import subprocess
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from ruamel.yaml import YAML

from portal.config import LdapBackendConfig
from portal.errors import (
    BackendUnavailableError,
    PasswordChangeRequiredError,
    PasswordRejectedError,
    StartupCheckError,
    UserBackendError,
)
from portal.password_hashing import HashingQueue
from portal.users.base import AccountState, User
from portal.users.ldap import LdapUserBackend
from tests.conftest import FIXTURES
from tests.integration.slapd import (
    CONFIG_DIR,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SLAPD,
    USER_DNS,
    USER_PASSWORD,
    Slapd,
)

SUITE = FIXTURES / "configuration-ldap.yml"
JOHN = USER_DNS["john"]
LONGER = "The directory requires a longer password."
IN_HISTORY = "You used this password recently; choose another one."

BackendFactory = Callable[..., LdapUserBackend]


def suite_config(slapd: Slapd, *, scheme: str = "ldaps", **overrides: Any) -> LdapBackendConfig:
    """Return the fixture's LDAP block pointed at this server (ldaps, trusting its CA)."""
    block = YAML(typ="safe").load(SUITE.read_text())["authentication_backend"]["ldap"]
    block.update(
        address=slapd.url(scheme),
        tls={},
        user=SERVICE_DN,
        password=SERVICE_PASSWORD,
    )
    block.update(overrides)
    return LdapBackendConfig.model_validate(block)


@pytest.fixture
async def make_backend(slapd: Slapd) -> AsyncIterator[BackendFactory]:
    """Build backends on the suite's configuration; all are closed after the test."""
    made: list[LdapUserBackend] = []

    def make(
        certificates_directory: Path | None = slapd.ca_directory, **overrides: Any
    ) -> LdapUserBackend:
        backend = LdapUserBackend(
            suite_config(slapd, **overrides), certificates_directory=certificates_directory
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(make_backend: BackendFactory) -> LdapUserBackend:
    """A started backend on ldaps://, verifying the server with the test CA."""
    started = make_backend()
    await started.startup_check()
    return started


def stored_password(slapd: Slapd, dn: str) -> str:
    """Return the user's userPassword as the server stores it."""
    for line in slapd.search(dn, "(objectClass=*)", ["userPassword"]).splitlines():
        if line.startswith("userPassword:: "):
            return base64.b64decode(line.removeprefix("userPassword:: ")).decode()
        if line.startswith("userPassword: "):
            return line.removeprefix("userPassword: ")
    raise AssertionError(f"no userPassword for {dn}")


# --- lookups -------------------------------------------------------------------------------------


async def test_list_users_finds_every_user_the_filter_matches_page_by_page(
    slapd: Slapd,
) -> None:
    paged = LdapUserBackend(
        suite_config(slapd), certificates_directory=slapd.ca_directory, page_size=1
    )
    await paged.startup_check()
    try:
        users = await paged.list_users()
    finally:
        await paged.close()

    assert [u.username for u in users] == ["bob", "harry", "james", "john"]  # one page each
    john = users[-1]
    assert (john.display_name, john.emails) == ("John Doe", ("john.doe@authelia.com",))
    assert sorted(john.groups) == ["admins", "dev"]
    assert users[0].groups == ("dev",)


async def test_list_users_keeps_the_rest_of_users_filter(make_backend: BackendFactory) -> None:
    narrowed = make_backend(
        users_filter="(&(objectClass=inetOrgPerson)(!(uid=bob))"
        "(|({username_attribute}={input})({mail_attribute}={input})))"
    )
    await narrowed.startup_check()

    users = await narrowed.list_users()

    assert [u.username for u in users] == ["harry", "james", "john"]


async def test_john_is_found_by_username_and_by_mail(backend: LdapUserBackend) -> None:
    for identifier in ("john", "john.doe@authelia.com"):
        john = await backend.get_user(identifier)
        assert john is not None, identifier
        assert john.username == "john"
        assert john.display_name == "John Doe"
        assert john.emails == ("john.doe@authelia.com",)
        assert sorted(john.groups) == ["admins", "dev"]
        assert john.disabled is False


async def test_other_users_have_their_own_groups(backend: LdapUserBackend) -> None:
    bob = await backend.get_user("bob")
    harry = await backend.get_user("harry.potter@authelia.com")
    assert bob is not None and bob.groups == ("dev",)
    assert harry is not None and (harry.username, harry.groups) == ("harry", ())


@pytest.mark.parametrize("identifier", ["*)(uid=*", "john*", "*", "(uid=john)", "nobody", ""])
async def test_filter_characters_and_strangers_find_nobody(
    backend: LdapUserBackend, identifier: str
) -> None:
    assert await backend.get_user(identifier) is None


async def test_an_identifier_naming_two_entries_names_nobody(
    backend: LdapUserBackend, slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    slapd.modify(
        f"dn: {USER_DNS['bob']}\nchangetype: modify\nadd: mail\nmail: john.doe@authelia.com\n-\n"
    )
    assert await backend.get_user("john.doe@authelia.com") is None
    assert "refusing to pick one" in caplog.text
    assert await backend.get_user("john") is not None


# group_search_mode memberof: the memberof overlay keeps memberOf on the users; groups added below.

GROUPS_DN = "ou=groups,dc=example,dc=com"
STRANGE = f"cn=a*b(c),{GROUPS_DN}"  # filter characters in a group's name
STAFF = f"cn=staff,{GROUPS_DN}"
OTHER_STAFF = f"cn=staff,ou=elsewhere,{GROUPS_DN}"  # the same RDN as STAFF
OTHERS = f"cn=others,{GROUPS_DN}"
MEMBEROF = {"username": "uid", "display_name": "displayName", "member_of": "memberOf"}


@pytest.fixture
def memberof_slapd(slapd: Slapd) -> Slapd:
    """The test directory with the memberof overlay and four groups: john is in `a*b(c)` and
    `staff`; bob in `others` and the other `staff` (ou=elsewhere, also named `staff-elsewhere`);
    harry in none."""
    slapd.modify_config(
        "dn: cn=module{0},cn=config\nchangetype: modify\nadd: olcModuleLoad\n"
        "olcModuleLoad: memberof\n\n"
        "dn: olcOverlay=memberof,olcDatabase={1}mdb,cn=config\nchangetype: add\n"
        "objectClass: olcOverlayConfig\nobjectClass: olcMemberOf\nolcOverlay: memberof\n"
    )
    groups = [(STRANGE, JOHN), (STAFF, JOHN), (OTHERS, USER_DNS["bob"])]
    groups.append((OTHER_STAFF, USER_DNS["bob"]))
    slapd.add(f"dn: ou=elsewhere,{GROUPS_DN}\nobjectClass: organizationalUnit\nou: elsewhere\n")
    for dn, member in groups:
        names = dn.split(",")[0].removeprefix("cn=")
        if dn == OTHER_STAFF:  # a second name, to tell it from STAFF
            names += "\ncn: staff-elsewhere"
        slapd.add(f"dn: {dn}\nobjectClass: groupOfNames\ncn: {names}\nmember: {member}\n")
    return slapd


@pytest.mark.parametrize(
    ("groups_filter", "distinguished_name"),
    [
        ("(&(objectClass=groupOfNames)(|{memberof:dn}))", "entryDN"),
        ("(&(objectClass=groupOfNames)(|{memberof:rdn}))", ""),
        # Filters that match every group: only those in the user's memberOf count.
        ("(|(objectClass=groupOfNames){memberof:dn})", "entryDN"),
        ("(|(objectClass=groupOfNames){memberof:rdn})", ""),
    ],
)
async def test_memberof_mode_finds_exactly_the_users_groups(
    make_backend: BackendFactory, memberof_slapd: Slapd, groups_filter: str, distinguished_name: str
) -> None:
    backend = make_backend(
        group_search_mode="memberof",
        groups_filter=groups_filter,
        attributes={**MEMBEROF, "distinguished_name": distinguished_name},
    )
    await backend.startup_check()
    john, bob = await backend.get_user("john"), await backend.get_user("bob")
    assert john is not None and sorted(john.groups) == ["a*b(c)", "staff"]
    assert bob is not None and sorted(bob.groups) == ["others", "staff", "staff-elsewhere"]


async def test_memberof_mode_sends_no_search_for_a_user_in_no_group(
    make_backend: BackendFactory, memberof_slapd: Slapd
) -> None:
    # A groups base that does not exist: any groups search would fail.
    backend = make_backend(
        group_search_mode="memberof",
        groups_filter="(|{memberof:rdn})",
        additional_groups_dn="ou=missing",
        attributes=MEMBEROF,
    )
    harry = await backend.get_user("harry")
    assert harry is not None and harry.groups == ()
    with pytest.raises(UserBackendError, match="the groups search failed: noSuchObject"):
        await backend.get_user("john")


async def test_a_memberof_group_name_with_filter_characters_matches_only_itself(
    make_backend: BackendFactory, memberof_slapd: Slapd
) -> None:
    # Unescaped, (cn=a*b(c)) would be a broken filter (the search fails), and (cn=a*b) a
    # wildcard also matching aXb.
    memberof_slapd.add(
        f"dn: cn=aXb,{GROUPS_DN}\nobjectClass: groupOfNames\ncn: aXb\nmember: {USER_DNS['bob']}\n"
    )
    for placeholder, dn_attribute in (("{memberof:rdn}", ""), ("{memberof:dn}", "entryDN")):
        backend = make_backend(
            group_search_mode="memberof",
            groups_filter=f"(&(objectClass=groupOfNames)(|{placeholder}))",
            attributes={**MEMBEROF, "distinguished_name": dn_attribute},
        )
        john = await backend.get_user("john")
        assert john is not None and sorted(john.groups) == ["a*b(c)", "staff"], placeholder


# --- `portal users list`: every user's groups from one groups search -----------------------------


OTHERS_GROUPS = ["others", "staff", "staff-elsewhere"]  # bob's in memberof_slapd


async def one_by_one(backend: LdapUserBackend, users: list[User]) -> list[User | None]:
    """Each listed user as get_user finds it: with their own groups search."""
    return [await backend.get_user(user.username) for user in users]


def enable_monitor(slapd: Slapd) -> None:
    """Add slapd's monitor database (cn=Monitor), readable by anyone: it counts searches."""
    slapd.modify_config(
        "dn: olcDatabase=monitor,cn=config\nchangetype: add\nobjectClass: olcDatabaseConfig\n"
        "olcDatabase: monitor\nolcAccess: to * by * read\n"
    )


def searches_done(slapd: Slapd) -> int:
    """Return how many searches slapd has completed since it started (cn=Monitor)."""
    found = slapd.search("cn=Search,cn=Operations,cn=Monitor", "(objectClass=*)", ["+"])
    return int(re.search(r"monitorOpCompleted: (\d+)", found).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the suite's (&(member={dn})(objectClass=groupOfNames))
        {"implementation": "rfc2307bis", "groups_filter": None},  # (|(member={dn})(uniqueMember=...
        {"groups_filter": "(member={dn})"},
        # Shapes sorted out one user at a time, as before: the same answer.
        {"groups_filter": "(&(objectClass=groupOfNames)(|(member={dn})(cn={username})))"},
        {"groups_filter": "(&(member:distinguishedNameMatch:={dn})(objectClass=groupOfNames))"},
    ],
    ids=["suite", "rfc2307bis", "bare-term", "username-in-or", "matching-rule"],
)
async def test_listed_users_have_the_groups_their_own_search_finds(
    slapd: Slapd, memberof_slapd: Slapd, overrides: dict[str, Any]
) -> None:
    # One entry per page, so the users and the groups come in several pages each.
    config = suite_config(slapd, **overrides)
    paged = LdapUserBackend(config, certificates_directory=slapd.ca_directory, page_size=1)
    await paged.startup_check()
    try:
        users = await paged.list_users()
        assert users == await one_by_one(paged, users)
    finally:
        await paged.close()
    john, bob = users[-1], users[0]
    assert (john.username, sorted(john.groups)) == ("john", ["a*b(c)", "admins", "dev", "staff"])
    assert (bob.username, sorted(bob.groups)) == (
        "bob",
        ["dev", "others", "staff", "staff-elsewhere"],
    )


@pytest.mark.parametrize(
    ("groups_filter", "distinguished_name"),
    [
        ("(&(objectClass=groupOfNames)(|{memberof:dn}))", "entryDN"),
        ("(&(objectClass=groupOfNames)(|{memberof:rdn}))", ""),
        ("(|(objectClass=groupOfNames){memberof:dn})", "entryDN"),
        ("(|(objectClass=groupOfNames){memberof:rdn})", ""),
    ],
)
async def test_listed_users_have_their_memberof_groups(
    slapd: Slapd, memberof_slapd: Slapd, groups_filter: str, distinguished_name: str
) -> None:
    config = suite_config(
        slapd,
        group_search_mode="memberof",
        groups_filter=groups_filter,
        attributes={**MEMBEROF, "distinguished_name": distinguished_name},
    )
    paged = LdapUserBackend(config, certificates_directory=slapd.ca_directory, page_size=1)
    await paged.startup_check()
    try:
        users = await paged.list_users()
        assert users == await one_by_one(paged, users)
    finally:
        await paged.close()
    by_name = {u.username: sorted(u.groups) for u in users}
    assert by_name["john"] == ["a*b(c)", "staff"]
    assert by_name["bob"] == ["others", "staff", "staff-elsewhere"]
    assert by_name["harry"] == []


@pytest.mark.parametrize(
    ("overrides", "searches"),
    [
        ({}, 2),  # the users, then every group
        (
            {
                "group_search_mode": "memberof",
                "groups_filter": "(&(objectClass=groupOfNames)(|{memberof:rdn}))",
                "attributes": MEMBEROF,
            },
            2,
        ),
        # A shape the portal cannot sort out itself: one groups search per user (4 users).
        ({"groups_filter": "(&(objectClass=groupOfNames)(|(member={dn})(cn={username})))"}, 5),
    ],
    ids=["filter", "memberof", "per-user"],
)
async def test_users_list_reads_the_groups_with_one_search(
    slapd: Slapd, memberof_slapd: Slapd, overrides: dict[str, Any], searches: int
) -> None:
    enable_monitor(slapd)
    backend = LdapUserBackend(
        suite_config(slapd, **overrides), certificates_directory=slapd.ca_directory
    )
    await backend.startup_check()
    try:
        before = searches_done(slapd)
        users = await backend.list_users()
        after = searches_done(slapd)
    finally:
        await backend.close()
    assert len(users) == 4
    # The monitor's own read of the counter is a search too.
    assert after - before - 1 == searches


# --- account states (the password-policy overlay) ------------------------------------------------


def replace_attribute(slapd: Slapd, name: str, value: str, *, relax: bool = False) -> None:
    slapd.modify(f"dn: {JOHN}\nchangetype: modify\nreplace: {name}\n{name}: {value}\n", relax=relax)


async def test_states_come_with_the_user_in_one_lookup(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    john = await backend.get_user("john")
    assert john is not None and (john.disabled, john.state) == (False, AccountState(0))
    replace_attribute(slapd, "pwdReset", "TRUE")
    replace_attribute(slapd, "pwdAccountLockedTime", "20200101000000Z")
    john = await backend.get_user("john")
    assert john is not None and not john.disabled
    assert john.state == AccountState.MUST_CHANGE | AccountState.LOCKED_OUT
    replace_attribute(slapd, "pwdAccountLockedTime", "000001010000Z")
    john = await backend.get_user("john")
    assert john is not None and john.disabled and john.state == AccountState.MUST_CHANGE


async def test_a_bind_allowed_only_to_change_the_password_is_no_sign_in(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    slapd.set_policy(pwdMustChange=True)
    replace_attribute(slapd, "pwdReset", "TRUE")
    with pytest.raises(PasswordChangeRequiredError) as told:  # changeAfterReset
        await backend.check_password("john", USER_PASSWORD)
    assert told.value.reason == "must_change"
    assert await backend.check_password("john", "wrong password") is False


async def test_a_grace_login_is_no_sign_in(backend: LdapUserBackend, slapd: Slapd) -> None:
    slapd.set_policy(pwdMaxAge=3600, pwdGraceAuthNLimit=3)
    replace_attribute(slapd, "pwdChangedTime", "20000101000000Z", relax=True)
    with pytest.raises(PasswordChangeRequiredError) as told:  # graceAuthNsRemaining
        await backend.check_password("john", USER_PASSWORD)
    assert told.value.reason == "expired"
    assert await backend.check_password("john", "wrong password") is False
    # The directory counted the grace login the check used; a reset would clear it.
    grace = slapd.search(JOHN, "(objectClass=*)", ["pwdGraceUseTime"])
    assert grace.count("pwdGraceUseTime:") == 1


async def test_nothing_to_unlock_on_openldap(backend: LdapUserBackend, slapd: Slapd) -> None:
    """ppolicy lifts a lockout from failed binds itself, with every password change."""
    for _ in range(5):
        assert not slapd.whoami(JOHN, "wrong password")
    john = await backend.get_user("john")
    assert john is not None and john.state == AccountState.LOCKED_OUT
    assert await backend.clear_lockout("john") is False
    await backend.set_password("john", "a brand new password")
    john = await backend.get_user("john")
    assert john is not None and john.state == AccountState(0)
    assert slapd.whoami(JOHN, "a brand new password")


# --- passwords -----------------------------------------------------------------------------------


async def test_check_password(backend: LdapUserBackend) -> None:
    assert await backend.check_password("john", USER_PASSWORD) is True
    assert await backend.check_password("john.doe@authelia.com", USER_PASSWORD) is True
    assert await backend.check_password("john", "wrong password") is False
    assert await backend.check_password("john", "") is False
    assert await backend.check_password("nobody", USER_PASSWORD) is False


async def test_an_unknown_user_costs_the_directory_what_a_wrong_password_costs(
    make_backend: BackendFactory, slapd: Slapd
) -> None:
    # The answer's time must not tell who exists: a wrong password is a search plus a bind on a
    # fresh connection, so an unknown name gets that bind too (on a DN nobody has). Counted at
    # a TCP relay in front of slapd: the same number of new connections for either.
    opened = 0

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", slapd.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        backend = make_backend(
            address=f"ldap://127.0.0.1:{port}", pooling={"enable": True, "count": 1}
        )
        await backend.startup_check()
        await backend.check_password("john", "warm-up")  # the pooled connection is open now

        def connections_for(username: str) -> Callable[[], Any]:
            async def count() -> int:
                before = opened
                assert await backend.check_password(username, "wrong password") is False
                return opened - before

            return count

        wrong_password = await connections_for("john")()
        unknown_user = await connections_for("nobody-at-all")()
        assert wrong_password >= 1
        assert unknown_user == wrong_password
        await backend.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_new_password_goes_through_password_modify(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    await backend.set_password("john", "a brand new password")
    assert slapd.whoami(JOHN, "a brand new password") is True
    assert slapd.whoami(JOHN, USER_PASSWORD) is False
    assert await backend.check_password("john", "a brand new password") is True
    # The server hashed it (ppolicy's olcPPolicyHashCleartext): never stored in clear.
    assert stored_password(slapd, JOHN).startswith("{")
    assert "a brand new password" not in stored_password(slapd, JOHN)


async def test_a_too_short_password_is_refused_with_a_sentence(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    slapd.set_policy(pwdMinLength=12)
    with pytest.raises(PasswordRejectedError) as refused:
        await backend.set_password("john", "short pw")
    assert refused.value.reasons == [LONGER]
    assert slapd.whoami(JOHN, USER_PASSWORD) is True


async def test_a_recently_used_password_is_refused_with_a_sentence(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    slapd.set_policy(pwdInHistory=3)
    await backend.set_password("john", "first new password")
    with pytest.raises(PasswordRejectedError) as refused:
        await backend.set_password("john", USER_PASSWORD)
    assert refused.value.reasons == [IN_HISTORY]
    assert slapd.whoami(JOHN, "first new password") is True


async def test_password_state_follows_every_change(backend: LdapUserBackend, slapd: Slapd) -> None:
    before = await backend.password_state("john")
    assert before is not None
    assert await backend.password_state("john") == before  # stable while nothing changes
    await backend.set_password("john", "changed by the portal")
    after_reset = await backend.password_state("john")
    assert after_reset not in (None, before)
    slapd.modify(
        f"dn: {JOHN}\nchangetype: modify\nreplace: userPassword\n"
        "userPassword: changed by the admin\n-\n"
    )
    after_admin = await backend.password_state("john")
    assert after_admin not in (None, before, after_reset)
    assert await backend.password_state("nobody") is None


# --- the same password in another Unicode form ----------------------------------------------

NFC = "Corr3ct-Horse-Battery-\u00c4\u00d6\u00dc"
NFD = unicodedata.normalize("NFD", NFC)
# SQUARED LATIN CAPITAL LETTER A (Unicode 6.0): NFKC makes it "A", but the SASLprep ldap3 applies
# to binds uses Unicode 3.2's tables and keeps it, so only the portal's own NFKC changes it.
SQUARED_A = "\U0001f130"


def failed_binds(slapd: Slapd, dn: str) -> int:
    """Count the failures ppolicy recorded on the entry (one pwdFailureTime per failed bind)."""
    found = slapd.search(dn, "(objectClass=*)", ["pwdFailureTime"])
    return sum(line.startswith("pwdFailureTime:") for line in found.splitlines())


def give_directly(slapd: Slapd, dn: str, password: str) -> None:
    """Set userPassword as an administrator would, exactly as given (no normalization)."""
    value = base64.b64encode(password.encode()).decode()
    slapd.modify(
        f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword:: {value}\n-\n"
    )


async def test_a_password_set_in_one_unicode_form_binds_in_the_other(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    await backend.set_password("john", NFD)
    assert slapd.whoami(JOHN, NFC) is True  # the directory holds the composed form
    assert await backend.check_password("john", NFC) is True
    await backend.set_password("john", NFC)
    assert await backend.check_password("john", NFD) is True
    assert await backend.check_password("john", NFD + "!") is False


async def test_a_compatibility_character_newer_than_saslprep_is_normalized_too(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    await backend.set_password("john", f"Corr3ct-Horse-{SQUARED_A}-42")
    assert slapd.whoami(JOHN, "Corr3ct-Horse-A-42") is True
    assert await backend.check_password("john", "Corr3ct-Horse-A-42") is True
    assert await backend.check_password("john", f"Corr3ct-Horse-{SQUARED_A}-42") is True


async def test_a_directory_password_as_typed_before_normalization_still_binds(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    legacy = f"Legacy-{SQUARED_A}-password"
    give_directly(slapd, JOHN, legacy)
    assert await backend.check_password("john", legacy) is True
    assert await backend.check_password("john", legacy + "!") is False


async def test_a_wrong_password_is_one_failed_bind_unless_its_forms_differ(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    assert failed_binds(slapd, JOHN) == 0
    assert await backend.check_password("john", "wrong password") is False
    assert failed_binds(slapd, JOHN) == 1
    # NFKC and SASLprep agree on these: still one bind each.
    assert await backend.check_password("john", "wro\u0308ng \ufb01sh") is False
    assert failed_binds(slapd, JOHN) == 2
    # Only when the normalized form differs from what binds sent before: a second bind.
    assert await backend.check_password("john", f"wrong {SQUARED_A}") is False
    assert failed_binds(slapd, JOHN) == 4


def hide_rootdse(slapd: Slapd) -> None:
    """Make the RootDSE unreadable, so that the server announces no Password Modify."""
    slapd.modify_config(
        "dn: olcDatabase={-1}frontend,cn=config\nchangetype: modify\nadd: olcAccess\n"
        'olcAccess: to dn.base="" by * none\n'
    )


async def test_an_unreadable_rootdse_fails_the_startup_check(
    make_backend: BackendFactory, slapd: Slapd
) -> None:
    hide_rootdse(slapd)
    with pytest.raises(StartupCheckError, match="cannot read the RootDSE .*: not readable"):
        await make_backend().startup_check()


async def test_without_password_modify_a_crypt_hash_is_written(
    make_backend: BackendFactory, slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    hide_rootdse(slapd)
    backend = make_backend(permit_feature_detection_failure=True)
    await backend.startup_check()
    await backend.set_password("john", "a fallback password")
    await backend.set_password("bob", "another fallback password")
    assert stored_password(slapd, JOHN).startswith("{CRYPT}$6$")
    assert slapd.whoami(JOHN, "a fallback password") is True
    assert slapd.whoami(USER_DNS["bob"], "another fallback password") is True
    warnings = [r for r in caplog.records if "{CRYPT}" in r.getMessage()]
    assert len(warnings) == 1  # once, not per write


async def test_the_crypt_hash_waits_its_turn_in_the_hashing_queue(slapd: Slapd) -> None:
    # Every password hash the portal makes runs in the one bounded queue (issue 19): a flood of
    # resets must not run SHA-512 crypt's 50,000 rounds beside the sign-ins' hashes.
    hide_rootdse(slapd)
    queue = HashingQueue(1)
    release = threading.Event()
    busy = asyncio.ensure_future(queue.run(release.wait, 30))
    backend = LdapUserBackend(
        suite_config(slapd, permit_feature_detection_failure=True),
        certificates_directory=slapd.ca_directory,
        hashing=queue,
    )
    try:
        await backend.startup_check()
        write = asyncio.ensure_future(backend.set_password("john", "a queued password"))
        await asyncio.sleep(1.5)
        assert not write.done()  # the only hashing thread is taken
        release.set()
        await busy
        await asyncio.wait_for(write, 30)
    finally:
        release.set()
        await backend.close()
    assert stored_password(slapd, JOHN).startswith("{CRYPT}$6$")
    assert slapd.whoami(JOHN, "a queued password") is True


# --- TLS -----------------------------------------------------------------------------------------


async def test_start_tls_verifies_the_server_with_the_ca(
    make_backend: BackendFactory, slapd: Slapd
) -> None:
    backend = make_backend(address=slapd.url("ldap"), start_tls=True)
    await backend.startup_check()
    john = await backend.get_user("john")
    assert john is not None and john.username == "john"
    assert await backend.check_password("john", USER_PASSWORD) is True


async def test_ldaps_without_the_ca_fails_verification(
    make_backend: BackendFactory, slapd: Slapd
) -> None:
    backend = make_backend(certificates_directory=None)
    with pytest.raises(StartupCheckError) as failed:
        await backend.startup_check()
    message = str(failed.value)
    assert message.startswith(
        f"authentication_backend.ldap: cannot connect to {slapd.url('ldaps')}"
    )
    assert "CERTIFICATE_VERIFY_FAILED" in message


async def test_ldaps_trusts_a_private_ca_from_certificates_directory(
    make_backend: BackendFactory, slapd: Slapd, tmp_path: Path
) -> None:
    folder = tmp_path / "certificates"
    folder.mkdir()
    (folder / "company-ca.crt").write_text(slapd.ca_pem)
    (folder / "notes.txt").write_text("not a certificate, and not read")
    backend = make_backend(certificates_directory=folder)
    await backend.startup_check()
    john = await backend.get_user("john")
    assert john is not None and john.username == "john"


def client_tls(ca: trustme.CA) -> dict[str, str]:
    """A client certificate issued by ca, as tls.certificate_chain and tls.private_key."""
    issued = ca.issue_cert("portal-client.test")
    return {
        "certificate_chain": "".join(pem.bytes().decode() for pem in issued.cert_chain_pems),
        "private_key": issued.private_key_pem.bytes().decode(),
    }


async def test_a_server_demanding_a_client_certificate_gets_the_configured_one(
    make_backend: BackendFactory, slapd: Slapd, slapd_ca: trustme.CA
) -> None:
    slapd.require_client_certificate()
    for address, start_tls in ((slapd.url("ldaps"), False), (slapd.url("ldap"), True)):
        backend = make_backend(address=address, start_tls=start_tls, tls=client_tls(slapd_ca))
        await backend.startup_check()
        john = await backend.get_user("john")
        assert john is not None and john.emails == ("john.doe@authelia.com",)
        assert await backend.check_password("john", USER_PASSWORD) is True


async def test_a_server_demanding_a_client_certificate_refuses_the_portal_without_one(
    make_backend: BackendFactory, slapd: Slapd
) -> None:
    slapd.require_client_certificate()
    backend = make_backend()
    with pytest.raises(StartupCheckError) as failed:
        await backend.startup_check()
    message = str(failed.value)
    assert message.startswith(
        f"authentication_backend.ldap: cannot connect to {slapd.url('ldaps')}"
    )
    assert message.endswith(
        "(a server that demands a client certificate needs tls.certificate_chain and "
        "tls.private_key)"
    )


async def test_a_client_certificate_from_another_ca_is_refused_by_the_server(
    make_backend: BackendFactory, slapd: Slapd
) -> None:
    slapd.require_client_certificate()
    backend = make_backend(tls=client_tls(trustme.CA()))
    with pytest.raises(StartupCheckError, match="cannot connect to"):
        await backend.startup_check()


async def test_an_unreadable_certificate_in_the_directory_stops_the_backend_naming_the_file(
    make_backend: BackendFactory, tmp_path: Path
) -> None:
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(StartupCheckError) as failed:
        make_backend(certificates_directory=tmp_path)
    assert str(failed.value) == (
        f"certificates_directory: {tmp_path / 'broken.pem'} holds no PEM certificate"
    )


async def test_start_tls_checks_the_server_name(make_backend: BackendFactory, slapd: Slapd) -> None:
    tls = {"server_name": "ldap.example.org"}
    backend = make_backend(address=slapd.url("ldap"), start_tls=True, tls=tls)
    with pytest.raises(StartupCheckError, match="cannot connect to .*(?i:hostname)"):
        await backend.startup_check()


def _accepts_unix(path: Path) -> bool:
    """Tell whether something accepts connections on the unix socket at path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


async def test_ldapi_reaches_a_local_server(make_backend: BackendFactory, slapd: Slapd) -> None:
    slapd.stop()  # the fixture's slapd listens on TCP only: run one on a socket instead
    path = slapd.workdir / "ldapi"
    listen = "ldapi://" + quote(str(path), safe="")
    process = subprocess.Popen(
        [SLAPD, "-h", listen, "-F", CONFIG_DIR, "-d", "none"],
        cwd=slapd.workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # slapd creates the socket file before it listens on it: wait until a connect works
        deadline = time.monotonic() + 10
        while not _accepts_unix(path) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        backend = make_backend(address=f"ldapi://{path}", tls={})
        await backend.startup_check()
        john = await backend.get_user("john")
        assert john is not None and john.groups == ("dev", "admins")
        assert await backend.check_password("john", USER_PASSWORD) is True
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the pool and the server's life --------------------------------------------------------------


async def test_fifty_concurrent_lookups_share_the_pool(backend: LdapUserBackend) -> None:
    people = {
        "john": "John Doe",
        "harry.potter@authelia.com": "Harry Potter",
        "bob": "Bob Dylan",
        "james.dean@authelia.com": "James Dean",
        "*": None,
    }
    asked = [list(people)[i % len(people)] for i in range(50)]
    found = await asyncio.gather(*(backend.get_user(who) for who in asked))
    for who, user in zip(asked, found, strict=True):
        assert (user.display_name if user else None) == people[who], who


async def test_a_restarted_server_is_used_again(backend: LdapUserBackend, slapd: Slapd) -> None:
    assert await backend.get_user("john") is not None
    assert await backend.healthy() is True
    slapd.stop()
    with pytest.raises(BackendUnavailableError):
        await backend.get_user("john")
    with pytest.raises(BackendUnavailableError):
        await backend.check_password("john", USER_PASSWORD)
    assert await backend.healthy() is False
    slapd.start()
    assert await backend.healthy() is True
    john = await backend.get_user("john")
    assert john is not None and john.username == "john"
    assert await backend.check_password("john", USER_PASSWORD) is True


async def test_idle_connections_dropped_by_a_restart_are_replaced(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    await asyncio.gather(*(backend.get_user("john") for _ in range(8)))  # fill the pool
    slapd.restart()
    users = await asyncio.gather(*(backend.get_user("bob") for _ in range(8)))
    assert all(user is not None and user.username == "bob" for user in users)


# pooling.timeout and pooling.retries (Authelia's ldap_client_factory.go): a call waits up to the
# timeout for a free connection; a connection that cannot be opened is tried again every
# timeout / retries seconds within it.


def pooling(**values: Any) -> dict[str, Any]:
    return {"pooling": {"enable": True, "count": 1, **values}}


async def test_a_call_waits_for_the_busy_connection_within_the_pool_timeout(
    make_backend: BackendFactory, slapd: Slapd
) -> None:
    backend = make_backend(**pooling(timeout="2s"))
    assert await backend.get_user("john") is not None  # the one connection, open and idle
    with slapd.paused():
        first = asyncio.create_task(backend.get_user("john"))  # holds it, awaiting an answer
        await asyncio.sleep(0.1)
        second = asyncio.create_task(backend.get_user("bob"))
        await asyncio.sleep(0.3)
        assert not first.done() and not second.done()
    john, bob = await first, await second
    assert john is not None and john.username == "john"
    assert bob is not None and bob.username == "bob"


async def test_a_call_that_gets_no_connection_within_the_pool_timeout_is_refused(
    make_backend: BackendFactory, slapd: Slapd
) -> None:
    backend = make_backend(**pooling(timeout="300ms", retries=3))
    assert await backend.get_user("john") is not None
    with slapd.paused():
        first = asyncio.create_task(backend.get_user("john"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(
            BackendUnavailableError, match=r"all 1 connections to .* stayed busy for 0\.3s$"
        ):
            await backend.get_user("bob")
        assert 0.25 < time.monotonic() - started < 2
    john = await first  # the busy one was never disturbed
    assert john is not None and john.username == "john"


async def test_a_server_back_within_the_pool_timeout_answers_the_waiting_call(
    make_backend: BackendFactory, slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.users.ldap")
    backend = make_backend(**pooling(timeout="6s", retries=12))
    assert await backend.get_user("john") is not None
    slapd.stop()
    lookup = asyncio.create_task(backend.get_user("john"))
    await asyncio.sleep(0.7)
    assert not lookup.done()
    await asyncio.to_thread(slapd.start)
    john = await lookup
    assert john is not None and john.username == "john"
    assert "cannot connect" in caplog.text and "trying again in 0.5s" in caplog.text


async def test_a_server_still_down_after_the_pool_timeout_is_unavailable(
    make_backend: BackendFactory, slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.users.ldap")
    slapd.stop()
    for values, attempts in ((pooling(timeout="600ms", retries=3), 3), (pooling(enable=False), 1)):
        caplog.clear()
        backend = make_backend(**values)
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="cannot connect to"):
            await backend.get_user("john")
        elapsed = time.monotonic() - started
        # Attempts at 0, 0.2 and 0.4 s; a fourth would come after the timeout. No pooling: one.
        assert caplog.text.count("trying again in 0.2s") == attempts - 1, values
        assert (elapsed >= 0.4) if attempts > 1 else (elapsed < 0.4), (values, elapsed)


async def test_a_wrong_service_password_fails_the_startup_check(
    make_backend: BackendFactory,
) -> None:
    backend = make_backend(password="not the password")
    with pytest.raises(
        StartupCheckError,
        match="^authentication_backend.ldap: service account bind failed: invalid credentials$",
    ):
        await backend.startup_check()
