"""Session levels over HTTP: what /api/state and auth_request say at zero, one and two factors,
and the sign-in's second step (/2fa/one-time-password and POST /api/secondfactor/totp)."""

from __future__ import annotations

import base64
import re
from html import escape
from typing import Any
from urllib.parse import quote

import pyotp
import pytest
from aiohttp import ClientResponse
from yarl import URL

from portal.storage.base import TotpConfiguration, WebAuthnCredential
from tests.web.conftest import Client, Portal, StartPortal, sign_in, submit

SECURE = "http://127.0.0.1/secure/board?x=1"
PRIVATE = "http://127.0.0.1/private"
RULES: dict[str, Any] = {
    "default_policy": "deny",
    "rules": [
        {"domain": "127.0.0.1", "resources": ["^/secure"], "policy": "two_factor"},
        {"domain": "127.0.0.1", "policy": "one_factor"},
    ],
}


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(access_control=RULES)


async def ask(client: Client, url: str) -> ClientResponse:
    """Ask what nginx asks: may this request through?"""
    return await client.get(
        "/api/authz/auth-request",
        headers={"X-Original-URL": url, "X-Original-Method": "GET"},
        allow_redirects=False,
    )


async def state(client: Client) -> Any:
    response = await client.get("/api/state")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    return await response.json()


async def test_state_of_an_anonymous_visitor_is_level_zero_with_no_name(portal: Portal) -> None:
    assert await state(portal.client) == {
        "status": "OK",
        "data": {"username": "", "authentication_level": 0, "factor_knowledge": False},
    }


async def test_after_the_password_the_state_is_level_one_and_two_factor_urls_stay_shut(
    portal: Portal,
) -> None:
    assert (await sign_in(portal.client, "john", rd=PRIVATE)).status == 302

    assert await state(portal.client) == {
        "status": "OK",
        "data": {"username": "john", "authentication_level": 1, "factor_knowledge": True},
    }
    private, secure = await ask(portal.client, PRIVATE), await ask(portal.client, SECURE)
    assert private.status == 200
    assert secure.status == 401
    assert secure.headers["Location"] == "http://127.0.0.1/?rd=" + quote(SECURE, safe="")
    assert "Remote-User" not in secure.headers


async def test_the_state_names_the_default_redirection_url_when_there_is_one(
    start_portal: StartPortal,
) -> None:
    cookie = {
        "domain": "127.0.0.1",
        "authelia_url": "http://127.0.0.1",
        "default_redirection_url": "http://127.0.0.1/home",
    }
    portal = await start_portal(access_control=RULES, session={"cookies": [cookie]})

    data = (await state(portal.client))["data"]

    assert data["default_redirection_url"] == "http://127.0.0.1/home"


# --- the second step, with the real TotpService ------------------------------------------------

SECRET = b"12345678901234567890"  # RFC 6238's SHA-1 seed; registered for john only
WRONG_CODE = "Incorrect code."
TOTP_PAGE = "/2fa/one-time-password"
_TOKEN_INPUT = re.compile(r"<input[^>]*\bname=\"token\"[^>]*>")


async def register_totp(portal: Portal, username: str = "john") -> None:
    """Register a TOTP device for username straight in the store, as the settings page would."""
    await portal.storage.save_totp_configuration(
        TotpConfiguration(
            username=username,
            created_at=portal.clock.now(),
            last_used_at=None,
            issuer="Portal",
            algorithm="SHA1",
            digits=6,
            period=30,
            secret=SECRET,
        )
    )


def code_now(portal: Portal, steps: int = 0) -> str:
    """Return the code john's app shows now (or `steps` periods later)."""
    totp = pyotp.TOTP(base64.b32encode(SECRET).decode())
    return totp.at(portal.clock.now() + 30 * steps)


@pytest.fixture
async def john_has_totp(portal: Portal) -> None:
    await register_totp(portal)


