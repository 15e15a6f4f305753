"""Registering and removing a TOTP device from the signed-in user's settings (Authelia 4.39:
internal/handlers/handler_register_totp.go; the callers check the elevated session first).

    begin(session, ip)      a new secret with the configured parameters, kept with the session
                            (sealed with storage.encryption_key, never in clear) for
                            PENDING_LIFESPAN; a new begin replaces it
    pending(session)        the registration begun and not lapsed, or None
    complete(session, code, ip)   save it if the code is valid for its secret now; the pending
                            secret is then dropped (on a wrong code it stays until it lapses)
    remove(session, ip)     delete the user's registration (mail and audit in TotpService)

Authelia replaces an existing registration when a new one completes (its web page offers to add
one only when there is none). The portal says it outright: a user who has a device removes it
first (begin raises TotpAlreadyRegisteredError), so a stolen elevated session cannot swap the
device silently; the removal mails the user.
"""

from __future__ import annotations

from typing import Any

from portal.clock import Clock
from portal.errors import (
    DecryptionError,
    SecondFactorFailedError,
    TotpAlreadyRegisteredError,
    TotpNotRegisteredError,
)
from portal.second_factor import PendingTotp, TotpService
from portal.sessions import Session, SessionStore
from portal.storage.encryption import SecretBox

# Authelia keeps a registration session for ten minutes (handler_register_totp.go).
PENDING_LIFESPAN = 600.0


class TotpRegistration:
    """Begin, complete and remove a user's TOTP registration (see the module docstring).

    Errors: TotpAlreadyRegisteredError (409) from begin; SecondFactorFailedError (401,
    "Incorrect code.") from complete for a wrong code, no pending registration or a lapsed one;
    TotpNotRegisteredError (404) from remove. Storage failures propagate (StorageError).
    """

    def __init__(
        self, *, totp: TotpService, sessions: SessionStore, clock: Clock, encryption_key: str
    ) -> None:
        """Derive the sealing key from storage.encryption_key (SecretBox; nothing else runs)."""
        self._totp = totp
        self._sessions = sessions
        self._clock = clock
        self._box = SecretBox(encryption_key)

    async def begin(self, session: Session, ip: str) -> PendingTotp:
        """Start a registration for the session's user and keep it with the session.

        Returns the PendingTotp (its secret_base32 and otpauth_url are what the user is shown).
        Raises TotpAlreadyRegisteredError when the user has a device already.
        """
        if await self._totp.configuration(session.username) is not None:
            raise TotpAlreadyRegisteredError()
        pending = self._totp.start_registration(session.username)
        kept = {
            "sealed": pending.sealed(self._box),
            "expires": self._clock.now() + PENDING_LIFESPAN,
        }
        await self._sessions.update(session.id, {"pending_totp": kept})
        return pending

    def pending(self, session: Session) -> PendingTotp | None:
        """Return the session's registration in progress, or None (none, lapsed, another
        user's, or sealed under another storage.encryption_key)."""
        kept: dict[str, Any] | None = session.pending_totp
        if not kept or float(kept.get("expires") or 0) <= self._clock.now():
            return None
        try:
            pending = PendingTotp.unsealed(kept["sealed"], self._box)
        except (DecryptionError, KeyError, TypeError, ValueError):
            return None
        return pending if pending.username == session.username else None

    async def complete(self, session: Session, code: str, ip: str) -> None:
        """Save the registration in progress if `code` is valid for its secret now.

        Raises SecondFactorFailedError (one answer: no registration in progress, lapsed, wrong
        code) and TotpAlreadyRegisteredError when a device was registered since `begin` (from
        another session): a stale pending secret never replaces it. On success the pending
        secret leaves the session; TotpService audits `totp_registered` and queues the "a
        second factor was added" mail.
        """
        pending = self.pending(session)
        if pending is None:
            raise SecondFactorFailedError()
        # SECURITY: begin's check alone is not enough: the device may have come meanwhile.
        if await self._totp.configuration(session.username) is not None:
            raise TotpAlreadyRegisteredError()
        await self._totp.complete_registration(session.username, pending, code, ip)
        await self._sessions.update(session.id, {"pending_totp": None})

    async def remove(self, session: Session, ip: str) -> None:
        """Delete the user's TOTP device; TotpNotRegisteredError when there is none.

        TotpService audits `totp_removed` (actor "user") and queues the removal mail.
        """
        if not await self._totp.delete(session.username, actor="user", ip=ip):
            raise TotpNotRegisteredError()
