"""The signed-in password change on a real OpenLDAP: the directory's ppolicy refusal shown as a
sentence on the form and in JSON, the old password still in force, then a change that lands."""

from __future__ import annotations

import pytest

from tests.integration.conftest import make_slapd, slapd, slapd_ca, slapd_template  # noqa: F401
from tests.integration.slapd import USER_DNS, Slapd
from tests.web.conftest import DEMO_PASSWORD, Portal, StartPortal, sign_in, signed_in
from tests.web.test_password_change import API, NEW_PASSWORD, OPEN, change_password
from tests.web.test_reset_ldap import authelia_ldap_block
from tests.web.test_totp_registration import elevate

DIRECTORY_REFUSAL = "The directory requires a longer password."


@pytest.fixture
async def ldap_portal(start_portal: StartPortal, slapd: Slapd) -> Portal:  # noqa: F811
    portal = await start_portal(authentication_backend=authelia_ldap_block(slapd), **OPEN)
    assert (await sign_in(portal.client)).status == 302
    await elevate(portal, {})
    return portal


async def test_the_directory_policy_speaks_on_the_form_then_a_longer_one_lands(
    ldap_portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    slapd.set_policy(pwdMinLength=40)
    refused = await change_password(ldap_portal.client, DEMO_PASSWORD, NEW_PASSWORD)
    assert refused.status == 400
    assert DIRECTORY_REFUSAL in await refused.text()
    assert slapd.whoami(USER_DNS["john"], DEMO_PASSWORD)

    long_enough = NEW_PASSWORD + "-and-then-some-more-words"
    done = await change_password(ldap_portal.client, DEMO_PASSWORD, long_enough)
    assert done.status == 200
    assert slapd.whoami(USER_DNS["john"], long_enough)
    assert not slapd.whoami(USER_DNS["john"], DEMO_PASSWORD)
    assert await signed_in(ldap_portal.client) == 200
    assert (await ldap_portal.next_mail())["Subject"] == "[Portal] Your password was changed"


async def test_the_json_twin_gives_the_directory_refusal_as_a_reason(
    ldap_portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    slapd.set_policy(pwdMinLength=40)
    body = {"old_password": DEMO_PASSWORD, "new_password": NEW_PASSWORD}
    refused = await ldap_portal.client.post(API, json=body)
    assert refused.status == 400
    assert (await refused.json())["reasons"] == [DIRECTORY_REFUSAL]
    wrong = await ldap_portal.client.post(API, json={**body, "old_password": "guess"})
    assert wrong.status == 401
    assert slapd.whoami(USER_DNS["john"], DEMO_PASSWORD)
