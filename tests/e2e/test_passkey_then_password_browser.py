"""A passkey sign-in reaches a two_factor site through the password (Authelia 4.39's
/2fa/password), in headless Chromium with the DevTools virtual authenticator: John signs in with
his passkey alone, is asked for his password (not for a code, not for the passkey again), a wrong
one is refused on the page, the right one takes him to the site at two factors. axe-core checks
the pages on the way, the security settings list the passkey; no console error or CSP violation
is allowed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, expect

from tests.e2e.conftest import RunningPortal
from tests.e2e.test_passkeys_browser import (
    Tab,
    level,
    open_tab,
    portal_on_localhost,
    register_passkey,
    sign_out,
)


@pytest.fixture
async def app() -> AsyncIterator[str]:
    """A protected app on another loopback port (the browser really goes there: a route
    handler would not see the redirect); its address is under the cookie domain localhost."""

    async def protected(_: web.Request) -> web.Response:
        page = '<!doctype html><title>App</title><link rel="icon" href="data:,">'
        return web.Response(text=page + "<p>the protected app</p>", content_type="text/html")

    application = web.Application()
    application.router.add_get("/app", protected)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://localhost:{port}/app"
    await runner.cleanup()


@pytest.fixture
def portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    rules = {
        "default_policy": "one_factor",
        "rules": [{"domain": "localhost", "resources": ["^/app$"], "policy": "two_factor"}],
    }
    yield from portal_on_localhost(
        tmp_path, users_file, webauthn={"enable_passkey_login": True}, access_control=rules
    )


@pytest.fixture(params=["desktop", "phone"])
async def tab(
    request: pytest.FixtureRequest, portal: RunningPortal, browser: Browser, tmp_path: Path
) -> AsyncIterator[Tab]:
    base = Path(os.environ.get("PORTAL_SCREENSHOTS") or tmp_path)
    async with open_tab(
        browser, portal, base / f"passkey-password-{request.param}", request.param
    ) as opened:
        yield opened


async def test_after_a_passkey_sign_in_the_password_opens_a_two_factor_site(
    tab: Tab, app: str
) -> None:
    tab.axe = True
    page, url = tab.page, tab.portal.url
    await register_passkey(tab)
    await sign_out(tab)

    await page.goto(f"{url}/?rd={app}")
    async with page.expect_navigation(url=f"{url}/2fa/password?**"):
        await page.click("#passkey-login-button")
    assert await level(tab) == 1
    await expect(page.locator("h1")).to_have_text("Password")
    await expect(page.locator("#second-factor-hint")).to_contain_text("John Doe")
    await expect(page.locator("#password")).to_be_focused()
    await tab.shot("passkey-then-password")

    await page.fill("#password", "not-his-password")
    async with page.expect_navigation():
        await page.click("#verify-password-button")
    await expect(page.locator("#password-error")).to_have_text("Incorrect password.")
    await expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")
    await tab.shot("passkey-then-password-refused")
    problems = tab.watched.problems  # the refused form's 401 is expected here
    problems[:] = [p for p in problems if "status of 401" not in p]
    assert await level(tab) == 1

    await page.fill("#password", "password")
    async with page.expect_navigation(url=app):
        await page.click("#verify-password-button")
    await expect(page.locator("body")).to_have_text("the protected app")
    assert await level(tab) == 2
    # The security settings list the passkey, with when it was added and last used.
    await page.goto(f"{url}/settings")
    await expect(page.locator("#passkeys .passkey-name")).to_have_text(["My laptop"])
    await expect(page.locator("#passkeys li")).to_contain_text("Last used on")
    await tab.shot("settings-hub-with-a-passkey")
