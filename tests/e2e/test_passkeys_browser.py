"""Passkeys in headless Chromium with the DevTools virtual authenticator (issue 16), against the
portal process on http://localhost (a secure context, and a domain a relying-party id may be).

John elevates his session with the mailed code and registers a passkey; he signs in with his
password and the passkey and reaches a two_factor site; a removed passkey is refused; an
authenticator whose counter went back (a clone) is refused; a reset for a user with only a
passkey asks for it. Pages are screenshot (PORTAL_SCREENSHOTS=dir keeps them) and no page shows
a console error or a CSP violation.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, CDPSession, Page, expect

from tests.e2e.conftest import (
    RunningPortal,
    Watched,
    spawn_portal,
    stop,
    wait_for_health,
    watched_page,
    write_portal_config,
)
from tests.e2e.test_elevation_browser import code_in
from tests.integration.process import free_port

SETTINGS = "/settings/passkeys"
PROTECTED = "https://secure.example.com/"


def portal_on_localhost(directory: Path, users_file: Path, **extra: Any) -> Iterator[RunningPortal]:
    port = free_port()
    url = f"http://localhost:{port}"
    sections = {
        "session": {"cookies": [{"domain": "localhost", "authelia_url": url}]},
        "access_control": {
            "default_policy": "one_factor",
            "rules": [{"domain": "secure.example.com", "policy": "two_factor"}],
        },
        **extra,
    }
    config = write_portal_config(directory, port, users_file, sections)
    log_file = directory / "portal.log"
    process = spawn_portal(directory, config, log_file)
    try:
        yield RunningPortal(
            url=url,
            process=process,
            users_file=users_file,
            mail_file=directory / "mail" / "notification.txt",
            log_file=log_file,
        )
    finally:
        stop(process)


@pytest.fixture
def portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    yield from portal_on_localhost(tmp_path, users_file)


@dataclass
class Tab:
    """A browser tab with a virtual authenticator attached."""

    watched: Watched
    cdp: CDPSession
    authenticator: str
    portal: RunningPortal
    shots: Path

    @property
    def page(self) -> Page:
        return self.watched.page

    async def shot(self, name: str) -> None:
        for theme in ("light", "dark"):
            await self.page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
            await self.page.screenshot(path=self.shots / f"{name}--{theme}.png", full_page=True)

    async def credentials(self) -> list[dict[str, Any]]:
        found = await self.cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator}
        )
        result: list[dict[str, Any]] = found["credentials"]
        return result


@pytest.fixture(params=["desktop", "phone"])
async def tab(
    request: pytest.FixtureRequest, portal: RunningPortal, browser: Browser, tmp_path: Path
) -> AsyncIterator[Tab]:
    await wait_for_health(portal.url, portal.process, portal.log_file)
    width, height = (1280, 900) if request.param == "desktop" else (390, 844)
    shots = Path(os.environ.get("PORTAL_SCREENSHOTS") or tmp_path) / f"passkeys-{request.param}"
    shots.mkdir(parents=True, exist_ok=True)
    async with watched_page(browser, viewport={"width": width, "height": height}) as watched:
        cdp = await watched.page.context.new_cdp_session(watched.page)
        await cdp.send("WebAuthn.enable")
        added = await cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        yield Tab(watched, cdp, added["authenticatorId"], portal, shots)
        assert watched.problems == []


async def sign_in(tab: Tab, rd: str = "") -> None:
    page = tab.page
    await page.goto(f"{tab.portal.url}/" + (f"?rd={rd}" if rd else ""))
    await page.fill("#username", "john")
    await page.fill("#password", "password")
    await page.click("#sign-in-button")


async def register_passkey(tab: Tab, name: str = "My laptop") -> None:
    page, portal = tab.page, tab.portal
    await sign_in(tab)
    await page.goto(f"{portal.url}{SETTINGS}")
    await expect(page.locator("h1")).to_have_text("Confirm your identity")
    before = len(portal.mails())
    await page.click("#send-code")
    mail = (await portal.wait_for_mails(before + 1))[-1]
    await page.fill("#otc", code_in(mail))
    async with page.expect_navigation():
        await page.click("#check-code")
    assert page.url == f"{portal.url}{SETTINGS}"
    await expect(page.locator("#passkeys-none")).to_be_visible()
    await tab.shot("settings-empty")
    await page.fill("#passkey-description", name)
    async with page.expect_navigation(url=f"{portal.url}{SETTINGS}/added"):
        await page.click("#add-passkey")
    await expect(page.locator("#passkeys-status")).to_have_text("Your passkey is added.")
    await expect(page.locator("#passkeys .passkey-name")).to_have_text([name])
    await tab.shot("settings-added")


async def test_john_registers_a_passkey_and_is_mailed(tab: Tab) -> None:
    await register_passkey(tab)
    assert len(await tab.credentials()) == 1
    mails = tab.portal.mails()
    assert "A second factor was added" in str(mails[-1]["Subject"])
    text = mails[-1].get_body(("plain",))
    assert text is not None and "a passkey or security key" in text.get_content()
