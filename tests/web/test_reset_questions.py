"""Security questions, told as stories over HTTP: set up in the settings, asked at reset."""

from __future__ import annotations

import html
import logging
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientResponse

from portal.config import DEFAULT_QUESTIONS
from portal.security_questions import Argon2AnswerHasher
from tests.web.conftest import (
    CHEAP_ARGON2,
    DEMO_PASSWORD,
    Client,
    Portal,
    StartPortal,
    choose_password,
    csrf_of,
    fields_of,
    follow_result,
    no_mail_sent,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
    submit,
)

SETTINGS = "/settings/security-questions"
ANSWERS = "/reset-password/step1/answers"
SENT = "If your answers were right, we have sent an email with a link"
# John's choices: the first three default questions.
JOHN = {
    DEFAULT_QUESTIONS[0]: "Mister Fluffy",
    DEFAULT_QUESTIONS[1]: "The Beatles",
    DEFAULT_QUESTIONS[2]: "Pancakes with syrup",
}
_QUESTION = re.compile(r'<label for="answer_\d+" class="question">([^<]*)</label>')
_TICKET = re.compile(r'name="ticket" value="([^"]*)"')


def questions_on(**settings: Any) -> dict[str, Any]:
    """Configuration overrides that turn the security questions on."""
    return {
        "identity_validation": {
            "reset_password": {"security_questions": {"enabled": True, **settings}}
        }
    }


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(**questions_on())


# --- what a user does ----------------------------------------------------------------------------


async def set_up(
    client: Client, choices: dict[str, str], password: str = DEMO_PASSWORD
) -> ClientResponse:
    """Fill in the settings form with these questions and answers."""
    fields = {"password": password}
    for i, (question, answer) in enumerate(choices.items()):
        fields[f"question_{i}"] = question
        fields[f"answer_{i}"] = answer
    return await submit(client, SETTINGS, SETTINGS, **fields)


async def john_has_questions(portal: Portal) -> None:
    assert (await sign_in(portal.client)).status == 302
    saved = await set_up(portal.client, JOHN)
    assert saved.status == 303 and saved.headers["Location"] == SETTINGS + "/saved"
    await portal.client.get("/logout", allow_redirects=False)


def questions_on_page(page: str) -> list[str]:
    return [html.unescape(q) for q in _QUESTION.findall(page)]


async def ask(client: Client, identifier: str) -> str:
    """Type an identifier at step 1 and return the questions page."""
    response = await request_reset(client, identifier)
    assert response.status == 200
    return await response.text()


async def answer(
    client: Client, page: str, answers: list[str], identifier: str | None = None
) -> ClientResponse:
    """Post the questions page's form with these answers (and the identifier it carries)."""
    carried = re.search(r'name="username" value="([^"]*)"', page)
    ticket = _TICKET.search(page)
    assert carried and ticket, "not a questions page"
    fields = {
        "csrf_token": csrf_of(page),
        "username": identifier if identifier is not None else html.unescape(carried.group(1)),
        "ticket": ticket.group(1),
    }
    fields.update({f"answer_{i}": a for i, a in enumerate(answers)})
    return await follow_result(
        client, await client.post(ANSWERS, data=fields, allow_redirects=False)
    )


def right_answers(page: str, choices: dict[str, str] = JOHN) -> list[str]:
    return [choices[q] for q in questions_on_page(page)]


async def reset_with_answers(portal: Portal, identifier: str, answers: list[str] | None) -> str:
    """Ask for a reset; answer right (None) or with the given answers; return the page shown."""
    page = await ask(portal.client, identifier)
    response = await answer(portal.client, page, answers or right_answers(page))
    assert response.status == 200
    return await response.text()


def masked(page: str) -> str:
    """The page with what differs per request or per identifier blanked out."""
    page = re.sub(r'value="[^"]*"', 'value=""', page)
    return _QUESTION.sub('<label for="answer_N" class="question">Q</label>', page)


# --- setting them up ----------------------------------------------------------------------------


async def test_john_sets_up_questions_and_only_hashes_are_stored(portal: Portal) -> None:
    client = portal.client
    assert (await sign_in(client)).status == 302
    page = await (await client.get(SETTINGS)).text()
    assert "You have not set up security questions yet." in page
    assert all(html.escape(q) in page for q in DEFAULT_QUESTIONS)

    saved = await follow_result(client, await set_up(client, JOHN))
    assert saved.status == 200
    text = await saved.text()
    assert "Your security questions are saved." in text
    assert "Set up on 14 November 2023 at 22:13 UTC" in text
    assert not any(a.lower() in text.lower() for a in JOHN.values())

    stored = await portal.storage.get_security_answers("john")
    assert [row.question for row in stored] == list(JOHN)
    assert all(row.answer_hash.startswith("$argon2id$") for row in stored)
    local = portal.config.storage.local
    assert local is not None
    files = Path(local.path).parent.glob("db*")
    everything = b"".join(path.read_bytes() for path in files).lower()
    for secret in ("fluffy", "beatles", "pancakes"):
        assert secret.encode() not in everything


