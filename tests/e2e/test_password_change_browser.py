"""John changes his password while signed in, in headless Chromium against the portal process:
the page asks for the mailed code first, refuses a wrong current password at the top and next to
the field, then changes it; light and dark, desktop and phone, and axe-core finds no violation
on any state (tests/e2e/test_accessibility.py's axe-core, injected into the page)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.e2e.conftest import (
    RunningPortal,
    Watched,
    elevate,
    sign_in,
    wait_for_health,
    watched_page,
)
from tests.e2e.test_accessibility import AXE
from tests.e2e.test_elevation_browser import SIZES, auto_theme_portal  # noqa: F401

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"


async def axe_violations(page: Page, state: str) -> list[str]:
    """Run axe-core on the page as shown; return its violations, each naming the state."""
    await page.add_script_tag(path=AXE)
    results = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{state}: {v['id']} ({v['impact']}): {v['help']} at "
        f"{json.dumps([n['target'] for n in v['nodes']])}"
        for v in results["violations"]
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", list(SIZES))
async def test_john_changes_his_password_on_the_settings_page(
    auto_theme_portal: RunningPortal,  # noqa: F811
    browser: Browser,
    tmp_path: Path,
    scheme: str,
    device: str,
) -> None:
    assert AXE.is_file(), f"axe-core is missing at {AXE}: `make test` installs it with npm"
    portal = auto_theme_portal
    await wait_for_health(portal.url, portal.process, portal.log_file)
    width, height = SIZES[device]
    async with watched_page(
        browser,
        viewport={"width": width, "height": height},
        color_scheme=scheme,
        bypass_csp=True,  # axe-core is injected as an inline script
    ) as watched:
        await _story(portal, watched, tmp_path / f"{scheme}-{device}", width)


async def _story(portal: RunningPortal, watched: Watched, shots: Path, width: int) -> None:
    page = watched.page
    shots.mkdir(parents=True, exist_ok=True)
    await sign_in(page, portal)
    await page.goto(f"{portal.url}/")
    await page.click("#change-own-password")

    # Not elevated yet: the code first, then back to the form.
    await elevate(page, portal)
    await expect(page).to_have_url(f"{portal.url}/settings/password")
    await expect(page.locator("h1")).to_have_text("Change your password")
    card = await page.locator("main").bounding_box()
    assert card is not None and card["x"] >= 0 and card["x"] + card["width"] <= width
    await page.screenshot(path=shots / "password.png", full_page=True)
    found = await axe_violations(page, "the form")

    await page.get_by_label("Current password").fill("not-my-password")
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("New password again").fill(NEW_PASSWORD)
    await page.click("#change-password")
    await expect(page.locator("#password-change-errors")).to_contain_text(
        "Your current password is not correct."
    )
    await expect(page.locator("#current-password-error")).to_be_visible()
    await page.screenshot(path=shots / "password-wrong-current.png", full_page=True)
    found += await axe_violations(page, "the wrong current password")

    await page.get_by_label("Current password").fill("password")
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("New password again").fill(NEW_PASSWORD)
    await page.click("#change-password")
    await expect(page).to_have_url(f"{portal.url}/settings/password/changed")
    await expect(page.locator("#password-changed")).to_be_visible()
    await page.screenshot(path=shots / "password-changed.png", full_page=True)
    found += await axe_violations(page, "the changed page")
    assert found == [], "\n".join(found)

    await page.goto(f"{portal.url}/")
    await expect(page.locator("#signed-in")).to_be_visible()  # this session stays
    changed = (await portal.wait_for_mails(2))[-1]
    assert changed["Subject"].endswith("Your password was changed")
    # The wrong current password answers 401 on purpose; Chromium logs it as a failed load.
    assert [p for p in watched.problems if "status of 401" not in p] == []
