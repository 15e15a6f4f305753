"""The language machinery (portal/i18n.py) and the catalogs' check (portal/i18n_check.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jinja2
import pytest
from babel.messages.catalog import Catalog
from ruamel.yaml import YAML

from portal import i18n
from portal.config import read_config
from portal.errors import ConfigError
from portal.i18n_check import (
    catalog_problems,
    problems,
    script_text_problems,
    template_text_problems,
)
from portal.mail import MailRenderer, template_dirs
from tests.conftest import deep_merge, minimal_raw

EVERY = i18n.LANGUAGES


@pytest.mark.parametrize(
    ("cookie", "header", "default", "chosen"),
    [
        ("fr", "de", "en", "fr"),  # the switch's cookie first
        ("xx", "de-AT,de;q=0.9", "en", "de"),  # an unknown cookie: Accept-Language
        (None, "ja,es;q=0.5,fr;q=0.7", "en", "fr"),  # by weight, unspoken ones skipped
        (None, "es-419", "en", "es"),  # a region falls back to its language
        (None, "fr;q=0, de;q=0.1", "en", "de"),  # q=0 means "not this one"
        (None, "ja, zh", "es", "es"),  # nothing spoken: default_language
        (None, None, "de", "de"),
        (None, "de;q=abc, *", "fr", "fr"),  # unreadable entries are ignored
    ],
)
def test_negotiation(cookie: str | None, header: str | None, default: str, chosen: str) -> None:
    assert i18n.negotiate(cookie, header, default, EVERY) == chosen


@pytest.mark.parametrize(
    "header",
    [
        "de" + " " * 8000 + "x",  # blanks after a tag, then junk: the worst case for the parser
        "de;q=0.5" + " " * 8000 + "x",
        ("de" + " " * 400 + "x,") * 20,
    ],
)
def test_a_header_as_long_as_aiohttp_lets_through_is_read_at_once(header: str) -> None:
    # Every page request reads Accept-Language (twice) on the event loop: a quadratic parse of
    # 8 KB of blanks took most of a second per request, which a few clients could keep up.
    started = time.process_time()
    chosen = i18n.negotiate(None, header, "fr", i18n.PAGE_LANGUAGES)
    spent = time.process_time() - started
    assert chosen in ("de", "fr")
    assert spent < 0.05, f"{spent:.3f}s of CPU for one Accept-Language header"


def test_negotiation_offers_only_what_is_offered() -> None:
    assert i18n.negotiate("de", "fr", "es", ("en",)) == "en"


def test_gettext_speaks_the_language_in_use_and_english_outside() -> None:
    catalogs = i18n.load_catalogs()
    assert i18n.gettext("Reset your password") == "Reset your password"
    with i18n.speaking(catalogs, "es"):
        assert i18n.gettext("Reset your password") == "Restablecer su contraseña"
        assert i18n.current_language() == "es"
    assert i18n.current_language() == "en"


def test_the_committed_catalogs_and_templates_pass_the_check() -> None:
    assert problems() == []


def _catalog(entries: dict[str, str], fuzzy: tuple[str, ...] = ()) -> Catalog:
    catalog = Catalog(locale="de")
    for msgid, msgstr in entries.items():
        catalog.add(msgid, msgstr, flags=("fuzzy",) if msgid in fuzzy else ())
    return catalog


def test_the_check_fails_on_a_missing_empty_fuzzy_or_unused_entry() -> None:
    template = _catalog({"Hello": "", "Bye": "", "Thanks": ""})
    assert (
        catalog_problems(
            template, _catalog({"Hello": "Hallo", "Bye": "Tschüss", "Thanks": "Danke"})
        )
        == []
    )
    found = catalog_problems(
        template,
        _catalog({"Hello": "Hallo", "Bye": "", "Thanks": "Danke", "Old": "Alt"}, ("Thanks",)),
    )
    assert found == [
        "de: untranslated 'Bye'",
        "de: fuzzy 'Thanks'",
        "de: not used any more 'Old'",
    ]
    assert catalog_problems(template, _catalog({"Hello": "Hallo"})) == [
        "de: missing 'Bye'",
        "de: missing 'Thanks'",
    ]


def test_the_check_fails_on_a_translation_whose_placeholders_would_break_the_page() -> None:
    # Templates format every translation (`_()` is newstyle: `translation % values`), so an
    # unknown placeholder is a KeyError and a lone "%" a ValueError: a 500 in that language only.
    entries = {
        "Hello %(name)s": "Hallo %(nme)s",  # misspelt
        "Plain": "Schlicht %(name)s",  # one the English has not
        "Done": "Fertig zu 100 %",  # a lone %
        "%(count)s left": "noch %(count)s, 50 %",  # a lone % beside a good one
        "Hi %(name)s, %(n)s": "Hallo %(name)s",  # fewer is fine: the values are still given
        "100%% sure": "100%% sicher",  # an escaped % is a %
    }
    template = _catalog(dict.fromkeys(entries, ""))
    environment = jinja2.Environment(autoescape=True, extensions=["jinja2.ext.i18n"])
    environment.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda m: entries[m], ngettext=None, newstyle=True
    )
    with pytest.raises(KeyError):
        environment.from_string('{{ _("Plain") }}').render()
    with pytest.raises(ValueError):
        environment.from_string('{{ _("Done") }}').render()

    assert catalog_problems(template, _catalog(entries)) == [
        "de: placeholders differ in 'Hello %(name)s'",
        "de: placeholders differ in 'Plain'",
        "de: placeholders differ in 'Done'",
        "de: placeholders differ in '%(count)s left'",
    ]


def test_the_check_finds_text_outside_gettext_in_templates() -> None:
    wrapped = (
        '<p>{{ _("Hello %(n)s,", n=name) }}</p><a href="{{ url }}" title="{{ _("Go") }}">x</a>'
    )
    assert template_text_problems(wrapped, "ok.html") == []
    assert template_text_problems("<p>Hello {{ name }}</p>", "a.html") == [
        "a.html: text outside gettext: Hello"
    ]
    assert template_text_problems('<img alt="Logo" src="/l.png">', "b.html") != []
    assert template_text_problems("Hello {{ name }},\n", "c.txt") != []
    # Markup, styles and scripts are not text a user reads.
    assert template_text_problems("<style>p { color: red; }</style><br>", "d.html") == []


def test_the_check_finds_a_message_written_into_a_script() -> None:
    # The portal's scripts show what the page hands them; names, paths and comments are fine.
    fine = """// Show the error plainly, as the page says it.
