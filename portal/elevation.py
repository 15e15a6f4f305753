"""The elevated session: a one-time code mailed to the signed-in user, typed back, and the session
allowed sensitive settings for a while from that client address (Authelia 4.39's design:
internal/handlers/handler_session_elevation.go, internal/middlewares/require_auth.go).

    start(session, ip)   a new code (identity_validation.elevated_session.characters, from an
                         unambiguous alphabet, OS CSPRNG), its record saved (an HMAC of it, never
                         the code), the mail queued; returns the record's public id (delete_id)
    finish(session, otc, ip)   consume the code for that user: the session is elevated for
                         elevation_lifespan from ip only; any failure is one ElevationFailedError
    state(session, ip)   what GET /api/user/session/elevation answers
    revoke(delete_id, ip)   the mail's "this was not me" link: the code can no longer be used
    check(session, ip)   what every sensitive setting asks first (require_elevation)

Never a code in a log or audit event: events carry the username, the address and the public id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from portal.audit import AuditSink, audit
from portal.clock import Clock
from portal.config import Config
from portal.errors import ElevationFailedError, ElevationRequiredError, RateLimitedError
from portal.i18n import N_
from portal.mail import MailRenderer
from portal.notify.base import Notifier
from portal.notify.outbox import OutboxWorker
from portal.ratelimit import Bucket, RateLimiter, buckets_from_config
from portal.sessions import TWO_FACTORS, Session, SessionStore
from portal.storage.base import OneTimeCode, OneTimeCodeStore, OutboxMessage
from portal.users.base import UserBackend

ELEVATION_MAIL = "elevation_code"
INTENT = "elevation"
# Authelia's random.CharSetUnambiguousUpper: no 0/O, 1/I/L, 5/S look-alikes. Typed codes are
# trimmed and upper-cased before they are checked (Authelia does the same).
ALPHABET = "ABCDEFGHJKLMNPQRTUVWYXZ2346789"
MAX_TYPED = 20  # Authelia refuses a typed code longer than this before any lookup
# Records are kept this long after they expire (for the audit trail), then purged.
RECORD_RETENTION = 86400.0
NOT_ELEVATED = {"elevated_until": None, "elevated_ip": None}

HasSecondFactor = Callable[[str], Awaitable[bool]]


async def _no_second_factor(username: str) -> bool:
    """The default until a second factor is registered anywhere: nobody has one."""
    return False


def new_code(characters: int) -> str:
    """Return a code of `characters` drawn uniformly from ALPHABET with the OS CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(characters))


