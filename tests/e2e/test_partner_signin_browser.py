"""John follows a partner's signed link into the portal, in headless Chromium, against the portal
process: the link is on another site (a cross-site navigation, as from the partner's page), the
token leaves the address bar, and only pressing Continue signs him in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import (
    RunningPortal,
    ServeWebmail,
    Watched,
    run_portal,
    wait_for_health,
)
from tests.integration.node import run_node

SECRET = "partner-shared-secret-" + "s" * 20
ISSUER = "https://shop.example.net"
MINT = """
const jwt = require("jsonwebtoken");
const input = JSON.parse(require("fs").readFileSync(0));
console.log(JSON.stringify(jwt.sign({}, input.secret, {
  algorithm: "HS256", expiresIn: 60, issuer: input.iss, audience: input.aud,
  subject: "john", jwtid: input.jti,
})));
"""


@pytest.fixture
async def portal(tmp_path: Path, users_file: Path) -> AsyncIterator[RunningPortal]:
    partner = {"name": "Shop", "issuer": ISSUER, "algorithms": ["HS256"], "secret": SECRET}
    with run_portal(tmp_path, users_file, {"trusted_issuers": [partner]}) as running:
        await wait_for_health(running.url, running.process, running.log_file)
        yield running


def partner_link(portal: RunningPortal, jti: str) -> tuple[str, str]:
    """Mint a token as the Node partner does (real time) and return (token, link)."""
    data = {"secret": SECRET, "iss": ISSUER, "aud": portal.url, "jti": jti}
    token: str = run_node(MINT, data)
    return token, f"{portal.url}/sso/jwt?token={token}&rd={portal.url}/"


async def test_john_follows_a_partner_link_and_confirms_before_he_is_signed_in(
    portal: RunningPortal, webmail: ServeWebmail, watched: Watched
) -> None:
    page = watched.page
    token, link = partner_link(portal, "browser-1")

    await page.goto(await webmail(link))
    await page.click("#go")
    await page.wait_for_url(f"{portal.url}/sso/jwt?rd=**")

    assert token not in page.url
    await expect(page.locator("#partner-confirm")).to_contain_text("Continue as John Doe (john)")
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "portal_sso_jwt"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Lax", "/sso/jwt")
    names = {c["name"] for c in await page.context.cookies()}
    assert "portal_session" not in names, "opening the link signs nobody in"

    await page.click("#partner-continue")
    await page.wait_for_url(f"{portal.url}/")
    await expect(page.locator("#signed-in")).to_contain_text("John Doe")
    assert "portal_sso_jwt" not in {c["name"] for c in await page.context.cookies()}

    # The same link again: used up, one refusal, and the token still leaves the address bar.
    response = await page.goto(link)
    assert response is not None and response.status == 401
    await expect(page.locator("#partner-refused")).to_be_visible()
    assert token not in page.url
    assert token not in portal.log()
    failed = "Failed to load resource: the server responded with a status of 401"
    assert [p for p in watched.problems if failed not in p] == []
