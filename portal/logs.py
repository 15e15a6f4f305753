"""Logging set-up: text or JSON lines, to stderr or a file, in one schema for every record.

Every line has the time, the level, the logger and the event (an audit event's name, "request"
for the access log, else the message), then the record's structured fields (username or
identifier hash, ip, ...), then the id of the request being handled (portal/request_id.py).
`log.format: json` writes them as one JSON object per line (Authelia's log.format); `text` as
`TIME LEVEL LOGGER: EVENT key=value ...`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, RequestKey, StreamResponse

from portal.config import LogConfig
from portal.headers import FOR_NGINX

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# Set on each request by portal.request_id's middleware: its id, and the client's address as
# server.trusted_proxies let it be read (absent when it cannot be).
REQUEST_ID = RequestKey("request_id", str)
CLIENT_IP = RequestKey[IPv4Address | IPv6Address]("client_ip")  # made text only when logged
# The id of the request being handled in this task (set by portal.request_id's middleware).
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class RequestIdFilter(logging.Filter):
    """Put the id of the request being handled (if any) on each record, as `request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add record.request_id when the record has none; always keep the record."""
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id.get()
        return True


# What a log line may quote of what a client sent: a bounded prefix, with every control, non-ASCII
# or backslash character escaped, so a request can neither flood the log nor forge a line.
QUOTE_LIMIT = 128
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]|\\")


def cut(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Return client-sent text cut to at most `limit` characters, marked when cut, for a
    structured field (both formatters escape field values as JSON strings)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} characters in all)"


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
    """Format each record as one JSON object per line: time, level, logger, event, the record's
    structured fields, request_id, and error (a traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        fields = getattr(record, "fields", None)
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if isinstance(fields, dict):
            entry.update(fields)
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Format a record as one text line, with its structured fields (and the request's id) as
    key=value pairs after the message."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a text line."""
        line = super().format(record)
        fields = getattr(record, "fields", None)
        pairs = dict(fields) if isinstance(fields, dict) else {}
        pairs.pop("event", None)  # the message already says it
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            pairs["request_id"] = request_id
        if pairs:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in pairs.items())
        return line


def configure_logging(config: LogConfig) -> None:
    """Send the portal's logs where the configuration says, in its format."""
    handler: logging.Handler
    if config.file_path is not None:
        # Reopened when logrotate (or anyone) moves or removes the file: the next line starts
        # a new file at file_path (Authelia reopens its file on SIGHUP for the same reason).
        handler = logging.handlers.WatchedFileHandler(config.file_path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RequestIdFilter())
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


# What nginx's auth_request asks before every request to every protected site (Authelia's authz
# endpoints): their access lines are debug lines, as Authelia logs its authz requests.
NGINX_PATHS: Final = ("/api/authz/", "/api/verify")


class SafeAccessLogger(AbstractAccessLogger):
    """Log each request without its query string, which may hold a reset token; what was
    answered for nginx's auth_request (FOR_NGINX: the authz routes) at debug, the rest at info
    (another path under NGINX_PATHS, another method or a body: a probe an admin should see)."""

    @property
    def enabled(self) -> bool:
        """Tell aiohttp not to call log() at all when INFO is off (the hot path).

        aiohttp asks once per connection, so the authz endpoints are judged in log()."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write one access line: event "request" with the client's address (as the rest of the
        portal reads it), method, path (no query), status, duration in ms and the request id.

        For an auth_request answer (FOR_NGINX, set by portal.app's nginx_shortcut) the line is
        at debug, and below debug nothing is built (no record, no fields): the check costs one
        key lookup and the logger's cached level."""
        level = logging.DEBUG if FOR_NGINX in request else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        # The client as server.trusted_proxies let it be read (portal/request_id.py), else the
        # peer (a request refused before the portal's handlers saw it).
        client = request.get(CLIENT_IP)
        ip = str(client) if client is not None else request.remote
        access_line(
            self.logger,
            level,
            ip,
            request.method,
            request.path,
            response.status,
            time,
            request.get(REQUEST_ID),
        )


def access_line(
    logger: logging.Logger,
    level: int,
    ip: str | None,
    method: str,
    path: str,
    status: int,
    seconds: float,
    request_id: str | None,
) -> None:
    """Write one access line at `level`: event "request" with the client's address, method,
    path (never with its query), status, duration (`seconds`, logged in ms) and request id.
    Shared by SafeAccessLogger and the authz listener (portal/authz_listener.py)."""
    # SECURITY: the path has no query string; path_qs or the raw line would leak tokens. What
    # the client chose (method, path) is bounded here and escaped by the formatters (field
    # values are JSON strings): no flood, no forged lines.
    fields = {
        "event": "request",
        "ip": ip,
        "method": cut(method, 16),
        "path": cut(path),
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
    }
    logger.log(level, "request", extra={"fields": fields, "request_id": request_id})
