"""`notifier`: how mail reaches users, and the sender address it carries.

Authelia: internal/configuration/schema/notifier.go.
"""

from __future__ import annotations

import email.errors
import email.headerregistry
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, PlainValidator, SecretStr, field_validator

from portal.config.tls import TlsConfig
from portal.config.types import Duration, ExactlyOneOf, Model, SmtpAddress

_ONE_MAIL_ADDRESS = (
    "must be one email address such as 'Portal <portal@example.com>'; quote a display name "
    "holding a comma or another special character: '\"Doe, John\" <portal@example.com>'"
)


def parse_mail_address(value: object) -> email.headerregistry.Address:
    """Read exactly one RFC 5322 address ('addr' or 'Name <addr>'), refusing anything loose.

    A configuration error is better than a guess: 'Doe, John <portal@example.com>' is two
    addresses, and a lenient parser would send every mail from 'Doe'.
    """
    if isinstance(value, email.headerregistry.Address):
        return value
    if not isinstance(value, str):
        raise ValueError(_ONE_MAIL_ADDRESS)
    # SECURITY: a line break would let the value add headers to every mail.
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError(_ONE_MAIL_ADDRESS)
    try:
        header = email.headerregistry.HeaderRegistry()("from", value.strip())
    except (IndexError, ValueError, email.errors.HeaderParseError) as exc:
        raise ValueError(_ONE_MAIL_ADDRESS) from exc
    groups = header.groups  # type: ignore[attr-defined]
    # Any defect (an unterminated '<', a bare word, obsolete syntax) means the text is not one
    # clean address; so do a group ('Team: a@b;') and a list.
    if header.defects or len(groups) != 1 or groups[0].display_name is not None:
        raise ValueError(_ONE_MAIL_ADDRESS)
    [address] = groups[0].addresses
    if not address.username or not address.domain:
        raise ValueError(_ONE_MAIL_ADDRESS)
    result: email.headerregistry.Address = address
    return result


# An address as both headers and envelopes need it: str() is the From header, .addr_spec the
# envelope sender.
MailAddress = Annotated[email.headerregistry.Address, PlainValidator(parse_mail_address)]

# The Subject every notifier gives a mail: {title} is the mail's own title.
DEFAULT_SUBJECT = "[Portal] {title}"


class SmtpConfig(Model):
    """An SMTP relay."""

    address: SmtpAddress
    sender: MailAddress
    timeout: Duration = timedelta(seconds=5)
    username: str | None = None
    password: SecretStr | None = None
    identifier: str = "localhost"
    subject: str = DEFAULT_SUBJECT
    startup_check_address: str = "test@example.com"
    disable_require_tls: bool = False
    disable_starttls: bool = False
    disable_html_emails: bool = False
    tls: TlsConfig = TlsConfig()


class FilesystemNotifierConfig(Model):
    """Append every mail to a file (for tests and homelabs)."""

    filename: Path


class OutboxConfig(Model):
    """The durable outbox's worker (not in Authelia, which sends from the request).

    poll_interval: how often each replica looks for queued mail it was not woken for (mail
    queued by another replica, or retries that fell due). lease: how long a claimed mail stays
    with the replica that claimed it; a replica that dies mid-send (SIGKILL, power loss) leaves
    its mail to another replica once the lease runs out, so the lease must be longer than one
    send can take (notifier.smtp.timeout per SMTP step).
    """

    poll_interval: Duration = Field(timedelta(seconds=5), gt=timedelta(0))
    lease: Duration = Field(timedelta(minutes=2), gt=timedelta(0))


class NotifierConfig(ExactlyOneOf):
    """How mail reaches users: exactly one of smtp or filesystem."""

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"{value!r} is not an IANA time zone name such as 'UTC' or 'Europe/Berlin'"
            ) from None
        return value

    one_of = ("smtp", "filesystem")

    disable_startup_check: bool = False
    template_path: Path | None = None
    # A portal key: the IANA time zone mails give dates and times in (the IANA database, via
    # Python's zoneinfo; 'UTC' by default).
    timezone: str = "UTC"
    outbox: OutboxConfig = OutboxConfig()
    smtp: SmtpConfig | None = None
    filesystem: FilesystemNotifierConfig | None = None