def totp_page(rd: str | None = None) -> str:
    return f"{TOTP_PAGE}?rd={quote(rd, safe='')}" if rd else TOTP_PAGE


def to_totp_page(response: ClientResponse, rd: str | None = None) -> bool:
    """Tell whether the answer is a 302 to the one-time password page carrying rd."""
    location = URL(response.headers.get("Location", ""))
    wanted = {"rd": rd} if rd else {}
    return response.status == 302 and (location.path, dict(location.query)) == (TOTP_PAGE, wanted)


async def enter_code(client: Client, code: str, rd: str | None = None) -> ClientResponse:
    """Post the one-time password form as the page draws it."""
    return await submit(client, totp_page(rd), TOTP_PAGE, token=code, rd=rd or "")


def token_input(page: str) -> str:
    found = _TOKEN_INPUT.search(page)
    assert found, "the page has no token field"
    return found.group(0)


@pytest.mark.usefixtures("john_has_totp")
async def test_john_is_asked_for_his_code_after_the_password_and_then_reaches_the_site(
    portal: Portal,
) -> None:
    signed = await sign_in(portal.client, "john", rd=SECURE)
    page = await portal.client.get(signed.headers["Location"], allow_redirects=False)
    html = await page.text()
    before = await ask(portal.client, SECURE)
    one_factor_cookie = signed.cookies["portal_session"].value

    entered = await enter_code(portal.client, code_now(portal), rd=SECURE)
    after = await ask(portal.client, SECURE)

    assert to_totp_page(signed, SECURE)
    assert page.status == 200
    field = token_input(html)
    for attribute in ('autocomplete="one-time-code"', 'inputmode="numeric"', 'pattern="[0-9]'):
        assert attribute in field
    assert before.status == 401
    assert (entered.status, entered.headers["Location"]) == (302, SECURE)
    assert entered.cookies["portal_session"].value != one_factor_cookie
    assert (after.status, after.headers["Remote-User"]) == (200, "john")
    assert (await state(portal.client))["data"]["authentication_level"] == 2
    # The value from before the code was ended with the level change: it opens nothing.
    portal.client.session.cookie_jar.clear()
    portal.client.session.cookie_jar.update_cookies({"portal_session": one_factor_cookie})
    assert (await ask(portal.client, PRIVATE)).status == 401
    assert (await state(portal.client))["data"]["authentication_level"] == 0


@pytest.mark.usefixtures("john_has_totp")
async def test_signing_in_at_the_portal_itself_asks_for_the_code_then_shows_signed_in(
    portal: Portal,
) -> None:
    signed = await sign_in(portal.client, "john")
    entered = await enter_code(portal.client, code_now(portal))
    home = await portal.client.get("/", allow_redirects=False)

    assert to_totp_page(signed)
    assert (entered.status, entered.headers["Location"]) == (302, "/")
    assert 'id="signed-in"' in await home.text()


@pytest.mark.usefixtures("john_has_totp")
async def test_a_one_factor_target_is_reached_straight_after_the_password(portal: Portal) -> None:
    signed = await sign_in(portal.client, "john", rd=PRIVATE)

    assert (signed.status, signed.headers["Location"]) == (302, PRIVATE)
    assert (await ask(portal.client, PRIVATE)).status == 200
    assert (await state(portal.client))["data"]["authentication_level"] == 1


@pytest.mark.usefixtures("john_has_totp")
async def test_a_one_factor_session_sent_back_by_nginx_is_asked_for_the_code(
    portal: Portal,
) -> None:
    await sign_in(portal.client, "john", rd=PRIVATE)
    sent_back = (await ask(portal.client, SECURE)).headers["Location"]

    opened = await portal.client.get(URL(sent_back).path_qs, allow_redirects=False)
    entered = await enter_code(portal.client, code_now(portal), rd=SECURE)

    assert to_totp_page(opened, SECURE)
    assert (entered.status, entered.headers["Location"]) == (302, SECURE)
    assert (await ask(portal.client, SECURE)).status == 200


