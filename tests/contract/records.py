"""Records the storage contract suites save and read back: all made at NOW by user john."""

from __future__ import annotations

from typing import Any

from portal.storage.base import IdentityVerification, OneTimeCode, SecurityAnswer, SessionRecord

NOW = 1_700_000_000.0
HOUR = 3600.0
RESET = "reset_password"


def reset_link(
    jti: str = "jti-1",
    *,
    username: str = "john",
    action: str = RESET,
    expires_at: float = NOW + HOUR,
) -> IdentityVerification:
    """Build a fresh, usable reset-link record issued at NOW."""
    return IdentityVerification(
        jti=jti,
        username=username,
        action=action,
        issued_at=NOW,
        issued_ip="192.0.2.1",
        expires_at=expires_at,
    )


ELEVATION = "elevation"


def one_time_code(
    public_id: str = "otc-1",
    *,
    username: str = "john",
    intent: str = ELEVATION,
    code_hash: str = "hash-of-ABCD2345",
    expires_at: float = NOW + 300,
) -> OneTimeCode:
    """Build a fresh, usable one-time-code record issued at NOW."""
    return OneTimeCode(
        public_id=public_id,
        username=username,
        intent=intent,
        code_hash=code_hash,
        issued_at=NOW,
        issued_ip="192.0.2.1",
        expires_at=expires_at,
    )


def session(
    session_id: str = "cookie-hash-1",
    *,
    username: str = "john",
    expires_at: float = NOW + HOUR,
    data: dict[str, Any] | None = None,
) -> SessionRecord:
    """Build a session record created at NOW."""
    return SessionRecord(
        id=session_id,
        username=username,
        created_at=NOW,
        last_active_at=NOW,
        expires_at=expires_at,
        remember_me=False,
        data={"csrf": "abc"} if data is None else data,
    )


def answers(*questions: str, at: float = NOW) -> list[SecurityAnswer]:
    """Build one answer record per question, hashes standing in as 'hash-<position>'."""
    return [SecurityAnswer(i, q, f"hash-{i}", at) for i, q in enumerate(questions)]
