"""What the log says about a client's malformed request: one short line, and floods summarized."""

from __future__ import annotations

import logging
import uuid

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, HttpProcessingError

from portal.logs import ClientFaultFilter, quoted


class Lines(logging.Handler):
    """Keep every record the logger lets through, formatted as the portal's text lines are."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> tuple[logging.Logger, Lines, Clock]:
    logger = logging.getLogger(f"test.aiohttp.server.{uuid.uuid4().hex}")  # a new one each
    logger.propagate = False
    lines, clock = Lines(), Clock()
    logger.addHandler(lines)
    logger.addFilter(ClientFaultFilter(burst=3, window=60, addresses=2, clock=clock))
    return logger, lines, clock


def aiohttp_logs(logger: logging.Logger, address: str, exc: BaseException) -> None:
    """Log as aiohttp's RequestHandler.handle_error does."""
    try:
        raise exc
    except BaseException as caught:
        logger.exception("Error handling request from %s", address, exc_info=caught)


def test_a_malformed_request_is_one_short_line_without_a_traceback(
    logged: tuple[logging.Logger, Lines, Clock],
) -> None:
    logger, lines, _ = logged
    bad = BadHttpMessage("Invalid header value char: " + "\x01" * 16000)
    aiohttp_logs(logger, "203.0.113.9", bad)
    [line] = lines.lines
    assert line.startswith("INFO bad request from 203.0.113.9: 400 Invalid header value char: ")
    assert "\\x01" in line
    assert "Traceback" not in line and "\n" not in line
    assert len(line) < 300


def test_a_flood_from_one_address_is_summarized(
    logged: tuple[logging.Logger, Lines, Clock],
) -> None:
    logger, lines, clock = logged
    for _ in range(50):
        aiohttp_logs(logger, "203.0.113.9", BadStatusLine("\xff" * 100))
    assert len(lines.lines) == 3
    aiohttp_logs(logger, "198.51.100.1", BadHttpMessage("x"))  # another address has its own
    assert len(lines.lines) == 4
    clock.now = 61
    aiohttp_logs(logger, "203.0.113.9", BadHttpMessage("again"))
    assert lines.lines[-1].endswith("(47 more from this address were not logged)")


def test_many_addresses_share_one_bounded_count(
    logged: tuple[logging.Logger, Lines, Clock],
) -> None:
    logger, lines, _ = logged
    for n in range(100):
        aiohttp_logs(logger, f"203.0.113.{n}", BadHttpMessage("x"))
    # two addresses tracked (3 lines each at most: 1 here), the rest share one count of 3
    assert len(lines.lines) == 2 + 3


def test_an_internal_fault_keeps_its_traceback(
    logged: tuple[logging.Logger, Lines, Clock],
) -> None:
    logger, lines, _ = logged
    aiohttp_logs(logger, "203.0.113.9", RuntimeError("a bug of ours"))
    aiohttp_logs(logger, "203.0.113.9", HttpProcessingError(code=500, message="ours too"))
    assert len(lines.lines) == 2
    assert all("Traceback" in line for line in lines.lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/reset-password/step1", "/reset-password/step1"),
        ("/a\nINFO forged line", "/a\\nINFO forged line"),
        ("/caf\u00e9\\", "/caf\\xe9\\\\"),
        ("/" + "a" * 200, "/" + "a" * 127 + "...(201 characters in all)"),
        ("\x01" * 200, "\\x01" * 32 + "...(200 characters in all)"),
    ],
)
def test_quoted_text_is_bounded_and_escaped(text: str, expected: str) -> None:
    assert quoted(text) == expected


def test_addresses_quiet_for_a_window_make_room_for_new_ones(
    logged: tuple[logging.Logger, Lines, Clock],
) -> None:
    # Found in review: the table never emptied, so past 2 (here) addresses in the process's
    # life every new one shared the "*" count for good.
    logger, lines, clock = logged
    for n in range(2):
        aiohttp_logs(logger, f"203.0.113.{n}", BadHttpMessage("x"))
    clock.now = 61
    for n in range(10, 14):
        aiohttp_logs(logger, f"198.51.100.{n}", BadHttpMessage("x"))
    # the two old ones made room: two new addresses get their own counts, the rest share "*"
    assert len(lines.lines) == 2 + 4
    for _ in range(5):
        aiohttp_logs(logger, "198.51.100.10", BadHttpMessage("x"))
    assert len(lines.lines) == 2 + 4 + 2  # its own burst of 3, of which one was used
