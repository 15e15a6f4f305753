"""A passkey sign-in (webauthn.enable_passkey_login) is one factor; a two_factor site then asks
for the password as the second (Authelia 4.39: /2fa/password and POST
/api/firstfactor/reauthenticate). A TOTP code cannot be that second factor: a passkey and a code
are both something the user has (RFC 8176 hwk, otp), and two of one kind are one factor.

The passkey ceremony itself is driven in Chromium (tests/e2e); here the session a passkey
sign-in opens is made by the portal's own SessionStore, as the sign-in handler makes it.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from yarl import URL

from portal.keys import SESSIONS
from portal.users.base import User
from tests.web.conftest import (
    DEMO_PASSWORD,
    Client,
    Portal,
    StartPortal,
    audit_events,
    csrf_of,
    sign_in,
)
from tests.web.test_second_factor_signin import RULES, SECURE, ask, code_now, register_totp, state

JOHN = User("john", "John Doe", ("john.doe@authelia.com",), ("admins", "dev"))
PASSWORD_PAGE = "/2fa/password"
REAUTHENTICATE = "/api/firstfactor/reauthenticate"


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(access_control=RULES, webauthn={"enable_passkey_login": True})


async def passkey_session(portal: Portal) -> str:
    """Open the session a passkey sign-in opens for john, in the test client's cookie jar."""
    cookie = portal.config.session.cookies[0]
    assert portal.client.app is not None
    value: str = await portal.client.app[SESSIONS].create(
        JOHN, cookie, remember_me=False, method="hwk"
    )
    jar = portal.client.session.cookie_jar
    jar.update_cookies({cookie.name or "": value}, URL(str(portal.client.make_url("/"))))
    return value


def is_password_step(location: str, rd: str = SECURE) -> bool:
    """Tell whether a Location names the password step, carrying rd on."""
    url = urlsplit(location)
    return url.path == PASSWORD_PAGE and parse_qs(url.query) == {"rd": [rd]}


async def password_form(client: Client, password: str, rd: str = SECURE) -> Any:
    page = await client.get(f"{PASSWORD_PAGE}?rd={quote(rd, safe='')}")
    assert page.status == 200
    html = await page.text()
    return await client.post(
        PASSWORD_PAGE,
        data={"csrf_token": csrf_of(html), "rd": rd, "password": password},
        allow_redirects=False,
    )


async def test_the_second_step_after_a_passkey_asks_for_the_password(portal: Portal) -> None:
    await passkey_session(portal)
    assert (await state(portal.client))["data"]["authentication_level"] == 1
    assert (await ask(portal.client, SECURE)).status == 401

    # The second step's usual address sends a passkey session to the password.
    second = await portal.client.get(
        f"/2fa/one-time-password?rd={quote(SECURE, safe='')}", allow_redirects=False
    )
    assert second.status == 302
    assert is_password_step(second.headers["Location"])
    page = await portal.client.get(second.headers["Location"])
    html = await page.text()
    assert page.status == 200
    assert 'autocomplete="current-password"' in html
    assert "John Doe" in html
    assert "none is\n    registered" not in html and "Second factor needed" not in html


