"""A signed-in user changes their own password (Authelia: authentication_backend.password_change).

The current password proves the person at the keyboard is the account's owner (a session alone
may be a borrowed laptop): it is checked under regulation exactly as a sign-in password is. The
new password then meets the reset's rules and goes through the one write path
(portal/password_change.py), which keeps the session the change is made from and ends every
other one; outstanding reset links are revoked and the "changed" mail goes out.
"""

from __future__ import annotations

from portal.audit import AuditSink, audit
from portal.clock import Clock
from portal.errors import (
    CurrentPasswordRejectedError,
    PasswordChangeRequiredError,
    PasswordRejectedError,
)
from portal.i18n import LanguageRecorder
from portal.password_change import PasswordChanger, revoke_reset_links
from portal.regulation import Regulator
from portal.sessions import Session
from portal.storage.base import IdentityVerificationStore
from portal.users.base import User, UserBackend

# SECURITY: the ceiling sign-in applies; a longer "current password" is no password.
MAX_PASSWORD = 1024


class PasswordSelfChange:
    """Change the signed-in user's password after checking the current one."""

    def __init__(
        self,
        *,
        users: UserBackend,
        passwords: PasswordChanger,
        regulator: Regulator,
        verifications: IdentityVerificationStore,
        clock: Clock,
        languages: LanguageRecorder,
        audit: AuditSink = audit,
    ) -> None:
        self._languages = languages
        self._users = users
        self._passwords = passwords
        self._regulator = regulator
        self._verifications = verifications
        self._clock = clock
        self._audit = audit

    async def change(
        self, session: Session, current: str, password: str, confirm: str, ip: str
    ) -> None:
        """Set `password` for the session's user if `current` is their password now.

        Order: the current password under regulation (CurrentPasswordRejectedError, 401, one
        message for a wrong password and a ban, the wrong one counted as a failed sign-in),
        then PasswordChanger.rejections (the confirmation, the policy, not the current one:
        PasswordRejectedError with the reasons, 400), then the write, which keeps `session` and
        ends every other session of the user; the directory's own refusal is a
        PasswordRejectedError too. Afterwards the user's reset links are revoked and the
        changed mail queued. Audit: password_change_rejected (reason banned, password, policy
        or directory) or password_changed; never a password.
        """
        user = await self._proven(session.username, current, ip)
        reasons = await self._passwords.rejections(user, password, confirm)
        if reasons:
            self._audit("password_change_rejected", username=user.username, ip=ip, reason="policy")
            raise PasswordRejectedError(reasons)
        try:
            await self._passwords.write(user, password, keep=session.id)
        except PasswordRejectedError:
            self._audit(
                "password_change_rejected", username=user.username, ip=ip, reason="directory"
            )
            raise
        now = self._clock.now()
        # SECURITY: a reset link mailed before the change must not undo it (the password
        # fingerprint in the token kills it too; this records why in storage).
        await revoke_reset_links(self._verifications, user.username, at=now, ip=ip)
        # The mail queued next speaks the language this change was made in.
        await self._languages.record(user.username)
        await self._passwords.written(user, ip, now, kept_session=True)
        self._audit("password_changed", username=user.username, ip=ip)

    async def _proven(self, username: str, current: str, ip: str) -> User:
        """Return the user if `current` is their password and nothing bans them; else raise."""
        if not current or len(current) > MAX_PASSWORD:
            # Not a guess (sign-in does not count these either): refused, not counted.
            self._audit("password_change_rejected", username=username, ip=ip, reason="password")
            raise CurrentPasswordRejectedError()
        # SECURITY: as a sign-in: the ban is looked up first but the password is checked anyway,
        # so the time taken does not tell a ban from a wrong password (signin.py).
        banned = await self._regulator.banned_until(username, ip)
        user = await self._users.get_user(username)
        ok = False
        if user is not None and not user.disabled:
            try:
                ok = await self._users.check_password(user.username, current)
            except PasswordChangeRequiredError:
                ok = True  # right, though the directory wants a new one: this is that change
        if banned is not None:
            self._audit("password_change_rejected", username=username, ip=ip, reason="banned")
            raise CurrentPasswordRejectedError()
        if user is None or not ok:
            await self._regulator.record_failure(username, ip)
            self._audit("password_change_rejected", username=username, ip=ip, reason="password")
            raise CurrentPasswordRejectedError()
        return user
