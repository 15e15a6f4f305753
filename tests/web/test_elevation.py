"""The elevated session, told as stories over HTTP: a real portal, a real SMTP server; the code is
read from the mail the server received (Authelia 4.39's /api/user/session/elevation)."""

from __future__ import annotations

import email.message
import logging
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from aiohttp import ClientResponse

from portal.errors import ElevationRequiredError
from portal.keys import ELEVATION, SESSIONS, TOTP
from portal.sessions import Session
from portal.totp import code_at
from tests.web.conftest import (
    Portal,
    StartPortal,
    audit_events,
    request_reset,
    reset_link_from,
    sign_in,
    submit,
    text_of,
    token_of,
)

API = "/api/user/session/elevation"
JSON = {"Content-Type": "application/json"}
REFUSED = "The code is incorrect or has expired. Ask for a new one and try again."
HOME = {"X-Forwarded-For": "198.51.100.10"}  # the test client is a trusted proxy
AWAY = {"X-Forwarded-For": "203.0.113.77"}


def code_from(mail: email.message.EmailMessage) -> str:
    """Return the code in the HTML part's id="one-time-code" element, checking that the text
    part carries the same code on a line of its own."""
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    match = re.search(r'id="one-time-code"[^>]*>([^<]+)<', html.get_content())
    assert match, "no element with id=one-time-code in the HTML part"
    code = match.group(1).strip()
    assert code in [line.strip() for line in text_of(mail).splitlines()]
    return code


def revoke_link_from(mail: email.message.EmailMessage) -> str:
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    match = re.search(r'id="revoke-link" href="([^"]+)"', html.get_content())
    assert match, "no revoke link in the HTML part"
    return match.group(1).replace("&amp;", "&")


async def signed_in_portal(start_portal: StartPortal, **overrides: Any) -> Portal:
    portal = await start_portal(**overrides)
    assert (await sign_in(portal.client)).status == 302
    return portal


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await signed_in_portal(start_portal)


async def start(portal: Portal, headers: dict[str, str] = HOME) -> tuple[str, str]:
    """Ask for a code through the API; return (delete_id, the code mailed)."""
    response = await portal.client.post(API, json={}, headers=headers)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "OK"
    return body["data"]["delete_id"], code_from(await portal.next_mail())


async def finish(portal: Portal, otc: str, headers: dict[str, str] = HOME) -> ClientResponse:
    return await portal.client.put(API, json={"otc": otc}, headers=headers)


async def state(portal: Portal, headers: dict[str, str] = HOME) -> dict[str, Any]:
    response = await portal.client.get(API, headers=headers)
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "OK"
    data: dict[str, Any] = body["data"]
    return data


async def refused(response: ClientResponse) -> bool:
    return response.status == 401 and await response.json() == {"status": "KO", "message": REFUSED}


async def session_of(portal: Portal) -> Session:
    cookie = portal.config.session.cookies[0]
    value = portal.client.session.cookie_jar.filter_cookies(portal.client.make_url("/"))
    session = await portal.client.app[SESSIONS].get(value["portal_session"].value, cookie)
    assert session is not None
    return session


# --- the API -------------------------------------------------------------------------------------


async def test_the_mailed_code_elevates_the_session_for_ten_minutes_once(portal: Portal) -> None:
    assert (await state(portal))["elevated"] is False
    _, code = await start(portal)

    assert len(code) == 8
    response = await finish(portal, code.lower())  # typed codes are upper-cased, as in Authelia

    assert response.status == 200 and await response.json() == {"status": "OK"}
    now = await state(portal)
    assert now["elevated"] is True
    assert 595 <= now["expires"] <= 600
    assert now["factor_knowledge"] is True
    assert (now["skip_second_factor"], now["can_skip_second_factor"]) == (False, False)
    assert await refused(await finish(portal, code))  # used once already


