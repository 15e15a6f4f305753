"""Account states on a real OpenLDAP with the password-policy overlay, told over HTTP.

An administrator's lock for good (pwdAccountLockedTime: 000001010000Z) or a password outside its
validity window gets no mail, no reset and no session; a forced change (pwdReset under
pwdMustChange) or an expired password gets the mail, and no session until the reset; a lockout
from failed binds ends with a successful reset.
"""

from __future__ import annotations

import logging
import re

import pytest
from aiohttp import ClientResponse

from tests.integration.conftest import make_slapd, slapd, slapd_ca, slapd_template  # noqa: F401
from tests.integration.slapd import USER_DNS, USER_PASSWORD, Slapd
from tests.web.conftest import (
    Client,
    Portal,
    StartPortal,
    audit_events,
    choose_password,
    has_session,
    no_mail_sent,
    open_link,
    request_reset,
    reset_link_from,
    same_for_everyone,
    sign_in,
    signed_in,
    token_of,
)
from tests.web.test_reset_ldap import authelia_ldap_block

JOHN = USER_DNS["john"]
NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
WRONG = "Incorrect username or password."
FOREVER = "000001010000Z"


@pytest.fixture
async def portal(start_portal: StartPortal, slapd: Slapd) -> Portal:  # noqa: F811
    # 'always': the session reads the directory on every request, so a change shows at once.
    block = authelia_ldap_block(slapd) | {"refresh_interval": "always"}
    return await start_portal(
        authentication_backend=block, access_control={"default_policy": "one_factor"}
    )


# --- what the directory holds --------------------------------------------------------------------


def lock_for_good(slapd: Slapd, dn: str = JOHN) -> None:  # noqa: F811
    slapd.modify(
        f"dn: {dn}\nchangetype: modify\nreplace: pwdAccountLockedTime\n"
        f"pwdAccountLockedTime: {FOREVER}\n"
    )


def operational(slapd: Slapd, name: str, dn: str = JOHN) -> list[str]:  # noqa: F811
    """Return the values of one operational attribute of the entry, as the server holds them."""
    listing = slapd.search(dn, "(objectClass=*)", [name])
    return [line.split(": ", 1)[1] for line in listing.splitlines() if line.startswith(f"{name}: ")]


def force_a_change(slapd: Slapd) -> None:  # noqa: F811
    """An administrator sets john's password under pwdMustChange: slapd sets pwdReset."""
    slapd.set_policy(pwdMustChange=True)
    slapd.modify(
        f"dn: {JOHN}\nchangetype: modify\nreplace: userPassword\nuserPassword: {USER_PASSWORD}\n"
    )
    assert operational(slapd, "pwdReset") == ["TRUE"]


def let_the_password_expire(slapd: Slapd, grace_logins: int) -> None:  # noqa: F811
    slapd.set_policy(pwdMaxAge=3600, pwdGraceAuthNLimit=grace_logins)
    slapd.modify(
        f"dn: {JOHN}\nchangetype: modify\nreplace: pwdChangedTime\n"
        "pwdChangedTime: 20000101000000Z\n",
        relax=True,
    )


# --- what a user or an attacker sees -------------------------------------------------------------


def page(response_text: str) -> str:
    return re.sub(r'value="[^"]+"', 'value=""', response_text)


async def answer_to(client: Client, identifier: str) -> tuple[int, str, dict[str, str]]:
    response = await request_reset(client, identifier)
    headers = same_for_everyone(response)
    return response.status, page(await response.text()), headers


async def reset_by_mail(portal: Portal, password: str = NEW_PASSWORD) -> ClientResponse:
    await request_reset(portal.client, "john")
    await open_link(portal.client, reset_link_from(await portal.next_mail()))
    return await choose_password(portal.client, password)


# --- an administrator's lock for good ------------------------------------------------------------