async def test_john_removes_his_questions_with_his_password_only(portal: Portal) -> None:
    await john_has_questions(portal)
    client = portal.client
    assert (await sign_in(client)).status == 302
    assert 'id="remove-questions"' in await (await client.get(SETTINGS)).text()

    refused = await submit(client, SETTINGS, SETTINGS, action="remove", password="guess")
    assert refused.status == 400
    assert "Your current password is not correct." in await refused.text()
    assert len(await portal.storage.get_security_answers("john")) == 3

    remove = {"action": "remove", "password": DEMO_PASSWORD}
    removed = await follow_result(client, await submit(client, SETTINGS, SETTINGS, **remove))
    assert removed.status == 200
    text = await removed.text()
    assert "Your security questions are removed." in text
    assert "You have not set up security questions yet." in text
    assert 'id="remove-questions"' not in text
    assert await portal.storage.get_security_answers("john") == []
    # From now on john is a user without questions: decoys, and (send_email) the mail anyway.
    await client.get("/logout", allow_redirects=False)
    assert SENT in await reset_with_answers(portal, "john", ["", ""])
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"


async def test_the_signed_in_page_links_to_the_questions(portal: Portal) -> None:
    assert (await sign_in(portal.client)).status == 302
    page = await (await portal.client.get("/")).text()
    assert f'id="security-questions" href="{SETTINGS}"' in page


async def test_a_wrong_current_password_stores_nothing_and_counts_like_a_sign_in(
    portal: Portal,
) -> None:
    assert (await sign_in(portal.client)).status == 302
    refused = await set_up(portal.client, JOHN, password="not-my-password")
    assert refused.status == 400
    assert "Your current password is not correct." in await refused.text()
    assert await portal.storage.get_security_answers("john") == []

    for _ in range(2):  # regulation: 3 failures ban the user
        await set_up(portal.client, JOHN, password="not-my-password")
    banned = await set_up(portal.client, JOHN)
    assert banned.status == 400
    assert "Too many wrong passwords" in await banned.text()
    assert await portal.storage.get_security_answers("john") == []


async def test_choices_that_protect_nothing_are_refused_with_reasons(portal: Portal) -> None:
    assert (await sign_in(portal.client)).status == 302
    first = DEFAULT_QUESTIONS[0]
    response = await set_up(portal.client, {first: "ab", DEFAULT_QUESTIONS[1]: "Password "})
    text = html.unescape(await response.text())
    assert response.status == 400
    assert "Choose 3 questions from the list." in text
    assert "Each answer needs 3 to 256 characters." in text
    assert "An answer may not be your password or your username." in text
    # The problems are listed above the form's first field, where a phone's screen starts.
    assert 0 < text.index('id="questions-errors"') < text.index('id="question_0"')

    fields = {"password": "password"}
    for i in range(3):
        fields |= {f"question_{i}": first, f"answer_{i}": f"answer number {i}"}
    same = await submit(portal.client, SETTINGS, SETTINGS, **fields)
    assert same.status == 400
    assert "Choose a different question for each answer." in await same.text()
    echo = await set_up(portal.client, dict.fromkeys(JOHN, " Same  answer"))
    assert echo.status == 400
    assert "Give a different answer to each question." in await echo.text()
    assert await portal.storage.get_security_answers("john") == []


async def test_a_visitor_who_is_not_signed_in_is_sent_to_sign_in(portal: Portal) -> None:
    response = await portal.client.get(SETTINGS, allow_redirects=False)
    assert response.status == 303
    location = urlsplit(response.headers["Location"])
    assert location.path == "/"
    assert parse_qs(location.query)["rd"] == [f"http://127.0.0.1{SETTINGS}"]
    posted = await set_up(portal.client, JOHN)
    assert posted.status == 303
    assert await portal.storage.get_security_answers("john") == []


# --- at reset -----------------------------------------------------------------------------------


