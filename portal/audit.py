"""Audit events: one structured log line per step of a sensitive flow, never a secret."""

from __future__ import annotations

import logging
from typing import Protocol

_log = logging.getLogger("portal.audit")


class AuditSink(Protocol):
    """Take one audit event: its name and its fields (never a password, token or key)."""

    def __call__(self, event: str, /, **fields: object) -> None: ...


def audit(event: str, /, **fields: object) -> None:
    """Log one audit event with its fields (username or identifier hash, ip, jti hash, ...).

    The default AuditSink: a log record on the `portal.audit` logger whose `fields` extra holds
    the event and every field that is not None (portal/logs.py writes them as JSON).
    """
    values = {k: v for k, v in fields.items() if v is not None}
    _log.info(event, extra={"fields": {"event": event, **values}})
