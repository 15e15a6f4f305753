"""A German and a French user reset their password in headless Chromium, choosing the language
with the switch (plain links, no JavaScript needed). Step 1 and step 2 are screenshot
(PORTAL_SCREENSHOTS=dir keeps them as languages-de/01-step1.png, 02-step2.png, ...)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import RunningPortal, Watched, reset_link_from


async def screenshot(watched: Watched, directory: Path, name: str) -> None:
    """Save a full-page screenshot of the page as it is now."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{len(watched.screenshots) + 1:02d}-{name}.png"
    await watched.page.screenshot(path=path, full_page=True)
    watched.screenshots.append(path)


@pytest.mark.parametrize(
    ("code", "name", "step1", "sent", "step2", "mail_subject"),
    [
        (
            "de",
            "Deutsch",
            "Passwort zurücksetzen",
            "Sehen Sie in Ihre E-Mails",
            "Neues Passwort wählen",
            "Passwort zurücksetzen",
        ),
        (
            "fr",
            "Français",
            "Réinitialiser votre mot de passe",
            "Consultez vos e-mails",
            "Choisir un nouveau mot de passe",
            "Réinitialiser votre mot de passe",
        ),
    ],
)
async def test_a_user_switches_language_and_resets_in_it(
    portal: RunningPortal,
    watched: Watched,
    tmp_path: Path,
    code: str,
    name: str,
    step1: str,
    sent: str,
    step2: str,
    mail_subject: str,
) -> None:
    page = watched.page
    shots = Path(os.environ.get("PORTAL_SCREENSHOTS") or tmp_path) / f"languages-{code}"
    await page.goto(f"{portal.url}/reset-password/step1")
    await expect(page.locator("html")).to_have_attribute("lang", "en")

    # The switch: a link in the language's own name, back to the same page.
    await page.click(f'nav.languages a[hreflang="{code}"]')
    await page.wait_for_url(f"{portal.url}/reset-password/step1")
    await expect(page.locator("html")).to_have_attribute("lang", code)
    await expect(page.locator("h1")).to_have_text(step1)
    current = page.locator('nav.languages a[aria-current="true"]')
    await expect(current).to_have_text(name)
    await expect(current).to_have_attribute("lang", code)
    await screenshot(watched, shots, "step1")

    await page.fill("#username", "john")
    await page.click("#send-link")
    await expect(page.locator("h1")).to_have_text(sent)

    # The mail speaks the language of the request, and so does step 2.
    [mail] = await portal.wait_for_mails(1)
    assert mail_subject in mail["Subject"]
    await page.goto(reset_link_from(mail))
    await page.wait_for_url(f"{portal.url}/reset-password/step2")
    await expect(page.locator("html")).to_have_attribute("lang", code)
    await expect(page.locator("h1")).to_have_text(step2)
    await screenshot(watched, shots, "step2")
    assert watched.problems == []