async def test_a_lock_for_good_gets_no_mail_the_same_answer_and_keeps_the_lock(
    portal: Portal,
    slapd: Slapd,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    lock_for_good(slapd)
    assert await answer_to(portal.client, "john") == await answer_to(portal.client, "nobody-here")
    assert await no_mail_sent(portal)
    assert [e["reason"] for e in audit_events(caplog, "reset_no_mail")] == ["disabled", "unknown"]

    refused = await sign_in(portal.client, "john", USER_PASSWORD)
    assert refused.status == 401 and not has_session(refused)
    assert WRONG in await refused.text()
    assert operational(slapd, "pwdAccountLockedTime") == [FOREVER]


async def test_a_lock_set_after_the_mail_went_out_refuses_the_link_and_stays(
    portal: Portal,
    slapd: Slapd,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    lock_for_good(slapd)

    opened = await open_link(portal.client, link)
    assert opened.status == 400
    assert "This link is invalid or has expired" in await opened.text()
    api = await portal.client.post(
        "/api/reset-password", json={"token": token_of(link), "password": NEW_PASSWORD}
    )
    assert api.status == 400
    # The portal never wrote: the lock is still there, and neither password gets in.
    assert operational(slapd, "pwdAccountLockedTime") == [FOREVER]
    assert not slapd.whoami(JOHN, NEW_PASSWORD)
    assert not slapd.whoami(JOHN, USER_PASSWORD)
    assert {e["reason"] for e in audit_events(caplog, "reset_rejected")} == {"disabled"}
    assert audit_events(caplog, "reset_completed") == []


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("pwdEndTime", "20200101000000Z"), ("pwdStartTime", "20990101000000Z")],
    ids=["ended", "not-yet-started"],
)
async def test_a_password_outside_its_validity_window_gets_no_mail(
    portal: Portal,
    slapd: Slapd,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    attribute: str,
    value: str,
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    slapd.modify(f"dn: {JOHN}\nchangetype: modify\nreplace: {attribute}\n{attribute}: {value}\n")
    assert await answer_to(portal.client, "john") == await answer_to(portal.client, "nobody-here")
    assert await no_mail_sent(portal)
    assert [e["reason"] for e in audit_events(caplog, "reset_no_mail")] == ["disabled", "unknown"]
    refused = await sign_in(portal.client, "john", USER_PASSWORD)
    assert refused.status == 401 and WRONG in await refused.text()


async def test_a_lock_for_good_ends_the_session(portal: Portal, slapd: Slapd) -> None:  # noqa: F811
    assert (await sign_in(portal.client, "john", USER_PASSWORD)).status == 302
    assert await signed_in(portal.client) == 200
    lock_for_good(slapd)
    assert await signed_in(portal.client) == 401


# --- a forced change -----------------------------------------------------------------------------


async def test_a_forced_change_gives_no_session_and_tells_only_who_knows_the_password(
    portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    force_a_change(slapd)
    refused = await sign_in(portal.client, "john", USER_PASSWORD)
    assert refused.status == 401 and not has_session(refused)
    text = await refused.text()
    assert "Your administrator asks you to choose a new password." in text
    assert 'id="change-password" href="/reset-password/step1"' in text
    assert await signed_in(portal.client) == 401

    api = await portal.client.post(
        "/api/firstfactor", json={"username": "john", "password": USER_PASSWORD}
    )
    assert api.status == 401 and not has_session(api)
    assert (await api.json())["message"].startswith("Your administrator asks you")

    wrong = await sign_in(portal.client, "john", "not-the-password")
    text = await wrong.text()
    assert WRONG in text and "administrator" not in text and "change-password" not in text


async def test_a_forced_change_gets_the_mail_and_the_reset_satisfies_it(
    portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    force_a_change(slapd)
    assert (await reset_by_mail(portal)).status == 200
    assert operational(slapd, "pwdReset") == []
    signed = await sign_in(portal.client, "john", NEW_PASSWORD)
    assert signed.status == 302 and has_session(signed)
    assert await signed_in(portal.client) == 200


async def test_a_change_forced_during_a_session_ends_it(portal: Portal, slapd: Slapd) -> None:  # noqa: F811
    assert (await sign_in(portal.client, "john", USER_PASSWORD)).status == 302
    assert await signed_in(portal.client) == 200
    slapd.modify(f"dn: {JOHN}\nchangetype: modify\nreplace: pwdReset\npwdReset: TRUE\n")
    assert await signed_in(portal.client) == 401


# --- an expired password -------------------------------------------------------------------------


@pytest.mark.parametrize("grace_logins", [0, 2], ids=["no-grace", "grace-logins"])
async def test_an_expired_password_gives_no_session_until_a_reset(
    portal: Portal,
    slapd: Slapd,  # noqa: F811
    grace_logins: int,
) -> None:
    let_the_password_expire(slapd, grace_logins)
    refused = await sign_in(portal.client, "john", USER_PASSWORD)
    assert refused.status == 401 and not has_session(refused)
    assert "Your password has expired." in await refused.text()
    assert await signed_in(portal.client) == 401

    assert (await reset_by_mail(portal)).status == 200
    signed = await sign_in(portal.client, "john", NEW_PASSWORD)
    assert signed.status == 302 and has_session(signed)


# --- a lockout from failed binds -----------------------------------------------------------------


async def test_a_lockout_from_failed_binds_ends_with_a_reset(
    portal: Portal,
    slapd: Slapd,  # noqa: F811
) -> None:
    for _ in range(5):  # the fixture's policy: pwdMaxFailure 5, pwdLockoutDuration 0 (until reset)
        assert not slapd.whoami(JOHN, "guessed-wrong")
    [locked] = operational(slapd, "pwdAccountLockedTime")
    assert locked != FOREVER
    assert not slapd.whoami(JOHN, USER_PASSWORD)

    assert (await reset_by_mail(portal)).status == 200
    assert operational(slapd, "pwdAccountLockedTime") == []
    assert slapd.whoami(JOHN, NEW_PASSWORD)
    assert (await sign_in(portal.client, "john", NEW_PASSWORD)).status == 302
