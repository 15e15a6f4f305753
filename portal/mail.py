"""Render the portal's mails (text and HTML parts) from templates/emails or the admin's own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2


def humanize_duration(seconds: float) -> str:
    """Say a duration the way a person would: '5 minutes', '1 hour 30 minutes'."""
    remaining = round(seconds)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "0 seconds"


def when(timestamp: float) -> str:
    """Say a Unix time (seconds) as mails and pages show it: '30 November 2026 at 14:05 UTC'."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%d %B %Y at %H:%M UTC")


class MailRenderer:
    """Build complete mails from a text and an HTML template of the same name."""

    def __init__(self, template_dirs: Sequence[Path]) -> None:
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

    def render(self, name: str, *, to: str, title: str, context: Mapping[str, Any]) -> EmailMessage:
        """Render {name}.txt and {name}.html into one message to `to`."""
        values = {"title": title, **context}
        message = EmailMessage()
        message["To"] = to
        message["Subject"] = title
        # 8bit rather than quoted-printable: links stay whole and copyable in the filesystem
        # notifier's file and in mail clients' source views (every line is under 998 bytes).
        text = self._text.get_template(f"{name}.txt").render(values)
        message.set_content(text, cte="8bit")
        html = self._html.get_template(f"{name}.html").render(values)
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