@pytest.mark.usefixtures("john_has_totp")
async def test_a_wrong_or_replayed_code_gets_one_answer_and_an_empty_field(
    portal: Portal,
) -> None:
    await sign_in(portal.client, "john", rd=SECURE)
    wrong_code = "000000" if code_now(portal) != "000000" else "111111"

    wrong = await enter_code(portal.client, wrong_code, rd=SECURE)
    wrong_html = await wrong.text()
    good = await enter_code(portal.client, code_now(portal), rd=SECURE)
    # The code just used, typed again in a new session (someone who saw it over a shoulder).
    await portal.client.get("/logout", allow_redirects=False)
    await sign_in(portal.client, "john", rd=SECURE)
    replayed = await enter_code(portal.client, code_now(portal), rd=SECURE)

    assert wrong.status == 401
    assert WRONG_CODE in wrong_html
    field = token_input(wrong_html)
    assert 'value=""' in field and "autofocus" in field and 'aria-invalid="true"' in field
    assert wrong_code not in field
    assert good.status == 302
    assert replayed.status == 401
    assert WRONG_CODE in await replayed.text()
    assert (await ask(portal.client, SECURE)).status == 401


@pytest.mark.usefixtures("john_has_totp")
async def test_wrong_codes_count_under_regulation_until_even_the_right_one_is_refused(
    portal: Portal,
) -> None:
    await sign_in(portal.client, "john", rd=SECURE)
    right = code_now(portal)
    wrong = [c for c in ("000000", "111111", "222222", "333333") if c != right][:3]

    refused = [await enter_code(portal.client, code, rd=SECURE) for code in wrong]
    banned = await enter_code(portal.client, right, rd=SECURE)

    assert [r.status for r in refused] == [401, 401, 401]
    assert banned.status == 401
    assert WRONG_CODE in await banned.text()
    assert (await ask(portal.client, SECURE)).status == 401
    assert (await state(portal.client))["data"]["authentication_level"] == 1


async def test_a_user_without_a_device_is_told_to_register_one_and_not_let_through(
    portal: Portal,
) -> None:
    signed = await sign_in(portal.client, "john", rd=SECURE)
    page = await portal.client.get(signed.headers["Location"], allow_redirects=False)
    html = await page.text()
    tried = await portal.client.post(
        "/api/secondfactor/totp", json={"token": "123456", "targetURL": SECURE}
    )

    assert to_totp_page(signed, SECURE)
    assert page.status == 200
    assert 'id="second-factor-missing"' in html
    assert "one-time password app or a passkey" in html
    assert 'href="/settings/one-time-password"' in html
    assert 'href="/settings/passkeys"' in html
    # Once one is registered, back to this step, still headed for the site.
    assert f'id="continue" href="{escape(totp_page(SECURE))}"' in html
    assert 'name="token"' not in html
    assert (tried.status, await tried.json()) == (401, {"status": "KO", "message": WRONG_CODE})
    assert (await ask(portal.client, SECURE)).status == 401


@pytest.mark.parametrize(
    ("turned_off", "offered", "said"),
    [
        ({"totp": {"disable": True}}, ["/settings/passkeys"], "Register a passkey first"),
        ({"webauthn": {"disable": True}}, ["/settings/one-time-password"], "password app first"),
        (
            {"totp": {"disable": True}, "webauthn": {"disable": True}},
            [],
            "Ask your administrator",
        ),
    ],
)
async def test_without_a_device_only_what_the_portal_offers_is_proposed(
    start_portal: StartPortal, turned_off: dict[str, Any], offered: list[str], said: str
) -> None:
    portal = await start_portal(access_control=RULES, **turned_off)
    signed = await sign_in(portal.client, "john", rd=SECURE)
    page = await portal.client.get(signed.headers["Location"], allow_redirects=False)
    html = await page.text()

    assert page.status == 200 and said in html
    links = re.findall(r'href="(/settings/[^"]+)"', html)
    assert links == offered
    for link in links:  # each one a page that exists
        assert (await portal.client.get(link, allow_redirects=False)).status != 404
    assert ('id="continue"' in html) == bool(offered)
    assert (await ask(portal.client, SECURE)).status == 401


