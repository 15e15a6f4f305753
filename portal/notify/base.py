"""The Notifier seam every mail backend implements, and the headers all of them add.

A notifier's failures are portal.errors' NotifierError and DeliveryError.
"""

from __future__ import annotations

import copy
import email.message
import email.utils
import ipaddress
from datetime import UTC, datetime
from email.headerregistry import Address
from typing import Protocol
from urllib.parse import urlsplit

from portal.clock import Clock


class Notifier(Protocol):
    """Deliver complete mails to users."""

    async def startup_check(self) -> None:
        """Check the backend works, or raise StartupCheckError with a secret-free message."""
        ...

    async def send(self, message: email.message.EmailMessage) -> None:
        """Deliver one message, or raise DeliveryError."""
        ...

    async def rehearse(self, message: email.message.EmailMessage) -> None:
        """Prepare the message as send() would, then drop it: nothing is delivered or written.

        The reset job rehearses a decoy mail for identifiers that get none, so its work on the
        event loop does not tell whether the account exists.
        """
        ...

    async def close(self) -> None:
        """Release whatever the notifier holds."""
        ...


def complete_headers(
    message: email.message.EmailMessage,
    *,
    sender: Address,
    subject: str,
    clock: Clock,
) -> email.message.EmailMessage:
    """Return a copy of the message as every notifier delivers it.

    From, Date and Message-ID are filled in where missing, and the Subject is the mail's title
    put into the subject template, so a mail looks the same whichever notifier writes it.
    """
    # Work on a copy: a caller that retries must not find headers rewritten twice.
    result = copy.deepcopy(message)
    if result["From"] is None:
        result["From"] = str(sender)
    title = str(result["Subject"] or "")
    del result["Subject"]
    result["Subject"] = subject_line(subject, title)
    if result["Date"] is None:
        result["Date"] = email.utils.format_datetime(datetime.fromtimestamp(clock.now(), UTC))
    if result["Message-ID"] is None:
        # Passing a domain keeps make_msgid from calling socket.getfqdn(), which may block.
        result["Message-ID"] = email.utils.make_msgid(domain=_domain_of(result["From"]))
    return result


def subject_line(template: str, title: str) -> str:
    """Put a mail's title into the subject template ('[Portal] {title}')."""
    # str.replace, not str.format: braces in a title must not be read as fields.
    return template.replace("{title}", title)


def portal_sender(portal_url: str) -> Address:
    """Return the From of mails whose notifier has no sender: 'Portal <no-reply@HOST>'.

    HOST is the host of the portal's public address; an IP address is no mail domain, so a
    portal reached by one (a loopback test set-up) writes from no-reply@localhost.
    """
    host = (urlsplit(portal_url).hostname or "").rstrip(".")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        host = "localhost"
    return Address(display_name="Portal", username="no-reply", domain=host or "localhost")


def _domain_of(address: str | None) -> str:
    """Return the domain of an address header, or 'localhost' when there is none."""
    _, addr = email.utils.parseaddr(address or "")
    domain = addr.rpartition("@")[2]
    return domain if domain and "@" in addr else "localhost"
