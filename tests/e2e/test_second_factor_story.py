"""Issue 15 end to end in headless Chromium, through the real nginx with the shipped snippets:
john signs in with his password, confirms his identity with the code mailed to the real SMTP
server, sets up a one-time password app by reading the key from the page (pyotp computes the
code), signs out, signs in again with his password and then his code, and reaches a
`two_factor` page of the protected app as himself. Every new page is kept as a screenshot in the
light and dark themes on a desktop and a phone (PORTAL_SCREENSHOTS=dir keeps them); no page shows
a script error or a CSP violation."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import code_in, launched_chromium, watched_page
from tests.e2e.test_accessibility import WIDTHS
from tests.integration.nginx import APP_HOST, PORTAL_HOST
from tests.integration.test_nginx_portal import (
    JOHN,
    PASSWORD,
    Site,
    StartSite,
    nginx_ca,  # noqa: F401  (a fixture start_site uses)
    start_site,  # noqa: F401  (a fixture)
)

THEMES = ("light", "dark")
# Chromium resolves the example names to the loopback nginx listens on.
RESOLVE = f"--host-resolver-rules=MAP {PORTAL_HOST} 127.0.0.1, MAP {APP_HOST} 127.0.0.1"


async def shoot(page: Page, shots: Path, name: str) -> None:
    """Screenshot the page as it stands in each theme."""
    await page.wait_for_load_state()
    for theme in THEMES:
        await page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
        await page.screenshot(path=shots / f"{name}--{theme}.png", full_page=True)


@pytest.fixture
async def nginx_site(start_site: StartSite) -> Site:  # noqa: F811  (the imported fixture)
    """nginx with the shipped snippets in front of the portal, the app and the SMTP server."""
    return await start_site()


async def sign_in(page: Page) -> None:
    await page.fill("#username", "john")
    await page.fill("#password", PASSWORD)
    async with page.expect_navigation():
        await page.click("#sign-in-button")


@pytest.mark.parametrize("device", list(WIDTHS))
async def test_john_sets_up_his_app_and_reaches_a_two_factor_site_through_nginx(
    nginx_site: Site, tmp_path: Path, device: str
) -> None:
    site = nginx_site
    shots = Path(os.environ.get("PORTAL_SCREENSHOTS") or tmp_path) / f"story15-{device}"
    shots.mkdir(parents=True, exist_ok=True)
    width, height = WIDTHS[device]
    vault = site.app_url("/secure/vault")
    async with (
        launched_chromium(RESOLVE) as browser,
        watched_page(
            browser, viewport={"width": width, "height": height}, ignore_https_errors=True
        ) as watched,
    ):
        page = watched.page
        # Without a device, the two_factor page is out of reach and john is told to register.
        await page.goto(vault)
        assert page.url.startswith(site.portal_url("/"))
        await sign_in(page)
        await expect(page.locator("#second-factor-missing")).to_be_visible()
        await shoot(page, shots, "2fa-register-first")
        assert site.app.seen == []

        async with page.expect_navigation():
            await page.click("#register-totp")
        await expect(page.locator("h1")).to_have_text("Confirm your identity")
        await shoot(page, shots, "elevate")
        sent = len(site.smtp.deliveries)
        async with page.expect_navigation():
            await page.click("#send-code")
        await shoot(page, shots, "elevate-code")
        mail = await site.mail(sent + 1)
        await page.fill("#otc", "WRONG234")
        async with page.expect_navigation():
            await page.click("#check-code")
        await expect(page.locator("#error-summary")).to_be_visible()
        await shoot(page, shots, "elevate-code-refused")
        await page.fill("#otc", code_in(mail))
        async with page.expect_navigation():
            await page.click("#check-code")
        assert page.url == site.portal_url("/settings/one-time-password")
        await shoot(page, shots, "totp-not-set-up")

        async with page.expect_navigation():
            await page.click("#start-totp")
        await shoot(page, shots, "totp-set-up")
        # The page is taller than the window: the card keeps a margin above and below.
        top, bottom, full = await page.evaluate(
            "[main.getBoundingClientRect().top + scrollY, main.getBoundingClientRect().bottom"
            " + scrollY, document.documentElement.scrollHeight]"
        )
        assert top >= 8 and bottom <= full - 8, (top, bottom, full)
        secret = await page.locator("#totp-secret").input_value()
        await page.fill("#token", pyotp.TOTP(secret).now())
        async with page.expect_navigation():
            await page.click("#confirm-totp")
        await expect(page.locator("#totp-registered")).to_be_visible()
        await shoot(page, shots, "totp-registered")

        await page.goto(site.portal_url("/logout"))
        await page.goto(vault)
        await sign_in(page)
        assert page.url.startswith(site.portal_url("/2fa/one-time-password"))
        await expect(page.get_by_label("Code from your authenticator app")).to_be_focused()
        await shoot(page, shots, "2fa-code")
        right = pyotp.TOTP(secret)
        wrong = f"{(int(right.now()) + 1) % 1_000_000:06d}"
        await page.fill("#token", wrong)
        async with page.expect_navigation():
            await page.click("#verify-button")
        await expect(page.locator("#totp-error")).to_have_text("Incorrect code.")
        await shoot(page, shots, "2fa-wrong-code")
        assert site.app.seen == []

        # The code used at registration may still be current: the next one is never a replay.
        await page.fill("#token", right.at(time.time() + 30))
        async with page.expect_navigation():
            await page.click("#verify-button")
        assert page.url == vault
        echoed = await page.evaluate("JSON.parse(document.body.innerText)")
        assert echoed["path"] == "/secure/vault"
        assert echoed["remote"] == JOHN
        # The refused codes answer 401 on purpose; Chromium logs such loads as errors.
        assert [p for p in watched.problems if "status of 401" not in p] == []
    assert re.match(r"^[A-Z2-7]{32,}$", secret)
