"""Logging set-up: text or JSON lines, to stderr or a file."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from aiohttp.abc import AbstractAccessLogger
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


class SafeAccessLogger(AbstractAccessLogger):
    """Log each request without its query string, which may hold a reset token."""

    @property
    def enabled(self) -> bool:
        """Tell aiohttp not to call log() at all when INFO is off (the hot path)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write one access line: client, method, path (no query), status, duration."""
        # SECURITY: request.path has no query string; path_qs or the raw line would leak tokens.
        self.logger.info(
            "%s %s %s %d %.1fms",
            request.remote,
            request.method,
            request.path,
            response.status,
            time * 1000,
        )
