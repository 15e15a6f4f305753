"""The one path that sets a user's new password, for a reset and for a signed-in change.

A caller that has proved who the user is (a reset link, or the current password) asks
`rejections` first: the confirmation matches, the password policy holds, and the password is not
the current one. It then calls `write`, which ends every session of the user (but the one a
signed-in change is made from) before and after the password is written, and once its own
bookkeeping is done (a reset consumes its link first and revokes the others after), `written`:
the "your password was changed" mail is queued.
"""

from __future__ import annotations

import asyncio
import logging

from portal.config import Config
from portal.errors import PasswordChangeRequiredError, StorageError
from portal.i18n import N_, gettext
from portal.mail import MailRenderer
from portal.notify.base import Notifier
from portal.notify.outbox import OutboxWorker
from portal.password_policy import check_password
from portal.sessions import SessionStore
from portal.storage.base import IdentityVerificationStore, OutboxMessage
from portal.tokens import ACTION
from portal.users.base import User, UserBackend
from portal.users.passwords import normalize_password

CHANGED_MAIL = "password_changed"
END_SESSIONS = "end_sessions"

log = logging.getLogger(__name__)


class PasswordChanger:
    """Check a new password, write it, end the user's sessions and tell them by mail."""

    def __init__(
        self,
        *,
        config: Config,
        users: UserBackend,
        sessions: SessionStore,
        outbox: OutboxWorker,
        notifier: Notifier,
        renderer: MailRenderer,
    ) -> None:
        """Register the outbox jobs (the changed mail, ending sessions); nothing else happens."""
        self._config = config
        self._users = users
        self._sessions = sessions
        self._outbox = outbox
        self._notifier = notifier
        self._renderer = renderer
        outbox.register(CHANGED_MAIL, self.deliver_changed_mail)
        outbox.register(END_SESSIONS, self.end_sessions_job)

    async def rejections(self, user: User, password: str, confirm: str) -> list[str]:
        """Return why the new password cannot be set, one sentence each; [] when it can.

        Checked in order, the first failing step answering: the confirmation (the same password
        in two Unicode forms is one password), the password policy (portal/password_policy.py,
        with the user's names and addresses as words to refuse), then not the current one (verified
        against the directory; Authelia skips this on reset).
        """
        same = password == confirm or await asyncio.to_thread(
            lambda: normalize_password(password) == normalize_password(confirm)
        )
        if not same:
            return ["The two passwords do not match."]
        words = [user.username, user.display_name, *user.emails]
        words += [e.split("@")[0] for e in user.emails] + user.display_name.split()
        reasons = await asyncio.to_thread(
            check_password, password, self._config.password_policy, user_inputs=words
        )
        if not reasons and await self._is_current(user.username, password):
            reasons.append(gettext("Choose a password different from your current one."))
        return reasons

    async def _is_current(self, username: str, password: str) -> bool:
        """Tell whether the password is the user's current one."""
        try:
            return await self._users.check_password(username, password)
        except PasswordChangeRequiredError:
            return True  # the directory proved it right, then asked for another one

    async def write(self, user: User, password: str, *, keep: str | None = None) -> None:
        """End the user's sessions, write the password, end them again; the session whose id
        is `keep` (Session.id: a signed-in change keeps the session that made it) stays.

        SECURITY: a new password must never leave an old session open (ASVS 5.0 7.4.3), even
        when the session store fails. Its sessions end first: if that fails (the store is down:
        BackendUnavailableError, a 503) nothing is written and the caller can undo its own
        bookkeeping. After the write they end again (a sign-in with the old password may have
        slipped in between); if that fails, an outbox job ends them, retried until it can.
        Raises what the user backend raises (PasswordRejectedError when the directory's own
        policy refuses it, PasswordWriteError, BackendUnavailableError).
        """
        await self._sessions.destroy_user(user.username, keep=keep)
        await self._users.set_password(user.username, password)
        try:
            await self._sessions.destroy_user(user.username, keep=keep)
        except Exception as exc:
            log.warning(
                "password changed for %r but its sessions could not be ended now (%s); "
                "the outbox will end them",
                user.username,
                type(exc).__name__,
            )
            await self._outbox.enqueue(END_SESSIONS, {"username": user.username, "keep": keep})

    async def written(self, user: User, ip: str, at: float, *, kept_session: bool = False) -> None:
        """Queue the changed mail (time `at`, address `ip`); the sessions ended in `write`
        (`kept_session`: but the one the change was made from, which the mail says)."""
        await self._outbox.enqueue(
            CHANGED_MAIL,
            {"username": user.username, "ip": ip, "changed_at": at, "kept_session": kept_session},
        )

    async def end_sessions_job(self, message: OutboxMessage) -> None:
        """End every session of the user the message names but its `keep` (outbox job; raises
        to be retried)."""
        keep = message.payload.get("keep")
        await self._sessions.destroy_user(
            str(message.payload["username"]), keep=str(keep) if keep else None
        )

    async def deliver_changed_mail(self, message: OutboxMessage) -> None:
        """Tell the user their password changed, with time and IP (outbox job)."""
        user = await self._users.get_user(str(message.payload["username"]))
        if user is None or not user.email:
            return
        base = self._config.portal_url
        language = await self._renderer.language_of(user.username)
        mail = self._renderer.render(
            CHANGED_MAIL,
            to=user.email,
            title=N_("Your password was changed"),
            language=language,
            context={
                "display_name": user.display_name or user.username,
                "username": user.username,
                "changed_at": self._renderer.when(float(message.payload["changed_at"]), language),
                "ip": str(message.payload["ip"]),
                "kept_session": bool(message.payload.get("kept_session")),
                "reset_url": f"{base}/reset-password/step1",
                "portal_url": base,
            },
        )
        await self._notifier.send(mail)


async def revoke_reset_links(
    verifications: IdentityVerificationStore, username: str, *, at: float, ip: str
) -> None:
    """Revoke the user's live reset links once their password changed (at `at`, from `ip`), so
    storage records why each one stops working.

    A storage failure is logged (error) and not raised: the password is written by then, and
    the user must be told so and mailed, never shown a 500 that hides the change. The links no
    longer work anyway: each carries the old password's fingerprint (portal/reset.py).
    """
    try:
        await verifications.revoke_identity_verifications_for(username, ACTION, at=at, ip=ip)
    except StorageError as exc:
        log.error(
            "cannot revoke %s's reset links after the password changed (they no longer work:"
            " made for the old password): %s",
            username,
            exc,
        )
