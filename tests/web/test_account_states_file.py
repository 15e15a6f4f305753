"""The users file's `disabled: true`, told over HTTP: the same behaviours as a directory's
administrative lock (no mail, the same answer, no new password even with a link, no session)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import (
    DEMO_PASSWORD,
    Client,
    Portal,
    StartPortal,
    no_mail_sent,
    open_link,
    request_reset,
    reset_link_from,
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


def audit_events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "portal.audit" and r.getMessage() == event
    ]


async def answer_to(client: Client, identifier: str) -> tuple[int, str, dict[str, str]]:
    response = await request_reset(client, identifier)
    body = re.sub(r'value="[^"]+"', 'value=""', await response.text())
    return response.status, body, {k: v for k, v in response.headers.items() if k != "Date"}


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
