"""The password reset, told as stories over HTTP: a real portal, a real SMTP server, real files."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

import jwt
import pytest

from portal.errors import SessionStoreUnavailableError
from portal.keys import SESSIONS, USERS
from portal.users.file import FileUserBackend
from portal.users.hashing import verify_password
from tests.web.conftest import (
    Portal,
    StartPortal,
    choose_password,
    open_link,
    path_of,
    request_reset,
    reset_link_from,
    same_for_everyone,
    submit,
    text_of,
    token_of,
)

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
EDITED_HASH = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$Vb7I4sCZbkAw1AgqV1fHBmiEkdjxrzBQrBUTzMpAsVg"  # noqa: E501
SENT = "If an account matches, we have sent an email with a link"


async def stored_hash(users_file: Path, username: str) -> str:
    """Read a user's hash from the users file as a freshly started portal would."""
    from portal.config import FileBackendConfig

    backend = FileUserBackend(FileBackendConfig(path=users_file))
    await backend.startup_check()
    try:
        state = await backend.password_state(username)
    finally:
        await backend.close()
    assert state is not None
    return state


async def link_for(portal: Portal, identifier: str = "john") -> str:
    """Ask for a link and return the one the mail carries."""
    response = await request_reset(portal.client, identifier)
    assert response.status == 200
    return reset_link_from(await portal.next_mail())


# --- the happy path ----------------------------------------------------------------------------