class ElevationService:
    """Mail one-time codes, check them, and say whether a session is elevated.

    Errors: start and finish raise RateLimitedError (429) over server.endpoints.rate_limits.
    session_elevation_start / _finish (per client address); finish raises ElevationFailedError
    (401, one message for a wrong, expired, used or revoked code); check raises
    ElevationRequiredError (403). Storage failures propagate (StorageError).
    """

    def __init__(
        self,
        *,
        config: Config,
        users: UserBackend,
        storage: OneTimeCodeStore,
        sessions: SessionStore,
        outbox: OutboxWorker,
        notifier: Notifier,
        renderer: MailRenderer,
        clock: Clock,
        limiter: RateLimiter,
        has_second_factor: HasSecondFactor = _no_second_factor,
        audit: AuditSink = audit,
    ) -> None:
        """Register the mail job; has_second_factor(username) tells whether the user has a
        second factor registered (require_second_factor, can_skip_second_factor)."""
        self._config = config
        self.settings = config.identity_validation.elevated_session
        self._users = users
        self._storage = storage
        self._sessions = sessions
        self._outbox = outbox
        self._notifier = notifier
        self._renderer = renderer
        self._clock = clock
        self._limiter = limiter
        self._has_second_factor = has_second_factor
        self._audit = audit
        start, finish = config.session_elevation_limits()
        self._start_limit = buckets_from_config(start)
        self._finish_limit = buckets_from_config(finish)
        secret = config.identity_validation.reset_password.jwt_secret.get_secret_value()
        # One key per use, derived from the portal's secret: the codes' hashes, and the mask
        # that keeps a queued mail's code unreadable in the outbox table.
        self._hash_key = hmac.new(secret.encode(), b"portal one-time code v1", hashlib.sha256)
        self._mask_key = hmac.new(secret.encode(), b"portal one-time mail v1", hashlib.sha512)
        outbox.register(ELEVATION_MAIL, self.deliver_code_mail)

    def code_hash(self, code: str) -> str:
        """Return the HMAC-SHA256 (hex) of a code as stored; the code is never stored."""
        mac = self._hash_key.copy()
        mac.update(code.encode())
        return mac.hexdigest()

    def _mask(self, code: str, public_id: str, sign: int) -> str:
        """Add (sign=1) or remove (sign=-1) a keystream of the public id to the code, letter by
        letter in ALPHABET: a stream cipher over an HMAC-SHA512 PRF, unique per public id (two
        bytes per letter: 64 bytes cover the 20 letters at most, with a negligible modulo bias)."""
        mac = self._mask_key.copy()
        mac.update(public_id.encode())
        stream = mac.digest()
        shifts = [int.from_bytes(stream[2 * i : 2 * i + 2], "big") for i in range(len(code))]
        return "".join(
            ALPHABET[(ALPHABET.index(c) + sign * s) % len(ALPHABET)]
            for c, s in zip(code, shifts, strict=True)
        )

    async def _limit(self, endpoint: str, ip: str, buckets: tuple[Bucket, ...]) -> None:
        retry_after = await self._limiter.hit(f"ip:{endpoint}:{ip}", buckets)
        if retry_after is not None:
            self._audit("rate_limited", endpoint=endpoint, ip=ip)
            raise RateLimitedError(int(retry_after))

    async def start(self, session: Session, ip: str) -> str:
        """Issue a code for the session's user, queue its mail, return the public id (delete_id).

        The record is saved before the mail is queued, so the delete_id revokes at once.
        """
        await self._limit("session-elevation-start", ip, self._start_limit)
        now = self._clock.now()
        code = new_code(self.settings.characters)
        public_id = secrets.token_urlsafe(16)
        await self._storage.save_one_time_code(
            OneTimeCode(
                public_id=public_id,
                username=session.username,
                intent=INTENT,
                code_hash=self.code_hash(code),
                issued_at=now,
                issued_ip=ip,
                expires_at=now + self.settings.code_lifespan.total_seconds(),
            )
        )
        # SECURITY: the queued payload holds the code masked under a key the database does not
        # hold; the outbox row is deleted once the mail is delivered.
        await self._outbox.enqueue(
            ELEVATION_MAIL,
            {
                "username": session.username,
                "public_id": public_id,
                "masked": self._mask(code, public_id, 1),
                "ip": ip,
                "requested_at": now,
            },
        )
        self._audit("elevation_requested", username=session.username, ip=ip, id=public_id)
        return public_id

    async def finish(self, session: Session, otc: str, ip: str) -> Session:
        """Consume the typed code for the session's user and elevate the session; return it.

        Raises ElevationFailedError (one message for every failure: wrong, expired, used,
        revoked, another user's) and RateLimitedError.
        """
        await self._limit("session-elevation-finish", ip, self._finish_limit)
        typed = otc.strip().upper()
        now = self._clock.now()
        ok = 0 < len(typed) <= MAX_TYPED and await self._storage.consume_one_time_code(
            session.username, INTENT, self.code_hash(typed), at=now, ip=ip
        )
        updated = None
        if ok:
            until = now + self.settings.elevation_lifespan.total_seconds()
            updated = await self._sessions.update(
                session.id, {"elevated_until": until, "elevated_ip": ip}
            )
        if updated is None:
            self._audit("elevation_refused", username=session.username, ip=ip)
            raise ElevationFailedError()
        self._audit("elevation_granted", username=session.username, ip=ip)
        return updated

    async def revoke(self, delete_id: str, ip: str) -> bool:
        """Revoke the code with that public id; True if it was usable and now is not."""
        revoked = await self._storage.revoke_one_time_code(
            delete_id[:64], at=self._clock.now(), ip=ip
        )
        if revoked:
            self._audit("elevation_code_revoked", id=delete_id, ip=ip)
        return revoked

    def skips(self, session: Session) -> bool:
        """Tell whether a two-factor session counts as elevated without a code
        (identity_validation.elevated_session.skip_second_factor, Authelia's meaning)."""
        return self.settings.skip_second_factor and session.level >= TWO_FACTORS

    async def _elevated(self, session: Session, ip: str) -> bool:
        """Tell whether the session holds a live elevation for ip; one held from another
        address is destroyed (Authelia does the same)."""
        if session.elevated_until is None:
            return False
        if session.elevated_ip != ip:
            await self._sessions.update(session.id, NOT_ELEVATED)
            return False
        return session.elevated(ip, self._clock.now())

    async def state(self, session: Session, ip: str) -> dict[str, Any]:
        """Return GET /api/user/session/elevation's data: elevated, expires (seconds left, 0
        when not elevated), require_second_factor, skip_second_factor, can_skip_second_factor
        and factor_knowledge (the password was proven: "pwd" in the session's amr)."""
        elevated = await self._elevated(session, ip)
        left = (session.elevated_until or 0) - self._clock.now() if elevated else 0
        has = session.level < TWO_FACTORS and await self._has_second_factor(session.username)
        return {
            "elevated": elevated,
            "expires": max(0, int(left)),
            "require_second_factor": self.settings.require_second_factor and has,
            "skip_second_factor": self.skips(session),
            "can_skip_second_factor": self.skips(session),
            "factor_knowledge": "pwd" in session.amr,
        }

    async def check(self, session: Session, ip: str) -> None:
        """Let a sensitive setting go ahead, or raise ElevationRequiredError (403).

        Authelia's RequireElevated: a two-factor session passes when skip_second_factor is set;
        with require_second_factor, a one-factor session of a user who has a second factor must
        prove it first (`second_factor` on the error); otherwise a live elevation from ip.
        """
        if self.skips(session):
            return
        if (
            self.settings.require_second_factor
            and session.level < TWO_FACTORS
            and await self._has_second_factor(session.username)
        ):
            raise ElevationRequiredError(second_factor=True)
        if not await self._elevated(session, ip):
            raise ElevationRequiredError()

    async def purge(self) -> None:
        """Delete code records expired more than a day ago (run periodically)."""
        await self._storage.purge_one_time_codes(
            expired_before=self._clock.now() - RECORD_RETENTION
        )

    async def deliver_code_mail(self, message: OutboxMessage) -> None:
        """Mail the code to the user's stored address (outbox job; raises to be retried).

        The HTML part has the code in the element with id="one-time-code", the text part on a
        line of its own; both link to the revoke page (GET shows a button, POST revokes).
        """
        payload = message.payload
        username, public_id = str(payload["username"]), str(payload["public_id"])
        user = await self._users.get_user(username)
        if user is None or user.disabled or not user.email:
            self._audit("elevation_no_mail", username=username, id=public_id)
            return
        code = self._mask(str(payload["masked"]), public_id, -1)
        base = self._config.portal_url
        language = await self._renderer.language_of(user.username)
        mail = self._renderer.render(
            ELEVATION_MAIL,
            to=user.email,
            title=N_("Confirm your identity"),
            language=language,
            context={
                "display_name": user.display_name or user.username,
                "username": user.username,
                "code": code,
                "lifespan": self._renderer.duration(
                    self.settings.code_lifespan.total_seconds(), language
                ),
                "revoke_link": f"{base}/revoke/one-time-code?id={public_id}",
                "ip": str(payload["ip"]),
                "requested_at": self._renderer.when(float(payload["requested_at"]), language),
                "portal_url": base,
            },
        )
        await self._notifier.send(mail)
