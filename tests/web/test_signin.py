"""Sign-in, sessions and the auth_request answer nginx relies on, told over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse

from tests.web.conftest import (
    Client,
    Portal,
    StartPortal,
    choose_password,
    csrf_of,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
)

RULES: dict[str, Any] = {
    "default_policy": "deny",
    "rules": [
        {"domain": "127.0.0.1", "resources": ["^/public"], "policy": "bypass"},
        {
            "domain": "127.0.0.1",
            "resources": ["^/admin"],
            "subject": "group:admins",
            "policy": "one_factor",
        },
        # as in Authelia, a signed-in user the subject does not match falls through: deny here
        {"domain": "127.0.0.1", "resources": ["^/admin"], "policy": "deny"},
        {"domain": "127.0.0.1", "resources": ["^/deny"], "policy": "deny"},
        {"domain": "127.0.0.1", "policy": "one_factor"},
    ],
}
WRONG = "Incorrect username or password."


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(access_control=RULES)


async def ask(client: Client, url: str, method: str = "GET", **headers: str) -> ClientResponse:
    """Ask what nginx asks: may this request through?"""
    return await client.get(
        "/api/authz/auth-request",
        headers={"X-Original-URL": url, "X-Original-Method": method, **headers},
        allow_redirects=False,
    )


async def test_john_signs_in_and_nginx_lets_him_through(portal: Portal) -> None:
    anonymous = await ask(portal.client, "http://127.0.0.1/private?x=1")
    assert anonymous.status == 401
    assert anonymous.headers["Location"] == (
        "http://127.0.0.1/?rd=" + quote("http://127.0.0.1/private?x=1", safe="")
    )

    signed = await sign_in(portal.client, "john", "password", rd="http://127.0.0.1/private?x=1")
    assert signed.status == 302
    assert signed.headers["Location"] == "http://127.0.0.1/private?x=1"
    cookie = signed.cookies["portal_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]

    allowed = await ask(portal.client, "http://127.0.0.1/private?x=1")
    assert allowed.status == 200
    assert allowed.headers["Remote-User"] == "john"
    assert allowed.headers["Remote-Groups"] == "admins,dev"
    assert allowed.headers["Remote-Name"] == "John Doe"
    assert allowed.headers["Remote-Email"] == "john.doe@authelia.com"
    legacy = await portal.client.get(
        "/api/verify", headers={"X-Original-URL": "http://127.0.0.1/private"}
    )
    assert (legacy.status, legacy.headers["Remote-User"]) == (200, "john")


async def test_bypass_deny_and_groups(portal: Portal, start_portal: StartPortal) -> None:
    assert (await ask(portal.client, "http://127.0.0.1/public/x")).status == 200
    assert "Remote-User" not in (await ask(portal.client, "http://127.0.0.1/public")).headers
    assert (await ask(portal.client, "http://127.0.0.1/admin")).status == 401  # sign in first
    assert (await sign_in(portal.client, "harry", "password")).status == 302
    assert (await ask(portal.client, "http://127.0.0.1/admin")).status == 403
    assert (await ask(portal.client, "http://127.0.0.1/deny")).status == 403
    assert (await ask(portal.client, "http://127.0.0.1/elsewhere")).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Original-URL": ""},
        {"X-Original-URL": "not a url"},
        {"X-Original-URL": "/relative/path"},
        {"X-Original-URL": "ftp://127.0.0.1/x"},
    ],
)
async def test_missing_or_malformed_headers_get_401_not_500(
    portal: Portal, headers: dict[str, str]
) -> None:
    response = await portal.client.get("/api/authz/auth-request", headers=headers)
    assert response.status == 401


@pytest.mark.parametrize("path", ["/api/authz/auth-request", "/api/verify"])
async def test_every_authorization_answer_has_an_empty_body(portal: Portal, path: str) -> None:
    # nginx's auth_request reads the headers only: an answer with a body makes nginx close its
    # kept-alive connection to the portal, and open a new one for the next question.
    async def answer(url: str | None) -> tuple[int, str | None, bytes]:
        headers = {} if url is None else {"X-Original-URL": url, "X-Original-Method": "GET"}
        response = await portal.client.get(path, headers=headers, allow_redirects=False)
        return response.status, response.headers.get("Content-Length"), await response.read()

    anonymous = await answer("http://127.0.0.1/private")
    malformed = await answer(None)
    assert (await sign_in(portal.client, "john", "password")).status == 302
    allowed = await answer("http://127.0.0.1/private")
    denied = await answer("http://127.0.0.1/deny")

    assert anonymous == (401, "0", b"")
    assert malformed == (401, "0", b"")
    assert allowed == (200, "0", b"")
    assert denied == (403, "0", b"")


async def test_a_host_outside_every_cookie_domain_is_never_let_through(portal: Portal) -> None:
    assert (await sign_in(portal.client, "john", "password")).status == 302
    response = await ask(portal.client, "https://other.example.org/")
    assert response.status in (401, 403)
    assert "Remote-User" not in response.headers


async def test_wrong_password_and_unknown_user_get_the_same_answer(portal: Portal) -> None:
    wrong = await sign_in(portal.client, "john", "nope")
    unknown = await sign_in(portal.client, "nobody", "nope")
    assert (wrong.status, unknown.status) == (401, 401)
    assert WRONG in await wrong.text() and WRONG in await unknown.text()
    assert "portal_session" not in wrong.cookies


async def test_three_failures_ban_the_account_even_with_the_right_password(
    portal: Portal,
) -> None:
    for _ in range(3):
        assert (await sign_in(portal.client, "bob", "wrong")).status == 401
    banned = await sign_in(portal.client, "bob", "password")
    assert banned.status == 401
    assert WRONG in await banned.text()
    portal.clock.advance(5 * 60 + 1)
    assert (await sign_in(portal.client, "bob", "password")).status == 302


async def test_the_session_id_changes_at_sign_in_and_the_old_one_ends(portal: Portal) -> None:
    first = (await sign_in(portal.client, "john", "password")).cookies["portal_session"].value
    again = await portal.client.post(
        "/api/firstfactor", json={"username": "john", "password": "password"}
    )
    second = again.cookies["portal_session"].value
    assert first != second
    portal.client.session.cookie_jar.clear()
    portal.client.session.cookie_jar.update_cookies({"portal_session": first})
    assert (await ask(portal.client, "http://127.0.0.1/private")).status == 401


async def test_a_planted_session_value_is_never_adopted(portal: Portal) -> None:
    planted = "A" * 43
    portal.client.session.cookie_jar.clear()
    portal.client.session.cookie_jar.update_cookies({"portal_session": planted})
    signed = await sign_in(portal.client, "john", "password")
    assert signed.cookies["portal_session"].value != planted


@pytest.mark.parametrize(
    "rd",
    ["https://evil.com/", "//evil.com/", "javascript:alert(1)", "http://127.0.0.1.evil.com/"],
)
async def test_no_open_redirect(portal: Portal, rd: str) -> None:
    response = await sign_in(portal.client, "john", "password", rd=rd)
    assert response.status == 302
    assert response.headers["Location"] == "/"


async def test_logout_ends_the_session(portal: Portal) -> None:
    assert (await sign_in(portal.client, "john", "password")).status == 302
    out = await portal.client.get("/logout", allow_redirects=False)
    assert out.status == 302
    assert (await ask(portal.client, "http://127.0.0.1/private")).status == 401


async def test_the_json_twins(portal: Portal) -> None:
    bad = await portal.client.post(
        "/api/firstfactor", json={"username": "john", "password": "nope"}
    )
    assert (bad.status, await bad.json()) == (401, {"status": "KO", "message": WRONG})
    good = await portal.client.post(
        "/api/firstfactor",
        json={
            "username": "john",
            "password": "password",
            "keepMeLoggedIn": True,
            "targetURL": "http://127.0.0.1/private",
        },
    )
    assert await good.json() == {"status": "OK", "data": {"redirect": "http://127.0.0.1/private"}}
    assert int(good.cookies["portal_session"]["max-age"]) == 30 * 86400
    assert (await ask(portal.client, "http://127.0.0.1/private")).status == 200
    out = await portal.client.post("/api/logout", json={})
    assert (out.status, await out.json()) == (200, {"status": "OK"})
    assert (await ask(portal.client, "http://127.0.0.1/private")).status == 401


async def test_sessions_expire_when_idle_unless_remembered(portal: Portal) -> None:
    assert (await sign_in(portal.client, "john", "password")).status == 302
    portal.clock.advance(5 * 60 + 1)  # inactivity: 5 minutes
    assert (await ask(portal.client, "http://127.0.0.1/private")).status == 401


async def test_a_password_reset_ends_every_session_of_the_user(
    portal: Portal, start_portal: StartPortal
) -> None:
    assert (await sign_in(portal.client, "john", "password")).status == 302
    assert (await ask(portal.client, "http://127.0.0.1/private")).status == 200

    other_device = await start_portal(access_control=RULES)
    await request_reset(other_device.client, "john")
    link = reset_link_from(await other_device.next_mail())
    await open_link(other_device.client, link)
    assert (await choose_password(other_device.client, "Brand-New-Passphrase-77")).status == 200

    portal.clock.advance(1.01)  # another instance's cache holds a session for one second at most
    assert (await ask(portal.client, "http://127.0.0.1/private")).status == 401
    assert (await sign_in(other_device.client, "john", "password")).status == 401
    assert (await sign_in(other_device.client, "john", "Brand-New-Passphrase-77")).status == 302


async def test_an_admin_removing_a_group_or_disabling_the_user_takes_effect_at_once(
    start_portal: StartPortal,
) -> None:
    # The file backend's refresh_interval is Authelia's 'always'; watch makes the edit visible.
    portal = await start_portal(
        access_control=RULES, authentication_backend={"file": {"watch": True}}
    )
    assert (await sign_in(portal.client, "john", "password")).status == 302
    assert (await ask(portal.client, "http://127.0.0.1/admin")).status == 200

    text = portal.users_file.read_text(encoding="utf-8")
    portal.users_file.write_text(text.replace("      - admins\n", "", 1), encoding="utf-8")
    assert await eventually_status(portal.client, "http://127.0.0.1/admin", 403)
    private = await ask(portal.client, "http://127.0.0.1/private")
    assert (private.status, private.headers["Remote-Groups"]) == (200, "dev")

    text = portal.users_file.read_text(encoding="utf-8")
    portal.users_file.write_text(
        text.replace(
            '    displayname: "John Doe"\n', '    displayname: "John Doe"\n    disabled: true\n', 1
        ),
        encoding="utf-8",
    )
    assert await eventually_status(portal.client, "http://127.0.0.1/private", 401)


async def eventually_status(client: Client, url: str, status: int, timeout: float = 5.0) -> bool:
    """Ask until the answer has the status (the file watch polls), or give up after timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await ask(client, url)).status != status:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.mark.parametrize("checked", ["on", "true", "1"])
