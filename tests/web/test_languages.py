"""Pages and mails in the user's language (issue 18): the request's language (cookie, then
Accept-Language, then default_language), recorded for the user's mails; mails' dates in that
language and notifier.timezone."""

from __future__ import annotations

import contextlib
import html
import logging
import re
import sqlite3

import pytest
from babel.messages.pofile import read_po

from portal.i18n import LOCALE_DIR
from tests.web.conftest import (
    Portal,
    StartPortal,
    choose_password,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
    text_of,
)
from tests.web.test_elevation import HOME
from tests.web.test_metrics import NEW_PASSWORD

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
    # SECURITY: step 1 proves nothing (anyone may ask for john): nothing is recorded for him.
    assert await portal.storage.user_language("john") is None


async def test_asking_a_reset_for_someone_does_not_choose_the_language_of_their_mails(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**BERLIN)
    portal.client.session.headers["Accept-Language"] = "fr"
    assert (await sign_in(portal.client)).status == 302  # john, in French
    await portal.client.get("/logout", allow_redirects=False)
    portal.client.session.cookie_jar.clear()
    portal.client.session.headers["Accept-Language"] = "de"  # someone else asks for john
    await request_reset(portal.client, "john")
    assert "Passwort" in (await portal.next_mail())["Subject"]  # that mail: the asker's
    assert await portal.storage.user_language("john") == "fr"
    # Whoever opens the link has the mailbox: completing the reset records their language.
    portal.client.session.headers["Accept-Language"] = "es"
    await request_reset(portal.client, "john")
    await open_link(portal.client, reset_link_from(await portal.next_mail()))
    assert (await choose_password(portal.client, NEW_PASSWORD)).status == 200
    assert await portal.storage.user_language("john") == "es"
    changed = await portal.next_mail()
    assert "Hola" in text_of(changed)


async def test_a_language_that_cannot_be_recorded_loses_no_reset_and_no_mail(
    start_portal: StartPortal, caplog: pytest.LogCaptureFixture
) -> None:
    portal = await start_portal()
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    # The storage refuses to keep a language, and nothing else (a real SQLite error; reads of
    # the table still work, as the mail's language is read when it is sent).
    path = portal.config.storage.local.path  # type: ignore[union-attr]
    with contextlib.closing(sqlite3.connect(path)) as db:
        for event in ("INSERT", "UPDATE"):
            db.execute(
                f"CREATE TRIGGER no_{event.lower()} BEFORE {event} ON user_languages"
                " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        db.commit()
    portal.client.session.headers["Accept-Language"] = "es"
    await open_link(portal.client, link)
    caplog.set_level(logging.WARNING, logger="portal")

    # The password is written: the user is told so, and mailed (in the default language, as
    # nothing could be recorded), never a 500 that hides a changed password.
    assert (await choose_password(portal.client, NEW_PASSWORD)).status == 200
    changed = await portal.next_mail()
    assert changed["Subject"] == "[Portal] Your password was changed"
    # A preference lost, said in the log (without the user's words or any token).
    [warning] = [r for r in caplog.records if "language" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "john" in warning.getMessage()
    # Signing in still works (it records the language too).
    assert (await sign_in(portal.client, password=NEW_PASSWORD)).status == 302
    assert await portal.storage.user_language("john") is None


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
        ("en", "Hello John Doe,", "14 November 2023 at 22:13 UTC"),
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
    assert await portal.storage.user_language("john") is None  # step 1 records nothing


# --- pages ----------------------------------------------------------------------------------------


def visible_text(page: str) -> str:
    """The text a reader meets: between tags, and the attributes a screen reader says."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    attributes = re.findall(r'(?:aria-label|alt|title|placeholder)="([^"]*)"', page)
    text = re.sub(r"<[^>]+>", " ", page)
    return " ".join(html.unescape(" ".join([text, *attributes])).split())


def english_leftovers(text: str, language: str) -> list[str]:
    """Return the portal's English messages (plain ones, of three words or more, translated
    differently) that the text still shows."""
    with (LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po)
    found = []
    for message in catalog:
        msgid = message.id
        if not isinstance(msgid, str) or "%" in msgid or "<" in msgid or msgid.count(" ") < 2:
            continue
        if message.string != msgid and msgid in text:
            found.append(msgid)
    return found


async def pages_in(portal: Portal, language: str) -> dict[str, str]:
    """Sign-in, reset step 1 and 2, and the security settings, as a browser in language sees
    them (the switch's cookie)."""
    client = portal.client
    client.session.cookie_jar.update_cookies({"portal_language": language})
    pages = {
        "signin": await (await client.get("/")).text(),
        "step1": await (await client.get("/reset-password/step1")).text(),
    }
    await request_reset(client, "john")
    step2 = await open_link(client, reset_link_from(await portal.next_mail()))
    assert step2.status == 200
    pages["step2"] = await step2.text()
    assert (await sign_in(client)).status == 302
    pages["settings"] = await (await client.get("/settings")).text()
    return pages


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (
            "de",
            [
                "Anmelden",
                "Passwort zurücksetzen",
                "Neues Passwort wählen",
                "Sicherheitseinstellungen",
            ],
        ),
        (
            "fr",
            [
                "Se connecter",
                "Réinitialiser votre mot de passe",
                "Choisir un nouveau mot de passe",
                "Paramètres de sécurité",
            ],
        ),
        (
            "es",
            [
                "Iniciar sesión",
                "Restablecer su contraseña",
                "Elegir una contraseña nueva",
                "Ajustes de seguridad",
            ],
        ),
    ],
)
async def test_pages_speak_the_chosen_language_with_no_english_left(
    portal: Portal, language: str, expected: list[str]
) -> None:
    pages = await pages_in(portal, language)
    for (name, page), heading in zip(pages.items(), expected, strict=True):
        assert f'<html lang="{language}"' in page, name
        text = visible_text(page)
        assert heading in text, name
        assert english_leftovers(text, language) == [], name
        # The switch: every language in its own, the current one marked.
        assert re.search(rf'lang="{language}" hreflang="{language}" aria-current="true"', page)
        assert page.count('aria-current="true"') == 1


