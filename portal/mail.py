"""Render the portal's mails (text and HTML parts) from templates/emails or the admin's own.

A mail speaks the language its user last used on the pages (UserLanguageStore), else the
portal's default_language; its dates, times and durations are said in that language (Babel's
CLDR data) and in notifier.timezone.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_date, format_time
from babel.units import format_unit

from portal import i18n
from portal.storage.base import UserLanguageStore

# CLDR's locale for each language's dates: English as written in most of the world (day first).
_DATE_LOCALES = {"en": "en_GB"}


def say_when(timestamp: float, language: str, zone: tzinfo = UTC, zone_name: str = "UTC") -> str:
    """Say a Unix time (seconds) in language and zone, as '30 November 2026 at 14:05 UTC' or
    '30. November 2026 um 14:05 UTC' (CLDR's long date, a 24-hour time, the zone's name)."""
    moment = datetime.fromtimestamp(timestamp, zone)
    # The joining words come from the catalogs of the language in use (pages: the request's;
    # mails: MailRenderer.when speaks the mail's).
    return i18n.gettext("%(date)s at %(time)s %(zone)s") % {
        "date": format_date(moment, "long", locale=_DATE_LOCALES.get(language, language)),
        "time": format_time(moment, "HH:mm", tzinfo=zone, locale=language),
        "zone": zone_name,
    }


def when(timestamp: float) -> str:
    """Say a Unix time (seconds) as pages show it, in UTC and the page's language (the one in
    use: portal.i18n.current_language)."""
    return say_when(timestamp, i18n.current_language())


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


class MailRenderer:
    """Build complete mails from a text and an HTML template of the same name, in a language.

    MailRenderer(template_dirs, catalogs=i18n.load_catalogs(), languages=None,
    default_language="en", timezone="UTC"): languages is where users' last-used languages are
    read (None: every mail in default_language); timezone an IANA name (notifier.timezone).
    """

    def __init__(
        self,
        template_dirs: Sequence[Path],
        *,
        catalogs: i18n.Catalogs | None = None,
        languages: UserLanguageStore | None = None,
        default_language: str = i18n.SOURCE_LANGUAGE,
        timezone: str = "UTC",
    ) -> None:
        self._catalogs = catalogs if catalogs is not None else i18n.load_catalogs()
        self._languages = languages
        self._default = default_language
        self._zone_name = timezone
        self._zone = zoneinfo.ZoneInfo(timezone)
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(d) for d in template_dirs])
        # Plain-text parts are not HTML: escaping would garble links and names.
        self._text = jinja2.Environment(
            loader=loader,
            autoescape=False,  # noqa: S701 - plain-text mails: nothing is HTML
            undefined=jinja2.StrictUndefined,
        )
        self._html = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined
        )
        i18n.install(self._text)
        i18n.install(self._html)

    async def language_of(self, username: str) -> str:
        """Return the language to write to username in: the one they last used, else the
        portal's default_language (raises what the store raises: StorageError)."""
        stored = await self._languages.user_language(username) if self._languages else None
        return stored if stored is not None and stored in self._catalogs else self._default

    async def record_language(self, username: str, language: str, *, at: float) -> None:
        """Keep language as username's last used one, for their next mails (a known language
        only; nothing without a store)."""
        if self._languages is not None and language in self._catalogs:
            await self._languages.set_user_language(username, language, at=at)

    def gettext(self, message: str, language: str) -> str:
        """Translate a message marked with i18n.N_ into language (for a mail's context)."""
        with i18n.speaking(self._catalogs, language if language in self._catalogs else "en"):
            return i18n.gettext(message)

    def when(self, timestamp: float, language: str) -> str:
        """Say a Unix time (seconds) in language and notifier.timezone, as '30. November 2026
        um 15:05 Europe/Berlin' (say_when, with the zone's IANA name)."""
        with i18n.speaking(self._catalogs, language):
            return say_when(timestamp, language, self._zone, self._zone_name)

    def duration(self, seconds: float, language: str) -> str:
        """Say a duration in language with its two largest units: '1 Stunde 30 Minuten'."""
        remaining = round(seconds)
        parts = []
        for unit, size in _UNITS:
            count, remaining = divmod(remaining, size)
            if count:
                parts.append(format_unit(count, f"duration-{unit}", length="long", locale=language))
        return " ".join(parts[:2]) or format_unit(0, "duration-second", "long", locale=language)

    def render(
        self,
        name: str,
        *,
        to: str,
        title: str,
        context: Mapping[str, Any],
        language: str = i18n.SOURCE_LANGUAGE,
    ) -> EmailMessage:
        """Render {name}.txt and {name}.html into one message to `to`, in language.

        title is an English msgid marked with i18n.N_: it is translated here, as the templates'
        texts are (an unknown language: English).
        """
        language = language if language in self._catalogs else i18n.SOURCE_LANGUAGE
        with i18n.speaking(self._catalogs, language):
            title = i18n.gettext(title)
            values = {"title": title, "language": language, **context}
            # 8bit rather than quoted-printable: links stay whole and copyable in the filesystem
            # notifier's file and in mail clients' source views (every line is under 998 bytes).
            text = self._text.get_template(f"{name}.txt").render(values)
            html = self._html.get_template(f"{name}.html").render(values)
        message = EmailMessage()
        message["To"] = to
        message["Subject"] = title
        message.set_content(text, cte="8bit")
        message.add_alternative(html, subtype="html", cte="8bit")
        return message


EMAIL_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "emails"


def template_dirs(custom: Path | None) -> list[Path]:
    """Return where mail templates are looked up: notifier.template_path first, if set."""
    return [custom, EMAIL_TEMPLATES] if custom is not None else [EMAIL_TEMPLATES]


def template_problems(directory: Path) -> list[str]:
    """Say why the templates in directory (notifier.template_path) cannot be used.

    The directory must exist, as Authelia requires of its template_path. Each file in it named
    as a built-in template (reset_password.txt, ...) overrides that one and must parse as a
    UTF-8 Jinja2 template. Other files are not read: a directory carried over from Authelia
    holds Go templates under Authelia's names.
    """
    if not directory.exists():
        return [f"{directory} does not exist"]
    if not directory.is_dir():
        return [f"{directory} is not a directory"]
    parser = jinja2.Environment(autoescape=True)  # parses only; nothing is rendered here
    i18n.install(parser)
    problems = []
    for name in sorted(p.name for p in EMAIL_TEMPLATES.iterdir()):
        path = directory / name
        if not path.exists():
            continue
        try:
            parser.parse(path.read_text(encoding="utf-8"), name, str(path))
        except OSError as exc:
            problems.append(f"{path}: cannot be read: {exc.strerror}")
        except UnicodeDecodeError:
            problems.append(f"{path}: is not UTF-8 text")
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{path}: not a valid template (line {exc.lineno}): {exc.message}")
    return problems
