"""FilesystemNotifier: append every mail to one file, for tests and homelabs without SMTP.

Each message is written whole (bytes, SMTP line endings) and followed by MESSAGE_SEPARATOR, so
`split_messages` can read the file back. Mails carry reset links, so the file is created 0600.
"""

from __future__ import annotations

import asyncio
import email.message
import email.parser
import email.policy
import os
from email.headerregistry import Address
from pathlib import Path

from portal.clock import Clock, SystemClock
from portal.config import DEFAULT_SUBJECT, FilesystemNotifierConfig
from portal.errors import DeliveryError, StartupCheckError
from portal.notify.base import complete_headers

MESSAGE_SEPARATOR = b"----- end of message (portal) -----\r\n"


class FilesystemNotifier:
    """Append each mail to the configured file."""

    def __init__(
        self,
        config: FilesystemNotifierConfig,
        *,
        sender: Address,
        subject: str = DEFAULT_SUBJECT,
        clock: Clock | None = None,
    ) -> None:
        self._path = config.filename
        # Authelia's filesystem notifier has no sender or subject settings; the caller picks
        # them (deps: the portal's no-reply address) so the file holds what SMTP would send.
        self._sender = sender
        self._subject = subject
        self._rehearsal = config.filename.with_name(config.filename.name + ".rehearsal")
        self._clock: Clock = clock or SystemClock()
        self._lock = asyncio.Lock()

    async def startup_check(self) -> None:
        """Check the file can be created and appended to, or raise StartupCheckError."""
        try:
            async with self._lock:
                await asyncio.to_thread(_append, self._path, b"")
        except OSError as exc:
            raise StartupCheckError(
                f"notifier.filesystem: cannot write mails to {self._path}: {_reason(exc)}"
            ) from exc

    async def send(self, message: email.message.EmailMessage) -> None:
        """Append the message and its separator to the file, or raise DeliveryError."""
        data = self._prepare(message)
        try:
            # Serialise writers so two mails never interleave in the file.
            async with self._lock:
                await asyncio.to_thread(_append, self._path, data + MESSAGE_SEPARATOR)
        except OSError as exc:
            raise DeliveryError(
                f"cannot append the mail to {self._path}: {_reason(exc)}", permanent=False
            ) from exc

    async def rehearse(self, message: email.message.EmailMessage) -> None:
        """Prepare the message as send() does and write it where no reader looks, then fsync.

        SECURITY: a decoy (reset.py) must cost what a real mail costs, on the event loop and on
        the disk: a real append's fsync slows the next request's database writes, so the same
        bytes go, with the same fsync, into `<filename>.rehearsal` (overwritten each time, 0600),
        never into the mail file.
        """
        data = self._prepare(message)
        # The same hand-over to a worker thread as send(), so the event loop does the same work.
        async with self._lock:
            await asyncio.to_thread(_overwrite, self._rehearsal, data + MESSAGE_SEPARATOR)

    async def close(self) -> None:
        """Release nothing: the file is opened and closed for every mail."""

    def _prepare(self, message: email.message.EmailMessage) -> bytes:
        """Return the message as it goes into the file: headers completed, SMTP line endings."""
        complete = complete_headers(
            message, sender=self._sender, subject=self._subject, clock=self._clock
        )
        data = complete.as_bytes(policy=email.policy.SMTP)
        return data if data.endswith(b"\r\n") else data + b"\r\n"


def split_messages(data: bytes) -> list[email.message.EmailMessage]:
    """Parse the contents of a notifier file back into its messages, oldest first."""
    parser = email.parser.BytesParser(policy=email.policy.default)
    chunks = data.split(MESSAGE_SEPARATOR)
    messages: list[email.message.EmailMessage] = []
    for chunk in chunks:
        if chunk.strip():
            messages.append(parser.parsebytes(chunk))
    return messages


def _append(path: Path, data: bytes) -> None:
    """Create the file (and its directory) if needed, append the data and flush it to disk."""
    _write(path, data, os.O_APPEND)


def _overwrite(path: Path, data: bytes) -> None:
    """Write the data over the file's contents (creating it if needed) and flush it to disk."""
    _write(path, data, os.O_TRUNC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Open the file write-only with mode (O_APPEND or O_TRUNC), write all the data, fsync."""
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"{parent} is not a directory")
    # SECURITY: mails hold reset links; only the portal's user may read the file and directory.
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | mode, 0o600)  # SECURITY: above
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    """Describe an OS error without a traceback."""
    return exc.strerror or str(exc) or type(exc).__name__
