"""The portal's languages: catalogs, the request's language, and the gettext callables.

Catalogs are the committed portal/locale/<lang>/LC_MESSAGES/messages.po, compiled in memory at
start-up (Babel's read_po and write_mo), so no binary .mo is ever committed or stale. English is
the source language: its "catalog" is the msgids themselves.

A request's language (language_middleware): the `portal_language` cookie the language switch
sets, else the best match of Accept-Language (RFC 9110 section 12.5.4, matched with Babel's
Locale.negotiate), else the portal key `default_language`. The translations in use live in a
context variable, read by the gettext callables installed in the Jinja environments
(jinja2.ext.i18n, newstyle) and by `gettext` here, so one rendering speaks one language.
Mails set it for their own rendering (MailRenderer), from the language the user last used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from aiohttp.typedefs import Middleware
from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

if TYPE_CHECKING:  # portal.errors imports N_ from here: no import of the portal at run time
    from portal.clock import Clock
    from portal.storage.base import UserLanguageStore

LANGUAGES: Final = ("en", "de", "fr", "es")
# The languages pages are offered in (and the switch lists). A language joins once every page
# and error page is translated: a page is never shown half in one language and half in another.
PAGE_LANGUAGES: Final = LANGUAGES
# Each language's name in itself, as the switch shows it.
NAMES: Final = {"en": "English", "de": "Deutsch", "fr": "Français", "es": "Español"}
SOURCE_LANGUAGE: Final = "en"
COOKIE: Final = "portal_language"
LOCALE_DIR: Final = Path(__file__).resolve().parent / "locale"
DOMAIN: Final = "messages"

Catalogs = Mapping[str, NullTranslations]

_NULL: Final = NullTranslations()
_current: ContextVar[tuple[str, NullTranslations]] = ContextVar(
    "portal_translations", default=(SOURCE_LANGUAGE, _NULL)
)


def N_(message: str) -> str:  # noqa: N802 - gettext_noop's customary name, a Babel keyword
    """Mark a message for extraction without translating it (gettext_noop): the caller
    translates it with `gettext` where it is shown."""
    return message


def load_catalogs(directory: Path = LOCALE_DIR) -> dict[str, NullTranslations]:
    """Read and compile every language's messages.po under directory into translations.

    Returns {language: translations} for every code in LANGUAGES (English: the identity).
    Raises FileNotFoundError when a catalog is missing and babel's errors when one does not
    parse: both are start-up errors, never a request's.
    """
    catalogs: dict[str, NullTranslations] = {SOURCE_LANGUAGE: _NULL}
    for language in LANGUAGES:
        if language == SOURCE_LANGUAGE:
            continue
        path = directory / language / "LC_MESSAGES" / f"{DOMAIN}.po"
        with path.open("rb") as po:
            catalog = read_po(po, locale=language, domain=DOMAIN)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)
        compiled.seek(0)
        catalogs[language] = Translations(compiled, domain=DOMAIN)
    return catalogs


# One Accept-Language entry, blanks around it stripped first: a language range and an optional
# weight (RFC 9110 12.4.2, 12.5.4). SECURITY: no two blank runs meet without a literal between
# them, so a long run of blanks is read once, not in every split (quadratic, on the event loop).
_RANGE = re.compile(r"([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)(?:\s*;\s*q\s*=\s*([0-9.]{1,5}))?")


def accepted_languages(header: str | None) -> list[str]:
    """Return the language ranges of an Accept-Language value, most wanted first.

    Entries with q=0 or a weight that is not a number in [0, 1] are dropped, as is `*`; at most
    the first 20 entries are read (a longer header is not a browser's).
    """
    weighted: list[tuple[float, int, str]] = []
    for index, entry in enumerate((header or "").split(",")[:20]):
        match = _RANGE.fullmatch(entry.strip())
        if match is None or match.group(1) == "*":
            continue
        try:
            weight = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        if 0 < weight <= 1:
            weighted.append((-weight, index, match.group(1)))
    return [language for _, _, language in sorted(weighted)]


def negotiate(
    cookie: str | None, accept_language: str | None, default: str, offered: tuple[str, ...]
) -> str:
    """Return the language to use: the cookie's if offered, else Accept-Language's best offered
    match (Babel's Locale.negotiate, `de-AT` matching `de`), else default (if offered, else
    English)."""
    if cookie in offered:
        return cookie
    preferred = accepted_languages(accept_language)
    # Babel matches exact tags first, then each tag's language alone: add the bare languages.
    candidates = [*preferred, *(tag.split("-")[0] for tag in preferred)]
    found = Locale.negotiate(candidates, list(offered), sep="-") if candidates else None
    if found is not None:
        return found.language
    return default if default in offered else SOURCE_LANGUAGE


def current_language() -> str:
    """Return the language of the translations in use (the source language outside any)."""
    return _current.get()[0]


@contextlib.contextmanager
def speaking(catalogs: Catalogs, language: str) -> Iterator[None]:
    """Speak language (a key of catalogs) in gettext and the Jinja callables inside the block."""
    token = _current.set((language, catalogs[language]))
    try:
        yield
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    """Translate message into the language in use (the message itself in English)."""
    return _current.get()[1].ugettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """Translate the singular or plural form for count into the language in use."""
    return _current.get()[1].ungettext(singular, plural, count)


def install(env: jinja2.Environment) -> None:
    """Add jinja2.ext.i18n to env with this module's callables (newstyle: `_("... %(x)s",
    x=...)` formats after translating and escapes the values in autoescaped templates)."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=gettext, ngettext=ngettext, newstyle=True
    )
    # `{{ error | translate }}`: a message from Python (marked with N_) in the language in use,
    # as plain text (escaped like any value; `_()` would mark a translation as safe markup).
    env.filters["translate"] = gettext


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("portal.i18n")

# What nginx's auth_request asks on every request (Authelia's endpoints): no language work.
NGINX_PATHS: Final = ("/api/authz/", "/api/verify")
# The language the current request asked for among every language (pages may offer fewer):
# what the user last used, recorded for their mails. None outside a request.
_wanted: ContextVar[str | None] = ContextVar("portal_wanted_language", default=None)


# Where the language switch leads back to: the current page (None outside a page request).
_back: ContextVar[str | None] = ContextVar("portal_language_back", default=None)


def language_links() -> list[dict[str, str | bool]]:
    """Return the switch's links for the page being rendered: code, name (in its own
    language), href (/language/CODE?back=THIS PAGE, quoted) and current (the page's language)."""
    back = _back.get() or "/"
    current = current_language()
    return [
        {
            "code": code,
            "name": NAMES[code],
            "href": f"/language/{code}?back={quote(back, safe='/')}",
            "current": code == current,
        }
        for code in PAGE_LANGUAGES
    ]


def _back_to(request: web.Request) -> str:
    """Return this page's path and query, without a `token` (a secret never goes in a link)."""
    query = [(k, v) for k, v in request.query.items() if k != "token"]
    return request.path + (f"?{urlencode(query)}" if query else "")


def wanted_language() -> str | None:
    """Return the language the current request chose among LANGUAGES (cookie, Accept-Language,
    default_language), or None outside a request (a background job, /api/authz/*)."""
    return _wanted.get()


class LanguageRecorder:
    """Record the current request's language as a user's last used one, for their mails.

    LanguageRecorder(store, clock): store is the UserLanguageStore role, clock gives `at`.
    """

    def __init__(self, store: UserLanguageStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(self, username: str) -> None:
        """Keep wanted_language() for username; nothing outside a request.

        Never raises StorageError: a store that cannot keep it loses a preference, logged as
        a warning, and what called this goes on (a reset's password is already written then,
        and its "changed" mail must still be queued, in this request's language)."""
        # Imported here: portal.errors imports this module.
        from portal.errors import StorageError  # noqa: PLC0415

        language = wanted_language()
        if language is None:
            return
        try:
            await self._store.set_user_language(username, language, at=self._clock.now())
        except StorageError as exc:
            log.warning("could not record the language of %s for their mails: %s", username, exc)


def language_middleware(catalogs: Catalogs, default: str) -> Middleware:
    """Build the middleware that picks each request's language (negotiate) and, for pages,
    speaks it while the handler runs; wanted_language() says it among every language in
    LANGUAGES (the one recorded for the user's mails).

    /api/authz/* and /api/verify are left alone: nginx asks them on every request and they
    render no text. The
    JSON API (portal.headers.is_api) speaks English: its messages are an interface.
    """

    # Imported here: portal.errors imports this module, and portal.headers imports the config.
    from portal.headers import is_api

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(NGINX_PATHS):
            return await handler(request)
        cookie = request.cookies.get(COOKIE)
        header = request.headers.get("Accept-Language")
        token = _wanted.set(negotiate(cookie, header, default, LANGUAGES))
        back = _back.set(_back_to(request))
        # The JSON API answers in English, as Authelia's: scripts match its messages.
        page = (
            SOURCE_LANGUAGE
            if is_api(request)
            else negotiate(cookie, header, default, PAGE_LANGUAGES)
        )
        try:
            with speaking(catalogs, page):
                return await handler(request)
        finally:
            _back.reset(back)
            _wanted.reset(token)

    return middleware
