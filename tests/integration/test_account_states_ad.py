"""Account states on a real Samba AD domain controller, told over HTTP.

A disabled or expired account gets no mail, no reset and no session; a user who must change
their password at next logon (pwdLastSet=0) or whose password expired gets the mail, and no
session until the reset; a lockout from failed binds ends with a successful reset
(lockoutTime=0), unless `password_reset.disable_unlock` keeps the old behaviour.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientResponse

from tests.integration.samba_ad import ADMIN_USER, BASE_DN, SERVER_NAME, AdUser, SambaDc
from tests.web.conftest import (  # noqa: F401 - fixtures for the stories told over HTTP
    Client,
    Portal,
    StartPortal,
    audit_events,
    choose_password,
    clock,
    has_session,
    no_mail_sent,
    open_link,
    request_reset,
    reset_link_from,
    same_for_everyone,
    sign_in,
    signed_in,
    smtp,
    start_portal,
)

SUCCESS, INVALID_CREDENTIALS = 0, 49
NEW_PASSWORD = "Brand-New-Passphrase-77"  # long and with three character classes
WRONG = "Incorrect username or password."
MakeUser = Callable[..., AdUser]


def ad_block(samba_dc: SambaDc, **password_reset: Any) -> dict[str, Any]:
    """The authentication_backend an operator writes for this domain (Authelia's AD defaults)."""
    return {
        "file": None,
        "ldap": {
            "address": samba_dc.url("ldaps"),
            "implementation": "activedirectory",
            "base_dn": BASE_DN,
            "user": ADMIN_USER,
            "password": samba_dc.admin_password,
            "tls": {"server_name": SERVER_NAME},
        },
        # 'always': the session reads the directory on every request, so a change shows at once.
        "refresh_interval": "always",
        "password_reset": password_reset,
    }


@pytest.fixture
async def portal(start_portal: StartPortal, samba_dc: SambaDc) -> Portal:  # noqa: F811
    return await start_portal(
        authentication_backend=ad_block(samba_dc),
        certificates_directory=str(samba_dc.ca_directory),
        access_control={"default_policy": "one_factor"},
    )


# --- what a user or an attacker sees -------------------------------------------------------------


async def answer_to(client: Client, identifier: str) -> tuple[int, str, dict[str, str]]:
    response = await request_reset(client, identifier)
    body = re.sub(r'value="[^"]+"', 'value=""', await response.text())
    return response.status, body, same_for_everyone(response)


async def reset_by_mail(portal: Portal, user: AdUser) -> ClientResponse:
    await request_reset(portal.client, user.name)
    mail = await portal.next_mail()
    assert mail["To"] == user.mail
    await open_link(portal.client, reset_link_from(mail))
    return await choose_password(portal.client, NEW_PASSWORD)


def lock_out(samba_dc: SambaDc, user: AdUser) -> None:  # noqa: F811
    """Three wrong passwords under a policy that locks after three, for 30 minutes."""
    samba_dc.apply_policy(
        user.name,
        "--account-lockout-threshold=3",
        "--account-lockout-duration=30",
        "--reset-account-lockout-after=30",
    )
    for _ in range(3):
        assert samba_dc.simple_bind(user.upn, "Guessed-Wr0ng!") == INVALID_CREDENTIALS
    assert samba_dc.simple_bind(user.upn, user.password) == INVALID_CREDENTIALS  # locked


# --- kept out by an administrator ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["disabled", "account-expired"])
async def test_a_disabled_or_expired_account_gets_no_mail_and_no_session(
    portal: Portal,
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    user = make_user()
    if how == "disabled":
        samba_dc.tool("user", "disable", user.name)  # userAccountControl ACCOUNTDISABLE
    else:
        samba_dc.tool("user", "setexpiry", user.name, "--days=-1")  # accountExpires: yesterday
    assert await answer_to(portal.client, user.name) == await answer_to(portal.client, "nobody")
    assert await no_mail_sent(portal)
    assert [e["reason"] for e in audit_events(caplog, "reset_no_mail")] == ["disabled", "unknown"]
    refused = await sign_in(portal.client, user.name, user.password)
    assert refused.status == 401 and not has_session(refused)
    assert WRONG in await refused.text()


async def test_an_account_disabled_after_the_mail_went_out_gets_no_new_password(
    portal: Portal,
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
) -> None:
    user = make_user()
    await request_reset(portal.client, user.name)
    link = reset_link_from(await portal.next_mail())
    samba_dc.tool("user", "disable", user.name)
    opened = await open_link(portal.client, link)
    assert opened.status == 400
    assert "This link is invalid or has expired" in await opened.text()
    samba_dc.tool("user", "enable", user.name)
    assert samba_dc.simple_bind(user.upn, user.password) == SUCCESS  # the old one, untouched


async def test_an_account_disabled_during_a_session_loses_it(
    portal: Portal,
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
) -> None:
    user = make_user()
    assert (await sign_in(portal.client, user.name, user.password)).status == 302
    assert await signed_in(portal.client) == 200
    samba_dc.tool("user", "disable", user.name)
    assert await signed_in(portal.client) == 401


# --- must change at next logon, expired password ------------------------------------------------


async def test_a_user_who_must_change_gets_the_mail_and_the_reset_satisfies_it(
    portal: Portal,
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
) -> None:
    user = make_user("--must-change-at-next-login")  # pwdLastSet=0
    assert await answer_to(portal.client, user.name) == await answer_to(portal.client, "nobody")
    mail = await portal.next_mail()
    assert [d.rcpt_tos for d in portal.smtp.deliveries] == [[user.mail]]

    await open_link(portal.client, reset_link_from(mail))
    assert (await choose_password(portal.client, NEW_PASSWORD)).status == 200
    assert samba_dc.simple_bind(user.upn, NEW_PASSWORD) == SUCCESS
    assert samba_dc.attributes(user.name, "pwdLastSet")["pwdLastSet"] != "0"
    signed = await sign_in(portal.client, user.name, NEW_PASSWORD)
    assert signed.status == 302 and has_session(signed)


async def test_a_user_who_must_change_gets_no_session_and_is_told_after_the_password(
    portal: Portal,
    make_user: MakeUser,
) -> None:
    user = make_user("--must-change-at-next-login")
    refused = await sign_in(portal.client, user.name, user.password)
    assert refused.status == 401 and not has_session(refused)
    text = await refused.text()
    assert "Your administrator asks you to choose a new password." in text
    assert 'id="change-password" href="/reset-password/step1"' in text
    assert await signed_in(portal.client) == 401

    wrong = await sign_in(portal.client, user.name, user.password + "x")
    text = await wrong.text()
    assert WRONG in text and "administrator" not in text


async def test_a_change_demanded_during_a_session_ends_it(
    portal: Portal,
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
) -> None:
    user = make_user()
    assert (await sign_in(portal.client, user.name, user.password)).status == 302
    assert await signed_in(portal.client) == 200
    samba_dc.tool(
        "user",
        "setpassword",
        user.name,
        f"--newpassword={user.password}",
        "--must-change-at-next-login",
    )
    assert await signed_in(portal.client) == 401


async def test_an_expired_password_gives_no_session_until_a_reset(
    portal: Portal,
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
) -> None:
    user = make_user()
    samba_dc.apply_policy(user.name, "--max-pwd-age=2", "--min-pwd-age=0")  # days
    samba_dc.age_password(user, days=3)
    refused = await sign_in(portal.client, user.name, user.password)
    assert refused.status == 401 and not has_session(refused)
    assert "Your password has expired." in await refused.text()

    assert (await reset_by_mail(portal, user)).status == 200
    signed = await sign_in(portal.client, user.name, NEW_PASSWORD)
    assert signed.status == 302 and has_session(signed)


# --- a lockout from failed binds -----------------------------------------------------------------


async def test_a_lockout_from_failed_binds_ends_with_a_reset(
    portal: Portal,
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
) -> None:
    user = make_user()
    lock_out(samba_dc, user)
    refused = await sign_in(portal.client, user.name, user.password)
    assert refused.status == 401 and WRONG in await refused.text()

    assert (await reset_by_mail(portal, user)).status == 200
    changed = await portal.next_mail()
    assert changed["Subject"] == "[Portal] Your password was changed"
    assert samba_dc.simple_bind(user.upn, NEW_PASSWORD) == SUCCESS
    assert samba_dc.attributes(user.name, "lockoutTime")["lockoutTime"] == "0"
    assert (await sign_in(portal.client, user.name, NEW_PASSWORD)).status == 302


async def test_with_disable_unlock_a_reset_leaves_the_lockout_in_place(
    start_portal: StartPortal,  # noqa: F811
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
) -> None:
    portal = await start_portal(
        authentication_backend=ad_block(samba_dc, disable_unlock=True),
        certificates_directory=str(samba_dc.ca_directory),
    )
    user = make_user()
    lock_out(samba_dc, user)
    assert (await reset_by_mail(portal, user)).status == 200
    assert samba_dc.simple_bind(user.upn, NEW_PASSWORD) == INVALID_CREDENTIALS  # still locked
    assert samba_dc.attributes(user.name, "lockoutTime")["lockoutTime"] != "0"


async def test_a_lockout_the_resets_own_check_causes_ends_too(
    portal: Portal,
    samba_dc: SambaDc,  # noqa: F811
    make_user: MakeUser,
) -> None:
    # Found in review: two wrong guesses under a threshold of three, then the reset checks that
    # the new password is not the current one by binding with it: a third failure, a lockout
    # the state read before the write did not show. It must end with the reset too.
    user = make_user()
    samba_dc.apply_policy(
        user.name,
        "--account-lockout-threshold=3",
        "--account-lockout-duration=30",
        "--reset-account-lockout-after=30",
    )
    for _ in range(2):
        assert samba_dc.simple_bind(user.upn, "Guessed-Wr0ng!") == INVALID_CREDENTIALS
    assert (await reset_by_mail(portal, user)).status == 200
    assert samba_dc.simple_bind(user.upn, NEW_PASSWORD) == SUCCESS
    assert (await sign_in(portal.client, user.name, NEW_PASSWORD)).status == 302
