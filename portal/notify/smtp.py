"""SmtpNotifier: deliver mail through an SMTP relay with aiosmtplib, one connection per mail.

It owns the transport decisions: implicit TLS for submissions://, STARTTLS (required unless
`disable_require_tls`) for smtp:// and submission://, certificate checks, AUTH only over TLS, and
turning every failure into a DeliveryError (or StartupCheckError) that names no secret.
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import logging
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiosmtplib

from portal.clock import Clock, SystemClock
from portal.config import SmtpConfig
from portal.errors import DeliveryError, StartupCheckError
from portal.notify.base import complete_headers
from portal.tls import client_context

logger = logging.getLogger(__name__)

_NO_STARTTLS = (
    "the SMTP server does not offer STARTTLS; set disable_require_tls to allow plain text"
)
_STARTTLS_DISABLED = (
    "disable_starttls is set, so the connection would be plain text; "
    "set disable_require_tls to allow plain text"
)
_CLEAR_CREDENTIALS = (
    "refusing to send the SMTP password over an unencrypted connection; "
    "use STARTTLS or submissions://"
)


class SmtpNotifier:
    """Send mail through the configured SMTP relay."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        certificates_directory: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Prepare to send through config; certificates_directory's certificates are trusted.

        Nothing connects and no file is read until startup_check or the first mail.
        """
        self._config = config
        self._certificates_directory = certificates_directory
        self._clock: Clock = clock or SystemClock()
        self._tls_context: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if config.tls.skip_verify:
            logger.warning(
                "notifier.smtp.tls.skip_verify is set: the SMTP server's certificate is not "
                "checked, so anyone on the path can read the mails and the SMTP password"
            )

    async def startup_check(self) -> None:
        """Connect, secure, authenticate and try the envelope without sending anything."""
        config = self._config
        try:
            with self._translated():
                async with self._session() as smtp:
                    await smtp.mail(config.sender.addr_spec)
                    await smtp.rcpt(config.startup_check_address)
                    await smtp.rset()
        except DeliveryError as exc:
            raise StartupCheckError(f"notifier.smtp: {exc}") from exc

    async def send(self, message: email.message.EmailMessage) -> None:
        """Deliver one message, or raise DeliveryError saying whether a retry may help.

        SECURITY: the SMTP conversation (connect, TLS handshake, AUTH, DATA) runs on an event
        loop of its own, in a thread of its own. On the portal's loop it would hold up the
        requests around it, for a real mail only (a decoy, reset.py, connects nowhere), so the
        time of the next request would tell who has an account. The portal's loop only prepares
        the mail and hands it over, as rehearse() does.
        """
        prepared = self._prepare(message)
        delivery = asyncio.run_coroutine_threadsafe(self._deliver(prepared), self._mail_loop())
        await asyncio.wrap_future(delivery)

    async def _deliver(self, prepared: email.message.EmailMessage) -> None:
        with self._translated():
            async with self._session() as smtp:
                try:
                    await smtp.send_message(prepared, sender=self._config.sender.addr_spec)
                except ValueError as exc:  # no recipient or no sender in the headers
                    raise DeliveryError(f"the mail cannot be sent: {exc}", permanent=True) from exc

    def _mail_loop(self) -> asyncio.AbstractEventLoop:
        """Return the loop the conversations run on, starting its thread the first time."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="portal-smtp", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    async def rehearse(self, message: email.message.EmailMessage) -> None:
        """Prepare the message as send() does and hand it to the mail loop, which drops it.

        No connection is made: the portal's loop does what send() has it do.
        """
        prepared = self._prepare(message)
        # The bytes aiosmtplib's send_message would write (with a server offering 8BITMIME).
        rehearsal = asyncio.run_coroutine_threadsafe(_flatten(prepared), self._mail_loop())
        await asyncio.wrap_future(rehearsal)

    async def close(self) -> None:
        """Stop the mail loop's thread (every mail opens and closes its own connection)."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10)
        if not thread.is_alive():
            loop.close()

    def _prepare(self, message: email.message.EmailMessage) -> email.message.EmailMessage:
        """Return a copy with From, Date, Message-ID, our Subject, and only the parts wanted."""
        config = self._config
        prepared = complete_headers(
            message, sender=config.sender, subject=config.subject, clock=self._clock
        )
        if config.disable_html_emails:
            prepared = _text_only(prepared)
        return prepared

    async def _context(self) -> ssl.SSLContext:
        """Build the TLS context once, in a worker thread (loading the trust store reads files)."""
        if self._tls_context is None:
            try:
                self._tls_context = await asyncio.to_thread(
                    _build_tls_context, self._config, self._certificates_directory
                )
            except StartupCheckError as exc:
                raise DeliveryError(str(exc), permanent=False) from None
        return self._tls_context

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """Open a connection that is encrypted (unless allowed otherwise) and logged in."""
        config = self._config
        implicit_tls = config.address.scheme == "submissions"
        server_name = config.tls.server_name or config.address.host
        context = await self._context()
        sock = await self._open_socket()
        # Our own socket lets the certificate be checked against tls.server_name even when it
        # differs from the host we connect to (aiosmtplib takes the name from `hostname`).
        try:
            smtp = aiosmtplib.SMTP(
                hostname=server_name,
                sock=sock,
                local_hostname=config.identifier,
                timeout=config.timeout.total_seconds(),
                use_tls=implicit_tls,
                start_tls=False,
                tls_context=context,
            )
        except BaseException:
            sock.close()  # aiosmtplib owns the socket only once it exists
            raise
        try:
            await smtp.connect()
            # EHLO first, whatever the scheme: without it aiosmtplib knows no extension, and
            # over implicit TLS AUTH would look unsupported though the server offers it.
            await smtp.ehlo()
            encrypted = implicit_tls
            if not implicit_tls:
                if config.disable_starttls or not smtp.supports_extension("starttls"):
                    # SECURITY: never fall back to plain text unless the admin said so.
                    if not config.disable_require_tls:
                        reason = _STARTTLS_DISABLED if config.disable_starttls else _NO_STARTTLS
                        raise DeliveryError(reason, permanent=False)
                else:
                    await smtp.starttls(server_hostname=server_name, tls_context=context)
                    await smtp.ehlo()
                    encrypted = True
            if config.username is not None or config.password is not None:
                # SECURITY: never send a password in clear, whatever disable_require_tls says.
                if not encrypted:
                    raise DeliveryError(_CLEAR_CREDENTIALS, permanent=False)
                await self._login(smtp)
            yield smtp
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass  # the mail was accepted; a failed goodbye changes nothing
        finally:
            smtp.close()

    async def _open_socket(self) -> socket.socket:
        """Connect a TCP socket to the configured address within the timeout."""
        address = self._config.address
        loop = asyncio.get_running_loop()
        timeout = self._config.timeout.total_seconds()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
                error: OSError = OSError(f"{address.host} has no address")
                for family, kind, proto, _, sockaddr in infos:
                    sock = socket.socket(family, kind, proto)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, sockaddr)
                    except OSError as exc:
                        sock.close()
                        error = exc
                    except BaseException:
                        sock.close()
                        raise
                    else:
                        return sock
                raise error
        except OSError as exc:
            raise DeliveryError(
                f"cannot connect to {address}: {_os_reason(exc)}", permanent=False
            ) from exc

    async def _login(self, smtp: aiosmtplib.SMTP) -> None:
        """Log in with the configured credentials."""
        config = self._config
        if not smtp.supports_extension("auth"):
            raise DeliveryError(
                "a username is configured but the SMTP server does not offer AUTH",
                permanent=False,
            )
        password = config.password.get_secret_value() if config.password else ""
        try:
            await smtp.login(config.username or "", password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A wrong password is the configuration's fault, not the mail's: worth a retry later.
            raise DeliveryError(
                f"authentication failed: {self._scrub(f'{exc.code} {exc.message}')}",
                permanent=False,
            ) from exc

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn aiosmtplib and socket errors into DeliveryError with a secret-free message."""
        try:
            yield
        except DeliveryError:
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._delivery_error(exc) from exc

    def _delivery_error(self, exc: aiosmtplib.SMTPException | OSError) -> DeliveryError:
        """Describe a failure; 5xx replies about the mail are permanent, everything else is not."""
        address = self._config.address
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            permanent = all(r.code >= 500 for r in exc.recipients)
            return DeliveryError(
                f"the SMTP server refused every recipient ({self._scrub(replies)})",
                permanent=permanent,
            )
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            what = {
                aiosmtplib.SMTPSenderRefused: "refused the sender",
                aiosmtplib.SMTPRecipientRefused: "refused the recipient",
                aiosmtplib.SMTPDataError: "refused the mail",
                aiosmtplib.SMTPHeloError: "refused EHLO",
            }.get(type(exc), "replied")
            reply = self._scrub(f"{exc.code} {exc.message}")
            return DeliveryError(f"the SMTP server {what}: {reply}", permanent=exc.code >= 500)
        tls_error = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
        if isinstance(tls_error, ssl.SSLCertVerificationError):
            return DeliveryError(
                f"TLS with {address} failed: certificate verify failed: {tls_error.verify_message}",
                permanent=False,
            )
        if isinstance(tls_error, ssl.SSLError):
            reason = tls_error.reason or tls_error.strerror or "handshake failed"
            return DeliveryError(f"TLS with {address} failed: {reason}", permanent=False)
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            return DeliveryError(f"timed out talking to {address}", permanent=False)
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return DeliveryError(
                f"{address} closed the connection{self._client_certificate_hint()}",
                permanent=False,
            )
        if isinstance(exc, aiosmtplib.SMTPNotSupported):
            return DeliveryError(self._scrub(exc.message), permanent=True)
        if isinstance(exc, aiosmtplib.SMTPException):
            hint = (
                self._client_certificate_hint()
                if isinstance(exc, aiosmtplib.SMTPConnectError)
                else ""
            )
            return DeliveryError(
                f"SMTP with {address} failed: {self._scrub(exc.message)}{hint}", permanent=False
            )
        return DeliveryError(f"cannot talk to {address}: {_os_reason(exc)}", permanent=False)

    def _client_certificate_hint(self) -> str:
        """Say what a server that hangs up during TLS may want, when no client cert is set."""
        config = self._config
        encrypted = config.address.scheme == "submissions" or not config.disable_starttls
        if not encrypted or config.tls.certificate_chain:
            return ""
        return (
            " (a server that demands a client certificate needs tls.certificate_chain and "
            "tls.private_key)"
        )

    def _scrub(self, text: str) -> str:
        """Remove the password from text that came back from the server."""
        password = self._config.password
        if password is not None and password.get_secret_value():
            # SECURITY: a server that echoes what it received must not leak it into logs.
            return text.replace(password.get_secret_value(), "********")
        return text


