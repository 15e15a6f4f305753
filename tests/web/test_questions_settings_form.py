"""The security-questions settings form shows every problem in one round and keeps what was
typed, never the password (issue 12)."""

from __future__ import annotations

import html
import re

import pytest

from portal.config import DEFAULT_QUESTIONS
from tests.web.conftest import Portal, StartPortal, follow_result, sign_in
from tests.web.test_reset_questions import JOHN, SETTINGS, questions_on, set_up

WRONG_PASSWORD = "Your current password is not correct."
TOO_SHORT = "Each answer needs 3 to 256 characters."
SAME_ANSWER = "Give a different answer to each question."


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    portal = await start_portal(**questions_on())
    assert (await sign_in(portal.client)).status == 302
    return portal


def field_value(page: str, field_id: str) -> str | None:
    """Return the value attribute of the input with this id (None if it has none)."""
    tag = re.search(rf'<input\b[^>]*\bid="{field_id}"[^>]*>', page)
    assert tag is not None, field_id
    value = re.search(r'\bvalue="([^"]*)"', tag.group(0))
    return html.unescape(value.group(1)) if value else None


def chosen_question(page: str, slot: int) -> str:
    """Return the question the form shows as chosen for a slot."""
    checked = re.search(
        rf'<input\b[^>]*\bname="question_{slot}"[^>]*\bvalue="([^"]*)"[^>]*'
        r"\bchecked\b",
        page,
    )
    assert checked is not None, f"no question chosen for slot {slot}"
    return html.unescape(checked.group(1))


async def test_every_problem_is_shown_in_one_round(portal: Portal) -> None:
    questions = list(JOHN)
    refused = await set_up(
        portal.client,
        {questions[0]: "ab", questions[1]: "same one", questions[2]: "same one"},
        password="not-my-password",
    )
    assert refused.status == 400
    page = html.unescape(await refused.text())
    for problem in (WRONG_PASSWORD, TOO_SHORT, SAME_ANSWER):
        assert problem in page, problem
    assert await portal.storage.get_security_answers("john") == []


async def test_what_was_typed_is_kept_but_never_the_password(portal: Portal) -> None:
    choices = {
        DEFAULT_QUESTIONS[3]: "Best Friend",
        DEFAULT_QUESTIONS[5]: "ab",
        DEFAULT_QUESTIONS[1]: "First <Concert> & co",
    }
    refused = await set_up(portal.client, choices)
    assert refused.status == 400
    page = await refused.text()
    for slot, (question, answer) in enumerate(choices.items()):
        assert chosen_question(page, slot) == question
        assert field_value(page, f"answer_{slot}") == answer
    assert "First <Concert>" not in page  # escaped, not markup
    assert field_value(page, "password") is None
    assert ">password<" not in page and 'value="password"' not in page


async def test_a_bad_answer_is_marked_on_its_own_field(portal: Portal) -> None:
    questions = list(JOHN)
    refused = await set_up(
        portal.client,
        {questions[0]: "fine answer", questions[1]: "ab", questions[2]: "another one"},
    )
    page = await refused.text()
    invalid = re.findall(r'<input\b[^>]*\bid="(answer_\d)"[^>]*\baria-invalid="true"', page)
    assert invalid == ["answer_1"]


async def test_the_saved_page_shows_no_answer(portal: Portal) -> None:
    saved = await follow_result(portal.client, await set_up(portal.client, JOHN))
    assert saved.status == 200
    page = await saved.text()
    assert all(field_value(page, f"answer_{i}") in (None, "") for i in range(3))
    assert (await portal.client.get(SETTINGS)).status == 200
