"""The users file's `disabled: true`, told over HTTP: the same behaviours as a directory's
administrative lock (no mail, the same answer, no new password even with a link, no session)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from tests.web.conftest import (
    DEMO_PASSWORD,
    Client,
    Portal,
    StartPortal,
    audit_events,
    csrf_of,
    no_mail_sent,
    open_link,
    request_reset,
    reset_link_from,
    same_for_everyone,
    sign_in,
    token_of,
)

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
WRONG = "Incorrect username or password."


def disable(users_file: Path, name: str = "john") -> None:
    """Add `disabled: true` to a user, as an administrator edits the file."""
    text = users_file.read_text(encoding="utf-8")
    marker = f"  {name}:\n"
    assert marker in text
    users_file.write_text(text.replace(marker, f"{marker}    disabled: true\n", 1), "utf-8")


async def answer_to(client: Client, identifier: str) -> tuple[int, str, dict[str, str]]:
    response = await request_reset(client, identifier)
    body = re.sub(r'value="[^"]+"', 'value=""', await response.text())
    return response.status, body, same_for_everyone(response)


async def test_a_disabled_user_gets_the_same_answer_no_mail_and_no_session(
    start_portal: StartPortal, users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    disable(users_file)
    portal = await start_portal()
    assert await answer_to(portal.client, "john") == await answer_to(portal.client, "nobody")
    assert await no_mail_sent(portal)
    assert [e["reason"] for e in audit_events(caplog, "reset_no_mail")] == ["disabled", "unknown"]
    refused = await sign_in(portal.client, "john", DEMO_PASSWORD)
    assert refused.status == 401 and "portal_session" not in refused.cookies
    assert WRONG in await refused.text()


async def test_a_user_disabled_after_the_mail_went_out_gets_no_new_password(
    start_portal: StartPortal, users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal.audit")
    portal: Portal = await start_portal(authentication_backend={"file": {"watch": True}})
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    disable(users_file)
    before = users_file.read_text(encoding="utf-8")

    deadline = asyncio.get_running_loop().time() + 5
    while (opened := await open_link(portal.client, link)).status != 400:  # the watch polls
        assert asyncio.get_running_loop().time() < deadline, "the edit was never picked up"
        await asyncio.sleep(0.05)
    assert "This link is invalid or has expired" in await opened.text()
    api = await portal.client.post(
        "/api/reset-password", json={"token": token_of(link), "password": NEW_PASSWORD}
    )
    assert api.status == 400
    assert users_file.read_text(encoding="utf-8") == before
    assert {e["reason"] for e in audit_events(caplog, "reset_rejected")} == {"disabled"}


@pytest.mark.parametrize("disable_unlock", [False, True])
async def test_a_reset_ends_the_portals_own_ban_on_the_account_unless_told_not_to(
    start_portal: StartPortal, disable_unlock: bool
) -> None:
    # A failure lockout ends with a successful reset, where the directory's does; the portal's
    # own regulation ban is such a lockout too (issue 10.7).
    portal = await start_portal(
        authentication_backend={"password_reset": {"disable_unlock": disable_unlock}}
    )
    # Someone elsewhere guesses john's password: Authelia's defaults ban after three failures.
    # (The address's own failures stay: a reset of one's own account must not lift a ban on
    # guessing from an address.)
    elsewhere = {"X-Forwarded-For": "198.51.100.7"}
    for _ in range(3):
        guess = await portal.client.post(
            "/api/firstfactor", json={"username": "john", "password": "not-it"}, headers=elsewhere
        )
        assert guess.status == 401
    assert (await sign_in(portal.client, "john", DEMO_PASSWORD)).status == 401  # banned
    assert (await request_reset(portal.client, "john")).status == 200
    await open_link(portal.client, reset_link_from(await portal.next_mail()))
    page = await portal.client.get("/reset-password/step2")
    done = await portal.client.post(
        "/reset-password/step2",
        data={
            "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD,
            "csrf_token": csrf_of(await page.text()),
        },
    )
    assert done.status == 200
    signed = await sign_in(portal.client, "john", NEW_PASSWORD)
    assert signed.status == (401 if disable_unlock else 302)