async def test_a_wrong_code_gets_the_same_answer_and_leaves_the_right_one_usable(
    portal: Portal,
) -> None:
    _, code = await start(portal)
    wrong = ("A" if code[0] != "A" else "B") + code[1:]

    assert await refused(await finish(portal, wrong))
    assert await refused(await finish(portal, "X" * 30))  # longer than any code
    assert (await state(portal))["elevated"] is False
    assert (await finish(portal, code)).status == 200


async def test_an_expired_code_is_refused(portal: Portal) -> None:
    _, code = await start(portal)
    portal.clock.advance(portal.config.identity_validation.elevated_session.code_lifespan.seconds)

    assert await refused(await finish(portal, code))
    assert (await state(portal))["elevated"] is False


async def test_the_elevation_ends_after_its_lifespan(portal: Portal) -> None:
    _, code = await start(portal)
    assert (await finish(portal, code)).status == 200

    # Steps shorter than the session's inactivity (5 minutes) keep the session itself alive.
    portal.clock.advance(299)
    assert (await state(portal))["elevated"] is True
    portal.clock.advance(299)
    assert (await state(portal))["expires"] == 2
    portal.clock.advance(2)

    assert await state(portal) | {"factor_knowledge": True} == {
        "elevated": False,
        "expires": 0,
        "require_second_factor": False,
        "skip_second_factor": False,
        "can_skip_second_factor": False,
        "factor_knowledge": True,
    }


async def test_a_code_revoked_by_its_delete_id_is_refused(portal: Portal) -> None:
    delete_id, code = await start(portal)

    revoked = await portal.client.delete(f"{API}/{delete_id}", headers=JSON)
    assert revoked.status == 200 and await revoked.json() == {"status": "OK"}
    again = await portal.client.delete(f"{API}/{delete_id}", headers=JSON)
    assert again.status == 400

    assert await refused(await finish(portal, code))


async def test_an_elevation_from_another_client_address_does_not_count(portal: Portal) -> None:
    _, code = await start(portal)
    assert (await finish(portal, code, HOME)).status == 200

    assert (await state(portal, AWAY))["elevated"] is False
    # Seen from elsewhere, the elevation is destroyed (Authelia's rule): home loses it too.
    assert (await state(portal, HOME))["elevated"] is False


async def test_a_code_mailed_to_one_user_does_not_elevate_another(
    start_portal: StartPortal,
) -> None:
    john = await signed_in_portal(start_portal)
    _, code = await start(john)
    harry = await start_portal()
    assert (await sign_in(harry.client, "harry")).status == 302

    assert await refused(await finish(harry, code))
    assert (await finish(john, code)).status == 200


async def test_asking_for_codes_too_often_answers_429(start_portal: StartPortal) -> None:
    limits = {"session_elevation_start": {"buckets": [{"period": "1m", "requests": 2}]}}
    portal = await signed_in_portal(start_portal, server={"endpoints": {"rate_limits": limits}})
    for _ in range(2):
        assert (await portal.client.post(API, json={}, headers=HOME)).status == 200

    response = await portal.client.post(API, json={}, headers=HOME)

    assert response.status == 429
    assert "Retry-After" in response.headers
    assert (await response.json())["status"] == "KO"
    await portal.drain_outbox()
    assert len(portal.smtp.deliveries) == 2


async def test_checking_codes_too_often_answers_429(start_portal: StartPortal) -> None:
    limits = {"session_elevation_finish": {"buckets": [{"period": "1m", "requests": 3}]}}
    portal = await signed_in_portal(start_portal, server={"endpoints": {"rate_limits": limits}})
    _, code = await start(portal)
    for _ in range(3):
        assert await refused(await finish(portal, "WRONG234"))

    assert (await finish(portal, code)).status == 429


async def test_without_a_session_the_api_answers_401_in_json(start_portal: StartPortal) -> None:
    portal = await start_portal()
    for method in ("GET", "POST", "PUT"):
        response = await portal.client.request(method, API, json={"otc": "ABCDEFGH"})
        assert response.status == 401, method
        assert (await response.json())["status"] == "KO"
    assert portal.smtp.deliveries == []


