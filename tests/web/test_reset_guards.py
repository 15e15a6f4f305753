"""What stands between an attacker and someone else's password: limits, single use, policy,
CSRF, durable mail, and logs that keep secrets out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from pathlib import Path

import pytest

from portal.keys import OUTBOX, RESET
from portal.notify.filesystem import split_messages
from portal.users.hashing import verify_password
from tests.integration.smtp_server import closed_port, running_smtp_server
from tests.web.conftest import (
    Portal,
    StartPortal,
    as_logged,
    choose_password,
    csrf_of,
    fields_of,
    open_link,
    path_of,
    request_reset,
    reset_link_from,
    submit,
    text_of,
    token_of,
)
from tests.web.test_reset_flow import NEW_PASSWORD, SENT, link_for, stored_hash

# --- limits ------------------------------------------------------------------------------------


async def test_too_many_requests_from_one_address_get_429_with_retry_after(
    start_portal: StartPortal,
) -> None:
    bucket = {"buckets": [{"period": "10 minutes", "requests": 3}]}
    portal = await start_portal(
        server={"endpoints": {"rate_limits": {"reset_password_start": bucket}}}
    )
    for who in ("a", "b", "c"):
        assert (await request_reset(portal.client, who)).status == 200
    refused = await request_reset(portal.client, "john")
    assert refused.status == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 600
    api = await portal.client.post("/api/reset-password/identity/start", json={"username": "x"})
    assert api.status == 429
    assert (await api.json())["status"] == "KO"

    portal.clock.advance(601)
    assert (await request_reset(portal.client, "john")).status == 200


async def test_the_client_address_comes_from_x_forwarded_for_only_via_a_trusted_proxy(
    start_portal: StartPortal,
) -> None:
    bucket = {"buckets": [{"period": "10 minutes", "requests": 1}]}
    portal = await start_portal(
        server={"endpoints": {"rate_limits": {"reset_password_start": bucket}}}
    )
    api = "/api/reset-password/identity/start"
    # The test client connects from 127.0.0.1, a trusted proxy by default: each forwarded
    # client has its own bucket.
    for client_ip in ("198.51.100.1", "198.51.100.2"):
        response = await portal.client.post(
            api, json={"username": "x"}, headers={"X-Forwarded-For": f"10.9.9.9, {client_ip}"}
        )
        assert response.status == 200
    again = await portal.client.post(
        api, json={"username": "x"}, headers={"X-Forwarded-For": "198.51.100.1"}
    )
    assert again.status == 429


async def test_an_untrusted_peer_cannot_choose_its_address(start_portal: StartPortal) -> None:
    bucket = {"buckets": [{"period": "10 minutes", "requests": 1}]}
    portal = await start_portal(
        server={
            "trusted_proxies": ["192.0.2.0/24"],
            "endpoints": {"rate_limits": {"reset_password_start": bucket}},
        }
    )
    api = "/api/reset-password/identity/start"
    first = await portal.client.post(
        api, json={"username": "x"}, headers={"X-Forwarded-For": "198.51.100.1"}
    )
    spoofed = await portal.client.post(
        api, json={"username": "x"}, headers={"X-Forwarded-For": "198.51.100.2"}
    )
    assert (first.status, spoofed.status) == (200, 429)


async def test_the_per_account_limit_drops_mails_silently(portal: Portal) -> None:
    answers = [await (await request_reset(portal.client, "john")).text() for _ in range(3)]
    answers.append(await (await request_reset(portal.client, "JOHN")).text())
    answers.append(await (await request_reset(portal.client, "john.doe@authelia.com")).text())
    assert all(SENT in answer for answer in answers)
    await portal.drain_outbox()
    assert len(portal.smtp.deliveries) == 3

    portal.clock.advance(15 * 60 + 1)
    await request_reset(portal.client, "john")
    await portal.drain_outbox()
    assert len(portal.smtp.deliveries) == 4


async def test_two_accounts_sharing_a_mailbox_share_its_limit(
    start_portal: StartPortal, users_file: Path
) -> None:
    users_file.write_text(
        users_file.read_text().replace("harry.potter@authelia.com", "john.doe@authelia.com")
    )
    portal = await start_portal()
    for who in ("john", "harry", "john", "harry"):
        await request_reset(portal.client, who)
    await portal.drain_outbox()
    assert len(portal.smtp.deliveries) == 3


async def test_a_global_cap_limits_mail_for_everyone_together(start_portal: StartPortal) -> None:
    cap = {"buckets": [{"period": "1 hour", "requests": 2}]}
    portal = await start_portal(
        server={"endpoints": {"rate_limits": {"reset_password_global": cap}}}
    )
    for who in ("john", "harry", "bob"):
        response = await request_reset(portal.client, who)
        assert SENT in await response.text()
    await portal.drain_outbox()
    assert [d.rcpt_tos for d in portal.smtp.deliveries] == [
        ["john.doe@authelia.com"],
        ["harry.potter@authelia.com"],
    ]


async def test_unknown_identifiers_count_toward_their_own_limit_too(portal: Portal) -> None:
    for _ in range(5):
        assert (await request_reset(portal.client, "nobody")).status == 200
    key = "reset-identifier:" + portal.client.app[RESET].identifier_hash("nobody")
    assert len(await portal.storage.rate_limit_events(key, since=0)) == 5
    await portal.drain_outbox()
    assert portal.smtp.deliveries == []


# --- single use and revocation -----------------------------------------------------------------


async def test_of_two_concurrent_submissions_with_one_link_exactly_one_wins(
    portal: Portal, users_file: Path
) -> None:
    token = token_of(await link_for(portal))
    api = "/api/reset-password"
    first, second = await asyncio.gather(
        portal.client.post(api, json={"token": token, "password": "First-Unique-Passphrase-1"}),
        portal.client.post(api, json={"token": token, "password": "Second-Unique-Passphrase-2"}),
    )
    assert sorted([first.status, second.status]) == [200, 400]
    digest = await stored_hash(users_file, "john")
    winner = "First-Unique-Passphrase-1" if first.status == 200 else "Second-Unique-Passphrase-2"
    assert verify_password(winner, digest)


async def test_the_revoke_link_asks_first_then_cancels(portal: Portal) -> None:
    await request_reset(portal.client, "john")
    mail = await portal.next_mail()
    token = token_of(reset_link_from(mail))
    revoke = re.search(r"(http://127\.0\.0\.1/revoke/reset-password\?token=\S+)", text_of(mail))
    assert revoke

    confirm = await portal.client.get(path_of(revoke.group(1)))
    assert confirm.status == 200
    page = await confirm.text()
    assert 'id="revoke"' in page
    # opening the revoke page changes nothing: the link still works
    checked = await portal.client.post("/api/reset-password/identity/finish", json={"token": token})
    assert checked.status == 200

    done = await portal.client.post(
        "/revoke/reset-password", data={"token": token, "csrf_token": csrf_of(page)}
    )
    assert done.status == 200
    assert "The link is cancelled" in await done.text()
    assert (await open_link(portal.client, reset_link_from(mail))).status == 400


async def test_the_api_revokes_a_token(portal: Portal) -> None:
    token = token_of(await link_for(portal))
    revoked = await portal.client.delete("/api/reset-password", json={"token": token})
    assert (revoked.status, await revoked.json()) == (200, {"status": "OK"})
    again = await portal.client.delete("/api/reset-password", json={"token": token})
    assert again.status == 400
    use = await portal.client.post("/api/reset-password", json={"token": token, "password": "x"})
    assert use.status == 400


# --- the new password --------------------------------------------------------------------------


async def test_a_weak_password_shows_the_reasons_and_leaves_the_link_usable(
    start_portal: StartPortal, users_file: Path
) -> None:
    portal = await start_portal(
        password_policy={
            "standard": {"enabled": True, "min_length": 12, "require_number": True},
            "zxcvbn": {"enabled": True, "min_score": 3},
        }
    )
    await open_link(portal.client, await link_for(portal))
    weak = await choose_password(portal.client, "johndoe")
    assert weak.status == 400
    page = await weak.text()
    assert "Use at least 12 characters." in page
    assert "Add a number." in page
    assert "This password is too easy to guess" in page
    assert 'id="password-errors"' in page
    assert "johndoe</" not in page  # the password is not echoed back

    strong = await choose_password(portal.client, NEW_PASSWORD)
    assert strong.status == 200
    assert verify_password(NEW_PASSWORD, await stored_hash(users_file, "john"))


async def test_the_two_passwords_must_match(portal: Portal) -> None:
    await open_link(portal.client, await link_for(portal))
    response = await choose_password(portal.client, NEW_PASSWORD, NEW_PASSWORD + "!")
    assert response.status == 400
    assert "The two passwords do not match." in await response.text()


async def test_the_current_password_is_refused(portal: Portal) -> None:
    token = token_of(await link_for(portal))
    response = await portal.client.post(
        "/api/reset-password", json={"token": token, "password": "password"}
    )
    assert response.status == 400
    body = await response.json()
    assert body["reasons"] == ["Choose a password different from your current one."]
    # the link is still good
    ok = await portal.client.post(
        "/api/reset-password", json={"token": token, "password": NEW_PASSWORD}
    )
    assert ok.status == 200


async def test_an_empty_password_is_never_accepted(portal: Portal) -> None:
    token = token_of(await link_for(portal))
    response = await portal.client.post(
        "/api/reset-password", json={"token": token, "password": ""}
    )
    assert response.status == 400
    assert (await response.json())["reasons"] == ["Enter a new password."]


async def test_a_failed_write_leaves_the_link_usable(portal: Portal, users_file: Path) -> None:
    token = token_of(await link_for(portal))
    aside = users_file.with_name("users.yml.aside")
    # A directory where the users file was: the write fails, for root too.
    users_file.rename(aside)
    users_file.mkdir()
    try:
        response = await portal.client.post(
            "/api/reset-password", json={"token": token, "password": NEW_PASSWORD}
        )
        assert response.status == 500
        assert (await response.json())["status"] == "KO"
    finally:
        users_file.rmdir()
        aside.rename(users_file)
    ok = await portal.client.post(
        "/api/reset-password", json={"token": token, "password": NEW_PASSWORD}
    )
    assert ok.status == 200


# --- cross-site requests -----------------------------------------------------------------------


async def test_a_form_post_without_the_csrf_token_is_refused(portal: Portal) -> None:
    response = await portal.client.post("/reset-password/step1", data={"username": "john"})
    assert response.status == 403
    await portal.drain_outbox()
    assert portal.smtp.deliveries == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example.com"}, 403),
        ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        # what Chromium sends from our own pages under Referrer-Policy: no-referrer
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, 200),
        ({"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}, 200),
    ],
)
async def test_a_form_post_is_judged_by_where_the_browser_says_it_comes_from(
    portal: Portal, headers: dict[str, str], status: int
) -> None:
    page = await (await portal.client.get("/reset-password/step1")).text()
    response = await portal.client.post(
        "/reset-password/step1",
        data={"username": "john", "csrf_token": csrf_of(page)},
        headers=headers,
    )
    assert response.status == status


async def test_the_api_takes_json_only(portal: Portal) -> None:
    response = await portal.client.post(
        "/api/reset-password/identity/start", data={"username": "john"}
    )
    assert response.status == 400
    assert (await response.json())["message"] == "Send the request body as application/json."


# --- configuration -----------------------------------------------------------------------------


async def test_disabling_the_reset_removes_pages_api_and_link(start_portal: StartPortal) -> None:
    portal = await start_portal(authentication_backend={"password_reset": {"disable": True}})
    assert (await portal.client.get("/reset-password/step1")).status == 404
    api = await portal.client.post("/api/reset-password/identity/start", json={"username": "j"})
    assert api.status == 404
    assert "Forgot password?" not in await (await portal.client.get("/")).text()


async def test_a_custom_url_sends_the_forgot_password_link_elsewhere(
    start_portal: StartPortal,
) -> None:
    custom = "https://reset.example.com/start"
    portal = await start_portal(authentication_backend={"password_reset": {"custom_url": custom}})
    start = await (await portal.client.get("/")).text()
    assert f'href="{custom}"' in start
    assert (await portal.client.get("/reset-password/step1")).status == 404


# --- durable mail ------------------------------------------------------------------------------


def _outbox_rows(db: Path) -> list[tuple[int, str | None]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [(int(a), e) for a, e in conn.execute("SELECT attempts, last_error FROM outbox")]


async def test_mail_queued_while_smtp_is_down_is_delivered_after_it_recovers(
    start_portal: StartPortal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    port = closed_port()
    portal = await start_portal(notifier={"smtp": {"address": f"smtp://127.0.0.1:{port}"}})
    response = await request_reset(portal.client, "john")
    assert response.status == 200 and SENT in await response.text()

    # the first attempt fails and is scheduled again: nothing is lost
    for _ in range(200):
        if _outbox_rows(tmp_path / "db") and _outbox_rows(tmp_path / "db")[0][1]:
            break
        await asyncio.sleep(0.02)
    [(attempts, error)] = _outbox_rows(tmp_path / "db")
    assert attempts == 1 and error is not None and "cannot connect" in error

    async with running_smtp_server(port=port) as recovered:
        portal.clock.advance(3600)
        portal.client.app[OUTBOX].wake()
        for _ in range(200):
            if recovered.deliveries:
                break
            await asyncio.sleep(0.02)
        assert [d.rcpt_tos for d in recovered.deliveries] == [["john.doe@authelia.com"]]
        assert reset_link_from(recovered.deliveries[0].message)
    failed = [r for r in caplog.records if r.getMessage() == "reset_mail_failed"]
    assert failed and fields_of(failed[0])["username"] == "john"
    # the SMTP server sees the mail a moment before the worker marks it done: wait, bounded
    await portal.drain_outbox()


async def test_a_restart_with_mail_queued_delivers_it(
    start_portal: StartPortal, tmp_path: Path
) -> None:
    port = closed_port()
    down = await start_portal(notifier={"smtp": {"address": f"smtp://127.0.0.1:{port}"}})
    await request_reset(down.client, "john")
    await down.client.close()  # the portal stops with the mail still queued
    assert len(_outbox_rows(tmp_path / "db")) == 1

    async with running_smtp_server(port=port) as smtp:
        up = await start_portal(notifier={"smtp": {"address": f"smtp://127.0.0.1:{port}"}})
        up.clock.advance(3600)
        up.client.app[OUTBOX].wake()
        for _ in range(200):
            if smtp.deliveries:
                break
            await asyncio.sleep(0.02)
        assert [d.rcpt_tos for d in smtp.deliveries] == [["john.doe@authelia.com"]]


async def test_the_filesystem_notifier_writes_the_whole_mail(
    start_portal: StartPortal, tmp_path: Path
) -> None:
    notification = tmp_path / "notification.txt"
    portal = await start_portal(
        notifier={"smtp": None, "filesystem": {"filename": str(notification)}}
    )
    await request_reset(portal.client, "john")
    await portal.drain_outbox()
    messages = split_messages(notification.read_bytes())
    assert len(messages) == 1
    assert messages[0]["To"] == "john.doe@authelia.com"
    assert (notification.stat().st_mode & 0o777) == 0o600
    link = reset_link_from(messages[0])
    # an admin reading the file can copy the link as it stands
    assert link in notification.read_text()
    assert (await open_link(portal.client, link)).status == 200


# --- logs --------------------------------------------------------------------------------------


async def test_logs_tell_each_step_and_never_a_token_link_or_password(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await request_reset(portal.client, "john")
    await request_reset(portal.client, "nobody")
    link = reset_link_from(await portal.next_mail())
    await open_link(portal.client, link)
    await choose_password(portal.client, "password")  # refused: the current one
    await choose_password(portal.client, NEW_PASSWORD)
    await open_link(portal.client, link)  # refused: used
    await portal.drain_outbox()

    token = token_of(link)
    # Everything the portal's process logs (the test SMTP server's own debug log aside).
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(r.name == "aiohttp.access" for r in ours)
    text = as_logged(ours)
    for secret in (token, token.split(".")[2], NEW_PASSWORD, link):
        assert secret not in text
    events = [r.getMessage() for r in caplog.records if r.name == "portal.audit"]
    for event in (
        "reset_requested",
        "reset_mail_sent",
        "reset_no_mail",
        "reset_link_opened",
        "reset_rejected",
        "reset_completed",
    ):
        assert event in events, event
    completed = next(r for r in caplog.records if r.getMessage() == "reset_completed")
    fields = fields_of(completed)
    assert fields["username"] == "john"
    assert re.fullmatch(r"[0-9a-f]{16}", fields["jti_hash"])
    assert fields["ip"] == "127.0.0.1"
    rejected = [
        fields_of(r)["reason"] for r in caplog.records if r.getMessage() == "reset_rejected"
    ]
    assert rejected == ["policy", "used"]
    unknown = next(r for r in caplog.records if r.getMessage() == "reset_no_mail")
    assert "nobody" not in str(fields_of(unknown))


async def test_a_reset_page_is_never_cached_and_never_leaks_its_address(portal: Portal) -> None:
    link = await link_for(portal)
    opened = await portal.client.get(path_of(link), allow_redirects=False)
    assert opened.headers["Cache-Control"] == "no-store"
    assert opened.headers["Referrer-Policy"] == "no-referrer"
    assert "token=" not in opened.headers["Location"]
    form = await portal.client.get("/reset-password/step2")
    assert "default-src 'self'" in form.headers["Content-Security-Policy"]
    html = await form.text()
    assert not re.search(r'(src|href)="https?://', html), "no third-party resources"


async def test_under_https_cookies_are_secure(start_portal: StartPortal) -> None:
    portal = await start_portal(
        session={"cookies": [{"domain": "example.com", "authelia_url": "https://auth.example.com"}]}
    )
    step1 = await portal.client.get("/reset-password/step1")
    csrf = step1.cookies["__Host-portal_csrf"]
    assert csrf["secure"] and csrf["httponly"] and csrf["samesite"] == "Strict"
    assert csrf["path"] == "/"
    assert step1.headers["Strict-Transport-Security"].startswith("max-age=")
    link = await link_for_https(portal)
    opened = await portal.client.get(path_of(link), allow_redirects=False)
    assert opened.cookies["portal_reset"]["secure"]


async def link_for_https(portal: Portal) -> str:
    """Ask through the API (the Secure CSRF cookie does not travel over the test's plain http)."""
    await portal.client.post("/api/reset-password/identity/start", json={"username": "john"})
    link = reset_link_from(await portal.next_mail())
    assert link.startswith("https://auth.example.com/reset-password/step2?token=")
    return link


async def test_step2_without_a_link_shows_the_invalid_page(portal: Portal) -> None:
    response = await portal.client.get("/reset-password/step2")
    assert response.status == 400
    assert "This link is invalid or has expired" in await response.text()
    posted = await submit(
        portal.client,
        "/reset-password/step1",
        "/reset-password/step2",
        password=NEW_PASSWORD,
        password_confirm=NEW_PASSWORD,
    )
    assert posted.status == 400


async def test_an_admin_template_overrides_the_built_in_mail(
    start_portal: StartPortal, tmp_path: Path
) -> None:
    custom = tmp_path / "mail-templates"
    custom.mkdir()
    (custom / "reset_password.txt").write_text("Bonjour {{ display_name }}: {{ link }}\n")
    portal = await start_portal(notifier={"template_path": str(custom)})
    await request_reset(portal.client, "john")
    mail = await portal.next_mail()
    assert text_of(mail).startswith("Bonjour John Doe: http://127.0.0.1/reset-password/step2?")
    assert reset_link_from(mail)  # the HTML part is still the built-in one
