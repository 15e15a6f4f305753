"""The Storage seam: the records the portal keeps and the Protocol every backend implements.

Callers (reset, ratelimit, notify.outbox, sessions) see only `Storage`; deps.py picks the backend.
Every time is a float of seconds since the epoch passed in by the caller: storage never reads the
clock. Payloads and session data are JSON objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class IdentityVerification:
    """Record one reset link (a JWT's jti) and what became of it."""

    jti: str
    username: str
    action: str
    issued_at: float
    issued_ip: str
    expires_at: float
    consumed_at: float | None = None
    consumed_ip: str | None = None
    revoked_at: float | None = None
    revoked_ip: str | None = None

    def usable_at(self, at: float) -> bool:
        """Tell whether the link could still be consumed at `at`."""
        return self.consumed_at is None and self.revoked_at is None and self.expires_at > at


@dataclass(frozen=True)
class OutboxMessage:
    """Hold one unit of background work (a mail) as the worker sees it."""

    id: int
    kind: str
    payload: dict[str, Any]
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True)
class SessionRecord:
    """Hold one server-side session, keyed by a hash of its cookie."""

    # SECURITY: callers store a hash of the cookie value here, never the cookie itself, so a
    # leaked database file does not hand out live sessions.
    id: str
    username: str
    created_at: float
    last_active_at: float
    expires_at: float
    remember_me: bool
    data: dict[str, Any]


@dataclass(frozen=True)
class SecurityAnswer:
    """Hold one security question a user set up and the hash of its normalized answer."""

    position: int
    question: str
    # SECURITY: an argon2id hash, never the answer; the question text is kept with it so an
    # admin editing the configured list does not break the answers already given.
    answer_hash: str
    set_at: float


class Storage(Protocol):
    """Keep reset records, rate-limit events, the outbox, sessions and security answers."""

    async def startup_check(self) -> None:
        """Open or create the store, migrate it and prove it can write; raise StartupCheckError."""
        ...

    async def close(self) -> None:
        """Release the store; later calls raise StorageError."""
        ...

    async def schema_version(self) -> int:
        """Return the schema version the store is at."""
        ...

    # -- reset-link records -------------------------------------------------------------------

    async def save_identity_verification(self, record: IdentityVerification) -> None:
        """Insert a new record; an existing jti is never overwritten (StorageError)."""
        ...

    async def get_identity_verification(self, jti: str) -> IdentityVerification | None:
        """Return the record for `jti`, in whatever state, or None."""
        ...

    async def consume_identity_verification(self, jti: str, *, at: float, ip: str) -> bool:
        """Mark the record consumed if usable at `at`; True only for the single winner."""
        ...

    async def release_identity_verification(self, jti: str, *, consumed_at: float) -> bool:
        """Undo our own consume (the write it guarded failed); True if it was ours to undo."""
        ...

    async def revoke_identity_verification(self, jti: str, *, at: float, ip: str) -> bool:
        """Revoke the record; True if it was usable and is now revoked."""
        ...

    async def revoke_identity_verifications_for(
        self, username: str, action: str, *, at: float, ip: str, keep_jti: str | None = None
    ) -> int:
        """Revoke every usable record of that user and action except `keep_jti`; return how many."""
        ...

    async def purge_identity_verifications(self, *, expired_before: float) -> int:
        """Delete records that expired before `expired_before`; return how many."""
        ...

    # -- rate limits: a sliding-window log of events per key -----------------------------------

    async def rate_limit_hit(self, key: str, *, at: float, keep_for: float) -> list[float]:
        """Record an event, drop the key's events older than at-keep_for, return those kept."""
        ...

    async def rate_limit_events(self, key: str, *, since: float) -> list[float]:
        """Return the key's event times at or after `since`, ascending, without recording."""
        ...

    async def rate_limit_clear(self, key: str) -> int:
        """Delete every event of the key (a ban lifted); return how many."""
        ...

    async def purge_rate_limits(self, *, before: float) -> int:
        """Delete every key's events older than `before`; return how many."""
        ...

    # -- durable outbox of background work -----------------------------------------------------

    async def outbox_enqueue(self, kind: str, payload: Mapping[str, Any], *, at: float) -> int:
        """Queue a message due at `at` and return its id; TypeError if payload is not JSON."""
        ...

    async def outbox_claim(
        self, *, at: float, lease: float, limit: int = 10
    ) -> list[OutboxMessage]:
        """Take up to `limit` due messages, oldest first, leasing each until at+lease."""
        ...

    async def outbox_done(self, message_id: int) -> None:
        """Remove a delivered message."""
        ...

    async def outbox_retry(self, message_id: int, *, next_attempt_at: float, error: str) -> None:
        """Put a failed message back, due at `next_attempt_at`, remembering the error."""
        ...

    async def outbox_pending(self) -> int:
        """Return how many messages are queued, leased or not."""
        ...

    # -- server-side sessions ------------------------------------------------------------------

    async def session_save(self, record: SessionRecord) -> None:
        """Insert the session or replace the one with the same id."""
        ...

    async def session_get(self, session_id: str) -> SessionRecord | None:
        """Return the session with that id, expired or not, or None."""
        ...

    async def session_touch(self, session_id: str, *, at: float) -> None:
        """Record activity on the session at `at` (never moving it backwards)."""
        ...

    async def session_update_data(self, session_id: str, data: dict[str, Any]) -> bool:
        """Replace the data of an existing session (never creating one); True if it existed."""
        ...

    async def session_delete(self, session_id: str) -> bool:
        """Delete the session; True if it existed."""
        ...

    async def session_delete_user(self, username: str) -> int:
        """Delete every session of that user; return how many."""
        ...

    async def purge_sessions(self, *, expired_before: float) -> int:
        """Delete sessions that expired before `expired_before`; return how many."""
        ...

    # -- security questions --------------------------------------------------------------------

    async def get_security_answers(self, username: str) -> list[SecurityAnswer]:
        """Return the user's questions and answer hashes by position (empty if none)."""
        ...

    async def set_security_answers(
        self, username: str, answers: Sequence[SecurityAnswer]
    ) -> None:
        """Replace all of the user's questions and answer hashes at once."""
        ...

    async def delete_security_answers(self, username: str) -> int:
        """Delete the user's questions and answer hashes; return how many rows went."""
        ...