async def test_right_answers_typed_in_another_case_and_spacing_send_the_mail(
    portal: Portal,
) -> None:
    await john_has_questions(portal)
    page = await ask(portal.client, "john")
    asked = questions_on_page(page)
    assert len(asked) == 2 and set(asked) <= set(JOHN)
    assert "If you never set up security questions, leave them empty." in page
    sloppy = ["  " + JOHN[q].upper().replace(" ", "   ") + " " for q in asked]
    response = await answer(portal.client, page, sloppy)
    assert response.status == 200
    assert SENT in await response.text()

    mail = await portal.next_mail()
    assert mail["To"] == "john.doe@authelia.com"
    assert (await open_link(portal.client, reset_link_from(mail))).status == 200
    done = await choose_password(portal.client, "Correct-Horse-Battery-Staple-42")
    assert done.status == 200


async def test_wrong_answers_get_the_same_page_and_no_mail(portal: Portal) -> None:
    await john_has_questions(portal)
    wrong = await reset_with_answers(portal, "john", ["Mister Fluffy", "nope"])
    assert await no_mail_sent(portal)
    right = await reset_with_answers(portal, "john", None)
    assert masked(wrong) == masked(right)
    assert SENT in right
    await portal.next_mail()


async def test_failures_are_throttled_per_account_until_the_window_passes(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    await john_has_questions(portal)
    caplog.set_level(logging.INFO, logger="portal.audit")
    # five wrong tries, the account typed two ways: they count together
    for identifier in ("john", "JOHN.DOE@authelia.com", "john", "john.doe@authelia.com", "john"):
        await reset_with_answers(portal, identifier, ["wrong", "wrong"])
    page = await reset_with_answers(portal, "john.doe@authelia.com", None)
    assert SENT in page
    assert await no_mail_sent(portal)
    assert "reset_questions_throttled" in [r.getMessage() for r in caplog.records]

    portal.clock.advance(3601)
    await reset_with_answers(portal, "john", None)
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"


async def test_editing_the_list_of_questions_breaks_nobodys_answers(
    start_portal: StartPortal,
) -> None:
    first = await start_portal(**questions_on())
    await john_has_questions(first)
    others = [
        "Which river runs through your home town?",
        "What is your favourite tree?",
        "Which instrument did you first learn?",
    ]
    portal = await start_portal(**questions_on(questions=others))
    page = await ask(portal.client, "john")
    assert set(questions_on_page(page)) <= set(JOHN)
    assert set(questions_on_page(await ask(portal.client, "nobody-here"))) <= set(others)
    response = await answer(portal.client, page, right_answers(page))
    assert SENT in await response.text()
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"


async def test_an_unknown_user_gets_a_page_shaped_like_a_real_one(portal: Portal) -> None:
    await john_has_questions(portal)
    pages = {}
    for who in ("john", "nobody-here", "harry"):  # real, unknown, without questions
        response = await request_reset(portal.client, who)
        headers = {k for k in response.headers if k not in ("Date", "Content-Length")}
        pages[who] = (response.status, masked(await response.text()), headers)
        assert len(questions_on_page(await response.text())) == 2
    assert pages["john"] == pages["nobody-here"] == pages["harry"]


async def test_an_unknown_user_is_asked_the_same_questions_every_time(portal: Portal) -> None:
    first = questions_on_page(await ask(portal.client, "nobody-here"))
    assert questions_on_page(await ask(portal.client, "nobody-here")) == first
    assert questions_on_page(await ask(portal.client, "NOBODY-HERE")) == first
    assert set(first) <= set(DEFAULT_QUESTIONS)
    others = {tuple(questions_on_page(await ask(portal.client, f"user{i}"))) for i in range(8)}
    assert len(others) > 1


async def test_a_user_without_questions_gets_the_mail_under_send_email(portal: Portal) -> None:
    assert "If you never set up security questions, leave them empty" in await ask(
        portal.client, "harry"
    )
    page = await reset_with_answers(portal, "harry", ["", ""])
    assert SENT in page
    assert (await portal.next_mail())["To"] == "harry.potter@authelia.com"


async def test_a_user_without_questions_gets_no_mail_under_deny(
    start_portal: StartPortal, caplog: pytest.LogCaptureFixture
) -> None:
    portal = await start_portal(**questions_on(without_questions="deny"))
    caplog.set_level(logging.INFO, logger="portal.audit")
    # Everyone is told what happens without questions, so the page tells nothing about harry.
    asked = await ask(portal.client, "harry")
    assert "a reset is not possible here" in asked and "leave them empty" not in asked
    assert "a reset is not possible here" in await ask(portal.client, "nobody-here")
    page = await reset_with_answers(portal, "harry", ["", ""])
    assert SENT in page
    assert await no_mail_sent(portal)
    denied = [r for r in caplog.records if r.getMessage() == "reset_questions_denied"]
    assert denied and fields_of(denied[0])["reason"] == "no_questions"


async def test_answers_cannot_be_sent_for_another_account_than_the_one_asked(
    portal: Portal,
) -> None:
    await john_has_questions(portal)
    johns_page = await ask(portal.client, "john")
    johns_answers = right_answers(johns_page)
    strangers_page = await ask(portal.client, "nobody-here")
    swapped = await answer(portal.client, strangers_page, johns_answers, identifier="john")
    assert swapped.status == 400
    assert "These questions have expired. Please start again." in await swapped.text()

    portal.clock.advance(901)
    late = await answer(portal.client, johns_page, johns_answers)
    assert late.status == 400
    assert await no_mail_sent(portal)


async def test_the_form_without_questions_is_the_plain_reset(start_portal: StartPortal) -> None:
    portal = await start_portal()
    response = await request_reset(portal.client, "john")
    assert "If an account matches, we have sent an email with a link" in await response.text()
    assert (await portal.client.get(SETTINGS, allow_redirects=False)).status == 404
    # A well-formed post (with its CSRF token, so the CSRF check cannot answer first) finds no
    # route; with the questions on, the same post is a 400 (tests below).
    answers = {"username": "john", "ticket": "", "answer_0": "", "answer_1": ""}
    assert (await submit(portal.client, "/reset-password/step1", ANSWERS, **answers)).status == 404
    assert (await sign_in(portal.client)).status == 302
    assert "security-questions" not in await (await portal.client.get("/")).text()


# --- the JSON API -------------------------------------------------------------------------------


async def test_the_api_asks_for_answers_and_is_no_way_around_them(portal: Portal) -> None:
    await john_has_questions(portal)
    client = portal.client
    start = "/api/reset-password/identity/start"
    listed = await client.post("/api/reset-password/identity/questions", json={"username": "john"})
    body = await listed.json()
    assert body["status"] == "OK"
    asked = body["data"]["questions"]
    assert asked == questions_on_page(await ask(client, "john"))

    missing = await client.post(start, json={"username": "john"})
    assert missing.status == 400
    assert (await missing.json())["status"] == "KO"
    short = await client.post(start, json={"username": "john", "answers": ["x"]})
    assert short.status == 400

    wrong = await client.post(start, json={"username": "john", "answers": ["x", "y"]})
    assert (wrong.status, await wrong.json()) == (200, {"status": "OK"})
    assert await no_mail_sent(portal)
    right = await client.post(start, json={"username": "john", "answers": [JOHN[q] for q in asked]})
    assert (right.status, await right.json()) == (200, {"status": "OK"})
    assert (await portal.next_mail())["To"] == "john.doe@authelia.com"

    unknown = await client.post(
        "/api/reset-password/identity/questions", json={"username": "nobody-here"}
    )
    assert len((await unknown.json())["data"]["questions"]) == 2


# --- secrets and work ---------------------------------------------------------------------------


async def test_answers_never_reach_the_logs_nor_the_audit(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await john_has_questions(portal)
    await reset_with_answers(portal, "john", ["Wrong Guess", "Other Guess"])
    await reset_with_answers(portal, "john", None)
    await portal.next_mail()
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records).lower()
    assert "security_questions_set" in logged and "reset_questions_passed" in logged
    for secret in (*JOHN.values(), "Wrong Guess", "Other Guess"):
        assert secret.lower() not in logged


class CountingHasher(Argon2AnswerHasher):
    """The real argon2 hasher, counting its verifications (threads call it)."""

    def __init__(self) -> None:
        super().__init__(CHEAP_ARGON2)
        self.verified = 0
        self._lock = threading.Lock()

    def verify(self, answer: str, digest: str) -> bool:
        with self._lock:
            self.verified += 1
        return super().verify(answer, digest)


async def test_every_check_does_the_same_argon2_work_whoever_asks(
    start_portal: StartPortal,
) -> None:
    hasher = CountingHasher()
    portal = await start_portal(answer_hasher=hasher, **questions_on())
    await john_has_questions(portal)
    cases: list[tuple[str, list[str] | None]] = [
        ("john", None),  # real, right
        ("john", ["wrong", "wrong"]),  # real, wrong
        ("nobody-here", ["wrong", "wrong"]),  # unknown
        ("harry", ["", ""]),  # without questions
    ]
    cases += [("john", ["wrong", "wrong"])] * 5  # the last of these is throttled
    work = []
    for identifier, answers in cases:
        before = hasher.verified
        await reset_with_answers(portal, identifier, answers)
        work.append(hasher.verified - before)
    assert work == [2] * len(cases)
