"""John sets up a one-time password app in headless Chromium, against the portal process: he
elevates his session with the mailed code, reads the key from the page, types the code pyotp
computes from it, then removes the app. Every state is looked at in the light, dark and grey
themes on a desktop and a phone (screenshots; PORTAL_SCREENSHOTS=dir keeps them), no page shows
an error or a CSP violation, and axe-core finds no violation in any of them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Browser, Page, Response, expect

from tests.e2e.conftest import (
    RunningPortal,
    elevate,
    run_portal,
    sign_in,
    wait_for_health,
    watched_page,
)
from tests.e2e.test_accessibility import AXE, VARIANTS, WIDTHS, State, violations

PAGE = "/settings/one-time-password"
THEMES = ("light", "dark", "grey")


@pytest.fixture
def portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    with run_portal(tmp_path, users_file, {"organization_name": "Example Inc."}) as running:
        yield running


class Story:
    """One browser tab going through the pages, keeping each state and its screenshots."""

    def __init__(self, page: Page, shots: Path) -> None:
        self.page, self.shots = page, shots
        self.states: list[State] = []

    async def keep(self, name: str, response: Response | None) -> None:
        assert response is not None
        await self.page.wait_for_load_state()
        self.states.append(State(name, response.url, response.status, await response.text()))
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        for theme in THEMES:
            await self.page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
            await self.page.screenshot(path=self.shots / f"{slug}--{theme}.png", full_page=True)

    async def click(self, name: str, button: str) -> None:
        async with self.page.expect_navigation() as navigation:
            await self.page.click(button)
        await self.keep(name, await navigation.value)


@pytest.mark.parametrize("device", list(WIDTHS))
async def test_john_registers_and_removes_a_one_time_password_app(
    portal: RunningPortal, browser: Browser, tmp_path: Path, device: str
) -> None:
    await wait_for_health(portal.url, portal.process, portal.log_file)
    shots = Path(os.environ.get("PORTAL_SCREENSHOTS") or tmp_path) / f"totp-{device}"
    shots.mkdir(parents=True, exist_ok=True)
    width, height = WIDTHS[device]
    async with watched_page(browser, viewport={"width": width, "height": height}) as watched:
        page = watched.page
        story = Story(page, shots)
        await sign_in(page, portal)
        await page.goto(f"{portal.url}/")
        async with page.expect_navigation():
            await page.click("#one-time-password")  # the signed-in page links to the settings
        await story.keep("totp: not set up", await elevate(page, portal))
        assert page.url == f"{portal.url}{PAGE}"

        await story.click("totp: set up", "#start-totp")
        secret = await page.locator("#totp-secret").input_value()
        grouped = await page.locator("#totp-secret-grouped").inner_text()
        assert grouped.replace(" ", "") == secret
        qr = await page.locator("svg.qr").bounding_box()
        assert qr is not None and qr["width"] >= 150 and qr["x"] + qr["width"] <= width
        field = page.get_by_label("The 6-digit code your app shows")
        assert await field.get_attribute("autocomplete") == "one-time-code"
        assert await field.get_attribute("inputmode") == "numeric"

        right = pyotp.TOTP(secret).now()
        await field.fill(f"{(int(right) + 1) % 1_000_000:06d}")
        await story.click("totp: wrong code", "#confirm-totp")
        await expect(page.locator("#error-summary")).to_contain_text("Incorrect code.")
        await page.get_by_label("The 6-digit code your app shows").fill(pyotp.TOTP(secret).now())
        await story.click("totp: registered", "#confirm-totp")
        await expect(page.locator("#totp-registered")).to_be_visible()

        async with page.expect_navigation() as settings:
            await page.click("#totp-settings")
        await story.keep("totp: set up already", await settings.value)
        await story.click("totp: removed", "#remove-totp")
        await expect(page.locator("#totp-removed")).to_be_visible()
        # The wrong code's page is a 401 on purpose; Chromium logs any 4xx page as an error.
        assert [p for p in watched.problems if "status of 401" not in p] == []
        assert len(watched.problems) <= 1

    assert AXE.is_file(), f"axe-core is missing at {AXE}: `make test` installs it with npm"
    found: list[str] = []
    for theme, scheme in VARIANTS:
        found += await violations(browser, story.states, theme, scheme, device)
    assert found == [], "\n".join(found)
