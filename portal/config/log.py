"""`log`: how much the portal logs and where (Authelia: schema/log.go)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from portal.config.types import Model


class LogConfig(Model):
    """How much the portal logs and where."""

    level: Literal["trace", "debug", "info", "warn", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file_path: Path | None = None