async def test_a_two_factor_session_counts_as_elevated_only_with_skip_second_factor(
    start_portal: StartPortal,
) -> None:
    skip = {"elevated_session": {"skip_second_factor": True}}
    for skips in (False, True):
        portal = await signed_in_portal(start_portal, identity_validation=skip if skips else {})
        service = portal.client.app[ELEVATION]
        session = await session_of(portal)
        two_factors = Session(**{**session.__dict__, "level": 2, "amr": ("pwd", "otp")})

        assert service.skips(session) is False
        assert service.skips(two_factors) is skips
        assert (await service.state(two_factors, "198.51.100.10"))[
            "can_skip_second_factor"
        ] is skips


async def test_require_second_factor_asks_a_user_with_totp_for_it_first(
    start_portal: StartPortal,
) -> None:
    # identity_validation.elevated_session.require_second_factor: a one-factor session of a
    # user who has TOTP registered must prove it before elevating; one without TOTP need not.
    portal = await signed_in_portal(
        start_portal, identity_validation={"elevated_session": {"require_second_factor": True}}
    )
    assert (await state(portal))["require_second_factor"] is False
    totp = portal.client.app[TOTP]
    pending = totp.start_registration("john")
    code = code_at(pending.secret, pending.parameters, portal.clock.now())
    await totp.complete_registration("john", pending, code, "192.0.2.1")

    assert (await state(portal))["require_second_factor"] is True
    with pytest.raises(ElevationRequiredError) as caught:
        await portal.client.app[ELEVATION].check(await session_of(portal), "127.0.0.1")
    assert caught.value.second_factor


# --- the pages -----------------------------------------------------------------------------------


async def test_the_pages_mail_a_code_check_it_and_return_to_next(portal: Portal) -> None:
    page = await portal.client.get("/settings/elevate?next=/settings/security-questions")
    html = await page.text()
    assert page.status == 200
    assert 'id="send-code"' in html and "Email me a code" in html

    sent = await submit(
        portal.client,
        "/settings/elevate?next=/settings/security-questions",
        "/settings/elevate",
        next="/settings/security-questions",
    )
    assert sent.status == 303
    form_page = sent.headers["Location"]
    assert form_page.startswith("/settings/elevate/code?next=")
    form = await (await portal.client.get(form_page)).text()
    assert 'autocomplete="one-time-code"' in form and '<label for="otc">' in form
    code = code_from(await portal.next_mail())

    wrong = await submit(
        portal.client, form_page, "/settings/elevate/code", otc="WRONG234", next="/settings/x"
    )
    assert wrong.status == 401
    assert REFUSED in await wrong.text() and 'aria-invalid="true"' in await wrong.text()

    done = await submit(
        portal.client,
        form_page,
        "/settings/elevate/code",
        otc=code,
        next="/settings/security-questions",
    )
    assert done.status == 303
    assert done.headers["Location"] == "/settings/security-questions"
    assert (await state(portal, {}))["elevated"] is True


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil", "x"]
)
async def test_next_outside_the_portal_returns_home(portal: Portal, target: str) -> None:
    await submit(portal.client, "/settings/elevate", "/settings/elevate", next=target)
    code = code_from(await portal.next_mail())

    done = await submit(
        portal.client, "/settings/elevate/code", "/settings/elevate/code", otc=code, next=target
    )

    assert done.status == 303 and done.headers["Location"] == "/"