def _build_tls_context(config: SmtpConfig, certificates_directory: Path | None) -> ssl.SSLContext:
    """Build the client context (portal.tls); raise StartupCheckError saying what is wrong."""
    return client_context(config.tls, certificates_directory, "notifier.smtp.tls")


def check_smtp_settings(config: SmtpConfig) -> list[str]:
    """Return what would keep every connection from being secured, found without connecting.

    certificates_directory is the top-level Config's to check, not this section's.
    """
    try:
        _build_tls_context(config, None)
    except StartupCheckError as exc:
        return str(exc).splitlines()
    return []


async def _flatten(message: email.message.EmailMessage) -> None:
    """Flatten a message as aiosmtplib would, and drop the bytes (a rehearsal)."""
    message.as_bytes(policy=email.policy.SMTP)


def _text_only(message: email.message.EmailMessage) -> email.message.EmailMessage:
    """Return the message with only its text/plain body, for disable_html_emails."""
    if not message.is_multipart():
        return message
    body = message.get_body(preferencelist=("plain",))
    if not isinstance(body, email.message.EmailMessage):
        raise DeliveryError(
            "disable_html_emails is set but the mail has no text/plain part", permanent=True
        )
    text = email.message.EmailMessage(policy=message.policy)
    for name, value in message.items():
        if name.lower() not in ("content-type", "content-transfer-encoding", "mime-version"):
            text[name] = value
    text.set_content(body.get_content())
    return text


def _os_reason(exc: OSError) -> str:
    """Say why a socket operation failed, as 'Connection refused' rather than a repr."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
