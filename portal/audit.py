"""Audit events: one structured log line per step of a sensitive flow, never a secret."""

from __future__ import annotations

import logging

_log = logging.getLogger("portal.audit")


def audit(event: str, **fields: object) -> None:
    """Log one audit event with its fields (username or identifier hash, ip, jti hash, ...)."""
    values = {k: v for k, v in fields.items() if v is not None}
    _log.info(event, extra={"fields": {"event": event, **values}})
