"""Authelia's LDAP test directory, loaded into a real slapd as its LDAP suite loads it (ppolicy
overlay, entries, ACLs), and the portal's LDAP backend on it configured with the suite's own
`authentication_backend.ldap` block (only the address and the CA point at the test server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from portal.config import LdapBackendConfig
from portal.users.ldap import LdapUserBackend
from tests.integration.slapd import SERVICE_DN, SERVICE_PASSWORD, USER_DNS, USER_PASSWORD, Slapd

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"


@pytest.fixture
async def backend(slapd: Slapd, authelia: Path) -> AsyncIterator[LdapUserBackend]:
    """The LDAP suite's block as shipped (its service account and filters), on this server."""
    suite = authelia / "suites" / "LDAP" / "configuration.yml"
    block = YAML(typ="safe", pure=True).load(suite.read_text(encoding="utf-8"))
    ldap = block["authentication_backend"]["ldap"]
    ldap.update(address=slapd.url("ldaps"), tls={})
    started = LdapUserBackend(
        LdapBackendConfig.model_validate(ldap), certificates_directory=slapd.ca_directory
    )
    await started.startup_check()
    yield started
    await started.close()


def test_authelias_users_and_service_account_bind_with_password(slapd: Slapd) -> None:
    for name, dn in USER_DNS.items():
        assert slapd.whoami(dn, USER_PASSWORD), name
    assert slapd.whoami(SERVICE_DN, SERVICE_PASSWORD)
    assert not slapd.whoami(USER_DNS["john"], "Password")


async def test_the_suite_block_finds_authelias_users_by_username_and_mail(
    backend: LdapUserBackend,
) -> None:
    for identifier in ("john", "john.doe@authelia.com"):
        john = await backend.get_user(identifier)
        assert john is not None, identifier
        assert (john.username, john.display_name) == ("john", "John Doe")
        assert john.emails == ("john.doe@authelia.com",)
        assert sorted(john.groups) == ["admins", "dev"]
    bob = await backend.get_user("bob")
    harry = await backend.get_user("harry.potter@authelia.com")
    assert bob is not None and bob.groups == ("dev",)
    assert harry is not None and (harry.username, harry.groups) == ("harry", ())
    assert await backend.get_user("pwmanager") is None  # outside ou=users


async def test_the_service_account_sets_a_password_that_the_directory_hashes(
    backend: LdapUserBackend, slapd: Slapd
) -> None:
    assert await backend.check_password("john", USER_PASSWORD) is True
    await backend.set_password("john", NEW_PASSWORD)

    assert slapd.whoami(USER_DNS["john"], NEW_PASSWORD)
    assert not slapd.whoami(USER_DNS["john"], USER_PASSWORD)
    stored = slapd.search(USER_DNS["john"], "(objectClass=*)", ["userPassword"])
    assert NEW_PASSWORD not in stored  # ppolicy's olcPPolicyHashCleartext
    assert await backend.check_password("john", NEW_PASSWORD) is True
