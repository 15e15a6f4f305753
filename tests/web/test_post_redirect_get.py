"""Result pages are reached by redirect-after-POST, so a refresh reloads a page and resubmits
nothing (issue 12); the redirect of step 1 is the same for everyone, as its page is."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from tests.web.conftest import (
    DEMO_PASSWORD,
    Portal,
    StartPortal,
    csrf_of,
    open_link,
    path_of,
    reset_link_from,
    same_for_everyone,
    sign_in,
    submit,
)
from tests.web.test_reset_flow import NEW_PASSWORD, SENT
from tests.web.test_reset_questions import (
    JOHN,
    SETTINGS,
    answer,
    john_has_questions,
    questions_on,
    questions_on_page,
    set_up,
)
from tests.web.test_reset_tokens_in_urls import revoke_link_from

STEP1 = "/reset-password/step1"
STEP2 = "/reset-password/step2"


async def test_step1_answers_303_to_the_sent_page_the_same_for_everyone(
    start_portal: StartPortal, users_file: Path
) -> None:
    portal = await start_portal()
    redirects = []
    for who in ("john", "nobody-here", "HARRY.Potter@authelia.com", "*"):
        posted = await submit(portal.client, STEP1, STEP1, username=who)
        assert posted.status == 303
        headers = same_for_everyone(posted)
        redirects.append((posted.status, await posted.read(), headers))
    assert all(redirect == redirects[0] for redirect in redirects)
    _, _, headers = redirects[0]
    assert headers["Location"] == "/reset-password/step1/sent"
    assert headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in headers, "no per-user state in a cookie"

    shown = await portal.client.get(headers["Location"])
    assert shown.status == 200 and SENT in await shown.text()
    await portal.drain_outbox()
    sent = len(portal.smtp.deliveries)
    assert sent == 2
    # A refresh reloads the page and asks for nothing.
    assert (await portal.client.get(headers["Location"])).status == 200
    await portal.drain_outbox()
    assert len(portal.smtp.deliveries) == sent


async def test_a_new_password_answers_303_to_the_done_page(portal: Portal) -> None:
    await submit(portal.client, STEP1, STEP1, username="john")
    await open_link(portal.client, reset_link_from(await portal.next_mail()))
    posted = await submit(
        portal.client, STEP2, STEP2, password=NEW_PASSWORD, password_confirm=NEW_PASSWORD
    )
    assert posted.status == 303
    assert posted.headers["Location"] == "/reset-password/done"
    assert posted.cookies["portal_reset"].value == ""  # the used link's cookie goes
    done = await portal.client.get("/reset-password/done")
    assert done.status == 200
    assert "Your password has been changed" in await done.text()
    assert done.headers["Cache-Control"] == "no-store"


async def test_right_answers_answer_303_to_the_sent_page(start_portal: StartPortal) -> None:
    portal = await start_portal(**questions_on())
    await john_has_questions(portal)
    asked = await submit(portal.client, STEP1, STEP1, username="john")
    assert asked.status == 200  # the questions page is a form, not a result
    page = await asked.text()
    shown = await answer(portal.client, page, [JOHN[q] for q in questions_on_page(page)])
    [posted] = shown.history
    assert posted.status == 303
    assert posted.headers["Location"] == "/reset-password/step1/sent"
    assert "If your answers were right" in await shown.text()


async def test_cancelling_a_link_answers_303_to_the_cancelled_page(portal: Portal) -> None:
    await submit(portal.client, STEP1, STEP1, username="john")
    mail = await portal.next_mail()
    confirm = await portal.client.get(path_of(revoke_link_from(mail)))
    posted = await portal.client.post(
        "/revoke/reset-password",
        data={"csrf_token": csrf_of(await confirm.text())},
        allow_redirects=False,
    )
    assert posted.status == 303
    assert posted.headers["Location"] == "/reset-password/cancelled"
    shown = await portal.client.get("/reset-password/cancelled")
    assert shown.status == 200 and "The link is cancelled" in await shown.text()
    assert (await open_link(portal.client, reset_link_from(mail))).status == 400


async def test_saving_and_removing_questions_answer_303_to_pages_that_tell_the_truth(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**questions_on())
    assert (await sign_in(portal.client)).status == 302
    # Before anything is saved, the result address says nothing it cannot confirm.
    early = await (await portal.client.get(SETTINGS + "/saved")).text()
    assert "are saved" not in early and "You have not set up security questions yet." in early

    posted = await set_up(portal.client, JOHN)
    assert posted.status == 303
    assert posted.headers["Location"] == SETTINGS + "/saved"
    assert posted.headers["Cache-Control"] == "no-store"
    saved_at = [row.answer_hash for row in await portal.storage.get_security_answers("john")]
    for _ in range(2):  # a refresh reloads the page and stores nothing again
        shown = await portal.client.get(SETTINGS + "/saved")
        assert shown.status == 200 and "Your security questions are saved." in await shown.text()
    assert [r.answer_hash for r in await portal.storage.get_security_answers("john")] == saved_at

    remove = {"action": "remove", "password": DEMO_PASSWORD}
    posted = await submit(portal.client, SETTINGS, SETTINGS, **remove)
    assert posted.status == 303 and posted.headers["Location"] == SETTINGS + "/removed"
    shown = await portal.client.get(SETTINGS + "/removed")
    assert "Your security questions are removed." in await shown.text()
    assert await portal.storage.get_security_answers("john") == []
    # Signed out, the result pages send to sign-in like the form does.
    await portal.client.get("/logout", allow_redirects=False)
    away = await portal.client.get(SETTINGS + "/removed", allow_redirects=False)
    assert away.status == 303 and urlsplit(away.headers["Location"]).path == "/"
