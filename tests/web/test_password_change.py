"""A signed-in user changes their password (/settings/password and POST /api/change-password):
the current password under regulation, the reset's rules, the current session kept and every
other one ended, earlier reset links dead, the "changed" mail read from the real SMTP server."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from portal.errors import SessionStoreUnavailableError
from portal.keys import SESSIONS, TOTP, USERS
from portal.totp import code_at
from tests.web.conftest import (
    DEMO_PASSWORD,
    Client,
    Portal,
    StartPortal,
    audit_events,
    choose_password,
    follow_result,
    no_mail_sent,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
    signed_in,
    submit,
    text_of,
)
from tests.web.test_totp_registration import elevate

PAGE = "/settings/password"
API = "/api/change-password"
NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
WRONG_CURRENT = "Your current password is not correct."
HERE: dict[str, str] = {}  # every request from the test client's own address (127.0.0.1)
# auth_request answers 200 for any signed-in session: `signed_in` tells who still has one.
OPEN = {"access_control": {"default_policy": "one_factor"}}


async def change_password(
    client: Client, current: str, password: str, confirm: str | None = None
) -> Any:
    """Fill in the form on /settings/password and follow its redirect as a browser does."""
    return await follow_result(
        client,
        await submit(
            client,
            PAGE,
            PAGE,
            current_password=current,
            password=password,
            password_confirm=password if confirm is None else confirm,
        ),
    )


async def signed_in_and_elevated(portal: Portal) -> Portal:
    assert (await sign_in(portal.client)).status == 302
    await elevate(portal, HERE)
    return portal


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(**OPEN)


@pytest.fixture
async def elevated(portal: Portal) -> Portal:
    return await signed_in_and_elevated(portal)


async def second_client(portal: Portal) -> Client:
    """Another browser signed in as john (closed by the test)."""
    other: Client = TestClient(portal.client.server)  # type: ignore[assignment]
    assert (await sign_in(other)).status == 302
    return other


async def test_john_changes_his_password_and_only_his_other_sessions_end(
    elevated: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    portal = elevated
    caplog.set_level(logging.INFO)
    other = await second_client(portal)
    try:
        assert await signed_in(other) == 200
        form = await portal.client.get(PAGE)
        assert form.status == 200
        html = await form.text()
        assert 'autocomplete="current-password"' in html
        assert html.count('autocomplete="new-password"') == 2

        done = await change_password(portal.client, DEMO_PASSWORD, NEW_PASSWORD)
        assert done.history[0].status == 303
        assert done.history[0].headers["Location"] == PAGE + "/changed"
        assert done.status == 200
        assert "Your password is changed" in await done.text()

        assert await signed_in(portal.client) == 200  # this browser stays signed in
        assert await signed_in(other) == 401  # the other one is signed out
        assert (await other.get(PAGE, allow_redirects=False)).status == 303
    finally:
        await other.session.close()

    fresh: Client = TestClient(portal.client.server)  # type: ignore[assignment]
    try:
        assert (await sign_in(fresh, password=DEMO_PASSWORD)).status == 401
        assert (await sign_in(fresh, password=NEW_PASSWORD)).status == 302
    finally:
        await fresh.session.close()

    mail = await portal.next_mail()
    assert mail["Subject"] == "[Portal] Your password was changed"
    assert mail["To"] == "john.doe@authelia.com"
    assert NEW_PASSWORD not in mail.as_string()
    assert "Every other session of your account was signed out" in text_of(mail)
    assert [e["username"] for e in audit_events(caplog, "password_changed")] == ["john"]
    assert NEW_PASSWORD not in caplog.text


async def test_when_the_store_fails_after_the_write_the_outbox_ends_the_others_not_this_one(
    elevated: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sign-in with the old password slips in between the two ends, and the session store
    # fails right after the write: the outbox ends that session, and keeps the current one.
    portal = elevated
    sessions = portal.client.app[SESSIONS]
    john = await portal.client.app[USERS].get_user("john")
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
    assert (await change_password(portal.client, DEMO_PASSWORD, NEW_PASSWORD)).status == 200
    await portal.drain_outbox()
    assert calls == 3, "the outbox ended the sessions once the store answered"
    assert await sessions.get(slipped_in[0], cookie) is None
    assert await signed_in(portal.client) == 200


async def test_a_reset_link_mailed_before_the_change_no_longer_works(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    portal.smtp.deliveries.clear()
    await signed_in_and_elevated(portal)

    assert (await change_password(portal.client, DEMO_PASSWORD, NEW_PASSWORD)).status == 200
    refused = await open_link(portal.client, link)
    assert refused.status == 400
    assert 'id="reset-invalid"' in await refused.text()
    # Revoked in storage, not only outdated by the new password's fingerprint.
    assert [e["reason"] for e in audit_events(caplog, "reset_rejected")] == ["revoked"]


async def test_the_form_says_what_is_wrong_at_the_top_and_next_to_the_field(
    start_portal: StartPortal,
) -> None:
    portal = await signed_in_and_elevated(
        await start_portal(
            password_policy={"standard": {"enabled": True, "min_length": 12}}, **OPEN
        )
    )
    weak = await change_password(portal.client, DEMO_PASSWORD, "Short1!")
    assert weak.status == 400
    html = await weak.text()
    assert 'id="password-change-errors"' in html
    assert html.count("Use at least 12 characters.") == 2  # the summary and next to the field
    assert 'aria-invalid="true"' in html
    assert "At least 12 characters" in html  # the policy's hint

    other = "Other-" + NEW_PASSWORD
    mismatch = await change_password(portal.client, DEMO_PASSWORD, NEW_PASSWORD, other)
    assert mismatch.status == 400
    assert "The two passwords do not match." in await mismatch.text()
    assert await still_the_demo_password(portal)


async def test_the_current_password_is_not_a_new_one(elevated: Portal) -> None:
    refused = await change_password(elevated.client, DEMO_PASSWORD, DEMO_PASSWORD)
    assert refused.status == 400
    assert "Choose a password different from your current one." in await refused.text()
    assert await no_mail_sent(elevated)


async def test_wrong_current_passwords_count_as_failed_sign_ins_up_to_a_ban(
    elevated: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    portal = elevated
    caplog.set_level(logging.INFO)
    # An empty current password is no guess: refused, but not counted (as at sign-in).
    for _ in range(3):
        empty = await change_password(portal.client, "", NEW_PASSWORD)
        assert empty.status == 401 and WRONG_CURRENT in await empty.text()
    caplog.clear()
    for _ in range(3):  # regulation.max_retries of the test configuration
        wrong = await change_password(portal.client, "guess", NEW_PASSWORD)
        assert wrong.status == 401
        html = await wrong.text()
        assert WRONG_CURRENT in html and 'id="current-password-error"' in html
    # Banned: the right password gets the very same answer, and changes nothing.
    banned = await change_password(portal.client, DEMO_PASSWORD, NEW_PASSWORD)
    assert banned.status == 401
    assert WRONG_CURRENT in await banned.text()
    reasons = [e["reason"] for e in audit_events(caplog, "password_change_rejected")]
    assert reasons == ["password", "password", "password", "banned"]
    # The ban is the sign-in's: the account cannot sign in anywhere either.
    assert not await still_the_demo_password(portal)
    portal.clock.advance(15 * 60 + 1)  # ban_time
    assert await still_the_demo_password(portal)
    assert "guess" not in caplog.text


async def test_the_json_twin(portal: Portal) -> None:
    body = {"old_password": DEMO_PASSWORD, "new_password": NEW_PASSWORD}
    anonymous = await portal.client.post(API, json=body)
    assert anonymous.status == 401
    assert (await sign_in(portal.client)).status == 302
    unelevated = await portal.client.post(API, json=body)
    assert unelevated.status == 403
    assert (await unelevated.json())["status"] == "KO"
    await elevate(portal, HERE)

    wrong = await portal.client.post(API, json={**body, "old_password": "guess"})
    assert wrong.status == 401
    assert await wrong.json() == {"status": "KO", "message": WRONG_CURRENT}
    same = await portal.client.post(API, json={**body, "new_password": DEMO_PASSWORD})
    assert same.status == 400
    assert await same.json() == {
        "status": "KO",
        "message": "Choose a password different from your current one.",
        "reasons": ["Choose a password different from your current one."],
    }
    missing = await portal.client.post(API, json={"old_password": DEMO_PASSWORD})
    assert missing.status == 400

    done = await portal.client.post(API, json=body)
    assert done.status == 200
    assert await done.json() == {"status": "OK"}
    assert await signed_in(portal.client) == 200
    assert "Your password was changed" in (await portal.next_mail())["Subject"]
    assert not await still_the_demo_password(portal)


async def test_an_unelevated_page_visit_goes_to_the_elevation_page(portal: Portal) -> None:
    anonymous = await portal.client.get(PAGE, allow_redirects=False)
    assert anonymous.status == 303 and anonymous.headers["Location"].startswith("/?rd=")
    assert (await sign_in(portal.client)).status == 302
    home = await (await portal.client.get("/")).text()
    assert f'id="change-own-password" href="{PAGE}"' in home
    response = await portal.client.get(PAGE, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/settings/elevate?next=/settings/password"


@pytest.mark.parametrize("skips", [False, True])
async def test_a_two_factor_session_needs_no_code_only_with_skip_second_factor(
    start_portal: StartPortal, skips: bool
) -> None:
    skip = {"elevated_session": {"skip_second_factor": skips}}
    portal = await start_portal(identity_validation=skip, **OPEN)
    totp = portal.client.app[TOTP]
    pending = totp.start_registration("john")
    code = code_at(pending.secret, pending.parameters, portal.clock.now())
    await totp.complete_registration("john", pending, code, "192.0.2.1")
    portal.clock.advance(pending.parameters.period)  # a fresh code: the last one is spent
    assert (await sign_in(portal.client)).status == 302
    code = code_at(pending.secret, pending.parameters, portal.clock.now())
    assert (await portal.client.post("/api/secondfactor/totp", json={"token": code})).status == 200

    body = {"old_password": DEMO_PASSWORD, "new_password": NEW_PASSWORD}
    response = await portal.client.post(API, json=body)
    assert response.status == (200 if skips else 403)
    page = await portal.client.get(PAGE, allow_redirects=False)
    assert page.status == (200 if skips else 303)


async def test_with_password_change_disabled_nothing_exists(start_portal: StartPortal) -> None:
    portal = await start_portal(authentication_backend={"password_change": {"disable": True}})
    assert (await sign_in(portal.client)).status == 302
    await elevate(portal, HERE)
    assert (await portal.client.get(PAGE, allow_redirects=False)).status == 404
    body = {"old_password": DEMO_PASSWORD, "new_password": NEW_PASSWORD}
    assert (await portal.client.post(API, json=body)).status == 404
    assert "change-own-password" not in await (await portal.client.get("/")).text()
    assert await still_the_demo_password(portal)


async def still_the_demo_password(portal: Portal) -> bool:
    """Tell whether a fresh browser signs in as john with the demo password."""
    fresh: Client = TestClient(portal.client.server)  # type: ignore[assignment]
    try:
        return (await sign_in(fresh)).status == 302
    finally:
        await fresh.session.close()


def refuse_revocations(portal: Portal, *, another_link: bool = False) -> None:
    """Make the storage refuse to revoke a reset link, and nothing else (a real SQLite error:
    consuming a link still works); with another_link, john gets one more live link record
    (as two step-1 requests at the same moment leave), which a completed reset revokes."""
    path = portal.config.storage.local.path  # type: ignore[union-attr]
    with contextlib.closing(sqlite3.connect(path)) as db:
        if another_link:
            db.execute(
                "INSERT INTO identity_verifications (jti, username, action, issued_at,"
                " issued_ip, expires_at) SELECT jti || '-twin', username, action, issued_at,"
                " issued_ip, expires_at FROM identity_verifications WHERE username = 'john'"
                " AND consumed_at IS NULL AND revoked_at IS NULL"
            )
        db.execute(
            "CREATE TRIGGER no_revoke BEFORE UPDATE OF revoked_at ON identity_verifications"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        db.commit()


async def test_a_link_that_cannot_be_revoked_after_the_change_hides_no_change_and_no_mail(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    portal.smtp.deliveries.clear()
    await signed_in_and_elevated(portal)
    refuse_revocations(portal)
    caplog.set_level(logging.INFO)

    # The password is written: the user is told so and mailed, never a 500 hiding the change.
    done = await change_password(portal.client, DEMO_PASSWORD, NEW_PASSWORD)
    assert done.status == 200 and "Your password is changed" in await done.text()
    assert (await portal.next_mail())["Subject"] == "[Portal] Your password was changed"
    assert [e["username"] for e in audit_events(caplog, "password_changed")] == ["john"]
    [error] = [r for r in caplog.records if "revoke" in r.getMessage()]
    assert error.levelno == logging.ERROR and "john" in error.getMessage()
    # The link is dead all the same: it was made for the old password.
    assert (await open_link(portal.client, link)).status == 400


async def test_a_link_that_cannot_be_revoked_after_a_reset_hides_no_reset_and_no_mail(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    refuse_revocations(portal, another_link=True)
    await open_link(portal.client, link)
    caplog.set_level(logging.INFO)

    assert (await choose_password(portal.client, NEW_PASSWORD)).status == 200
    assert (await portal.next_mail())["Subject"] == "[Portal] Your password was changed"
    assert [e["username"] for e in audit_events(caplog, "reset_completed")] == ["john"]
    [error] = [r for r in caplog.records if "revoke" in r.getMessage()]
    assert error.levelno == logging.ERROR and "john" in error.getMessage()
    assert (await sign_in(portal.client, password=NEW_PASSWORD)).status == 302
