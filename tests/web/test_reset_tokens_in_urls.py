"""A token is visible no longer than needed and good for nothing beyond its purpose.

Issue 10.4: the invalid-link page kept `?token=` in the address bar, and the revoke link carried
the reset token itself (in the address bar and a hidden field), so a revoke URL left in a
history, a proxy log or on a shared screen could reset the password.
"""

from __future__ import annotations

import email.message
import re

import jwt
import pytest
from aiohttp import ClientResponse

from portal.users.hashing import verify_password
from tests.web.conftest import (
    Portal,
    choose_password,
    csrf_of,
    open_link,
    path_of,
    request_reset,
    reset_link_from,
    submit,
    text_of,
    token_of,
)
from tests.web.test_reset_flow import stored_hash

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
INVALID = "This link is invalid or has expired"
REVOKE = "/revoke/reset-password"


def revoke_link_from(mail: email.message.EmailMessage) -> str:
    """Return the "this was not me" link of a reset mail (HTML part, id="revoke-link")."""
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    match = re.search(r'id="revoke-link" href="([^"]+)"', html.get_content())
    assert match, "no revoke link in the HTML part"
    link = match.group(1).replace("&amp;", "&")
    assert link in text_of(mail)
    return link


async def a_reset_mail(portal: Portal) -> email.message.EmailMessage:
    assert (await request_reset(portal.client, "john")).status == 200
    return await portal.next_mail()


def left_the_address_bar(response: ClientResponse, path: str) -> None:
    """The first answer was a redirect to the token-free path; nothing shown holds the token."""
    assert [r.status for r in response.history] == [303]
    assert response.history[0].headers["Cache-Control"] == "no-store"
    assert str(response.url.relative()) == path


async def test_the_revoke_link_carries_a_token_of_its_own(portal: Portal) -> None:
    mail = await a_reset_mail(portal)
    reset, revoke = token_of(reset_link_from(mail)), token_of(revoke_link_from(mail))
    assert reset != revoke
    claims = jwt.decode(revoke, options={"verify_signature": False})
    assert claims["aud"] == "portal:revoke-reset-password"
    assert claims["jti"] == jwt.decode(reset, options={"verify_signature": False})["jti"]
    assert "pwd" not in claims


async def test_a_revoke_token_can_never_set_a_password(portal: Portal) -> None:
    mail = await a_reset_mail(portal)
    revoke_link = revoke_link_from(mail)
    revoke = token_of(revoke_link)
    api = await portal.client.post(
        "/api/reset-password", json={"token": revoke, "password": NEW_PASSWORD}
    )
    assert (api.status, (await api.json())["message"]) == (400, INVALID + ".")
    check = await portal.client.post("/api/reset-password/identity/finish", json={"token": revoke})
    assert check.status == 400
    # as a reset link: the form never shows, and a form posted with it sets nothing
    page = await portal.client.get(f"/reset-password/step2?token={revoke}")
    assert page.status == 400 and INVALID in await page.text()
    portal.client.session.cookie_jar.update_cookies({"portal_reset": revoke})
    posted = await submit(
        portal.client,
        "/reset-password/step1",
        "/reset-password/step2",
        password=NEW_PASSWORD,
        password_confirm=NEW_PASSWORD,
    )
    assert posted.status == 400 and INVALID in await posted.text()
    assert verify_password("password", await stored_hash(portal.users_file, "john"))
    # and the genuine reset link still works
    assert (await open_link(portal.client, reset_link_from(mail))).status == 200


async def test_the_revoke_page_moves_its_token_out_and_cancels_with_a_click(
    portal: Portal,
) -> None:
    mail = await a_reset_mail(portal)
    revoke_link = revoke_link_from(mail)
    confirm = await portal.client.get(path_of(revoke_link))
    left_the_address_bar(confirm, REVOKE)
    page = await confirm.text()
    assert confirm.status == 200 and 'id="revoke"' in page
    assert token_of(revoke_link) not in page
    assert 'name="token"' not in page
    # opening it cancels nothing
    assert (await open_link(portal.client, reset_link_from(mail))).status == 200
    done = await portal.client.post(REVOKE, data={"csrf_token": csrf_of(page)})
    assert done.status == 200 and "The link is cancelled" in await done.text()
    assert (await open_link(portal.client, reset_link_from(mail))).status == 400


async def test_the_api_revokes_with_either_token(portal: Portal) -> None:
    for which in ("revoke", "reset"):
        mail = await a_reset_mail(portal)
        link = revoke_link_from(mail) if which == "revoke" else reset_link_from(mail)
        revoked = await portal.client.delete("/api/reset-password", json={"token": token_of(link)})
        assert (revoked.status, await revoked.json()) == (200, {"status": "OK"})
        assert (await open_link(portal.client, reset_link_from(mail))).status == 400


async def test_a_revoke_page_opened_with_an_old_mails_reset_token_still_cancels(
    portal: Portal,
) -> None:
    mail = await a_reset_mail(portal)
    reset_link = reset_link_from(mail)
    confirm = await portal.client.get(f"{REVOKE}?token={token_of(reset_link)}")
    left_the_address_bar(confirm, REVOKE)
    done = await portal.client.post(REVOKE, data={"csrf_token": csrf_of(await confirm.text())})
    assert "The link is cancelled" in await done.text()
    assert (await open_link(portal.client, reset_link)).status == 400


@pytest.mark.parametrize("outcome", ["valid", "used", "revoked", "expired", "forged", "garbage"])
async def test_every_page_reached_with_a_token_moves_it_out_first(
    portal: Portal, outcome: str
) -> None:
    mail = await a_reset_mail(portal)
    reset_link, revoke_link = reset_link_from(mail), revoke_link_from(mail)
    if outcome == "used":
        await open_link(portal.client, reset_link)
        assert (await choose_password(portal.client, NEW_PASSWORD)).status == 200
    elif outcome == "revoked":
        await portal.client.delete("/api/reset-password", json={"token": token_of(revoke_link)})
    elif outcome == "expired":
        portal.clock.advance(301)
    for link in (reset_link, revoke_link):
        token = token_of(link)
        if outcome == "forged":
            link = link.replace(token, token[:-4] + "AAAA")
        elif outcome == "garbage":
            link = link.replace(token, "not a token; Path=/")
        portal.client.session.cookie_jar.clear()
        response = await open_link(portal.client, link)
        path = "/reset-password/step2" if "step2" in link else REVOKE
        left_the_address_bar(response, path)
        page = await response.text()
        assert token not in page and token_of(link) not in page
        assert response.status == (200 if outcome == "valid" else 400)
        assert (INVALID in page) == (outcome != "valid")