async def test_keep_me_signed_in_gives_a_lasting_cookie_and_a_remembered_session(
    portal: Portal, checked: str
) -> None:
    page = await (await portal.client.get("/")).text()
    signed = await portal.client.post(
        "/",
        data={
            "username": "john",
            "password": "password",
            "remember_me": checked,
            "csrf_token": csrf_of(page),
        },
        allow_redirects=False,
    )
    assert signed.status == 302
    assert int(signed.cookies["portal_session"]["max-age"]) > 24 * 3600
    portal.clock.advance(5 * 60 + 1)  # idle past inactivity: a remembered session stays
    assert (await ask(portal.client, "http://127.0.0.1/private")).status == 200


async def test_without_keep_me_signed_in_the_cookie_ends_with_the_browser(portal: Portal) -> None:
    signed = await sign_in(portal.client, "john", "password")
    assert signed.cookies["portal_session"]["max-age"] == ""


@pytest.mark.parametrize("order", ["stale_last", "stale_first"])
async def test_a_stale_session_cookie_beside_the_live_one_is_passed_over(
    portal: Portal, order: str
) -> None:
    # Issue 12: a stale cookie of the same name (say, scoped to a parent domain) sent after the
    # live one used to win, so the visitor got 401 and looped between the app and the portal.
    old = (await sign_in(portal.client, "john", "password")).cookies["portal_session"].value
    await portal.client.get("/logout", allow_redirects=False)  # the old session is stale now
    live = (await sign_in(portal.client, "john", "password")).cookies["portal_session"].value
    assert old != live
    pair = [live, old] if order == "stale_last" else [old, live]
    header = "; ".join(f"portal_session={value}" for value in pair)
    portal.client.session.cookie_jar.clear()
    allowed = await ask(portal.client, "http://127.0.0.1/private", Cookie=header)
    assert (allowed.status, allowed.headers["Remote-User"]) == (200, "john")
    page = await portal.client.get("/", headers={"Cookie": header})
    assert 'id="signed-in"' in await page.text()
    # signing out ends every session the browser sent (an empty jar: aiohttp's client would
    # fold the two values of the header into one)
    portal.client.session.cookie_jar.clear()
    await portal.client.get("/logout", headers={"Cookie": header}, allow_redirects=False)
    gone = await ask(portal.client, "http://127.0.0.1/private", Cookie=f"portal_session={live}")
    assert gone.status == 401
