"""The notifiers against real things: aiosmtpd servers on loopback ports (plain, STARTTLS,
implicit TLS, with AUTH) with trustme certificates, and files in a tmp dir."""

from __future__ import annotations

import asyncio
import email.message
import logging
import ssl
import stat
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

from portal.config import FilesystemNotifierConfig, SmtpConfig
from portal.deps import notifier_from_config
from portal.errors import DeliveryError, StartupCheckError
from portal.notify.base import Notifier, portal_sender
from portal.notify.filesystem import FilesystemNotifier, split_messages
from portal.notify.smtp import SmtpNotifier
from tests.conftest import ConfigFactory
from tests.integration.smtp_server import (
    SmtpServer,
    closed_port,
    running_smtp_server,
    silent_server,
)

SENDER = "Portal <portal@example.com>"
FILE_PORTAL_URL = "https://auth.example.com"
FILE_SENDER = "Portal <no-reply@auth.example.com>"
JOHN = "john@example.com"
CREDENTIALS = ("portal", "correct-horse-battery-staple")
WRONG_PASSWORD = "wrong-pony-secret-9431"
NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


class FrozenClock:
    """A clock that always says NOW."""

    def now(self) -> float:
        """Return NOW."""
        return NOW


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private CA the servers' certificates come from."""
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server context whose certificate is valid for 127.0.0.1 and mail.test only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "mail.test").configure_cert(context)
    return context


@pytest.fixture
def ca_directory(ca: trustme.CA, tmp_path: Path) -> Path:
    """A folder holding the CA certificate, the way certificates_directory names it."""
    folder = tmp_path / "certificates"
    folder.mkdir()
    ca.cert_pem.write_to_path(str(folder / "private-ca.crt"))
    return folder


@pytest.fixture
async def plain_server() -> AsyncIterator[SmtpServer]:
    """A server without STARTTLS that refuses one mailbox (550) and defers another (450)."""
    refuse = {
        "nobody@example.com": "550 5.1.1 No such user",
        "busy@example.com": "450 4.2.1 Mailbox busy, try later",
    }
    async with running_smtp_server(refuse=refuse) as server:
        yield server


@pytest.fixture
async def starttls_server(server_tls: ssl.SSLContext) -> AsyncIterator[SmtpServer]:
    """A server offering STARTTLS with the trustme certificate."""
    async with running_smtp_server(starttls=server_tls) as server:
        yield server


@pytest.fixture
async def implicit_tls_server(server_tls: ssl.SSLContext) -> AsyncIterator[SmtpServer]:
    """A server speaking TLS from the first byte (port 465 style)."""
    async with running_smtp_server(implicit_tls=server_tls) as server:
        yield server


@pytest.fixture
async def auth_server(server_tls: ssl.SSLContext) -> AsyncIterator[SmtpServer]:
    """A STARTTLS server that requires AUTH with CREDENTIALS."""
    async with running_smtp_server(starttls=server_tls, credentials=CREDENTIALS) as server:
        yield server


@pytest.fixture
async def clear_auth_server() -> AsyncIterator[SmtpServer]:
    """A careless server that offers AUTH over plain text and no STARTTLS."""
    async with running_smtp_server(credentials=CREDENTIALS, auth_over_plain_text=True) as server:
        yield server


# --- helpers --------------------------------------------------------------------------------


def smtp_notifier(
    port: int, scheme: str = "smtp", certificates_directory: Path | None = None, **overrides: Any
) -> SmtpNotifier:
    """Build an SmtpNotifier for a loopback server, as the configuration would."""
    raw: dict[str, Any] = {
        "address": f"{scheme}://127.0.0.1:{port}",
        "sender": SENDER,
        "timeout": "2s",
        "identifier": "portal.test",
    }
    raw.update(overrides)
    return SmtpNotifier(
        SmtpConfig.model_validate(raw),
        certificates_directory=certificates_directory,
        clock=FrozenClock(),
    )


def filesystem_notifier(path: Path, clock: FrozenClock | None = None) -> FilesystemNotifier:
    """Build a FilesystemNotifier writing to path, with the sender the portal would give it."""
    return FilesystemNotifier(
        FilesystemNotifierConfig(filename=path), sender=portal_sender(FILE_PORTAL_URL), clock=clock
    )