async def test_the_right_password_raises_the_session_and_rotates_its_id(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    old = await passkey_session(portal)

    done = await password_form(portal.client, DEMO_PASSWORD)

    assert done.status == 302
    assert done.headers["Location"] == SECURE
    assert (await ask(portal.client, SECURE)).status == 200
    assert (await state(portal.client))["data"]["authentication_level"] == 2
    # SECURITY: the value the session had at one factor opens nothing now.
    assert portal.client.app is not None
    assert await portal.client.app[SESSIONS].get(old, portal.config.session.cookies[0]) is None
    assert audit_events(caplog, "reauthenticated")[-1]["username"] == "john"


async def test_a_wrong_password_is_refused_and_counted(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    await passkey_session(portal)

    refused = await password_form(portal.client, "not-his-password")

    assert refused.status == 401
    html = await refused.text()
    assert "Incorrect password." in html
    assert 'aria-invalid="true"' in html
    assert (await ask(portal.client, SECURE)).status == 401
    assert audit_events(caplog, "signin_failed")[-1]["username"] == "john"


async def test_a_banned_account_is_refused_even_with_the_right_password(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(
        access_control=RULES,
        webauthn={"enable_passkey_login": True},
        regulation={"max_retries": 2, "find_time": "2m", "ban_time": "5m"},
    )
    await passkey_session(portal)
    for _ in range(2):
        assert (await password_form(portal.client, "wrong")).status == 401

    assert (await password_form(portal.client, DEMO_PASSWORD)).status == 401
    assert (await ask(portal.client, SECURE)).status == 401


async def test_the_json_twin_raises_the_session(portal: Portal) -> None:
    await passkey_session(portal)

    wrong = await portal.client.post(REAUTHENTICATE, json={"password": "nope", "targetURL": SECURE})
    assert wrong.status == 401
    assert await wrong.json() == {"status": "KO", "message": "Incorrect password."}
    right = await portal.client.post(
        REAUTHENTICATE, json={"password": DEMO_PASSWORD, "targetURL": SECURE}
    )
    assert right.status == 200
    assert await right.json() == {"status": "OK", "data": {"redirect": SECURE}}
    assert (await ask(portal.client, SECURE)).status == 200


async def test_the_json_twin_needs_a_session(portal: Portal) -> None:
    answer = await portal.client.post(REAUTHENTICATE, json={"password": DEMO_PASSWORD})
    assert answer.status == 401
    assert (await answer.json())["status"] == "KO"


async def test_the_password_twice_is_still_one_factor(portal: Portal) -> None:
    assert (await sign_in(portal.client, "john")).status == 302

    again = await portal.client.post(
        REAUTHENTICATE, json={"password": DEMO_PASSWORD, "targetURL": SECURE}
    )

    # Checked and accepted, but a second password is no second factor: no redirect to a
    # two_factor target, and the session stays at one factor.
    assert again.status == 200
    assert await again.json() == {"status": "OK"}
    assert (await state(portal.client))["data"]["authentication_level"] == 1
    assert (await ask(portal.client, SECURE)).status == 401
    page = await portal.client.get(PASSWORD_PAGE, allow_redirects=False)
    assert page.status == 302
    assert page.headers["Location"].startswith("/2fa/one-time-password")


async def test_a_code_cannot_be_the_second_factor_of_a_passkey_sign_in(portal: Portal) -> None:
    await register_totp(portal)
    await passkey_session(portal)

    answer = await portal.client.post(
        "/api/secondfactor/totp", json={"token": code_now(portal), "targetURL": SECURE}
    )

    assert answer.status == 401
    assert "password" in (await answer.json())["message"]
    assert (await ask(portal.client, SECURE)).status == 401
    assert (await state(portal.client))["data"]["authentication_level"] == 1
    # The page's form goes to the password too, and nothing is raised.
    form = await (await portal.client.get(PASSWORD_PAGE)).text()
    page = await portal.client.post(
        "/2fa/one-time-password",
        data={"csrf_token": csrf_of(form), "token": code_now(portal, 1), "rd": SECURE},
        allow_redirects=False,
    )
    assert page.status == 303
    assert is_password_step(page.headers["Location"])
    assert (await ask(portal.client, SECURE)).status == 401


async def test_without_passkey_sign_in_the_password_step_does_not_exist(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(access_control=RULES)
    assert (await portal.client.get(PASSWORD_PAGE)).status == 404
    assert (await portal.client.post(REAUTHENTICATE, json={"password": "x"})).status in (404, 405)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_passkey_session_left_from_before_passkey_sign_in_was_turned_off_signs_in_again(
    start_portal: StartPortal, method: str
) -> None:
    # A session a passkey opened while webauthn.enable_passkey_login was on; the admin has
    # turned it off since, so the password step it needs no longer exists.
    portal = await start_portal(access_control=RULES)
    await passkey_session(portal)
    second = f"/2fa/one-time-password?rd={quote(SECURE, safe='')}"
    if method == "GET":
        sent = await portal.client.get(second, allow_redirects=False)
    else:
        page = await portal.client.get("/reset-password/step1")  # any page with a form
        fields = {"csrf_token": csrf_of(await page.text()), "rd": SECURE, "token": "123456"}
        sent = await portal.client.post(second, data=fields, allow_redirects=False)

    # Not a 404 at /2fa/password: the session ends and the sign-in page takes the visitor back.
    assert sent.status in (302, 303)
    back = urlsplit(sent.headers["Location"])
    assert (back.path, parse_qs(back.query)) == ("/", {"rd": [SECURE]})
    assert (await state(portal.client))["data"]["authentication_level"] == 0
    signin = await portal.client.get(sent.headers["Location"])
    assert signin.status == 200 and 'autocomplete="current-password"' in await signin.text()
    assert (await sign_in(portal.client, "john", rd=SECURE)).status == 302
