"""John confirms his identity with a mailed one-time code in headless Chromium, against the
portal process (`python -m portal serve`), in light and dark, on a desktop and a phone; the code
is read from the mail the portal wrote."""

from __future__ import annotations

import email.message
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import (
    RunningPortal,
    Watched,
    code_in,
    run_portal,
    sign_in,
    wait_for_health,
    watched_page,
)

# The widths of a desktop window and of a phone (iPhone SE's CSS pixels).
SIZES = {"desktop": (1280, 800), "phone": (375, 667)}


@pytest.fixture
def auto_theme_portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    """Run the portal process with theme auto: the browser's colour scheme picks the theme."""
    with run_portal(tmp_path, users_file, {"theme": "auto"}) as running:
        yield running


def revoke_path_in(mail: email.message.EmailMessage) -> str:
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    match = re.search(r'id="revoke-link" href="http://[^/]+([^"]+)"', str(html.get_content()))
    assert match, "no revoke link in the mail"
    return match.group(1).replace("&amp;", "&")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", list(SIZES))
async def test_john_elevates_his_session_with_the_mailed_code(
    auto_theme_portal: RunningPortal, browser: Browser, tmp_path: Path, scheme: str, device: str
) -> None:
    portal = auto_theme_portal
    await wait_for_health(portal.url, portal.process, portal.log_file)
    width, height = SIZES[device]
    async with watched_page(
        browser,
        viewport={"width": width, "height": height},
        color_scheme=scheme,
    ) as watched:
        await _story(portal, watched, tmp_path / f"{scheme}-{device}", width)


async def _story(portal: RunningPortal, watched: Watched, shots: Path, width: int) -> None:
    page = watched.page
    shots.mkdir(parents=True, exist_ok=True)
    await sign_in(page, portal)

    await page.goto(f"{portal.url}/settings/elevate?next=/%3Fback%3D1")
    await expect(page.locator("h1")).to_have_text("Confirm your identity")
    card = await page.locator("main").bounding_box()
    assert card is not None and card["x"] >= 0 and card["x"] + card["width"] <= width
    await page.screenshot(path=shots / "elevate.png", full_page=True)
    await page.click("#send-code")
    await expect(page.get_by_label("One-time code")).to_be_visible()
    assert await page.get_by_label("One-time code").get_attribute("autocomplete") == (
        "one-time-code"
    )
    mail = (await portal.wait_for_mails(1))[-1]
    await page.screenshot(path=shots / "elevate-code.png", full_page=True)

    await page.get_by_label("One-time code").fill("WRONG234")
    await page.click("#check-code")
    await expect(page.locator("#error-summary")).to_be_visible()
    await page.screenshot(path=shots / "elevate-code-refused.png", full_page=True)

    await page.get_by_label("One-time code").fill(code_in(mail))
    await page.click("#check-code")
    await expect(page).to_have_url(f"{portal.url}/?back=1")
    state = await (await page.request.get(f"{portal.url}/api/user/session/elevation")).json()
    assert state["data"]["elevated"] is True

    await page.goto(f"{portal.url}{revoke_path_in(mail)}")
    await page.screenshot(path=shots / "revoke.png", full_page=True)
    await page.click("#revoke")
    await expect(page.locator("#revoke-invalid")).to_be_visible()  # the code was used already
    await page.screenshot(path=shots / "revoke-used.png", full_page=True)
    # The refused code (401) and the used code's revoke page (400) answer with their status on
    # purpose; Chromium logs those as failed loads. Nothing else may show up.
    expected = ("status of 401", "status of 400")
    assert [p for p in watched.problems if not any(e in p for e in expected)] == []