def reset_mail(to: str = JOHN, title: str = "Reset your password") -> email.message.EmailMessage:
    """A complete mail as the renderer hands it over: To, Subject, text and HTML parts."""
    message = email.message.EmailMessage()
    message["To"] = to
    message["Subject"] = title
    message.set_content("Hello John,\n\nFollow https://auth.example.com/reset?token=abc\n")
    message.add_alternative(
        '<p>Hello John,</p><p><a id="reset-link" href="https://auth.example.com/reset?token=abc">'
        "Reset</a></p>",
        subtype="html",
    )
    return message


async def send_failure(notifier: Notifier, message: email.message.EmailMessage) -> DeliveryError:
    """Send and return the DeliveryError it must raise."""
    with pytest.raises(DeliveryError) as caught:
        await notifier.send(message)
    return caught.value


def body(mail: email.message.EmailMessage, subtype: str) -> str:
    """Return the text of the mail's text/<subtype> part, failing if there is none."""
    part = mail.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content: str = part.get_content()
    return content


def everything_said(exc: BaseException) -> str:
    """Join the messages of an exception and of everything it was raised from."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        parts.append(f"{current!s} {current!r}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


# --- SMTP: plain text -----------------------------------------------------------------------


async def test_a_server_without_starttls_is_refused_by_default(plain_server: SmtpServer) -> None:
    error = await send_failure(smtp_notifier(plain_server.port), reset_mail())

    assert str(error) == (
        "the SMTP server does not offer STARTTLS; set disable_require_tls to allow plain text"
    )
    assert error.permanent is False
    assert plain_server.deliveries == []


async def test_plain_text_delivery_when_tls_is_not_required(plain_server: SmtpServer) -> None:
    await smtp_notifier(plain_server.port, disable_require_tls=True).send(reset_mail())

    [delivery] = plain_server.deliveries
    mail = delivery.message
    assert delivery.mail_from == "portal@example.com"
    assert delivery.rcpt_tos == [JOHN]
    assert delivery.encrypted is False
    assert mail["From"] == SENDER
    assert mail["To"] == JOHN
    assert mail["Subject"] == "[Portal] Reset your password"
    assert mail["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert mail["Message-ID"].endswith("@example.com>")
    assert mail.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in mail.iter_parts()] == ["text/plain", "text/html"]
    assert 'id="reset-link"' in body(mail, "html")


@pytest.mark.parametrize(
    ("sender", "display_name"),
    [
        ('"Doe, John" <portal@example.com>', "Doe, John"),
        ("Jöhn Doe <portal@example.com>", "Jöhn Doe"),
        ("portal@example.com", ""),
    ],
)
async def test_the_envelope_sender_is_the_bare_address_whatever_the_display_name(
    plain_server: SmtpServer, sender: str, display_name: str
) -> None:
    notifier = smtp_notifier(plain_server.port, disable_require_tls=True, sender=sender)

    await notifier.startup_check()
    await notifier.send(reset_mail())

    assert plain_server.recorder.senders_tried == ["portal@example.com"] * 2
    [delivery] = plain_server.deliveries
    assert delivery.mail_from == "portal@example.com"
    [author] = delivery.message["From"].addresses
    assert (author.display_name, author.addr_spec) == (display_name, "portal@example.com")


async def test_disable_html_emails_sends_only_the_text_part(plain_server: SmtpServer) -> None:
    notifier = smtp_notifier(plain_server.port, disable_require_tls=True, disable_html_emails=True)

    await notifier.send(reset_mail())

    [delivery] = plain_server.deliveries
    mail = delivery.message
    assert mail.get_content_type() == "text/plain"
    assert "reset?token=abc" in mail.get_content()
    assert mail["Subject"] == "[Portal] Reset your password"
    assert mail["To"] == JOHN


async def test_braces_in_a_title_do_not_break_the_subject(plain_server: SmtpServer) -> None:
    notifier = smtp_notifier(plain_server.port, disable_require_tls=True, subject="{title} ({0})")

    await notifier.send(reset_mail(title="Hi {name} {title} {0}"))

    assert plain_server.deliveries[0].message["Subject"] == "Hi {name} {title} {0} ({0})"


async def test_the_callers_message_is_left_untouched_so_a_retry_is_identical(
    plain_server: SmtpServer,
) -> None:
    notifier = smtp_notifier(plain_server.port, disable_require_tls=True)
    mail = reset_mail()

    await notifier.send(mail)
    await notifier.send(mail)

    assert mail["Subject"] == "Reset your password"
    assert mail["From"] is None
    subjects = [d.message["Subject"] for d in plain_server.deliveries]
    assert subjects == ["[Portal] Reset your password"] * 2


async def test_a_5xx_refusal_of_the_recipient_is_permanent(plain_server: SmtpServer) -> None:
    notifier = smtp_notifier(plain_server.port, disable_require_tls=True)

    error = await send_failure(notifier, reset_mail(to="nobody@example.com"))

    assert error.permanent is True
    assert "550" in str(error)
    assert "No such user" in str(error)
    assert "Follow https" not in everything_said(error)
    assert plain_server.deliveries == []


async def test_a_4xx_refusal_of_the_recipient_is_worth_a_retry(plain_server: SmtpServer) -> None:
    notifier = smtp_notifier(plain_server.port, disable_require_tls=True)

    error = await send_failure(notifier, reset_mail(to="busy@example.com"))

    assert error.permanent is False
    assert "450" in str(error)


async def test_a_refused_connection_is_worth_a_retry() -> None:
    port = closed_port()

    error = await send_failure(smtp_notifier(port), reset_mail())

    assert str(error) == f"cannot connect to smtp://127.0.0.1:{port}: Connection refused"
    assert error.permanent is False


async def test_a_rehearsal_prepares_the_mail_but_never_connects(plain_server: SmtpServer) -> None:
    mail = reset_mail()
    before = mail.as_bytes()

    await smtp_notifier(closed_port()).rehearse(mail)  # a send would fail: nobody listens
    await smtp_notifier(plain_server.port, disable_require_tls=True).rehearse(mail)

    assert plain_server.deliveries == []
    assert mail.as_bytes() == before


async def test_a_server_that_never_answers_times_out() -> None:
    async with silent_server() as port:
        notifier = smtp_notifier(port, timeout="0.2s")

        error = await send_failure(notifier, reset_mail())

    assert str(error) == f"timed out talking to smtp://127.0.0.1:{port}"
    assert error.permanent is False


# --- SMTP: TLS ------------------------------------------------------------------------------


async def test_starttls_delivers_when_the_ca_is_in_certificates_directory(
    starttls_server: SmtpServer, ca_directory: Path
) -> None:
    notifier = smtp_notifier(starttls_server.port, certificates_directory=ca_directory)

    await notifier.send(reset_mail())

    [delivery] = starttls_server.deliveries
    assert delivery.encrypted is True
    assert delivery.message["Subject"] == "[Portal] Reset your password"


async def test_starttls_refuses_a_certificate_from_an_unknown_ca(
    starttls_server: SmtpServer,
) -> None:
    error = await send_failure(smtp_notifier(starttls_server.port), reset_mail())

    assert str(error).startswith(
        f"TLS with smtp://127.0.0.1:{starttls_server.port} failed: certificate verify failed"
    )
    assert error.permanent is False
    assert starttls_server.deliveries == []


async def test_skip_verify_delivers_despite_an_unknown_ca_and_warns(
    starttls_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="portal.notify.smtp"):
        notifier = smtp_notifier(starttls_server.port, tls={"skip_verify": True})

    await notifier.send(reset_mail())
    await notifier.send(reset_mail())

    assert len(starttls_server.deliveries) == 2
    warnings = [r for r in caplog.records if "skip_verify" in r.getMessage()]
    assert len(warnings) == 1


async def test_disable_starttls_without_disable_require_tls_is_refused(
    starttls_server: SmtpServer, ca_directory: Path
) -> None:
    notifier = smtp_notifier(
        starttls_server.port, disable_starttls=True, certificates_directory=ca_directory
    )

    error = await send_failure(notifier, reset_mail())

    assert "disable_require_tls" in str(error)
    assert starttls_server.deliveries == []


async def test_starttls_is_used_when_offered_even_if_not_required(
    starttls_server: SmtpServer, ca_directory: Path
) -> None:
    notifier = smtp_notifier(
        starttls_server.port, disable_require_tls=True, certificates_directory=ca_directory
    )

    await notifier.send(reset_mail())

    assert starttls_server.deliveries[0].encrypted is True


async def test_implicit_tls_delivers(implicit_tls_server: SmtpServer, ca_directory: Path) -> None:
    notifier = smtp_notifier(
        implicit_tls_server.port, scheme="submissions", certificates_directory=ca_directory
    )

    await notifier.send(reset_mail())

    [delivery] = implicit_tls_server.deliveries
    assert delivery.encrypted is True
    assert delivery.rcpt_tos == [JOHN]


async def test_implicit_tls_refuses_an_unknown_ca(implicit_tls_server: SmtpServer) -> None:
    notifier = smtp_notifier(implicit_tls_server.port, scheme="submissions")

    error = await send_failure(notifier, reset_mail())

    assert "certificate verify failed" in str(error)
    assert implicit_tls_server.deliveries == []


@pytest.mark.parametrize("scheme", ["smtp", "submissions"])
async def test_the_certificate_is_checked_against_server_name(
    scheme: str, server_tls: ssl.SSLContext, ca_directory: Path
) -> None:
    starttls = server_tls if scheme == "smtp" else None
    implicit_tls = server_tls if scheme == "submissions" else None
    async with running_smtp_server(starttls=starttls, implicit_tls=implicit_tls) as server:
        right = smtp_notifier(
            server.port,
            scheme,
            certificates_directory=ca_directory,
            tls={"server_name": "mail.test"},
        )
        wrong = smtp_notifier(
            server.port,
            scheme,
            certificates_directory=ca_directory,
            tls={"server_name": "other.test"},
        )

        await right.send(reset_mail())
        error = await send_failure(wrong, reset_mail())

    assert "certificate verify failed" in str(error)
    assert "other.test" in str(error)
    assert len(server.deliveries) == 1


# --- SMTP: AUTH -----------------------------------------------------------------------------


async def test_the_right_credentials_are_accepted_over_starttls(
    auth_server: SmtpServer, ca_directory: Path
) -> None:
    notifier = smtp_notifier(
        auth_server.port,
        username=CREDENTIALS[0],
        password=CREDENTIALS[1],
        certificates_directory=ca_directory,
    )

    await notifier.send(reset_mail())

    assert auth_server.recorder.logins_tried == ["portal"]
    assert len(auth_server.deliveries) == 1


async def test_a_wrong_password_fails_without_the_password_in_the_error(
    auth_server: SmtpServer, ca_directory: Path
) -> None:
    notifier = smtp_notifier(
        auth_server.port,
        username=CREDENTIALS[0],
        password=WRONG_PASSWORD,
        certificates_directory=ca_directory,
    )

    error = await send_failure(notifier, reset_mail())

    assert str(error).startswith("authentication failed: 535")
    assert WRONG_PASSWORD not in everything_said(error)
    assert error.permanent is False  # the configuration is wrong, not the mail
    assert auth_server.deliveries == []


async def test_credentials_are_never_sent_over_plain_text(clear_auth_server: SmtpServer) -> None:
    notifier = smtp_notifier(
        clear_auth_server.port,
        disable_require_tls=True,
        username=CREDENTIALS[0],
        password=CREDENTIALS[1],
    )

    error = await send_failure(notifier, reset_mail())

    assert "refusing to send the SMTP password over an unencrypted connection" in str(error)
    assert clear_auth_server.recorder.logins_tried == []
    assert clear_auth_server.deliveries == []


# --- SMTP: every scheme, with and without AUTH, with the private CA trusted or not -----------
#
# Each combination is one test. The server is what the scheme implies (STARTTLS for smtp:// and
# submission://, TLS from the first byte for submissions://) and requires AUTH when the portal
# logs in. How the portal is told to trust the CA lives in TRUST alone, so a change to the TLS
# keys' meaning changes one table.

SCHEMES = ["smtp", "submission", "submissions"]
LOGINS = {"auth": CREDENTIALS, "no-auth": None}
TRUST: dict[str, Callable[[Path], dict[str, Any]]] = {
    "private-ca-trusted": lambda ca_directory: {"certificates_directory": ca_directory},
    "private-ca-unknown": lambda ca_directory: {},
}


@asynccontextmanager
async def server_for(
    scheme: str, server_tls: ssl.SSLContext, credentials: tuple[str, str] | None
) -> AsyncIterator[SmtpServer]:
    """Run the server a portal configured with this scheme would meet, requiring AUTH if asked."""
    implicit = scheme == "submissions"
    async with running_smtp_server(
        starttls=None if implicit else server_tls,
        implicit_tls=server_tls if implicit else None,
        credentials=credentials,
    ) as server:
        yield server


def notifier_for(
    server: SmtpServer, scheme: str, credentials: tuple[str, str] | None, trust: dict[str, Any]
) -> SmtpNotifier:
    """Configure the portal for the server: the scheme, the login if any, what it trusts."""
    login = {"username": credentials[0], "password": credentials[1]} if credentials else {}
    overrides: dict[str, Any] = {**trust, **login}
    return smtp_notifier(server.port, scheme, **overrides)


@pytest.mark.parametrize("login", LOGINS)
@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_trusted_private_ca_delivers_over_tls_with_the_right_envelope_and_login(
    scheme: str, login: str, server_tls: ssl.SSLContext, ca_directory: Path
) -> None:
    credentials = LOGINS[login]
    async with server_for(scheme, server_tls, credentials) as server:
        notifier = notifier_for(
            server, scheme, credentials, TRUST["private-ca-trusted"](ca_directory)
        )

        await notifier.startup_check()
        await notifier.send(reset_mail())

    logins = [CREDENTIALS[0]] * 2 if credentials else []
    assert server.recorder.logins_tried == logins
    assert server.recorder.recipients_tried == ["test@example.com", JOHN]
    [delivery] = server.deliveries
    assert delivery.encrypted is True
    assert delivery.mail_from == "portal@example.com"
    assert delivery.rcpt_tos == [JOHN]
    assert delivery.auth_user == (CREDENTIALS[0] if credentials else None)
    assert delivery.message["From"] == SENDER


@pytest.mark.parametrize("login", LOGINS)
@pytest.mark.parametrize("scheme", SCHEMES)
async def test_an_unknown_private_ca_is_refused_before_anything_is_said(
    scheme: str, login: str, server_tls: ssl.SSLContext, ca_directory: Path
) -> None:
    credentials = LOGINS[login]
    async with server_for(scheme, server_tls, credentials) as server:
        notifier = notifier_for(
            server, scheme, credentials, TRUST["private-ca-unknown"](ca_directory)
        )

        with pytest.raises(StartupCheckError) as at_start:
            await notifier.startup_check()
        error = await send_failure(notifier, reset_mail())

    reason = f"TLS with {scheme}://127.0.0.1:{server.port} failed: certificate verify failed"
    assert str(at_start.value).startswith(f"notifier.smtp: {reason}")
    assert str(error).startswith(reason)
    assert error.permanent is False
    assert CREDENTIALS[1] not in everything_said(error)
    assert server.recorder.logins_tried == []
    assert server.recorder.recipients_tried == []
    assert server.deliveries == []


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_wrong_password_is_refused_on_every_scheme_without_being_echoed(
    scheme: str, server_tls: ssl.SSLContext, ca_directory: Path
) -> None:
    async with server_for(scheme, server_tls, CREDENTIALS) as server:
        wrong = (CREDENTIALS[0], WRONG_PASSWORD)
        notifier = notifier_for(server, scheme, wrong, TRUST["private-ca-trusted"](ca_directory))

        with pytest.raises(StartupCheckError) as at_start:
            await notifier.startup_check()
        error = await send_failure(notifier, reset_mail())

    assert str(at_start.value).startswith("notifier.smtp: authentication failed: 535")
    assert str(error).startswith("authentication failed: 535")
    assert WRONG_PASSWORD not in everything_said(error) + everything_said(at_start.value)
    # aiosmtplib tries each mechanism the server offers before it gives up
    assert set(server.recorder.logins_tried) == {CREDENTIALS[0]}
    assert server.deliveries == []


# --- SMTP: startup check --------------------------------------------------------------------


async def test_startup_check_passes_and_sends_nothing(
    auth_server: SmtpServer, ca_directory: Path
) -> None:
    notifier = smtp_notifier(
        auth_server.port,
        username=CREDENTIALS[0],
        password=CREDENTIALS[1],
        startup_check_address="check@example.com",
        certificates_directory=ca_directory,
    )

    await notifier.startup_check()

    assert auth_server.recorder.logins_tried == ["portal"]
    assert auth_server.recorder.recipients_tried == ["check@example.com"]
    assert auth_server.deliveries == []


async def test_startup_check_names_a_refused_connection() -> None:
    port = closed_port()

    with pytest.raises(StartupCheckError) as caught:
        await smtp_notifier(port).startup_check()

    assert str(caught.value) == (
        f"notifier.smtp: cannot connect to smtp://127.0.0.1:{port}: Connection refused"
    )


async def test_startup_check_reports_bad_credentials_without_the_password(
    auth_server: SmtpServer, ca_directory: Path
) -> None:
    notifier = smtp_notifier(
        auth_server.port,
        username=CREDENTIALS[0],
        password=WRONG_PASSWORD,
        certificates_directory=ca_directory,
    )

    with pytest.raises(StartupCheckError) as caught:
        await notifier.startup_check()

    assert str(caught.value).startswith("notifier.smtp: authentication failed")
    assert WRONG_PASSWORD not in everything_said(caught.value)


async def test_startup_check_says_starttls_is_missing(plain_server: SmtpServer) -> None:
    with pytest.raises(StartupCheckError, match="does not offer STARTTLS"):
        await smtp_notifier(plain_server.port).startup_check()


async def test_startup_check_reports_a_refused_check_address(plain_server: SmtpServer) -> None:
    notifier = smtp_notifier(
        plain_server.port, disable_require_tls=True, startup_check_address="nobody@example.com"
    )

    with pytest.raises(StartupCheckError, match="refused the recipient: 550"):
        await notifier.startup_check()


# --- filesystem -----------------------------------------------------------------------------


async def test_the_filesystem_notifier_writes_the_mail_smtp_would_send(
    tmp_path: Path, plain_server: SmtpServer, make_config: ConfigFactory
) -> None:
    path = tmp_path / "notifications.txt"
    config = make_config(notifier={"filesystem": {"filename": str(path)}})

    await notifier_from_config(config).send(reset_mail())
    await smtp_notifier(plain_server.port, disable_require_tls=True).send(reset_mail())

    [written] = split_messages(path.read_bytes())
    sent = plain_server.deliveries[0].message
    # authelia_url is https://auth.example.com; the filesystem notifier has no sender setting.
    assert written["From"] == "Portal <no-reply@auth.example.com>"
    assert written["Subject"] == sent["Subject"] == "[Portal] Reset your password"
    assert sorted(written.keys()) == sorted(sent.keys())
    assert written["Message-ID"].endswith("@auth.example.com>")


@pytest.mark.parametrize(
    ("portal_url", "sender"),
    [
        ("https://auth.example.com", "Portal <no-reply@auth.example.com>"),
        ("https://Auth.Example.COM:8443/portal", "Portal <no-reply@auth.example.com>"),
        ("http://localhost:9091", "Portal <no-reply@localhost>"),
        ("http://127.0.0.1:9091", "Portal <no-reply@localhost>"),
        ("http://[::1]:9091", "Portal <no-reply@localhost>"),
    ],
)
def test_the_filesystem_sender_is_the_portals_own_no_reply_address(
    portal_url: str, sender: str
) -> None:
    assert str(portal_sender(portal_url)) == sender


async def test_mails_are_appended_whole_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "mail" / "notifications.txt"
    notifier = filesystem_notifier(path, clock=FrozenClock())

    await notifier.send(reset_mail(title="First"))
    await notifier.send(reset_mail(title="Second"))

    first, second = split_messages(path.read_bytes())
    assert [first["Subject"], second["Subject"]] == ["[Portal] First", "[Portal] Second"]
    assert first["From"] == FILE_SENDER
    assert first["To"] == JOHN
    assert first["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert first["Message-ID"]
    assert [p.get_content_type() for p in second.iter_parts()] == ["text/plain", "text/html"]
    assert "reset?token=abc" in body(second, "plain")


async def test_the_mail_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "notifications.txt"

    await filesystem_notifier(path).send(reset_mail())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_concurrent_mails_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "notifications.txt"
    notifier = filesystem_notifier(path)

    await asyncio.gather(*(notifier.send(reset_mail(title=f"Mail {i}")) for i in range(20)))

    mails = split_messages(path.read_bytes())
    assert sorted(m["Subject"] for m in mails) == sorted(f"[Portal] Mail {i}" for i in range(20))
    assert all(m.get_body(preferencelist=("html",)) is not None for m in mails)


async def test_a_rehearsal_writes_no_mail_but_costs_the_disk_what_a_mail_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mail" / "notifications.txt"
    notifier = filesystem_notifier(path)

    for _ in range(3):
        await notifier.rehearse(reset_mail())

    assert not path.exists()  # no mail: nobody reads a rehearsal
    rehearsal = path.with_name("notifications.txt.rehearsal")
    assert rehearsal.stat().st_mode & 0o777 == 0o600
    await notifier.send(reset_mail())
    # a mail's bytes were written (and flushed) once per rehearsal, overwritten each time; the
    # Date and Message-ID headers may differ by a character or two
    assert abs(rehearsal.stat().st_size - path.stat().st_size) <= 8


async def test_filesystem_startup_check_passes_for_a_writable_place(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "notifications.txt"

    await filesystem_notifier(path).startup_check()

    assert path.read_bytes() == b""


async def test_filesystem_startup_check_names_an_unwritable_path(tmp_path: Path) -> None:
    # A regular file as the parent stops root too, unlike permission bits.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "notifications.txt"

    with pytest.raises(StartupCheckError) as caught:
        await filesystem_notifier(path).startup_check()

    assert str(path) in str(caught.value)
    assert "not a directory" in str(caught.value)


async def test_a_failed_append_is_worth_a_retry(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    notifier = filesystem_notifier(blocker / "mail.txt")

    error = await send_failure(notifier, reset_mail())

    assert error.permanent is False
    assert str(blocker / "mail.txt") in str(error)


async def test_the_smtp_conversation_runs_off_the_portals_event_loop(
    plain_server: SmtpServer,
) -> None:
    # Issue 10.6 (found in review): connecting, TLS and the SMTP exchange on the portal's loop
    # slow the requests around a real mail only; a decoy connects nowhere.
    notifier = smtp_notifier(plain_server.port, disable_require_tls=True)

    def mail_threads() -> set[int]:
        return {t.ident or 0 for t in threading.enumerate() if t.name == "portal-smtp"}

    before = mail_threads()
    await notifier.send(reset_mail())
    ours = mail_threads() - before
    assert len(ours) == 1 and threading.get_ident() not in ours
    assert len(plain_server.deliveries) == 1
    await notifier.rehearse(reset_mail())  # a decoy goes the same way, and sends nothing
    assert len(plain_server.deliveries) == 1 and mail_threads() - before == ours
    await notifier.close()
    assert not mail_threads() & ours


# --- SMTP: a client certificate (mutual TLS) --------------------------------------------------


@pytest.fixture(scope="module")
def client_cert_server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server context that demands a client certificate signed by the private CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "mail.test").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_certificate(ca: trustme.CA) -> dict[str, str]:
    """tls.certificate_chain and tls.private_key holding a client certificate issued by ca."""
    issued = ca.issue_cert("portal-client.test")
    return {
        "certificate_chain": "".join(pem.bytes().decode() for pem in issued.cert_chain_pems),
        "private_key": issued.private_key_pem.bytes().decode(),
    }


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_server_demanding_a_client_certificate_gets_the_configured_one(
    scheme: str, client_cert_server_tls: ssl.SSLContext, ca: trustme.CA, ca_directory: Path
) -> None:
    async with server_for(scheme, client_cert_server_tls, CREDENTIALS) as server:
        notifier = smtp_notifier(
            server.port,
            scheme,
            certificates_directory=ca_directory,
            tls=client_certificate(ca),
            username=CREDENTIALS[0],
            password=CREDENTIALS[1],
        )

        await notifier.startup_check()
        await notifier.send(reset_mail())

    [delivery] = server.deliveries
    assert delivery.encrypted is True
    assert delivery.rcpt_tos == [JOHN]


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_server_demanding_a_client_certificate_refuses_the_portal_without_one(
    scheme: str, client_cert_server_tls: ssl.SSLContext, ca_directory: Path
) -> None:
    async with server_for(scheme, client_cert_server_tls, CREDENTIALS) as server:
        notifier = smtp_notifier(
            server.port,
            scheme,
            certificates_directory=ca_directory,
            username=CREDENTIALS[0],
            password=CREDENTIALS[1],
        )

        error = await send_failure(notifier, reset_mail())

    assert error.permanent is False
    assert CREDENTIALS[1] not in everything_said(error)
    assert server.recorder.logins_tried == []
    assert server.deliveries == []
    assert str(error).endswith(
        "(a server that demands a client certificate needs tls.certificate_chain and "
        "tls.private_key)"
    )


async def test_a_bad_file_in_certificates_directory_is_named_when_a_mail_is_sent(
    starttls_server: SmtpServer, tmp_path: Path
) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate")
    notifier = smtp_notifier(starttls_server.port, certificates_directory=tmp_path)

    error = await send_failure(notifier, reset_mail())

    assert str(error) == f"certificates_directory: {tmp_path / 'ca.crt'} holds no PEM certificate"
    assert starttls_server.deliveries == []
