"""A real aiosmtpd server on a free loopback port, in the test's own event loop, that records
everything it is told: messages (parsed), recipients tried, and AUTH attempts."""

from __future__ import annotations

import asyncio
import email.message
import email.parser
import email.policy
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Delivery:
    """One message the server accepted, with its envelope."""

    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    encrypted: bool
    auth_user: str | None = None  # who logged in on that connection, if anyone


@dataclass
class Recorder:
    """Remember what the server was asked, and answer RCPT for the addresses it must refuse."""

    refuse: dict[str, str] = field(default_factory=dict)  # address -> SMTP reply
    credentials: tuple[str, str] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    senders_tried: list[str] = field(default_factory=list)  # MAIL FROM, as received
    recipients_tried: list[str] = field(default_factory=list)
    logins_tried: list[str] = field(default_factory=list)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Accept and remember the envelope sender."""
        self.senders_tried.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept the recipient unless told to refuse it."""
        self.recipients_tried.append(address)
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Parse and keep the message."""
        assert isinstance(envelope.original_content, bytes)
        parser = email.parser.BytesParser(policy=email.policy.default)
        transport = server.transport
        self.deliveries.append(
            Delivery(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                message=parser.parsebytes(envelope.original_content),
                encrypted=transport is not None
                and transport.get_extra_info("ssl_object") is not None,
                auth_user=session.login_data.decode() if session.authenticated else None,
            )
        )
        return "250 OK: queued"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Accept exactly the configured credentials."""
        assert isinstance(auth_data, LoginPassword)
        self.logins_tried.append(auth_data.login.decode())
        given = (auth_data.login.decode(), auth_data.password.decode())
        ok = self.credentials is not None and given == self.credentials
        # handled=False: let aiosmtpd send the 535 reply itself; auth_data names the user later.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass
class SmtpServer:
    """A running test server: where it listens and what it recorded."""

    host: str
    port: int
    recorder: Recorder

    @property
    def deliveries(self) -> list[Delivery]:
        """Return the messages accepted so far."""
        return self.recorder.deliveries


@asynccontextmanager
async def running_smtp_server(
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    credentials: tuple[str, str] | None = None,
    auth_over_plain_text: bool = False,
    refuse: dict[str, str] | None = None,
    port: int = 0,
) -> AsyncIterator[SmtpServer]:
    """Run an aiosmtpd server on 127.0.0.1 (a free port unless given) until the block ends."""
    loop = asyncio.get_running_loop()
    recorder = Recorder(refuse=refuse or {}, credentials=credentials)
    # aiosmtpd only knows TLS it started itself (STARTTLS): over implicit TLS it would neither
    # offer nor accept AUTH while auth_require_tls is set, though the connection is encrypted.
    require_tls = not auth_over_plain_text and implicit_tls is None

    def factory() -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH is required without requiring TLS; over implicit TLS
            # every byte is encrypted (and the suite turns warnings into errors).
            if implicit_tls is not None:
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(
                recorder,
                hostname="mail.test",  # avoids a blocking getfqdn()
                tls_context=starttls,
                authenticator=recorder.authenticate if credentials else None,
                auth_required=credentials is not None and not auth_over_plain_text,
                auth_require_tls=require_tls,
                loop=loop,
            )

    server = await loop.create_server(factory, "127.0.0.1", port, ssl=implicit_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield SmtpServer("127.0.0.1", port, recorder)
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accept TCP connections and never say a word (to test timeouts); yield the port."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """Return a loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
