"""The CAPTCHA and the security questions together: neither the forms nor the JSON API give a
way past the CAPTCHA on the way to a reset mail."""

from __future__ import annotations

from typing import Any

from tests.conftest import deep_merge
from tests.web.conftest import Portal, StartPortal, no_mail_sent, request_reset
from tests.web.test_captcha import FAILED, altcha_on, solved
from tests.web.test_reset_questions import (
    JOHN,
    answer,
    john_has_questions,
    questions_on,
    questions_on_page,
    right_answers,
)

START_API = "/api/reset-password/identity/start"
QUESTIONS_API = "/api/reset-password/identity/questions"


def both() -> dict[str, Any]:
    return deep_merge(questions_on(), altcha_on("reset_password_start"))


async def test_the_questions_come_only_after_the_captcha(start_portal: StartPortal) -> None:
    portal: Portal = await start_portal(**both())
    await john_has_questions(portal)

    refused = await request_reset(portal.client, "john")
    assert refused.status == 400
    page = await refused.text()
    assert FAILED in page and questions_on_page(page) == []

    asked = await request_reset(portal.client, "john", captcha=await solved(portal.client))
    assert asked.status == 200
    page = await asked.text()
    assert len(questions_on_page(page)) == 2
    assert (await answer(portal.client, page, right_answers(page))).status == 200
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"


async def test_the_json_api_needs_the_captcha_for_the_questions_and_for_the_mail(
    start_portal: StartPortal,
) -> None:
    portal: Portal = await start_portal(**both())
    await john_has_questions(portal)
    client = portal.client

    no_captcha = await client.post(QUESTIONS_API, json={"username": "john"})
    assert no_captcha.status == 400 and (await no_captcha.json())["status"] == "KO"
    listed = await client.post(
        QUESTIONS_API, json={"username": "john", "captcha": await solved(client)}
    )
    assert listed.status == 200
    answers = [JOHN[q] for q in (await listed.json())["data"]["questions"]]

    # Right answers alone do not send the mail: the sending call needs its own CAPTCHA.
    bare = await client.post(START_API, json={"username": "john", "answers": answers})
    assert bare.status == 400 and (await bare.json())["status"] == "KO"
    assert await no_mail_sent(portal)

    sent = await client.post(
        START_API, json={"username": "john", "answers": answers, "captcha": await solved(client)}
    )
    assert (sent.status, await sent.json()) == (200, {"status": "OK"})
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"


async def test_one_solved_captcha_buys_one_answer_to_one_questions_page(
    start_portal: StartPortal,
) -> None:
    portal: Portal = await start_portal(**both())
    client = portal.client
    # harry has no questions: he gets decoys
    asked = await request_reset(client, "harry", captcha=await solved(client))
    page = await asked.text()

    first = await answer(client, page, ["", ""])
    assert first.status == 200
    again = await answer(client, page, ["", ""])
    assert again.status == 400
    assert "These questions were answered already. Please start again." in await again.text()
    # A ticket dressed up with extra parts is no new ticket either.
    ticket = page.split('name="ticket" value="')[1].split('"')[0]
    dressed = await answer(client, page.replace(ticket, ticket + ".x"), ["", ""])
    assert dressed.status == 400
    await portal.drain_outbox()
    assert len(portal.smtp.deliveries) == 1  # harry's one mail (send_email), not three
