"""Pages and mails in the user's language (issue 18): the request's language (cookie, then
Accept-Language, then default_language), recorded for the user's mails; mails' dates in that
language and notifier.timezone."""

from __future__ import annotations

import pytest

from tests.web.conftest import Portal, StartPortal, request_reset, sign_in, text_of
from tests.web.test_elevation import HOME

BERLIN = {"notifier": {"timezone": "Europe/Berlin"}}
# tests/conftest.py START: 14 November 2023, 22:13:20 UTC; 23:13 in Berlin (CET).
GERMAN_DATE = "14. November 2023 um 23:13 Europe/Berlin"


async def test_a_reset_mail_speaks_the_browsers_language_with_its_dates_and_zone(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**BERLIN)
    portal.client.session.headers["Accept-Language"] = "de-AT,de;q=0.9,en;q=0.5"
    await request_reset(portal.client, "john")
    mail = await portal.next_mail()
    text = text_of(mail)
    assert "Passwort zurücksetzen" in mail["Subject"]
    assert text.startswith("Guten Tag John Doe,")
    assert "läuft in 5 Minuten ab" in text
    assert GERMAN_DATE in text
    html = mail.get_body(("html",))
    assert html is not None
    body = html.get_content()
    assert '<html lang="de">' in body and "Neues Passwort wählen" in body
    for english in ("Hello", "Someone asked", "expires in", "This mail was sent", " at 23:13"):
        assert english not in text and english not in body
    # Reset step 1 is a use of the portal: john's next mails speak German too.
    assert await portal.storage.user_language("john") == "de"


async def test_the_language_recorded_at_sign_in_is_the_one_later_mails_speak(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**BERLIN)
    # The switch's cookie wins over Accept-Language.
    portal.client.session.cookie_jar.update_cookies({"portal_language": "fr"})
    portal.client.session.headers["Accept-Language"] = "es"
    assert (await sign_in(portal.client)).status == 302
    assert await portal.storage.user_language("john") == "fr"
    del portal.client.session.headers["Accept-Language"]
    response = await portal.client.post("/api/user/session/elevation", json={}, headers=HOME)
    assert response.status == 200
    mail = await portal.next_mail()
    text = text_of(mail)
    assert "Confirmez votre identité" in mail["Subject"]
    assert text.startswith("Bonjour John Doe,")
    assert "14 novembre 2023 à 23:13 Europe/Berlin" in text
    assert "Someone" not in text and "Hello" not in text


@pytest.mark.parametrize(
    ("default", "greeting", "date"),
    [
        ("es", "Hola, John Doe:", "14 de noviembre de 2023 a las 22:13 UTC"),
        ("en", "Hello John Doe,", "November 14, 2023 at 22:13 UTC"),
    ],
)
async def test_without_any_choice_mails_speak_default_language(
    start_portal: StartPortal, default: str, greeting: str, date: str
) -> None:
    portal: Portal = await start_portal(default_language=default)
    # An Accept-Language the portal does not speak counts as none.
    portal.client.session.headers["Accept-Language"] = "ja, zh;q=0.8"
    await request_reset(portal.client, "john")
    text = text_of(await portal.next_mail())
    assert text.startswith(greeting)
    assert date in text
    assert await portal.storage.user_language("john") == default
