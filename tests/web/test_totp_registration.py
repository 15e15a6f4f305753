"""Registering and removing TOTP, told as stories over HTTP: a real portal, the real SMTP server
(the elevation code and the "second factor added/removed" mails are read from it), real SQLite
storage; codes are computed with pyotp from what the portal showed, at the injected clock."""

from __future__ import annotations

import html as htmllib
import re
import sqlite3
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import segno
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from portal.keys import TOTP
from tests.web.conftest import Client, Portal, StartPortal, csrf_of, sign_in, text_of
from tests.web.test_elevation import HOME, code_from

REGISTER = "/api/secondfactor/totp/register"
DEVICE = "/api/secondfactor/totp"
PAGE = "/settings/one-time-password"
INCORRECT = {"status": "KO", "message": "Incorrect code."}


async def elevate(portal: Portal, headers: dict[str, str] = HOME) -> None:
    """Elevate the session with the code mailed by the real server (as a user would)."""
    client = portal.client
    assert (
        await client.post("/api/user/session/elevation", json={}, headers=headers)
    ).status == 200
    code = code_from(await portal.next_mail())
    portal.smtp.deliveries.clear()
    response = await client.put("/api/user/session/elevation", json={"otc": code}, headers=headers)
    assert response.status == 200, await response.text()


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    portal = await start_portal()
    assert (await sign_in(portal.client)).status == 302
    return portal


@pytest.fixture
async def elevated(portal: Portal) -> Portal:
    await elevate(portal)
    return portal


def code_for(portal: Portal, secret_base32: str, digits: int = 6, period: int = 30) -> str:
    return pyotp.TOTP(secret_base32, digits=digits, interval=period).at(int(portal.clock.now()))


async def put_register(portal: Portal, headers: dict[str, str] = HOME) -> ClientResponse:
    return await portal.client.put(REGISTER, json={}, headers=headers)


async def begin(portal: Portal) -> dict[str, str]:
    response = await put_register(portal)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "OK"
    data: dict[str, str] = body["data"]
    return data


async def confirm(portal: Portal, token: str, headers: dict[str, str] = HOME) -> ClientResponse:
    return await portal.client.post(REGISTER, json={"token": token}, headers=headers)


def database_dump(portal: Portal) -> str:
    """Everything the SQLite file holds, as `.dump` prints it (what a leaked copy reveals)."""
    with sqlite3.connect(portal.config.storage.local.path) as db:  # type: ignore[union-attr]
        return "\n".join(db.iterdump())


# --- the JSON API --------------------------------------------------------------------------------


async def test_register_with_a_code_from_the_secret_shown_then_remove(elevated: Portal) -> None:
    portal = elevated
    data = await begin(portal)
    secret = data["secret_base32"]
    url = urlsplit(data["otpauth_url"])
    query = parse_qs(url.query)
    assert (url.scheme, url.netloc, unquote(url.path)) == ("otpauth", "totp", "/Portal:john")
    assert query["secret"] == [secret]
    assert query["issuer"] == ["Portal"]
    assert (query["algorithm"], query["digits"], query["period"]) == (["SHA1"], ["6"], ["30"])
    # The pending secret is kept with the session, sealed: the database shows none of it.
    dump = database_dump(portal)
    assert secret not in dump and "pending_totp" in dump

    response = await confirm(portal, code_for(portal, secret))

    assert response.status == 200 and await response.json() == {"status": "OK"}
    saved = await portal.client.app[TOTP].configuration("john")
    assert saved is not None and pyotp.TOTP(secret).byte_secret() == saved.secret
    dump = database_dump(portal)
    assert secret not in dump and saved.secret.hex().upper() not in dump.upper()
    mail = await portal.next_mail()
    assert mail["To"] == "john.doe@authelia.com"
    assert mail["Subject"] == "[Portal] A second factor was added"
    assert secret not in mail.as_string()
    portal.smtp.deliveries.clear()
    # The pending secret is spent: the same code cannot complete it a second time.
    assert await (await confirm(portal, code_for(portal, secret))).json() == INCORRECT

    removed = await portal.client.delete(DEVICE, json={}, headers=HOME)

    assert removed.status == 200 and await removed.json() == {"status": "OK"}
    assert await portal.client.app[TOTP].configuration("john") is None
    mail = await portal.next_mail()
    assert mail["Subject"] == "[Portal] A second factor was removed"
    again = await portal.client.delete(DEVICE, json={}, headers=HOME)
    assert again.status == 404 and (await again.json())["status"] == "KO"


