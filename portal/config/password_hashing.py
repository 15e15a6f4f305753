"""`password_hashing`: how many password and answer hashes the portal computes at once.

A portal key; Authelia has none (it hashes in each request's own goroutine). The queue itself is
portal/password_hashing.py.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import field_validator

from portal.config.types import Model
from portal.password_hashing import MAX_CONCURRENCY, default_concurrency


class PasswordHashingConfig(Model):
    """The bound on hashes computed at once (sign-in, reset answers, new passwords): unset, half
    the machine's CPUs, at least 1 and at most 4 (portal.password_hashing.default_concurrency)."""

    concurrency: int | None = None

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}", value.strip()):
            value = int(value)  # from PORTAL_PASSWORD_HASHING_CONCURRENCY
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or not 1 <= value <= MAX_CONCURRENCY:
            raise ValueError(
                f"must be a whole number from 1 to {MAX_CONCURRENCY} (how many hashes run at "
                f"once; leave it unset for this machine's default, {default_concurrency()})"
            )
        return value