async def test_john_resets_his_password_through_the_pages(portal: Portal) -> None:
    client = portal.client
    response = await request_reset(client, "john")
    assert response.status == 200
    assert SENT in await response.text()

    mail = await portal.next_mail()
    assert mail["To"] == "john.doe@authelia.com"
    assert mail["Subject"] == "[Portal] Reset your password"
    link = reset_link_from(mail)
    assert link.startswith("http://127.0.0.1/reset-password/step2?token=")

    opened = await client.get(path_of(link), allow_redirects=False)
    assert opened.status == 303
    assert opened.headers["Location"] == "/reset-password/step2"
    cookie = opened.cookies["portal_reset"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == "/reset-password/step2"
    assert 0 < int(cookie["max-age"]) <= 300

    form = await client.get("/reset-password/step2")
    assert form.status == 200
    assert form.headers["Referrer-Policy"] == "no-referrer"
    assert form.headers["Cache-Control"] == "no-store"
    page = await form.text()
    assert 'name="password"' in page and 'name="password_confirm"' in page
    assert token_of(link) not in page

    done = await choose_password(client, NEW_PASSWORD)
    assert done.status == 200
    assert "Your password has been changed" in await done.text()
    assert "portal_session" not in done.cookies, "a reset never signs the user in"

    digest = await stored_hash(portal.users_file, "john")
    assert verify_password(NEW_PASSWORD, digest)
    assert not verify_password("password", digest)
    assert digest.startswith("$argon2id$")


async def test_the_user_is_told_the_password_changed_without_the_password(
    portal: Portal,
) -> None:
    await open_link(portal.client, await link_for(portal))
    await choose_password(portal.client, NEW_PASSWORD)

    notice = await portal.next_mail()
    assert notice["Subject"] == "[Portal] Your password was changed"
    assert notice["To"] == "john.doe@authelia.com"
    body = text_of(notice)
    assert "127.0.0.1" in body and "UTC" in body
    assert NEW_PASSWORD not in notice.as_string()


async def test_the_mail_says_what_a_careful_user_needs_to_know(portal: Portal) -> None:
    await request_reset(portal.client, "john")
    mail = await portal.next_mail()
    text = text_of(mail)
    token = token_of(reset_link_from(mail))

    assert f"http://127.0.0.1/reset-password/step2?token={token}" in text
    # the "this was not me" link carries a revoke-only token of its own (issue 10.4)
    revoke = re.search(r"http://127\.0\.0\.1/revoke/reset-password\?token=(\S+)", text)
    assert revoke and revoke.group(1) != token
    assert "expires in 5 minutes" in text
    assert "127.0.0.1" in text
    assert "If you did not ask for this, ignore this mail" in text
    html = mail.get_body(preferencelist=("html",))
    assert html is not None and 'id="revoke-link"' in html.get_content()


async def test_the_json_api_does_the_same_for_scripted_clients(portal: Portal) -> None:
    client = portal.client
    started = await client.post("/api/reset-password/identity/start", json={"username": "john"})
    assert (started.status, await started.json()) == (200, {"status": "OK"})
    token = token_of(reset_link_from(await portal.next_mail()))

    checked = await client.post("/api/reset-password/identity/finish", json={"token": token})
    assert (checked.status, await checked.json()) == (200, {"status": "OK"})
    changed = await client.post(
        "/api/reset-password", json={"token": token, "password": NEW_PASSWORD}
    )
    assert (changed.status, await changed.json()) == (200, {"status": "OK"})
    assert verify_password(NEW_PASSWORD, await stored_hash(portal.users_file, "john"))

    again = await client.post("/api/reset-password", json={"token": token, "password": "x" * 20})
    assert again.status == 400
    assert await again.json() == {"status": "KO", "message": "This link is invalid or has expired."}


async def test_an_email_address_typed_in_another_case_mails_the_stored_address(
    portal: Portal,
) -> None:
    await request_reset(portal.client, "John.Doe@AUTHELIA.com")
    mail = await portal.next_mail()
    assert mail["To"] == "john.doe@authelia.com"
    assert reset_link_from(mail)


# --- one answer for everyone -------------------------------------------------------------------


async def test_unknown_disabled_and_mailless_users_get_the_same_answer_and_no_mail(
    start_portal: StartPortal, users_file: Path
) -> None:
    text = users_file.read_text().replace("    email: james.dean@authelia.com\n", "")
    text = text.replace("...\n", "") + (
        "  ghost:\n    displayname: Ghost\n    password: x\n    disabled: true\n"
        "    email: ghost@example.com\n"
    )
    users_file.write_text(text)
    portal = await start_portal()
    answers = []
    for who in ("john", "nobody-here", "james", "HARRY.Potter@authelia.com", "*", "ghost"):
        response = await request_reset(portal.client, who)
        body = re.sub(r'value="[^"]+"', 'value=""', await response.text())
        headers = same_for_everyone(response)
        answers.append((response.status, body, headers))
    for answer in answers:
        assert answer == answers[0]

    await portal.drain_outbox()
    assert [d.rcpt_tos for d in portal.smtp.deliveries] == [
        ["john.doe@authelia.com"],
        ["harry.potter@authelia.com"],
    ]


async def test_the_api_answers_ok_for_an_unknown_user_and_sends_nothing(portal: Portal) -> None:
    response = await portal.client.post(
        "/api/reset-password/identity/start", json={"username": "nobody"}
    )
    assert (response.status, await response.json()) == (200, {"status": "OK"})
    await portal.drain_outbox()
    assert portal.smtp.deliveries == []


async def test_an_empty_identifier_gets_a_clear_message(portal: Portal) -> None:
    response = await request_reset(portal.client, "   ")
    assert response.status == 400
    assert "Enter your username or email address." in await response.text()
    api = await portal.client.post("/api/reset-password/identity/start", json={"name": "john"})
    assert api.status == 400
    assert (await api.json())["status"] == "KO"


# --- links that must not work ------------------------------------------------------------------


async def invalid_page(portal: Portal, link: str) -> None:
    response = await open_link(portal.client, link)
    assert response.status == 400
    page = await response.text()
    assert "This link is invalid or has expired" in page
    assert 'href="/reset-password/step1"' in page
    # SECURITY: whatever the outcome, the token left the address bar before anything rendered.
    assert [r.status for r in response.history] == [303]
    assert str(response.url.relative()) == "/reset-password/step2"
    assert token_of(link) not in page


async def test_a_used_link_does_not_work_twice(portal: Portal) -> None:
    link = await link_for(portal)
    await open_link(portal.client, link)
    assert (await choose_password(portal.client, NEW_PASSWORD)).status == 200
    await invalid_page(portal, link)


async def test_opening_a_link_does_not_use_it_up(portal: Portal) -> None:
    link = await link_for(portal)
    for _ in range(3):  # a mail scanner, a preview, the user
        assert (await open_link(portal.client, link)).status == 200
    assert (await choose_password(portal.client, NEW_PASSWORD)).status == 200


async def test_a_link_expires_after_its_lifespan(portal: Portal) -> None:
    link = await link_for(portal)
    portal.clock.advance(299)
    assert (await open_link(portal.client, link)).status == 200
    portal.clock.advance(2)
    late = await submit(
        portal.client,
        "/reset-password/step1",
        "/reset-password/step2",
        password=NEW_PASSWORD,
        password_confirm=NEW_PASSWORD,
    )
    assert late.status == 400
    assert "This link is invalid or has expired" in await late.text()
    await invalid_page(portal, link)
    assert verify_password("password", await stored_hash(portal.users_file, "john"))


async def test_a_newer_link_revokes_the_older_one(portal: Portal) -> None:
    first = await link_for(portal)
    second = await link_for(portal)
    assert first != second
    await invalid_page(portal, first)
    assert (await open_link(portal.client, second)).status == 200


async def test_a_tampered_link_does_not_work(portal: Portal) -> None:
    link = await link_for(portal)
    token = token_of(link)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "harry"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    await invalid_page(portal, link.replace(token, f"{header}.{forged}.{signature}"))
    flipped = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    await invalid_page(portal, link.replace(token, flipped))


async def test_alg_none_and_other_algorithms_are_refused(portal: Portal) -> None:
    link = await link_for(portal)
    token = token_of(link)
    claims = jwt.decode(token, options={"verify_signature": False})
    unsigned = jwt.encode(claims, key="", algorithm="none")  # PyJWT takes "" as no key for none
    secret = portal.config.identity_validation.reset_password.jwt_secret.get_secret_value()
    other = jwt.encode(claims, secret + "x" * 30, algorithm="HS512")
    for bad in (unsigned, other):
        await invalid_page(portal, link.replace(token, bad))
    # and the genuine link still works
    assert (await open_link(portal.client, link)).status == 200


@pytest.mark.parametrize(
    ("claim", "value"),
    [("aud", "some-other-app"), ("iss", "https://evil.example.com"), ("action", "Login")],
)
async def test_a_token_signed_with_our_secret_for_another_purpose_is_refused(
    portal: Portal, claim: str, value: str
) -> None:
    link = await link_for(portal)
    token = token_of(link)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims[claim] = value
    secret = portal.config.identity_validation.reset_password.jwt_secret.get_secret_value()
    await invalid_page(portal, link.replace(token, jwt.encode(claims, secret, algorithm="HS256")))


async def test_a_password_changed_by_other_means_kills_the_link(
    start_portal: StartPortal, users_file: Path
) -> None:
    portal = await start_portal(authentication_backend={"file": {"watch": True}})
    link = await link_for(portal)
    users = portal.client.app[USERS]
    before = await users.password_state("john")
    assert before is not None
    # an admin edits the users file by hand; the watching portal reloads it
    users_file.write_text(users_file.read_text().replace(before, EDITED_HASH))
    for _ in range(100):
        if await users.password_state("john") == EDITED_HASH:
            break
        await asyncio.sleep(0.05)
    assert await users.password_state("john") == EDITED_HASH
    await invalid_page(portal, link)


async def test_sessions_that_cannot_be_ended_after_the_write_are_ended_by_the_outbox(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sessions end before the write and again after it. Here a sign-in with the old password
    # slips in between, and the session store fails right after the write: the outbox ends
    # that session as soon as it can, so no session outlives the new password.
    client = portal.client
    await request_reset(client, "john")
    await open_link(client, reset_link_from(await portal.next_mail()))
    sessions = client.app[SESSIONS]
    john = await client.app[USERS].get_user("john")
    assert john is not None
    cookie = portal.config.session.cookies[0]
    real = sessions.destroy_user
    calls = 0
    slipped_in: list[str] = []

    async def flaky(username: str, *, keep: str | None = None) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise SessionStoreUnavailableError("the session store went away")
        ended = await real(username, keep=keep)
        if calls == 1:
            slipped_in.append(await sessions.create(john, cookie, remember_me=False))
        return ended

    monkeypatch.setattr(sessions, "destroy_user", flaky)
    done = await choose_password(client, NEW_PASSWORD)
    assert done.status == 200 and "Your password has been changed" in await done.text()
    await portal.drain_outbox()
    assert calls == 3, "the outbox ended the sessions once the store answered"
    assert await sessions.get(slipped_in[0], cookie) is None
