"""Render the portal's mails (text and HTML parts) from templates/emails or the admin's own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class MailRenderer:
    """Build complete mails from a text and an HTML template of the same name."""

    def __init__(self, template_dirs: Sequence[Path]) -> None:
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(d) for d in template_dirs])
        # Plain-text parts are not HTML: escaping would garble links and names.
        self._text = jinja2.Environment(
            loader=loader, autoescape=False, undefined=jinja2.StrictUndefined  # noqa: S701
        )
        self._html = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined
        )

    def render(
        self, name: str, *, to: str, title: str, context: Mapping[str, Any]
    ) -> EmailMessage:
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