async def test_the_pages_send_a_visitor_without_a_session_to_sign_in(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal()
    response = await portal.client.get("/settings/elevate", allow_redirects=False)

    assert response.status == 303 and response.headers["Location"].startswith("/?rd=")


async def test_the_mails_revoke_link_asks_before_cancelling_the_code(portal: Portal) -> None:
    delete_id, code = await start(portal)
    link = revoke_link_from(portal.smtp.deliveries[-1].message)
    parts = urlsplit(link)
    assert parts.path == "/revoke/one-time-code"
    assert parse_qs(parts.query)["id"] == [delete_id]

    # A link scanner opening the page revokes nothing.
    page = await portal.client.get(f"{parts.path}?{parts.query}")
    assert page.status == 200 and 'id="revoke"' in await page.text()
    record = await portal.storage.get_one_time_code(delete_id)
    assert record is not None and record.usable_at(portal.clock.now())

    revoked = await submit(
        portal.client, f"{parts.path}?{parts.query}", "/revoke/one-time-code", id=delete_id
    )
    assert revoked.status == 303
    done = await portal.client.get(revoked.headers["Location"])
    assert done.status == 200 and 'id="revoke-done"' in await done.text()
    assert await refused(await finish(portal, code))
    again = await submit(portal.client, "/revoke/one-time-code", "/revoke/one-time-code", id="no")
    assert again.status == 400


# --- what the logs and the storage keep ----------------------------------------------------------


async def test_no_code_reaches_a_log_an_audit_event_or_the_database(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    delete_id, code = await start(portal)
    assert await refused(await finish(portal, "WRONG234"))
    assert (await finish(portal, code)).status == 200

    # The test SMTP server's own log (aiosmtpd's mail.log) shows what it received: not ours.
    for record in (r for r in caplog.records if r.name != "mail.log"):
        assert code not in record.getMessage()
        assert code not in repr(record.__dict__.get("fields", {}))
        assert code not in repr(record.args)
    assert [e["username"] for e in audit_events(caplog, "elevation_requested")] == ["john"]
    assert len(audit_events(caplog, "elevation_refused")) == 1
    assert len(audit_events(caplog, "elevation_granted")) == 1
    stored = await portal.storage.get_one_time_code(delete_id)
    assert stored is not None and code not in repr(stored)
    assert stored.code_hash == portal.client.app[ELEVATION].code_hash(code)


async def test_no_code_or_key_of_the_second_factor_reaches_a_log_or_an_error_page(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15's secrets end to end: the elevation code, the TOTP key and every TOTP code typed
    (at registration, at sign-in, at a reset), right or wrong."""
    caplog.set_level(logging.DEBUG)
    _, otc = await start(portal)
    pages = [await (await finish(portal, "WRONG234")).text()]
    assert (await finish(portal, otc)).status == 200
    started = await portal.client.put("/api/secondfactor/totp/register", json={}, headers=HOME)
    assert started.status == 200, await started.text()
    key = (await started.json())["data"]["secret_base32"]
    app = pyotp.TOTP(key)
    codes = [app.at(portal.clock.now()), app.at(portal.clock.now() + 30)]
    codes += [f"{(int(c) + 500_000) % 1_000_000:06d}" for c in codes]  # two wrong ones
    register = "/api/secondfactor/totp/register"
    wrong = await portal.client.post(register, json={"token": codes[2]}, headers=HOME)
    pages.append(await wrong.text())
    done = await portal.client.post(register, json={"token": codes[0]}, headers=HOME)
    assert wrong.status >= 400 and done.status == 200

    await portal.client.get("/logout", allow_redirects=False)
    assert (await sign_in(portal.client)).status == 302
    portal.clock.advance(30)
    answers = []
    for token in (codes[3], codes[1]):
        answer = await portal.client.post("/api/secondfactor/totp", json={"token": token})
        answers.append(answer.status)
        pages.append(await answer.text())
    assert answers == [401, 200]
    await portal.client.get("/logout", allow_redirects=False)
    await request_reset(portal.client, "john")
    token = token_of(reset_link_from(await portal.next_mail()))
    reset = await portal.client.post(
        "/api/reset-password", json={"token": token, "password": "N3w-Pass-Phrase!", "totp": "1"}
    )
    pages.append(await reset.text())
    assert reset.status == 400

    secrets = [otc, key, key.lower(), *codes]
    ours = [r for r in caplog.records if r.name != "mail.log"]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__.get('fields')!r} {r.args!r}" for r in ours)
    assert [s for s in secrets if s in logged] == []
    assert [s for s in secrets if any(s in page for page in pages)] == []
    assert len(audit_events(caplog, "second_factor_failed")) >= 1
    assert len(audit_events(caplog, "totp_registered")) == 1