async def test_english_pages_say_what_they_always_said(portal: Portal) -> None:
    page = await (await portal.client.get("/reset-password/step1")).text()
    assert '<html lang="en"' in page
    assert "Enter your username or email address. If it matches an account" in visible_text(page)


async def test_accept_language_picks_the_page_language_and_unknown_ones_fall_back(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(default_language="fr")
    client = portal.client
    german = await client.get("/", headers={"Accept-Language": "de-CH;q=0.8, ja"})
    assert '<html lang="de"' in await german.text()
    unknown = await client.get("/", headers={"Accept-Language": "ja, zh;q=0.5"})
    assert '<html lang="fr"' in await unknown.text()
    error = await client.get("/no-such-page", headers={"Accept-Language": "es"})
    assert error.status == 404
    assert "Página no encontrada" in await error.text()
    # The JSON API keeps English, as Authelia's does.
    api = await client.post("/api/firstfactor", json={}, headers={"Accept-Language": "de"})
    assert api.status == 400
    assert (await api.json())["message"].startswith("The request")


@pytest.mark.parametrize(
    ("back", "location"),
    [
        ("/reset-password/step1", "/reset-password/step1"),
        ("/?rd=https%3A%2F%2Fapp.example.com%2F", "/?rd=https://app.example.com/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("/%0d%0aSet-Cookie:x", "/%0D%0ASet-Cookie:x"),  # encoded: no header injected
        (None, "/"),
    ],
)
async def test_the_switch_sets_the_cookie_and_goes_back_only_to_the_portal(
    portal: Portal, back: str | None, location: str
) -> None:
    query = {} if back is None else {"back": back}
    response = await portal.client.get("/language/es", params=query, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == location
    assert response.cookies["portal_language"].value == "es"
    page = await (await portal.client.get("/")).text()
    assert '<html lang="es"' in page


async def test_the_switch_refuses_a_language_it_does_not_speak(portal: Portal) -> None:
    response = await portal.client.get("/language/it?back=/", allow_redirects=False)
    assert response.status == 404
    assert "portal_language" not in response.cookies


async def test_the_switch_links_lead_back_to_the_page_without_secrets(portal: Portal) -> None:
    page = await (await portal.client.get("/?rd=https%3A%2F%2Fapp.example.com%2F")).text()
    assert 'href="/language/de?back=/%3Frd%3Dhttps%253A%252F%252Fapp.example.com%252F"' in page
    assert re.search(r'<nav class="languages" aria-label="Language">', page)
    step2 = await (await portal.client.get("/reset-password/step2?token=secret-ish")).text()
    assert "secret-ish" not in step2.split('class="languages"')[-1]


async def test_behind_a_tls_proxy_the_language_cookie_is_secure_as_every_other(
    start_portal: StartPortal,
) -> None:
    # nginx ends TLS and speaks plain HTTP to the portal: the portal's public address says
    # https, as it does for the session, CSRF and reset cookies.
    portal = await start_portal(
        session={"cookies": [{"domain": "example.com", "authelia_url": "https://auth.example.com"}]}
    )
    response = await portal.client.get("/language/fr?back=/", allow_redirects=False)
    cookie = response.cookies["portal_language"]
    assert cookie.value == "fr"
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"


# zxcvbn (4.5) has its advice in English only (no catalogs): other languages get the portal's.
ZXCVBN_ENGLISH = ("This is a top-10 common password.", "Uncommon words are better.")


@pytest.mark.parametrize(
    ("language", "refusal"),
    [
        (
            "de",
            "Dieses Passwort ist zu leicht zu erraten. Fügen Sie ein oder zwei Wörter hinzu; "
            "ungewöhnliche Wörter sind besser.",
        ),
        (
            "fr",
            "Ce mot de passe est trop facile à deviner. Ajoutez un ou deux mots ; les mots peu "
            "courants sont préférables.",
        ),
        (
            "es",
            "Esta contraseña es demasiado fácil de adivinar. Añada una o dos palabras más; las "
            "palabras poco comunes son mejores.",
        ),
    ],
)
async def test_a_weak_password_is_refused_with_the_portals_advice_in_the_pages_language(
    start_portal: StartPortal, language: str, refusal: str
) -> None:
    portal = await start_portal(password_policy={"zxcvbn": {"enabled": True, "min_score": 3}})
    client = portal.client
    client.session.cookie_jar.update_cookies({"portal_language": language})
    await request_reset(client, "john")
    assert (await open_link(client, reset_link_from(await portal.next_mail()))).status == 200
    weak = await choose_password(client, "password")
    assert weak.status == 400
    text = visible_text(await weak.text())
    assert refusal in text
    assert not [advice for advice in ZXCVBN_ENGLISH if advice in text]


async def test_an_english_page_keeps_zxcvbns_own_advice(start_portal: StartPortal) -> None:
    portal = await start_portal(password_policy={"zxcvbn": {"enabled": True, "min_score": 3}})
    await request_reset(portal.client, "john")
    await open_link(portal.client, reset_link_from(await portal.next_mail()))
    weak = await choose_password(portal.client, "password")
    text = visible_text(await weak.text())
    assert "This password is too easy to guess. This is a top-10 common password." in text
