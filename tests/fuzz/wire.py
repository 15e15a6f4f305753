"""Send a raw request over a plain TCP connection to a loopback port and read the answer.

aiohttp's client would normalise what it sends (header names, encodings, framing); an asyncio
stream writes the bytes exactly as the generator made them. Every exchange has a deadline: a
server that sends no complete answer within it is hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Exchange:
    """What came back: the final status (None without one), whether it hung, how long it took."""

    status: int | None
    hung: bool
    seconds: float
    head: bytes = b""
    error: str = ""

    @property
    def status_class(self) -> str:
        """Name the outcome as the figures count it: 2xx ... 5xx, hang or closed."""
        if self.hung:
            return "hang"
        if self.status is None:
            return "closed"
        return f"{self.status // 100}xx"


class _NoAnswer(Exception):
    """The server closed the connection before a complete response head."""


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read response heads until a final (non-1xx) one; return its status and bytes."""
    for _ in range(8):  # a few interim 100 Continue answers at most
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise _NoAnswer(exc.partial[:200].decode("latin-1")) from None
        except asyncio.LimitOverrunError:
            raise _NoAnswer("response head too long") from None
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[1][:3].isdigit():
            raise _NoAnswer(f"not a status line: {head[:80]!r}")
        status = int(parts[1][:3])
        if not 100 <= status < 200 or status == 101:
            return status, head
    raise _NoAnswer("too many interim responses")


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _closing(head: bytes) -> bool:
    """Tell whether the server said it closes the connection after this answer."""
    return head.startswith(b"HTTP/1.0") or (_header(head, b"connection") or b"").lower() == b"close"


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> None:
    """Read the body as the head frames it, so the server is never cut off mid-answer."""
    if (length := _header(head, b"content-length")) is not None and length.isdigit():
        await reader.readexactly(min(int(length), MAX_BODY))
        return
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        total = 0
        while total <= MAX_BODY:
            size = int(((await reader.readline()).split(b";")[0].strip() or b"0"), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # the end (no trailers from aiohttp)
                return
            await reader.readexactly(size + 2)
            total += size
        return
    await reader.read(MAX_BODY)  # until the server closes


async def exchange(
    raw: bytes, port: int, *, timeout: float, linger: float = 0.0, host: str = LOOPBACK
) -> Exchange:
    """Send raw to host:port (loopback only) and read the answer within timeout seconds.

    With linger, wait up to that long for the server to close a connection its answer said it
    would close: by then it has drained the request and logged whatever it logs for it.
    """
    if host != LOOPBACK:
        raise ValueError("the fuzzer talks to 127.0.0.1 only")
    start = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    status: int | None = None
    head = b""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
            writer.write(raw)
            with contextlib.suppress(ConnectionError):
                await writer.drain()  # the server may answer and close before reading it all
            status, head = await _read_head(reader)
            if not raw.startswith(b"HEAD ") and status not in (204, 304):
                with contextlib.suppress(asyncio.IncompleteReadError, ValueError):
                    await _read_body(reader, head)
        if linger and _closing(head):
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(linger):
                    while await reader.read(MAX_BODY):
                        pass
    except TimeoutError:
        return Exchange(status, True, time.monotonic() - start, head, "timed out")
    except _NoAnswer as exc:
        return Exchange(None, False, time.monotonic() - start, b"", str(exc))
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        return Exchange(status, False, time.monotonic() - start, head, type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    return Exchange(status, False, time.monotonic() - start, head)
