"""Logging set-up: text or JSON lines, to stderr or a file."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

from portal.config import LogConfig

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# What a log line may quote of what a client sent: a bounded prefix, with every control, non-ASCII
# or backslash character escaped, so a request can neither flood the log nor forge a line.
QUOTE_LIMIT = 128
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]|\\")


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Return client-sent text escaped and cut to at most `limit` characters, marked when cut."""
    escaped = _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text[:limit])
    if len(escaped) <= limit and len(text) <= limit:
        return escaped
    return f"{escaped[:limit]}...({len(text)} characters in all)"


class ClientFaultFilter(logging.Filter):
    """Log a malformed request as one short line, and summarize floods (issue 11's log rule).

    aiohttp logs a request it cannot parse (HttpProcessingError with a 4xx code: a bad request
    line, header, chunk or body coding) with a traceback whose message echoes the bytes, up to
    about 16 KB per request. This filter, on the `aiohttp.server` logger, rewrites such a record
    into `bad request from ADDRESS: 400 REASON` (the reason quoted, at most 128 characters), at
    INFO: the client's fault, not the portal's. Past `burst` such lines from one address within
    `window` seconds, lines from it are dropped and counted; the next line after the window says
    how many were dropped. At most `addresses` addresses are tracked, so the state is bounded; past
    that every address shares one count. Internal faults (5xx, other exceptions) pass unchanged,
    traceback included.
    """

    def __init__(
        self,
        *,
        burst: int = 10,
        window: float = 60.0,
        addresses: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._burst, self._window, self._size, self._clock = burst, window, addresses, clock
        # address -> [window start, lines logged in it, lines dropped in it]
        self._seen: dict[str, list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a client fault into one short line; return False to drop it in a flood."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= exc.code < 500:
            return True
        address = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        now = self._clock()
        if address not in self._seen and len(self._seen) >= self._size:
            # Addresses whose window has ended (and with nothing left to report) make room.
            for old in [
                a
                for a, (start, _, dropped) in self._seen.items()
                if now - start >= self._window and not dropped
            ]:
                del self._seen[old]
        key = address if (address in self._seen or len(self._seen) < self._size) else "*"
        start, logged, dropped = self._seen.get(key, [now, 0, 0])
        summary = ""
        if now - start >= self._window:
            if dropped:
                summary = f" ({int(dropped)} more from this address were not logged)"
            start, logged, dropped = now, 0, 0
        if logged >= self._burst:
            self._seen[key] = [start, logged, dropped + 1]
            return False
        self._seen[key] = [start, logged + 1, dropped]
        record.msg = "bad request from %s: %d %s%s"
        record.args = (quoted(address, 64), exc.code, quoted(exc.message), summary)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object per line, with its structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Format a record as one text line, with its structured fields as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a text line."""
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            pairs = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
            line = f"{line} {pairs}"
        return line


def configure_logging(config: LogConfig) -> None:
    """Send the portal's logs where the configuration says, in its format."""
    handler: logging.Handler
    if config.file_path is not None:
        handler = logging.FileHandler(config.file_path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[config.level])
    server = logging.getLogger("aiohttp.server")
    for old_filter in list(server.filters):
        if isinstance(old_filter, ClientFaultFilter):
            server.removeFilter(old_filter)
    server.addFilter(ClientFaultFilter())


class SafeAccessLogger(AbstractAccessLogger):
    """Log each request without its query string, which may hold a reset token."""

    @property
    def enabled(self) -> bool:
        """Tell aiohttp not to call log() at all when INFO is off (the hot path)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write one access line: client, method, path (no query), status, duration."""
        # SECURITY: request.path has no query string; path_qs or the raw line would leak tokens.
        # What the client chose (method, path) is quoted: bounded, escaped, no forged lines.
        self.logger.info(
            "%s %s %s %d %.1fms",
            request.remote,
            quoted(request.method, 16),
            quoted(request.path),
            response.status,
            time * 1000,
        )
