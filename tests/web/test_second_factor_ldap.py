"""The second factor on a real OpenLDAP: a username attribute with two values (uid: john and
uid: jdoe on one entry) must not give the account a second name under which it has no second
factor. Authelia refuses such an entry ("the attribute must be a single value attribute"); so
does the portal, so a reset begun under the other name cannot skip the code (ASVS 5.0 6.4.3)."""

from __future__ import annotations

import logging

import pytest

from tests.integration.conftest import make_slapd, slapd, slapd_ca, slapd_template  # noqa: F401
from tests.integration.slapd import USER_DNS, Slapd
from tests.web.conftest import (
    Portal,
    StartPortal,
    choose_password,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
)
from tests.web.test_reset_ldap import NEW_PASSWORD, authelia_ldap_block
from tests.web.test_reset_second_factor import register_john


@pytest.fixture
async def ldap_portal(start_portal: StartPortal, slapd: Slapd) -> Portal:  # noqa: F811
    portal = await start_portal(authentication_backend=authelia_ldap_block(slapd))
    await register_john(portal)
    portal.smtp.deliveries.clear()
    slapd.modify(f"dn: {USER_DNS['john']}\nchangetype: modify\nadd: uid\nuid: jdoe\n")
    return portal


async def test_a_reset_under_a_second_uid_does_not_skip_the_code(
    ldap_portal: Portal,
    slapd: Slapd,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    portal = ldap_portal
    caplog.set_level(logging.WARNING)

    await request_reset(portal.client, "jdoe")
    await portal.drain_outbox()
    # Whatever the link says, john's password never changes without his code.
    if portal.smtp.deliveries:
        link = reset_link_from(await portal.next_mail())
        assert (await open_link(portal.client, link)).status == 200
        await choose_password(portal.client, NEW_PASSWORD)

    assert not slapd.whoami(USER_DNS["john"], NEW_PASSWORD)
    assert slapd.whoami(USER_DNS["john"], "password")
    assert "must be a single value attribute" in caplog.text


async def test_a_sign_in_under_either_uid_is_refused(ldap_portal: Portal) -> None:
    for name in ("jdoe", "john"):
        response = await sign_in(ldap_portal.client, name, "password")
        assert response.status == 401, name