async def test_without_a_device_signing_in_at_the_portal_itself_needs_no_code(
    portal: Portal,
) -> None:
    signed = await sign_in(portal.client, "john")

    assert (signed.status, signed.headers["Location"]) == (302, "/")


@pytest.mark.usefixtures("john_has_totp")
async def test_the_json_twin_raises_the_session_and_names_the_target(portal: Portal) -> None:
    anonymous = await portal.client.post("/api/secondfactor/totp", json={"token": "123456"})
    first = await portal.client.post(
        "/api/firstfactor", json={"username": "john", "password": "password", "targetURL": SECURE}
    )
    wrong = await portal.client.post(
        "/api/secondfactor/totp", json={"token": "12345x", "targetURL": SECURE}
    )
    good = await portal.client.post(
        "/api/secondfactor/totp", json={"token": code_now(portal), "targetURL": SECURE}
    )
    again = await portal.client.post(
        "/api/secondfactor/totp", json={"token": "whatever", "targetURL": "https://evil.com/"}
    )

    assert anonymous.status == 401 and (await anonymous.json())["status"] == "KO"
    assert await first.json() == {"status": "OK"}, "a two_factor target is not named yet"
    assert (wrong.status, await wrong.json()) == (401, {"status": "KO", "message": WRONG_CODE})
    assert (good.status, await good.json()) == (
        200,
        {"status": "OK", "data": {"redirect": SECURE}},
    )
    assert (await again.json()) == {"status": "OK"}
    assert (await ask(portal.client, SECURE)).status == 200


async def test_user_info_says_whether_a_device_is_registered(portal: Portal) -> None:
    anonymous = await portal.client.get("/api/user/info")
    await sign_in(portal.client, "john", rd=PRIVATE)
    without = await (await portal.client.get("/api/user/info")).json()
    await register_totp(portal)
    with_device = await (await portal.client.get("/api/user/info")).json()

    assert anonymous.status == 403 and (await anonymous.json())["status"] == "KO"
    assert without == {
        "status": "OK",
        "data": {
            "display_name": "John Doe",
            "emails": ["john.doe@authelia.com"],
            "groups": ["admins", "dev"],
            "has_totp": False,
            "has_webauthn": False,
            "method": "totp",
        },
    }
    assert with_device["data"]["has_totp"] is True
    assert with_device["data"]["method"] == "totp"


async def test_user_info_names_the_passkey_when_it_is_the_only_second_factor(
    portal: Portal,
) -> None:
    await sign_in(portal.client, "john", rd=PRIVATE)
    await portal.storage.add_webauthn_credential(
        WebAuthnCredential(
            id=0,
            username="john",
            description="Laptop",
            credential_id=b"\x07" * 16,
            public_key=b"cose",
            sign_count=0,
            aaguid="00000000-0000-0000-0000-000000000000",
            transports=("internal",),
            backup_eligible=False,
            backup_state=False,
            created_at=portal.clock.now(),
        )
    )
    info = (await (await portal.client.get("/api/user/info")).json())["data"]
    assert (info["has_totp"], info["has_webauthn"], info["method"]) == (False, True, "webauthn")


@pytest.mark.usefixtures("john_has_totp")
async def test_keep_me_signed_in_survives_the_second_factor(portal: Portal) -> None:
    await portal.client.post(
        "/api/firstfactor",
        json={"username": "john", "password": "password", "keepMeLoggedIn": True},
    )
    raised = await portal.client.post("/api/secondfactor/totp", json={"token": code_now(portal)})

    assert (raised.status, await raised.json()) == (200, {"status": "OK"})
    assert int(raised.cookies["portal_session"]["max-age"]) == 30 * 86400
