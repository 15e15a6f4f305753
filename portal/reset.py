"""Every password-reset decision: who gets a link, whether a link is good, whether a password is.

Asking for a link does no user-dependent work while the requester waits: after input checks and
rate limits the request goes to the outbox, and the worker looks the user up, issues the token,
records its jti and sends the mail. The worker shares the event loop with the next request, so for
anyone who gets no mail it does the same work on a decoy and sends and records nothing. Setting the
password checks the token, its record and the password fingerprint again, has the password
checked (portal/password_change.py), asks the user's second factor for a current code when one is
registered (ASVS 5.0 6.4.3), consumes the jti atomically, then has it written. A reset never signs
anyone in and never removes a registered second factor.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from portal.audit import AuditSink, audit
from portal.clock import Clock
from portal.config import Config
from portal.errors import (
    BadRequestError,
    CaptchaFailedError,
    InvalidTokenError,
    InvalidTokenReason,
    PasswordRejectedError,
    PortalError,
    RateLimitedError,
    ResetCodeRejectedError,
    ResetFormRejectedError,
    SecondFactorFailedError,
    StorageError,
    WebAuthnCredentialNotFoundError,
    WebAuthnFailedError,
)
from portal.i18n import N_, LanguageRecorder, wanted_language
from portal.mail import MailRenderer
from portal.notify.base import Notifier
from portal.notify.outbox import OutboxWorker
from portal.password_change import PasswordChanger, revoke_reset_links
from portal.ratelimit import Bucket, RateLimiter, buckets_from_config
from portal.regulation import Regulator
from portal.reset_mail import RESET_MAIL, ResetMailJob
from portal.second_factor import TotpService
from portal.storage.base import (
    IdentityVerificationStore,
    RateLimitStore,
)
from portal.tokens import ACTION, ResetClaims, ResetTokens
from portal.users.base import AccountState, User, UserBackend
from portal.webauthn import WebAuthnService

MAX_IDENTIFIER = 256
CODE_MISSING = "Enter the code from your authenticator app."
PASSKEY_MISSING = "Confirm with your passkey."
# Consumed and revoked records stay a day after they expire, for the audit trail.
RECORD_RETENTION = 86400.0

log = logging.getLogger(__name__)


class ResetStorage(IdentityVerificationStore, RateLimitStore, Protocol):
    """The storage roles the reset flow uses: the links' records and the rate-limit events."""


@dataclass(frozen=True)
class ResetLimits:
    """The buckets the reset flow counts against."""

    start: tuple[Bucket, ...]
    finish: tuple[Bucket, ...]
    account: tuple[Bucket, ...]
    everyone: tuple[Bucket, ...]

    @classmethod
    def from_config(cls, config: Config) -> ResetLimits:
        """Read the limits from server.endpoints.rate_limits."""
        limits = config.server.endpoints.rate_limits
        return cls(
            start=buckets_from_config(limits.reset_password_start),
            finish=buckets_from_config(limits.reset_password_finish),
            account=buckets_from_config(limits.reset_password_identifier),
            everyone=buckets_from_config(limits.reset_password_global),
        )


