"""John, who has a TOTP device, resets his password in headless Chromium against the portal
process: step 2 asks for his code in the same form (ASVS 5.0 6.4.3), refuses a missing and a wrong
one while the link stays usable, and takes the right one; in light and dark, on a desktop and a
phone. Screenshots land in the test's directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from portal.storage.base import TotpConfiguration
from portal.storage.sqlite import SqliteStorage
from portal.totp import TotpParameters, code_at
from tests.conftest import ENCRYPTION_KEY
from tests.e2e.conftest import (
    RunningPortal,
    Watched,
    reset_link_from,
    run_portal,
    wait_for_health,
    watched_page,
)
from tests.e2e.test_accessibility import AXE, VARIANTS, WIDTHS, Walk, violations
from tests.e2e.test_reset_browser import hash_matches, stored_hash

SIZES = {"desktop": (1280, 800), "phone": (375, 667)}
SECRET = b"johns-authenticator-app-secret-0123456789"
NEW_PASSWORD = "Tr0ub4dor&3-horse-battery"


@pytest.fixture
def auto_theme_portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    """Run the portal process with theme auto: the browser's colour scheme picks the theme."""
    with run_portal(tmp_path, users_file, {"theme": "auto"}) as running:
        yield running


async def register_john(database: Path) -> None:
    """Save john's TOTP device in the portal's database, as registration would."""
    storage = SqliteStorage(database, encryption_key=ENCRYPTION_KEY)
    await storage.startup_check()
    try:
        await storage.save_totp_configuration(
            TotpConfiguration("john", time.time(), None, "Portal", "SHA1", 6, 30, secret=SECRET)
        )
    finally:
        await storage.close()


async def johns_device(database: Path) -> TotpConfiguration | None:
    storage = SqliteStorage(database, encryption_key=ENCRYPTION_KEY)
    await storage.startup_check()
    try:
        return await storage.get_totp_configuration("john")
    finally:
        await storage.close()


async def send(watched: Watched, expected: int) -> None:
    """Click "Set the new password"; the POST must answer `expected`."""
    async with watched.page.expect_response(lambda r: r.request.method == "POST") as answer:
        await watched.page.click("#set-password")
    assert (await answer.value).status == expected


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", list(SIZES))
async def test_john_resets_with_his_code(
    auto_theme_portal: RunningPortal, browser: Browser, tmp_path: Path, scheme: str, device: str
) -> None:
    portal = auto_theme_portal
    await wait_for_health(portal.url, portal.process, portal.log_file)
    database = tmp_path / "db.sqlite3"
    await register_john(database)
    width, height = SIZES[device]
    shots = tmp_path / f"{scheme}-{device}"
    shots.mkdir()
    async with watched_page(
        browser, viewport={"width": width, "height": height}, color_scheme=scheme
    ) as watched:
        page = watched.page
        await page.goto(f"{portal.url}/reset-password/step1")
        await page.fill("#username", "john")
        await page.click("#send-link")
        [mail] = await portal.wait_for_mails(1)
        await page.goto(reset_link_from(mail))

        field = page.get_by_label("Code from your authenticator app")
        await expect(field).to_be_visible()
        assert await field.get_attribute("autocomplete") == "one-time-code"
        assert await field.get_attribute("inputmode") == "numeric"
        box = await page.locator("main").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        await page.screenshot(path=shots / "step2.png", full_page=True)

        await page.fill("#password", NEW_PASSWORD)
        await page.fill("#password_confirm", NEW_PASSWORD)
        await send(watched, 400)
        await expect(page.locator("#step2-errors")).to_contain_text(
            "Enter the code from your authenticator app."
        )
        assert await field.get_attribute("aria-invalid") == "true"
        await page.screenshot(path=shots / "step2-no-code.png", full_page=True)

        now = time.time()
        near = {code_at(SECRET, TotpParameters(), now + s * 30) for s in (-1, 0, 1, 2)}
        wrong = next(c for c in ("000000", "111111", "222222") if c not in near)
        await page.fill("#password", NEW_PASSWORD)
        await page.fill("#password_confirm", NEW_PASSWORD)
        await field.fill(wrong)
        await send(watched, 400)
        await expect(page.locator("#totp-code-error")).to_have_text("Incorrect code.")
        await page.screenshot(path=shots / "step2-wrong-code.png", full_page=True)
        # The summary's link takes the user to the field.
        await page.click("#step2-errors a")
        await expect(field).to_be_focused()

        await page.fill("#password", NEW_PASSWORD)
        await page.fill("#password_confirm", NEW_PASSWORD)
        await field.fill(code_at(SECRET, TotpParameters(), time.time()))
        await send(watched, 303)
        await expect(page.locator("#reset-done")).to_be_visible()
        await page.screenshot(path=shots / "done.png", full_page=True)
        assert "portal_session" not in {c["name"] for c in await page.context.cookies()}

        # The refused submissions answer 400 on purpose; Chromium logs those as failed loads.
        assert [p for p in watched.problems if "status of 400" not in p] == []
    assert hash_matches(NEW_PASSWORD, stored_hash(portal.users_file, "john"))
    assert await johns_device(database) is not None


async def test_the_code_field_and_its_errors_have_no_axe_violation(
    portal: RunningPortal, browser: Browser, tmp_path: Path
) -> None:
    """Step 2 with the code field, refused without a code and with a wrong one: axe-core (see
    tests/e2e/test_accessibility.py) in every theme and width."""
    assert AXE.is_file(), f"axe-core is missing at {AXE}: `make test` installs it with npm"
    await register_john(tmp_path / "db.sqlite3")
    context = await browser.new_context()
    try:
        page = await context.new_page()
        walk = Walk(page, portal)
        await page.goto(f"{portal.url}/reset-password/step1")
        await page.fill("#username", "john")
        await page.click("#send-link")
        [mail] = await portal.wait_for_mails(1)
        await walk.goto("step 2 with a code field", reset_link_from(mail))
        await page.fill("#password", NEW_PASSWORD)
        await page.fill("#password_confirm", NEW_PASSWORD)
        await walk.click("step 2: no code", "#set-password")
        await page.fill("#totp_code", "12")
        await walk.click("step 2: wrong code", "#set-password")
        assert [s.status for s in walk.states] == [200, 400, 400]
    finally:
        await context.close()
    found: list[str] = []
    for theme, scheme in VARIANTS:
        for device in WIDTHS:
            found += await violations(browser, walk.states, theme, scheme, device)
    assert found == [], "\n".join(found)
