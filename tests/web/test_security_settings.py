"""The security settings page and the user's sessions, told as stories over HTTP: two portals
on the same storage (two replicas), john signed in on each from a different browser."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import unquote

from portal.keys import SESSIONS
from portal.storage.base import WebAuthnCredential
from tests.web.conftest import (
    DEMO_PASSWORD,
    Client,
    Portal,
    StartPortal,
    csrf_of,
    follow_result,
    signed_in,
    submit,
)

JSON = {"Content-Type": "application/json"}
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)
# Protected sites ask for one factor: auth_request answers 200 for any live session.
ONE_FACTOR = {"default_policy": "one_factor"}
_SESSION_ID = re.compile(r'name="id" value="([^"]+)"')


async def sign_in_as(client: Client, username: str, user_agent: str, ip: str) -> None:
    """Sign in through the form from a browser with that User-Agent and address."""
    page = await client.get("/")
    fields = {"username": username, "password": DEMO_PASSWORD}
    fields["csrf_token"] = csrf_of(await page.text())
    headers = {"User-Agent": user_agent, "X-Forwarded-For": ip}  # the client is a trusted proxy
    answer = await client.post("/", data=fields, headers=headers, allow_redirects=False)
    assert answer.status == 302


async def sessions_of(client: Client) -> list[dict[str, Any]]:
    answer = await client.get("/api/user/sessions")
    assert answer.status == 200
    body = await answer.json()
    assert body["status"] == "OK"
    data: list[dict[str, Any]] = body["data"]
    return data


async def two_browsers(start_portal: StartPortal) -> tuple[Portal, Portal]:
    """john on his laptop (portal a) and on his phone (portal b), the phone signed in later."""
    laptop, phone = (
        await start_portal(access_control=ONE_FACTOR),
        await start_portal(access_control=ONE_FACTOR),
    )
    await sign_in_as(laptop.client, "john", FIREFOX, "198.51.100.10")
    laptop.clock.advance(60)
    await sign_in_as(phone.client, "john", PHONE, "203.0.113.77")
    return laptop, phone


async def test_the_list_shows_both_sessions_and_which_one_is_current(
    start_portal: StartPortal,
) -> None:
    laptop, phone = await two_browsers(start_portal)

    from_laptop = await sessions_of(laptop.client)
    from_phone = await sessions_of(phone.client)

    assert [(s["current"], s["ip"], s["user_agent"]) for s in from_laptop] == [
        (True, "198.51.100.10", FIREFOX),
        (False, "203.0.113.77", PHONE),
    ]
    assert [s["current"] for s in from_phone] == [False, True]
    assert [s["id"] for s in from_phone] == [s["id"] for s in from_laptop]
    assert from_laptop[1]["created_at"] - from_laptop[0]["created_at"] == 60
    assert set(from_laptop[0]) == {
        "id",
        "current",
        "created_at",
        "last_seen_at",
        "ip",
        "user_agent",
    }
    # SECURITY: the public id is neither the cookie value nor its stored hash.
    stored = {r.id for r in await laptop.storage.sessions_of_user("john")}
    cookies = {c.value for p in (laptop, phone) for c in p.client.session.cookie_jar}
    assert not {s["id"] for s in from_laptop} & (stored | cookies)


async def test_the_page_lists_each_device_and_marks_this_session(
    start_portal: StartPortal,
) -> None:
    laptop, _ = await two_browsers(start_portal)

    page = await laptop.client.get("/settings")
    html = await page.text()

    assert page.status == 200
    assert "Firefox on Linux" in html and "Chrome on Android" in html
    assert html.count('id="this-session"') == 1
    assert html.index("Firefox on Linux") < html.index("(this session)") < html.index("Chrome")
    assert "198.51.100.10" in html and "203.0.113.77" in html
    assert 'id="end-others"' in html
    home = await (await laptop.client.get("/")).text()
    assert 'href="/settings"' in home


async def test_a_session_ended_from_the_page_is_refused_by_auth_request_within_a_second(
    start_portal: StartPortal,
) -> None:
    laptop, phone = await two_browsers(start_portal)
    assert await signed_in(phone.client) == 200  # the phone's portal has its session cached
    page = await (await laptop.client.get("/settings")).text()
    phone_id = _SESSION_ID.findall(page)[1]

    ended = await submit(
        laptop.client, "/settings", "/settings/sessions", action="end", id=phone_id
    )
    shown = await follow_result(laptop.client, ended)

    assert ended.status == 303
    assert 'id="session-ended"' in await shown.text()
    phone.clock.advance(1.0)  # cache_ttl: the longest another replica may trust its copy
    assert await signed_in(phone.client) == 401
    assert await signed_in(laptop.client) == 200
    assert [s["current"] for s in await sessions_of(laptop.client)] == [True]


async def test_signing_out_everywhere_else_keeps_the_current_session(
    start_portal: StartPortal,
) -> None:
    laptop, phone = await two_browsers(start_portal)
    third = await start_portal(access_control=ONE_FACTOR)
    await sign_in_as(third.client, "john", "curl/8.5.0", "192.0.2.5")

    ended = await submit(laptop.client, "/settings", "/settings/sessions", action="end_others")
    shown = await follow_result(laptop.client, ended)

    assert 'id="others-ended"' in await shown.text()
    phone.clock.advance(1.0)
    assert await signed_in(phone.client) == 401
    assert await signed_in(third.client) == 401
    assert await signed_in(laptop.client) == 200
    assert len(await sessions_of(laptop.client)) == 1


async def test_the_api_ends_one_session_or_all_others(start_portal: StartPortal) -> None:
    laptop, phone = await two_browsers(start_portal)
    third = await start_portal(access_control=ONE_FACTOR)
    await sign_in_as(third.client, "john", "curl/8.5.0", "192.0.2.5")
    listed = await sessions_of(laptop.client)

    one = await laptop.client.delete(f"/api/user/sessions/{listed[1]['id']}", headers=JSON)
    assert (one.status, await one.json()) == (200, {"status": "OK"})
    again = await laptop.client.delete(f"/api/user/sessions/{listed[1]['id']}", headers=JSON)
    assert again.status == 404 and (await again.json())["status"] == "KO"

    rest = await laptop.client.delete("/api/user/sessions", headers=JSON)
    assert (await rest.json()) == {"status": "OK", "data": {"ended": 1}}
    laptop.clock.advance(1.0)
    assert await signed_in(phone.client) == 401
    assert await signed_in(third.client) == 401
    assert [s["current"] for s in await sessions_of(laptop.client)] == [True]


async def test_a_delete_without_a_body_needs_no_content_type(start_portal: StartPortal) -> None:
    # `curl -X DELETE` sends no Content-Type: a DELETE cannot come cross-site without a CORS
    # preflight, so the JSON rule (there against cross-site POSTs) does not apply to it.
    laptop, phone = await two_browsers(start_portal)
    rest = await laptop.client.delete("/api/user/sessions")
    assert (rest.status, await rest.json()) == (200, {"status": "OK", "data": {"ended": 1}})
    laptop.clock.advance(1.0)
    assert await signed_in(phone.client) == 401
    # From another site it is refused all the same.
    foreign = await laptop.client.delete(
        "/api/user/sessions", headers={"Origin": "https://evil.example.net"}
    )
    assert foreign.status == 403


async def test_ending_the_current_session_signs_out(start_portal: StartPortal) -> None:
    laptop, phone = await two_browsers(start_portal)
    mine = (await sessions_of(laptop.client))[0]["id"]

    answer = await laptop.client.delete(f"/api/user/sessions/{mine}", headers=JSON)

    assert answer.status == 200
    assert answer.cookies["portal_session"].value == ""
    assert await signed_in(laptop.client) == 401
    assert await signed_in(phone.client) == 200
    page = await (await phone.client.get("/settings")).text()
    phone_id = _SESSION_ID.findall(page)[0]
    out = await submit(phone.client, "/settings", "/settings/sessions", action="end", id=phone_id)
    assert out.status == 303 and out.headers["Location"] == "/?signed_out"
    assert await signed_in(phone.client) == 401


async def test_another_users_session_id_is_not_found(start_portal: StartPortal) -> None:
    laptop, _ = await two_browsers(start_portal)
    harry = await start_portal(access_control=ONE_FACTOR)
    await sign_in_as(harry.client, "harry", FIREFOX, "192.0.2.9")
    johns = (await sessions_of(laptop.client))[1]["id"]

    by_api = await harry.client.delete(f"/api/user/sessions/{johns}", headers=JSON)
    by_form = await submit(harry.client, "/settings", "/settings/sessions", action="end", id=johns)

    assert by_api.status == 404
    assert by_form.status == 404
    assert 'id="error-summary"' in await by_form.text()
    assert [s["ip"] for s in await sessions_of(harry.client)] == ["192.0.2.9"]
    assert len(await sessions_of(laptop.client)) == 2
    assert await signed_in(laptop.client) == 200


async def test_anonymous_visitors_are_sent_to_sign_in(portal: Portal) -> None:
    page = await portal.client.get("/settings", allow_redirects=False)
    listed = await portal.client.get("/api/user/sessions")
    ended = await portal.client.delete("/api/user/sessions", headers=JSON)

    assert page.status == 303
    assert unquote(page.headers["Location"]) == "/?rd=http://127.0.0.1/settings"
    assert listed.status == 401 and (await listed.json())["status"] == "KO"
    assert ended.status == 401
    assert portal.client.app is not None and portal.client.app[SESSIONS] is not None


async def test_the_page_shows_the_second_factor_and_questions_state(portal: Portal) -> None:
    await sign_in_as(portal.client, "john", FIREFOX, "198.51.100.10")

    html = await (await portal.client.get("/settings")).text()

    assert 'id="totp-state">Not set up.' in html
    assert 'href="/settings/one-time-password"' in html
    assert 'id="passkeys-settings"' in html and 'href="/settings/passkeys"' in html
    assert 'id="no-other-sessions"' in html


async def test_the_page_lists_each_passkey_with_when_it_was_added_and_last_used(
    portal: Portal,
) -> None:
    added = portal.clock.now()
    for number, name in enumerate(("My laptop", "Blue key <b>")):
        await portal.storage.add_webauthn_credential(
            WebAuthnCredential(
                id=0,
                username="john",
                description=name,
                credential_id=bytes([number + 1]) * 16,
                public_key=b"cose",
                sign_count=0,
                aaguid="00000000-0000-0000-0000-000000000000",
                transports=("internal",),
                backup_eligible=False,
                backup_state=False,
                created_at=added,
            )
        )
    laptop = await portal.storage.get_webauthn_credential(b"\x01" * 16)
    assert laptop is not None
    assert await portal.storage.webauthn_credential_use(
        laptop.id, previous=0, sign_count=1, backup_state=False, at=added + 86400
    )
    await sign_in_as(portal.client, "john", FIREFOX, "198.51.100.10")

    html = await (await portal.client.get("/settings")).text()

    names = re.findall(r'class="passkey-name">([^<]*)<', html)
    assert names == ["My laptop", "Blue key &lt;b&gt;"]
    assert "Never used." in html and "Last used on" in html
    assert 'id="passkeys-state"' not in html


async def test_with_no_passkey_the_page_says_so(portal: Portal) -> None:
    await sign_in_as(portal.client, "john", FIREFOX, "198.51.100.10")
    html = await (await portal.client.get("/settings")).text()
    assert 'id="passkeys-state">None registered.' in html


async def test_without_passkeys_the_page_has_no_passkeys_entry(start_portal: StartPortal) -> None:
    portal = await start_portal(webauthn={"disable": True})
    await sign_in_as(portal.client, "john", FIREFOX, "198.51.100.10")
    html = await (await portal.client.get("/settings")).text()
    assert 'id="passkeys-settings"' not in html and 'id="totp-state"' in html


async def test_a_session_id_that_is_not_ascii_is_not_found(start_portal: StartPortal) -> None:
    laptop, _ = await two_browsers(start_portal)

    by_api = await laptop.client.delete("/api/user/sessions/%C3%A9t%C3%A9", headers=JSON)
    by_form = await submit(laptop.client, "/settings", "/settings/sessions", action="end", id="été")

    assert by_api.status == 404 and (await by_api.json())["status"] == "KO"
    assert by_form.status == 404
    assert 'id="error-summary"' in await by_form.text()
    assert len(await sessions_of(laptop.client)) == 2


async def sign_in_with_raw_user_agent(portal: Portal, user_agent: bytes) -> None:
    """Sign in through the form with a User-Agent sent as raw bytes (no client library would
    send bytes that are not UTF-8), and take the session cookie into the test client."""
    page = await portal.client.get("/")
    token = csrf_of(await page.text())
    csrf = next(c for c in portal.client.session.cookie_jar if c.key == "portal_csrf")
    body = f"username=john&password={DEMO_PASSWORD}&csrf_token={token}".encode()
    server = portal.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + user_agent + b"\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Cookie: portal_csrf={csrf.value}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + body
    )
    head = (await reader.read()).split(b"\r\n\r\n")[0].decode("latin-1")
    writer.close()
    assert head.startswith("HTTP/1.1 302")
    value = re.search(r"portal_session=([^;\r\n]+)", head)
    assert value is not None
    portal.client.session.cookie_jar.update_cookies({"portal_session": value.group(1)})


async def test_a_user_agent_that_is_not_utf8_is_shown_not_a_500(portal: Portal) -> None:
    await sign_in_with_raw_user_agent(portal, b"Mozilla/5.0 \xff\xfe <script>x</script>")

    page = await portal.client.get("/settings")
    listed = await sessions_of(portal.client)

    assert page.status == 200
    html = await page.text()
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    assert listed[0]["user_agent"] == "Mozilla/5.0 \ufffd\ufffd <script>x</script>"
    assert (await portal.storage.sessions_of_user("john"))[0].data["user_agent"] == (
        listed[0]["user_agent"]
    )