async def test_a_wrong_code_is_refused_and_the_pending_secret_stays(elevated: Portal) -> None:
    portal = elevated
    secret = (await begin(portal))["secret_base32"]
    right = code_for(portal, secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    for token in (wrong, "", "abcdef", "1" * 40):
        response = await confirm(portal, token)
        assert response.status == 401 and await response.json() == INCORRECT
    assert await portal.client.app[TOTP].configuration("john") is None

    assert (await confirm(portal, right)).status == 200


async def test_the_pending_secret_lapses_after_ten_minutes(elevated: Portal) -> None:
    portal = elevated
    secret = (await begin(portal))["secret_base32"]
    # Keep the session active (session.inactivity) and elevated, and let ten minutes pass.
    portal.clock.advance(290)
    assert (await portal.client.get("/api/user/session/elevation", headers=HOME)).status == 200
    portal.clock.advance(290)
    await elevate(portal)
    portal.clock.advance(25)

    response = await confirm(portal, code_for(portal, secret))

    assert response.status == 401 and await response.json() == INCORRECT
    assert await portal.client.app[TOTP].configuration("john") is None


async def test_a_new_put_replaces_the_pending_secret(elevated: Portal) -> None:
    portal = elevated
    first = (await begin(portal))["secret_base32"]
    second = (await begin(portal))["secret_base32"]
    assert first != second

    assert (await confirm(portal, code_for(portal, first))).status == 401
    assert (await confirm(portal, code_for(portal, second))).status == 200


async def test_a_user_with_a_device_must_remove_it_first(elevated: Portal) -> None:
    portal = elevated
    secret = (await begin(portal))["secret_base32"]
    assert (await confirm(portal, code_for(portal, secret))).status == 200

    response = await put_register(portal)

    assert response.status == 409
    assert await response.json() == {
        "status": "KO",
        "message": "You already have a one-time password app set up. Remove it first.",
    }


async def test_a_registration_begun_earlier_cannot_replace_a_device_added_since(
    elevated: Portal,
) -> None:
    # Two sessions of john: the first begins a registration and leaves it pending; meanwhile
    # the second registers an app. The stale pending secret must not swap the app silently
    # (a user with a device removes it first, which mails them).
    portal = elevated
    stale = (await begin(portal))["secret_base32"]
    other: Client = TestClient(portal.client.server)  # type: ignore[assignment]
    try:
        assert (await sign_in(other)).status == 302
        assert (await other.post("/api/user/session/elevation", json={}, headers=HOME)).status
        code = code_from(await portal.next_mail())
        elevated_other = await other.put(
            "/api/user/session/elevation", json={"otc": code}, headers=HOME
        )
        assert elevated_other.status == 200
        kept = (await (await other.put(REGISTER, json={}, headers=HOME)).json())["data"]
        added = await other.post(
            REGISTER, json={"token": code_for(portal, kept["secret_base32"])}, headers=HOME
        )
        assert added.status == 200
    finally:
        await other.session.close()
    portal.clock.advance(30)

    response = await confirm(portal, code_for(portal, stale))

    assert response.status == 409
    assert (await response.json())["message"] == (
        "You already have a one-time password app set up. Remove it first."
    )
    saved = await portal.client.app[TOTP].configuration("john")
    assert saved is not None and saved.secret == pyotp.TOTP(kept["secret_base32"]).byte_secret()


async def test_without_elevation_every_route_answers_403(portal: Portal) -> None:
    for response in (
        await put_register(portal),
        await confirm(portal, "123456"),
        await portal.client.delete(DEVICE, json={}, headers=HOME),
    ):
        assert response.status == 403
        assert (await response.json())["status"] == "KO"


async def test_an_elevation_from_another_address_does_not_count(portal: Portal) -> None:
    await elevate(portal, {"X-Forwarded-For": "203.0.113.77"})

    response = await put_register(portal)

    assert response.status == 403 and (await response.json())["status"] == "KO"


async def test_without_a_session_the_api_answers_401(start_portal: StartPortal) -> None:
    portal = await start_portal()
    response = await put_register(portal)
    assert response.status == 401 and (await response.json())["status"] == "KO"


async def test_with_totp_disabled_the_routes_do_not_exist(start_portal: StartPortal) -> None:
    portal = await start_portal(totp={"disable": True})
    assert (await sign_in(portal.client)).status == 302
    await elevate(portal)

    assert (await put_register(portal)).status == 404
    assert (await confirm(portal, "123456")).status == 404
    # The path stays for the sign-in's POST (which refuses every code): 405, no removal.
    assert (await portal.client.delete(DEVICE, json={}, headers=HOME)).status == 405
    assert (await portal.client.get(PAGE, allow_redirects=False)).status == 404
    home = await (await portal.client.get("/", allow_redirects=False)).text()
    assert PAGE not in home


async def test_the_configured_parameters_reach_the_otpauth_url(start_portal: StartPortal) -> None:
    portal = await start_portal(
        organization_name="Example Corp", totp={"algorithm": "sha512", "digits": 8, "period": 60}
    )
    assert (await sign_in(portal.client)).status == 302
    await elevate(portal)
    data = await begin(portal)
    query = parse_qs(urlsplit(data["otpauth_url"]).query)
    assert query["issuer"] == ["Example Corp"]
    assert (query["algorithm"], query["digits"], query["period"]) == (["SHA512"], ["8"], ["60"])

    code = pyotp.TOTP(data["secret_base32"], digits=8, interval=60, digest="sha512").at(
        int(portal.clock.now())
    )
    assert (await confirm(portal, code)).status == 200
    saved = await portal.client.app[TOTP].configuration("john")
    assert saved is not None and (saved.algorithm, saved.digits, saved.period) == (
        "SHA512",
        8,
        60,
    )


# --- the settings page ---------------------------------------------------------------------------


def dark_modules(svg: str) -> set[tuple[int, int]]:
    """Read the dark modules (column, row) off the QR code's <path> (segno draws each row's
    runs as "M x y" / "m dx dy" moves and "h n" strokes on the row's middle line)."""
    match = re.search(r'<path[^>]*stroke="#000"[^>]*d="([^"]+)"', svg)
    assert match, "no dark path in the QR code"
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for op, args in re.findall(r"([MmHh])([-\d. ]+)", match.group(1)):
        numbers = [float(n) for n in args.split()]
        if op == "M":
            x, y = numbers
        elif op == "m":
            x, y = x + numbers[0], y + numbers[1]
        else:
            dark |= {(int(x) + i, int(y)) for i in range(int(numbers[0]))}
            x += numbers[0]
    return dark


def qr_modules(text: str) -> set[tuple[int, int]]:
    """The dark modules of `text`'s QR code as segno encodes it, after a quiet zone of 4."""
    matrix = segno.make(text, error="m", micro=False).matrix
    return {(c + 4, r + 4) for r, row in enumerate(matrix) for c, v in enumerate(row) if v}


def page_value(html: str, pattern: str) -> str:
    match = re.search(pattern, html)
    assert match, f"no match for {pattern}"
    return htmllib.unescape(match.group(1))


async def post_page(portal: Portal, **fields: str) -> ClientResponse:
    loaded = await portal.client.get(PAGE, headers=HOME, allow_redirects=False)
    assert loaded.status == 200
    fields["csrf_token"] = csrf_of(await loaded.text())
    return await portal.client.post(PAGE, data=fields, headers=HOME, allow_redirects=False)


async def test_the_page_sends_a_session_without_elevation_to_the_elevation_page(
    portal: Portal,
) -> None:
    response = await portal.client.get(PAGE, headers=HOME, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/settings/elevate?next=/settings/one-time-password"


async def test_the_page_without_a_session_sends_to_sign_in(start_portal: StartPortal) -> None:
    portal = await start_portal()
    response = await portal.client.get(PAGE, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/?rd=")


async def test_the_signed_in_page_links_to_the_settings(portal: Portal) -> None:
    home = await (await portal.client.get("/", allow_redirects=False)).text()
    assert f'id="one-time-password" href="{PAGE}"' in home


async def test_the_page_round_trip_registers_then_removes(elevated: Portal) -> None:
    portal = elevated
    first = await (await portal.client.get(PAGE, headers=HOME)).text()
    assert "You have not set up a one-time password app yet." in first
    assert 'id="start-totp"' in first and "<svg" not in first

    started = await post_page(portal, action="start")
    assert started.status == 303
    page = await portal.client.get(PAGE, headers=HOME)
    html = await page.text()
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    secret = page_value(html, r'id="totp-secret" value="([A-Z2-7]+)"')
    grouped = page_value(html, r'id="totp-secret-grouped">([^<]+)<')
    assert grouped.replace(" ", "") == secret and all(len(g) == 4 for g in grouped.split()[:-1])
    link = page_value(html, r'id="otpauth-link" href="([^"]+)"')
    query = parse_qs(urlsplit(link).query)
    assert query["secret"] == [secret] and query["issuer"] == ["Portal"]
    assert (query["algorithm"], query["digits"], query["period"]) == (["SHA1"], ["6"], ["30"])
    # The QR code is inline SVG with no style attribute and no script: CSP 'self' holds.
    svg = page_value(html, r"(<svg\b.*?</svg>)")
    assert 'class="qr"' in svg and "<title>" in svg
    assert "style" not in svg.lower() and "script" not in svg.lower()
    assert dark_modules(svg) == qr_modules(link)  # it is the otpauth URL the page shows
    assert re.search(r'autocomplete="one-time-code"\s+inputmode="numeric"', html)
    assert '<label for="token">' in html

    wrong = await post_page(portal, action="confirm", token="000000")
    wrong_html = await wrong.text()
    assert wrong.status == 401 and 'id="error-summary"' in wrong_html
    assert wrong_html.index('id="error-summary"') < wrong_html.index('id="token"')
    assert 'aria-invalid="true"' in wrong_html and secret in wrong_html  # still pending

    done = await post_page(portal, action="confirm", token=code_for(portal, secret))
    assert done.status == 303 and done.headers["Location"] == f"{PAGE}/registered"
    shown = await (await portal.client.get(f"{PAGE}/registered", headers=HOME)).text()
    assert 'id="totp-registered"' in shown and "Set up on " in shown
    assert (await portal.next_mail())["Subject"] == "[Portal] A second factor was added"
    settings = await (await portal.client.get(PAGE, headers=HOME)).text()
    assert 'id="remove-totp"' in settings and "<svg" not in settings

    removed = await post_page(portal, action="remove")
    assert removed.status == 303 and removed.headers["Location"] == f"{PAGE}/removed"
    shown = await (await portal.client.get(f"{PAGE}/removed", headers=HOME)).text()
    assert 'id="totp-removed"' in shown
    assert await portal.client.app[TOTP].configuration("john") is None
    mail = await portal.next_mail()
    assert mail["Subject"] == "[Portal] A second factor was removed"
    assert "one-time password app (TOTP)" in text_of(mail)


async def test_the_result_pages_say_only_what_is_true(elevated: Portal) -> None:
    portal = elevated
    registered = await (await portal.client.get(f"{PAGE}/registered", headers=HOME)).text()
    assert 'id="totp-registered"' not in registered


async def test_the_page_forms_need_elevation(portal: Portal, elevated: Any) -> None:
    # Elevated from one address, the page's POST from another is sent to the elevation page.
    loaded = await portal.client.get(PAGE, headers=HOME)
    token = csrf_of(await loaded.text())
    response = await portal.client.post(
        PAGE,
        data={"action": "start", "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.77"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"].startswith("/settings/elevate?next=")
    assert (await portal.client.app[TOTP].configuration("john")) is None
