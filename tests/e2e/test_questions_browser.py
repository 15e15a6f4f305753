"""John sets up security questions and answers them at reset, in headless Chromium, against the
portal process (`python -m portal serve`) with the questions on and argon2id at its defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from portal.config import DEFAULT_QUESTIONS
from tests.e2e.conftest import RunningPortal, Watched, run_portal, sign_in, wait_for_health

ANSWERS = ["Mister Fluffy", "The Beatles", "Pancakes with syrup"]


@pytest.fixture
def questions_portal(tmp_path: Path, users_file: Path) -> Iterator[RunningPortal]:
    """Run the portal process with security questions on."""
    extra = {"identity_validation": {"reset_password": {"security_questions": {"enabled": True}}}}
    with run_portal(tmp_path, users_file, extra) as running:
        yield running


async def test_john_sets_up_his_questions_then_answers_them_to_get_a_link(
    questions_portal: RunningPortal, watched: Watched, tmp_path: Path
) -> None:
    portal, page = questions_portal, watched.page
    await wait_for_health(portal.url, portal.process, portal.log_file)

    # Signed in, he finds the questions from the signed-in page.
    await sign_in(page, portal)
    await page.goto(f"{portal.url}/")
    await page.click("#security-questions")
    await expect(page.locator("#questions-status")).to_contain_text("not set up")
    chosen = []
    for i, text in enumerate(ANSWERS):
        chosen.append(await page.locator(f"input[name=question_{i}]:checked").input_value())
        await page.get_by_label(f"Answer {i + 1}").fill(text)
    await page.get_by_label("Current password").fill("password")
    await page.click("#save-questions")
    await expect(page.locator("#questions-saved")).to_be_visible()
    await expect(page.locator("#questions-status")).to_contain_text("Set up on")
    await page.screenshot(path=tmp_path / "questions-saved.png", full_page=True)
    await page.goto(f"{portal.url}/logout")

    # At reset he is asked two of them, and answers in his own case.
    await page.goto(f"{portal.url}/reset-password/step1")
    await page.fill("#username", "john")
    await page.click("#send-link")
    await expect(page.locator("#no-questions-hint")).to_be_visible()
    labels = page.locator("label.question")
    assert await labels.count() == 2
    for i in range(2):
        question = (await labels.nth(i).inner_text()).strip()
        field = page.get_by_label(question)
        assert await field.get_attribute("autocomplete") == "off"
        await field.fill(ANSWERS[chosen.index(question)].lower())
    await page.screenshot(path=tmp_path / "questions-asked.png", full_page=True)
    await page.click("#send-answers")
    await expect(page.locator("#reset-sent")).to_contain_text("If your answers were right")

    mails = await portal.wait_for_mails(1)
    assert mails[0]["To"] == "john.doe@authelia.com"
    assert watched.problems == []


# The widths of a desktop window and of a phone (iPhone SE's CSS pixels).
WIDTHS = {"desktop": (1280, 800), "phone": (375, 667)}


@pytest.mark.parametrize("device", list(WIDTHS))
async def test_every_question_on_the_settings_form_is_shown_in_full(
    questions_portal: RunningPortal, watched: Watched, tmp_path: Path, device: str
) -> None:
    portal, page = questions_portal, watched.page
    await wait_for_health(portal.url, portal.process, portal.log_file)
    width, height = WIDTHS[device]
    await page.set_viewport_size({"width": width, "height": height})
    await sign_in(page, portal)
    await page.goto(f"{portal.url}/settings/security-questions")
    card = await page.locator("main").bounding_box()
    assert card is not None and card["x"] >= 0 and card["x"] + card["width"] <= width
    for i in range(3):
        for question in DEFAULT_QUESTIONS:
            shown = page.locator(f"#question_{i}").get_by_text(question, exact=True)
            await expect(shown).to_be_visible()
            box = await shown.bounding_box()
            assert box is not None
            assert card["x"] <= box["x"] and box["x"] + box["width"] <= card["x"] + card["width"]
            clipped = await shown.evaluate("e => e.scrollWidth > e.clientWidth")
            assert not clipped, question
    await page.screenshot(path=tmp_path / f"settings-{device}.png", full_page=True)
    assert watched.problems == []
