"""The running portal's log under a stream of malformed requests: short lines, no tracebacks.

Issue 11: every malformed HTTP request used to log a traceback echoing up to about 16 KB of the
request's bytes (543 MB of log in five minutes). Now each is one short line, floods from one
address are summarized, and what a client chose (a path) is quoted bounded and escaped.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from tests.e2e.conftest import RunningPortal

MALFORMED = [
    # a header value with a control character, on a long line
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Odd: \x01" + b"a" * 8000 + b"\r\n\r\n",
    # a chunked body whose chunk size is not hexadecimal
    b"POST /api/firstfactor HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    # a request line no server could read
    b"\xff" * 4000 + b"\r\n\r\n",
    # a header with no colon
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"b" * 4000 + b"\r\n\r\n",
    # an 8 KB path of which the log may quote a little, and a path forging a log line
    b"GET /" + b"p" * 8000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /x%0AERROR%20forged HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    # a form in a charset that does not exist
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded;"
    b" charset=bogus\r\nContent-Length: 3\r\n\r\na=b",
]
ROUNDS = 40


async def send(url: str, raw: bytes) -> int:
    """Send raw bytes on a new connection; return the status the portal answered."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), timeout=10)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1])


async def test_malformed_requests_leave_a_short_log(portal: RunningPortal) -> None:
    before = portal.log_file.stat().st_size
    statuses = [await send(portal.url, raw) for _ in range(ROUNDS) for raw in MALFORMED]
    assert all(400 <= status < 500 for status in statuses), sorted(set(statuses))
    await asyncio.sleep(0.5)  # let the last lines reach the file
    grown = portal.log_file.read_bytes()[before:]
    text = grown.decode("utf-8", "replace")
    requests = ROUNDS * len(MALFORMED)
    assert "Traceback" not in text
    assert len(grown) / requests < 300, f"{len(grown) / requests:.0f} bytes per request"
    assert max(len(line) for line in text.splitlines()) < 400
    # one address's flood of unparseable requests: a burst of lines, then silence
    assert 1 <= text.count("bad request from 127.0.0.1") <= 10
    assert "\nERROR forged" not in text and "x\\nERROR forged" in text