class PasswordResetService:
    """Run the reset flow: request a link, check it, set the password, revoke it."""

    def __init__(
        self,
        *,
        config: Config,
        users: UserBackend,
        storage: ResetStorage,
        notifier: Notifier,
        outbox: OutboxWorker,
        passwords: PasswordChanger,
        renderer: MailRenderer,
        clock: Clock,
        limiter: RateLimiter,
        regulator: Regulator,
        second_factor: TotpService,
        tokens: ResetTokens,
        webauthn: WebAuthnService | None = None,
        languages: LanguageRecorder | None = None,
        audit: AuditSink = audit,
    ) -> None:
        """Take every collaborator ready-made (portal/services.py builds them once)."""
        self._languages = languages
        self._second_factor = second_factor
        self._webauthn = webauthn
        self._config = config
        self._users = users
        self._storage = storage
        self._notifier = notifier
        self._outbox = outbox
        self._passwords = passwords
        self._renderer = renderer
        self._clock = clock
        self._limiter = limiter
        self._regulator = regulator
        self._audit = audit
        self._limits = ResetLimits.from_config(config)
        self.tokens = tokens
        secret = config.identity_validation.reset_password.jwt_secret.get_secret_value()
        self._identifier_key = hmac.new(
            secret.encode(), b"portal identifier v1", hashlib.sha256
        ).digest()
        # The outbox job that mails a link or rehearses a decoy (portal/reset_mail.py).
        self.deliver_reset_mail = ResetMailJob(
            config=config,
            users=users,
            storage=storage,
            notifier=notifier,
            renderer=renderer,
            clock=clock,
            limiter=limiter,
            tokens=tokens,
            account_limit=self._limits.account,
            identifier_hash=self.identifier_hash,
            audit=audit,
        )
        outbox.register(RESET_MAIL, self.deliver_reset_mail)

    # -- asking for a link ---------------------------------------------------------------------

    def identifier_hash(self, identifier: str) -> str:
        """Return a keyed hash of a typed identifier, for logs and rate-limit keys."""
        folded = unicodedata.normalize("NFKC", identifier).casefold()
        return hmac.new(self._identifier_key, folded.encode(), hashlib.sha256).hexdigest()[:16]

    async def limit_start(self, ip: str) -> None:
        """Count one step-1 request from ip; raise RateLimitedError when over a bucket."""
        await self._limit("reset-start", ip, self._limits.start)

    async def limit_finish(self, ip: str) -> None:
        """Count one step-2 request from ip; raise RateLimitedError when over a bucket."""
        await self._limit("reset-finish", ip, self._limits.finish)

    async def _limit(self, endpoint: str, ip: str, buckets: tuple[Bucket, ...]) -> None:
        retry_after = await self._limiter.hit(f"ip:{endpoint}:{ip}", buckets)
        if retry_after is not None:
            self._audit("reset_throttled", scope="ip", endpoint=endpoint, ip=ip)
            raise RateLimitedError(int(retry_after))

    @staticmethod
    def checked_identifier(identifier: str) -> str:
        """Return the typed identifier stripped; raise BadRequestError if it cannot be one."""
        identifier = identifier.strip()
        if not identifier:
            raise BadRequestError(N_("Enter your username or email address."))
        if len(identifier) > MAX_IDENTIFIER:
            raise BadRequestError(N_("That is too long to be a username or an email address."))
        return identifier

    @property
    def questions_first(self) -> bool:
        """Tell whether a reset mail goes out only after security questions are answered
        (identity_validation.reset_password.security_questions.enabled): step 1 then asks
        them (SecurityQuestionsService.prompt) and the answers queue the mail (.answer).
        """
        return self._config.identity_validation.reset_password.security_questions.enabled

    async def request_link(self, identifier: str, ip: str) -> None:
        """Queue a reset mail for whoever matches; the same outcome for every identifier.

        Raises BadRequestError when security questions come first (questions_first): then only
        right answers queue a mail.
        """
        # SECURITY: no way around the questions, whichever handler asks.
        if self.questions_first:
            raise BadRequestError("Answer the security questions: send 'answers'.")
        identifier = self.checked_identifier(identifier)
        await self.limit_start(ip)
        await self.queue_link(identifier, ip)

    async def queue_link(
        self, identifier: str, ip: str, *, mail: bool = True, actor: str | None = None
    ) -> bool:
        """Queue the mail under the per-account and global limits (IP already counted); return
        whether it was queued (False: over a limit, dropped silently for a requester).

        With mail=False (security questions not passed) the same work is queued as a decoy
        that sends nothing, counted under a per-identifier key of its own so that it never
        uses up the identifier's mails. actor="admin": `portal users send-reset-link` asks
        (ip ""); the mail says an administrator asked, and the audit event names the actor.
        """
        key = self.identifier_hash(identifier)
        scope = "reset-identifier" if mail else "reset-decoy-identifier"
        # SECURITY: counted before any lookup, so unknown identifiers count the same, and
        # dropped silently: the requester sees the same page either way.
        if await self._limiter.hit(f"{scope}:{key}", self._limits.account) is not None:
            self._audit("reset_throttled", scope="identifier", identifier_hash=key, ip=ip)
            return False
        # SECURITY: a global cap, so many addresses together cannot turn the portal into a
        # mail cannon (or its worker into a furnace: decoys count too).
        if await self._limiter.hit("reset-global", self._limits.everyone) is not None:
            self._audit("reset_throttled", scope="global", identifier_hash=key, ip=ip)
            return False
        payload = {
            "identifier": identifier,
            "ip": ip,
            "requested_at": self._clock.now(),
            "mail": mail,
            **({"actor": actor} if actor else {}),
            # The language the requester's browser asked for (None for an administrator's
            # command): the mail's, and then the user's recorded one (reset step 1 is a use).
            "language": wanted_language(),
        }
        await self._outbox.enqueue(RESET_MAIL, payload)
        event = "reset_requested" if mail else "reset_decoy_requested"
        self._audit(event, identifier_hash=key, ip=ip, **({"actor": actor} if actor else {}))
        return True

    async def print_link(self, user: User, *, actor: str) -> str:
        """Record a reset link for user and return it, for delivery out of band (`portal users
        send-reset-link --print-link`): the link the mail would carry, with its normal
        lifespan, revoking the user's other links. Nothing is mailed.

        Counted under the per-account limit (reset_password_identifier), as a mailed link is;
        raises RateLimitedError when over it, BadRequestError for a disabled user or one the
        backend no longer finds. Audits `reset_link_printed` (username, jti hash, actor;
        never the token). The caller shows the link to the administrator only.
        """
        if user.disabled:
            raise BadRequestError(f"user '{user.username}' is disabled")
        key = self.identifier_hash(user.username)
        retry_after = await self._limiter.hit(f"reset-identifier:{key}", self._limits.account)
        if retry_after is not None:
            self._audit("reset_throttled", scope="identifier", username=user.username, actor=actor)
            raise RateLimitedError(int(retry_after))
        state = await self._users.password_state(user.username)
        if state is None:
            raise BadRequestError(f"no user '{user.username}'")
        link, _, claims = await self.deliver_reset_mail.record_link(
            user.username, state, "", real=True
        )
        self._audit(
            "reset_link_printed",
            username=user.username,
            jti_hash=ResetTokens.jti_hash(claims.jti),
            actor=actor,
        )
        return link

    # -- using a link --------------------------------------------------------------------------

    def _reject(
        self, reason: InvalidTokenReason, ip: str, claims: ResetClaims | None = None
    ) -> None:
        self._audit(
            "reset_rejected",
            reason=reason,
            ip=ip,
            username=claims.username if claims else None,
            jti_hash=ResetTokens.jti_hash(claims.jti) if claims else None,
        )
        raise InvalidTokenError(reason)

    async def check_link(self, token: str, ip: str) -> tuple[ResetClaims, User]:
        """Return the link's claims and user if it can still set a password; else refuse it."""
        claims = await self._open_record(token, ip, revoking=False)
        user = await self._users.get_user(claims.username)
        if user is None or user.username != claims.username:
            self._reject("user", ip, claims)
        assert user is not None  # noqa: S101 - _reject raised otherwise
        # SECURITY: read again at every use: an account disabled or locked for good after the
        # mail went out gets no new password (on OpenLDAP the write would even lift the lock).
        if user.disabled:
            self._reject("disabled", ip, claims)
        state = await self._users.password_state(user.username)
        # SECURITY: the link dies when the password changed by any means since it was issued.
        if not self.tokens.fingerprint_matches(claims, state):
            self._reject("password_changed", ip, claims)
        return claims, user

    async def _open_record(self, token: str, ip: str, *, revoking: bool) -> ResetClaims:
        """Verify the token and return its claims if its record is still open; else refuse it."""
        try:
            claims = self.tokens.verify(token, revoking=revoking)
        except InvalidTokenError as exc:
            self._reject(exc.reason, ip)
            raise
        record = await self._storage.get_identity_verification(claims.jti)
        if record is None or record.username != claims.username or record.action != ACTION:
            self._reject("unknown", ip, claims)
        assert record is not None  # noqa: S101 - _reject raised otherwise
        if record.consumed_at is not None:
            self._reject("used", ip, claims)
        if record.revoked_at is not None:
            self._reject("revoked", ip, claims)
        if not record.usable_at(self._clock.now()):
            self._reject("expired", ip, claims)
        return claims

    async def open_link(self, token: str, ip: str) -> tuple[ResetClaims, User]:
        """Check a link as it is opened (it stays usable: mail scanners open links too)."""
        await self.limit_finish(ip)
        claims, user = await self.check_link(token, ip)
        self._audit(
            "reset_link_opened",
            username=user.username,
            ip=ip,
            jti_hash=ResetTokens.jti_hash(claims.jti),
        )
        return claims, user

    async def _release(self, jti: str, consumed_at: float) -> None:
        """Give the link back after a failed write; never hide that write's error.

        If the release fails too (the storage went down meanwhile), the link stays used (the
        user asks for a new one) and the failure is logged; the caller re-raises the write's
        own error, which says what went wrong first.
        """
        try:
            await self._storage.release_identity_verification(jti, consumed_at=consumed_at)
        except StorageError as exc:
            log.warning("the reset link could not be given back after the failed write: %s", exc)

    async def complete(
        self,
        token: str,
        password: str,
        confirm: str,
        ip: str,
        *,
        totp_code: str = "",
        passkey: dict[str, Any] | None = None,
        passkey_challenge: str = "",
        captcha: Callable[[], Awaitable[None]] | None = None,
    ) -> User:
        """Set the new password if the link, the password and the code are good; consume the link.

        Order: `captcha` (the form's anti-robot check), the rate limits, the link, the password
        policy, then, when the user has a TOTP registered (`code_digits`), `totp_code` checked
        by TotpService.verify (regulation, replay), and only then the link is consumed and the
        password written (ASVS 5.0 6.4.3: a reset never bypasses an enabled second factor).
        Raises InvalidTokenError when the link is bad (whatever else is),
        ResetCodeRejectedError when the code is missing or refused (the link stays usable),
        ResetFormRejectedError when the CAPTCHA or the password is not good (it carries what
        the form page shows again), RateLimitedError (429: reset_password_finish or
        second_factor_totp), and what the user backend raises when the write fails otherwise.
        Nobody is signed in and no second factor is removed. A user with a passkey may answer
        with it instead (`passkey`, an AuthenticationResponseJSON, and `passkey_challenge`, the
        sealed challenge `passkey_options` gave): then it is checked by WebAuthnService.verify,
        and a user with a passkey and no TOTP must use it.
        """
        if captcha is not None:
            try:
                await captcha()
            except CaptchaFailedError as exc:
                # The CAPTCHA is checked first: the link may be bad too, and that page wins.
                _, user = await self.check_link(token, ip)
                raise ResetFormRejectedError(user.username, [], exc.public_message) from exc
        await self.limit_finish(ip)
        claims, user = await self.check_link(token, ip)
        jti_hash = ResetTokens.jti_hash(claims.jti)
        reasons = await self._passwords.rejections(user, password, confirm)
        if reasons:
            self._audit(
                "reset_rejected", reason="policy", username=user.username, ip=ip, jti_hash=jti_hash
            )
            raise ResetFormRejectedError(user.username, reasons)
        # SECURITY (ASVS 5.0 6.4.3): the mailbox alone does not replace the second factor. The
        # code is checked before the link is consumed, so a wrong one leaves the link usable
        # until its normal limits, while regulation counts it like a wrong password.
        has_passkey = await self.has_passkey(user.username)
        if has_passkey and passkey is not None:
            await self._check_passkey(user, passkey, passkey_challenge, ip, jti_hash)
        elif await self.code_digits(user.username) is not None:
            await self._check_code(user, totp_code, ip, jti_hash)
        elif has_passkey:
            self._audit(
                "reset_rejected",
                reason="second_factor",
                username=user.username,
                ip=ip,
                jti_hash=jti_hash,
            )
            raise ResetCodeRejectedError(user.username, PASSKEY_MISSING)
        now = self._clock.now()
        # SECURITY: consume before writing, atomically: of two concurrent requests one writes.
        if not await self._storage.consume_identity_verification(claims.jti, at=now, ip=ip):
            self._reject("used", ip, claims)
        try:
            await self._passwords.write(user, password)
        except Exception as exc:
            await self._release(claims.jti, now)
            if isinstance(exc, PasswordRejectedError):  # the directory's own policy refused it
                raise ResetFormRejectedError(user.username, exc.reasons) from exc
            raise
        await revoke_reset_links(self._storage, user.username, at=now, ip=ip)
        if self._languages is not None:
            # The mailbox's owner completed it: their language, for this and later mails.
            await self._languages.record(user.username)
        await self._passwords.written(user, ip, now)
        unlocked = await self._unlock(user, ip)
        self._audit(
            "reset_completed",
            username=user.username,
            ip=ip,
            jti_hash=jti_hash,
            unlocked=unlocked or None,
        )
        return user

    async def code_digits(self, username: str) -> int | None:
        """Return the length of the user's TOTP codes when step 2 must ask for one (TOTP on
        and a device registered), else None. Only for a user whose link was checked: it tells
        whether the account has a second factor."""
        if not self._second_factor.enabled:
            return None
        registration = await self._second_factor.configuration(username)
        return None if registration is None else registration.digits

    async def has_passkey(self, username: str) -> bool:
        """Tell whether step 2 may (and, without TOTP, must) ask for the user's passkey. Only
        for a user whose link was checked."""
        return self._webauthn is not None and await self._webauthn.registered(username)

    async def passkey_options(self, token: str, ip: str) -> tuple[dict[str, Any], str]:
        """Return assertion options for the link's user and the challenge sealed for the caller
        to keep (a cookie), bound to this link: (options, sealed).

        Raises what open_link raises for a bad link, and WebAuthnCredentialNotFoundError when
        the user has no passkey.
        """
        claims, user = await self.open_link(token, ip)
        if self._webauthn is None or not await self.has_passkey(user.username):
            raise WebAuthnCredentialNotFoundError()
        challenge = await self._webauthn.begin_authentication(user.username, "reset")
        bound_to = f"reset:{ResetTokens.jti_hash(claims.jti)}"
        return challenge.options, self._webauthn.seal(challenge, bound_to)

    async def _check_passkey(
        self, user: User, passkey: dict[str, Any], sealed: str, ip: str, jti_hash: str
    ) -> None:
        """Accept the passkey's assertion for the challenge sealed for this link, once; else
        ResetCodeRejectedError (audit reset_rejected, reason second_factor)."""
        assert self._webauthn is not None  # noqa: S101 - has_passkey said so
        # SECURITY: the challenge sealed for this link, on its first use only.
        record = await self._webauthn.unseal_once(sealed, f"reset:{jti_hash}")
        try:
            await self._webauthn.verify(user.username, record, "reset", passkey, ip)
            return
        except WebAuthnFailedError as exc:
            message = exc.public_message
        self._refuse_second_factor(user, ip, jti_hash, message)

    async def _check_code(self, user: User, code: str, ip: str, jti_hash: str) -> None:
        """Accept the user's current code or raise ResetCodeRejectedError (audit
        reset_rejected, reason second_factor, never the code). A missing code is no guess: it
        is not counted. RateLimitedError passes through."""
        message = CODE_MISSING
        if code.strip():
            try:
                await self._second_factor.verify(user.username, code, ip)
                return
            except SecondFactorFailedError as exc:
                message = exc.public_message
        self._refuse_second_factor(user, ip, jti_hash, message)

    def _refuse_second_factor(self, user: User, ip: str, jti_hash: str, message: str) -> NoReturn:
        """Audit reset_rejected (reason second_factor, never the code or assertion) and raise
        ResetCodeRejectedError with message; the link stays usable."""
        self._audit(
            "reset_rejected",
            reason="second_factor",
            username=user.username,
            ip=ip,
            jti_hash=jti_hash,
        )
        raise ResetCodeRejectedError(user.username, message)

    async def _unlock(self, user: User, ip: str) -> bool:
        """End a lockout from failed sign-ins, unless disable_unlock keeps it; never raise.

        Both lockouts end: the portal's own regulation ban on the account (its failures are
        forgotten; the address's are not) and the directory's (AD lockoutTime; ppolicy clears its
        own on the write).
        """
        if self._config.authentication_backend.password_reset.disable_unlock:
            return False
        # SECURITY: only the mailbox's owner gets here, so the failures were someone else's
        # guesses, or the owner's own before they reset.
        forgiven = await self._regulator.forgive(user.username)
        # Read again: the check that the new password is not the current one binds as the user,
        # and on Active Directory that failed bind may be the one that locked the account.
        try:
            fresh = await self._users.get_user(user.username)
            if fresh is None or AccountState.LOCKED_OUT not in fresh.state:
                return forgiven
            return await self._users.clear_lockout(user.username)
        except PortalError as exc:
            # The new password is in place; the lockout ends by itself, or an administrator ends it.
            log.warning(
                "the new password of %s is set but the lockout stays: %s", user.username, exc
            )
            self._audit(
                "reset_unlock_failed", username=user.username, ip=ip, error=type(exc).__name__
            )
            return False

    # -- revoking a link -----------------------------------------------------------------------

    async def check_revocable(self, token: str, ip: str) -> ResetClaims:
        """Return the claims of a reset or revoke token whose link can still be cancelled."""
        await self.limit_finish(ip)
        return await self._open_record(token, ip, revoking=True)

    async def revoke(self, token: str, ip: str) -> None:
        """Revoke a link with its revoke token (or the reset token itself); refuse a dead one."""
        claims = await self.check_revocable(token, ip)
        if not await self._storage.revoke_identity_verification(
            claims.jti, at=self._clock.now(), ip=ip
        ):
            self._reject("used", ip, claims)
        self._audit(
            "reset_revoked",
            username=claims.username,
            ip=ip,
            jti_hash=ResetTokens.jti_hash(claims.jti),
        )

    async def purge(self) -> None:
        """Delete expired records and rate-limit events (run periodically)."""
        now = self._clock.now()
        await self._storage.purge_identity_verifications(expired_before=now - RECORD_RETENTION)
        await self._storage.purge_rate_limits(before=now - RECORD_RETENTION)
