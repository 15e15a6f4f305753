"""The outbox job behind a reset request: mail the link, or rehearse a decoy that sends nothing.

PasswordResetService (portal/reset.py) queues one job per accepted request; this job does the
user-dependent work after the requester has had the answer, the same work for everyone.
"""

from __future__ import annotations

from collections.abc import Callable

from portal.audit import AuditSink, audit
from portal.clock import Clock
from portal.config import Config
from portal.i18n import N_
from portal.mail import MailRenderer
from portal.notify.base import Notifier
from portal.ratelimit import Bucket, RateLimiter
from portal.storage.base import IdentityVerification, IdentityVerificationStore, OutboxMessage
from portal.tokens import ACTION, ResetClaims, ResetTokens
from portal.users.base import UserBackend

RESET_MAIL = "reset_password"
# What a decoy reset mail is made for (see ResetMailJob): no account has an empty name, and the
# .invalid top-level domain can never be delivered to (RFC 2606).
DECOY_USERNAME = ""
DECOY_ADDRESS = "nobody@decoy.invalid"


class ResetMailJob:
    """Mail a reset link to the user an identifier names, or rehearse a decoy (the RESET_MAIL job).

    Called by the outbox worker with the queued OutboxMessage (payload: identifier, ip,
    requested_at, mail); raises what the notifier raises (DeliveryError) so the outbox retries.
    """

    def __init__(
        self,
        *,
        config: Config,
        users: UserBackend,
        storage: IdentityVerificationStore,
        notifier: Notifier,
        renderer: MailRenderer,
        clock: Clock,
        limiter: RateLimiter,
        tokens: ResetTokens,
        account_limit: tuple[Bucket, ...],
        identifier_hash: Callable[[str], str],
        audit: AuditSink = audit,
    ) -> None:
        """Take the reset service's collaborators; account_limit bounds mails per account and
        per mailbox; identifier_hash keys them (PasswordResetService.identifier_hash)."""
        self._config = config
        self._users = users
        self._storage = storage
        self._notifier = notifier
        self._renderer = renderer
        self._clock = clock
        self._limiter = limiter
        self._tokens = tokens
        self._account_limit = account_limit
        self._identifier_hash = identifier_hash
        self._audit = audit

    async def __call__(self, message: OutboxMessage) -> None:
        """Mail a link to the user the identifier names, or rehearse a decoy (outbox job).

        SECURITY: the job runs on the event loop right after the requester's answer, so what it
        does more for an existing user would slow the next request and tell that the account
        exists. So whoever was typed it does the same work: it looks the user up, counts the
        account and mailbox limits, reads the password state, signs a token, makes the same
        storage round trips, renders the mail and has the notifier prepare it. For an unknown,
        disabled or mailless identifier, or an account over its limit, that is a decoy: no link
        is recorded and the notifier only rehearses (Notifier.rehearse): nothing is sent. Only
        the delivery's own I/O (the SMTP conversation, the file's write and fsync) remains.
        """
        identifier = str(message.payload["identifier"])
        ip = str(message.payload["ip"])
        key = self._identifier_hash(identifier)
        user = await self._users.get_user(identifier)
        username = user.username if user is not None else identifier
        address = user.email if user is not None and user.email else identifier
        # Why nothing is mailed, as the one audit event logged at the end; None: a real mail.
        refusal: tuple[str, dict[str, str]] | None = None
        if not message.payload.get("mail", True):  # older messages have no "mail": a real one
            refusal = ("reset_no_mail", {"identifier_hash": key, "reason": "questions"})
        elif user is None or user.disabled or not user.email:
            why = "unknown" if user is None else "disabled" if user.disabled else "no_email"
            refusal = ("reset_no_mail", {"identifier_hash": key, "reason": why})
        # SECURITY: per account and per mailbox too: the same account typed several ways, or
        # several accounts sharing one mailbox, still get at most the limit. Counted on the
        # first attempt only: a retry after an SMTP outage is the same request. A decoy counts
        # under keys of its own, so it never uses up a real account's mails.
        if message.attempts == 1:
            for scope, value in (("account", username), ("mailbox", address)):
                prefix = "reset" if refusal is None else "reset-decoy"
                bucket = f"{prefix}-{scope}:{self._identifier_hash(value)}"
                if await self._limiter.hit(bucket, self._account_limit) is not None:
                    refusal = refusal or ("reset_throttled", {"scope": scope, "username": username})
        state = await self._users.password_state(username)
        if state is None and refusal is None:
            refusal = ("reset_no_mail", {"username": username, "reason": "unknown"})
        # SECURITY: a decoy's token and writes are for a name no account has (usernames are
        # never empty), so they can revoke nothing.
        subject = username if refusal is None else DECOY_USERNAME
        link, revoke_link, claims = await self.record_link(
            subject, state or "", ip, real=refusal is None
        )
        # The requester's language (older messages and an administrator's command have none:
        # then the user's recorded one) is this mail's only. SECURITY: never recorded as the
        # user's: anyone may ask step 1 for any name, and would choose the language of that
        # user's later mails. Completing the reset (the mailbox's owner) records it.
        language = message.payload.get("language")
        if not isinstance(language, str):
            language = await self._renderer.language_of(subject)
        base = self._config.portal_url
        # A decoy's mail never holds what was typed: it is the same mail, to nobody.
        shown = (user.display_name or subject) if user is not None and refusal is None else subject
        mail = self._renderer.render(
            RESET_MAIL,
            # SECURITY: the stored address, never what was typed (Django CVE-2019-19844).
            to=address if refusal is None else DECOY_ADDRESS,
            title=N_("Reset your password"),
            language=language,
            context={
                "display_name": shown,
                "username": subject,
                "link": link,
                "revoke_link": revoke_link,
                "lifespan": self._renderer.duration(claims.expires_at - claims.issued_at, language),
                "ip": ip,
                # "admin": `portal users send-reset-link` asked, not someone at an address.
                "actor": message.payload.get("actor"),
                "requested_at": self._renderer.when(
                    float(message.payload["requested_at"]), language
                ),
                "portal_url": base,
            },
        )
        if refusal is not None:
            await self._notifier.rehearse(mail)
            event, fields = refusal
            self._audit(event, ip=ip, **fields)
            return
        jti_hash = ResetTokens.jti_hash(claims.jti)
        try:
            await self._notifier.send(mail)
        except Exception as exc:
            self._audit(
                "reset_mail_failed",
                username=username,
                ip=ip,
                jti_hash=jti_hash,
                error=type(exc).__name__,
            )
            raise
        self._audit("reset_mail_sent", username=username, ip=ip, jti_hash=jti_hash)

    async def record_link(
        self, subject: str, state: str, ip: str, *, real: bool
    ) -> tuple[str, str, ResetClaims]:
        """Issue a reset token for subject, record it (real) or make the same write for nothing
        (a decoy), revoke subject's other unused links; return (link, revoke link, claims).

        `state` is the user's password_state (the token's fingerprint); `ip` is recorded as
        where the link was asked for ("" for an administrator). The links are absolute URLs
        under the portal's address; each carries a token: never log them.
        """
        token, claims = self._tokens.issue(subject, state)
        now = self._clock.now()
        if real:
            await self._storage.save_identity_verification(
                IdentityVerification(
                    jti=claims.jti,
                    username=subject,
                    action=ACTION,
                    issued_at=claims.issued_at,
                    issued_ip=ip,
                    expires_at=claims.expires_at,
                )
            )
        else:
            # SECURITY: a write transaction like the save above that changes nothing: the
            # decoy's jti is new and random, so no record has it. No link is ever recorded.
            await self._storage.revoke_identity_verification(claims.jti, at=now, ip=ip)
        # SECURITY: a new link revokes the user's other unused ones. Saved first, revoked after:
        # two replicas mailing the same user at once can never leave two links that work (at
        # worst both die and the user asks again); revoking first could leave both alive.
        await self._storage.revoke_identity_verifications_for(
            subject, ACTION, at=now, ip=ip, keep_jti=claims.jti
        )
        base = self._config.portal_url
        # SECURITY: the revoke link carries a token that can only revoke (its own audience).
        revoke_token = self._tokens.revocation(claims)
        return (
            f"{base}/reset-password/step2?token={token}",
            f"{base}/revoke/reset-password?token={revoke_token}",
            claims,
        )
