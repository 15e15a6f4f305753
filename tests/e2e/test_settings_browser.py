"""John looks at his security settings in headless Chromium, signed in on a laptop and a phone,
and signs the phone out from the laptop; the page is shot in light and dark at desktop and
phone widths and axe-core finds no violation on it.

Screenshots go to tmp_path, or to $PORTAL_SCREENSHOTS when set (for a person to look at).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import (
    RunningPortal,
    Watched,
    run_portal,
    sign_in,
    wait_for_health,
    watched_page,
)
from tests.e2e.test_accessibility import AXE, WIDTHS, replay

PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)


@pytest.fixture
def settings_portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    """Run the portal process with security questions on (the page shows their state)."""
    extra = {"identity_validation": {"reset_password": {"security_questions": {"enabled": True}}}}
    with run_portal(tmp_path, users_file, extra) as running:
        yield running


async def axe_and_shots(browser: Browser, url: str, html: str, shots: Path) -> list[str]:
    """Replay the page as served in light and dark, at desktop and phone widths; shoot each and
    return axe-core's violations."""
    found: list[str] = []
    for theme in ("light", "dark"):
        for device, (width, height) in WIDTHS.items():
            context = await browser.new_context(
                viewport={"width": width, "height": height}, bypass_csp=True
            )
            try:
                page = await context.new_page()
                themed = html.replace('data-theme="light"', f'data-theme="{theme}"', 1)
                await page.route(url, replay(200, themed))
                await page.goto(url)
                await page.add_script_tag(path=AXE)
                results = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
                await page.screenshot(
                    path=shots / f"settings--{theme}-{device}.png", full_page=True
                )
                found += [
                    f"{theme} {device}: {v['id']} ({v['impact']}): {v['help']} at "
                    f"{json.dumps([n['target'] for n in v['nodes']])}"
                    for v in results["violations"]
                ]
            finally:
                await context.close()
    return found


async def test_john_signs_his_phone_out_from_the_settings_page(
    settings_portal: RunningPortal, browser: Browser, watched: Watched, tmp_path: Path
) -> None:
    portal, laptop = settings_portal, watched.page
    await wait_for_health(portal.url, portal.process, portal.log_file)
    shots = Path(os.environ.get("PORTAL_SCREENSHOTS") or tmp_path)
    async with watched_page(
        browser, user_agent=PHONE_UA, viewport={"width": 375, "height": 667}
    ) as phone:
        await sign_in(phone.page, portal)
        await sign_in(laptop, portal)

        # From the signed-in page to the settings: both sessions, this one marked.
        await laptop.goto(f"{portal.url}/")
        async with laptop.expect_navigation() as navigation:
            await laptop.click("#security-settings")
        served = await navigation.value
        assert served is not None and served.status == 200
        sessions = laptop.locator("li.session")
        await expect(sessions).to_have_count(2)
        this = sessions.filter(has=laptop.locator("#this-session"))
        other = sessions.filter(has_text="Chrome on Android")
        await expect(this).to_contain_text("Chrome on Linux")
        await expect(other).to_have_count(1)
        await expect(other.locator("#this-session")).to_have_count(0)
        await expect(laptop.locator("#totp-state")).to_have_text("Not set up.")
        await expect(laptop.locator("#questions-state")).to_have_text("Not set up.")
        html = await served.text()
        problems = await axe_and_shots(browser, served.url, html, shots)
        assert problems == [], "\n".join(problems)

        # He signs the phone out, without JavaScript's help: a form and a redirect.
        async with laptop.expect_navigation():
            await other.get_by_role("button", name="Sign out this session").click()
        await expect(laptop.locator("#session-ended")).to_be_visible()
        await expect(laptop.locator("li.session")).to_have_count(1)
        await expect(laptop.locator("#no-other-sessions")).to_be_visible()
        await laptop.screenshot(path=shots / "settings--after-sign-out.png", full_page=True)

        await phone.page.goto(f"{portal.url}/settings")
        await expect(phone.page.locator("#username")).to_be_visible()  # back to sign in
        assert phone.problems == []
    assert watched.problems == []