const block = document.getElementById("webauthn-messages"); /* one JSON block */
fetch(`/static/vendor/altcha/workers/${file}`, { headers: { Accept: "application/json" } });
box.textContent = messages.cancelled; // the page's words
"""
    assert script_text_problems(fine, "ok.js") == []
    assert script_text_problems('box.textContent = "The passkey was refused.";', "a.js") == [
        'a.js: text outside gettext: "The passkey was refused."'
    ]
    assert script_text_problems("alert('Try again');", "b.js") != []
    assert script_text_problems("label = `Welcome back, ${name}`;", "c.js") != []


def test_the_committed_scripts_are_checked(tmp_path: Path) -> None:
    (tmp_path / "extra.js").write_text('throw new Error("Something went wrong.");\n')
    found = problems(scripts=tmp_path)
    assert found == ['static/extra.js: text outside gettext: "Something went wrong."']


def test_mail_dates_and_durations_speak_the_language_in_the_zone(tmp_path: Path) -> None:
    renderer = MailRenderer(template_dirs(None), timezone="America/New_York")
    at = 1_700_000_000.0  # 14 November 2023, 22:13:20 UTC; 17:13 in New York (EST)
    assert renderer.when(at, "en") == "14 November 2023 at 17:13 America/New_York"
    assert renderer.when(at, "de") == "14. November 2023 um 17:13 America/New_York"
    assert renderer.when(at, "fr") == "14 novembre 2023 à 17:13 America/New_York"
    assert renderer.when(at, "es") == "14 de noviembre de 2023 a las 17:13 America/New_York"
    assert renderer.duration(5400, "en") == "1 hour 30 minutes"
    assert renderer.duration(5400, "de") == "1 Stunde 30 Minuten"
    assert renderer.duration(300, "fr") == "5 minutes"
    assert renderer.duration(86400 * 2, "es") == "2 días"


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"default_language": "it"}, "default_language"),
        ({"notifier": {"timezone": "Mars/Olympus"}}, "is not an IANA time zone name"),
        ({"notifier": {"timezone": "../../etc/passwd"}}, "is not an IANA time zone name"),
    ],
)
def test_a_language_or_zone_the_portal_cannot_use_is_a_clear_configuration_error(
    tmp_path: Path, changes: dict[str, Any], said: str
) -> None:
    path = tmp_path / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(deep_merge(minimal_raw(tmp_path), changes), handle)
    with pytest.raises(ConfigError) as caught:
        read_config([path], {})
    assert any(said in problem for problem in caught.value.problems)
