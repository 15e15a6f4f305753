"""The second factor, TOTP first: registration, the code check under regulation, removal.

TotpService decides; handlers (another module) translate. A code is accepted when it matches the
user's registration within ±totp.skew time steps (portal/totp.py), neither its step nor a later
one was used before (RFC 6238 section 5.2; unless totp.disable_reuse_security_policy) and
neither the user nor the address is banned.
Every refusal is the same SecondFactorFailedError ("Incorrect code."): wrong, replayed, expired,
no device, banned. Wrong and replayed codes count under `regulation` exactly as wrong passwords
do (the same Regulator, modes user and ip), so guessing codes ends in the same ban. Adding or
removing a second factor queues a mail to the user (outbox, as "your password was changed").
Audit events: second_factor_succeeded / second_factor_failed (with a reason, never the code),
totp_registered, totp_removed (with the actor).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from portal.audit import AuditSink, audit
from portal.clock import Clock
from portal.config import Config
from portal.errors import RateLimitedError, SecondFactorFailedError
from portal.i18n import N_
from portal.mail import MailRenderer
from portal.notify.base import Notifier
from portal.notify.outbox import OutboxWorker
from portal.ratelimit import RateLimiter, buckets_from_config
from portal.regulation import Regulator
from portal.storage.base import OutboxMessage, TotpConfiguration, TotpStore
from portal.storage.encryption import SecretBox
from portal.totp import TotpParameters, matching_step, new_secret, otpauth_url, secret_base32
from portal.users.base import UserBackend

ADDED_MAIL = "second_factor_added"
REMOVED_MAIL = "second_factor_removed"
METHOD_NAMES = {
    "totp": N_("a one-time password app (TOTP)"),
    "webauthn": N_("a passkey or security key"),
}


@dataclass(frozen=True)
class PendingTotp:
    """A registration started but not yet confirmed: the secret the user is shown.

    Kept by the caller (in the session record) until the user types a valid code; seal it
    there with `sealed` so the record never holds the secret in clear.
    """

    username: str
    issuer: str
    parameters: TotpParameters
    # SECURITY: the new shared secret; shown to its user once, never logged.
    secret: bytes = dataclasses.field(repr=False)

    @property
    def secret_base32(self) -> str:
        """Return the secret as authenticator apps take it (base32, no padding)."""
        return secret_base32(self.secret)

    @property
    def otpauth_url(self) -> str:
        """Return the otpauth://totp/ URL the QR code carries."""
        return otpauth_url(self.secret, self.parameters, self.issuer, self.username)

    def sealed(self, box: SecretBox) -> dict[str, Any]:
        """Return a JSON object to keep in a session record, the secret sealed (AES-GCM) and
        bound to this user (portal/storage/encryption.py)."""
        p = self.parameters
        return {
            "username": self.username,
            "issuer": self.issuer,
            "algorithm": p.algorithm,
            "digits": p.digits,
            "period": p.period,
            "secret": box.seal(self.secret, _pending_aad(self.username)),
        }

    @classmethod
    def unsealed(cls, data: dict[str, Any], box: SecretBox) -> PendingTotp:
        """Rebuild a PendingTotp from `sealed`'s output; DecryptionError if it does not open,
        KeyError/ValueError if it is not such an object."""
        username = str(data["username"])
        return cls(
            username=username,
            issuer=str(data["issuer"]),
            parameters=TotpParameters(
                algorithm=data["algorithm"], digits=int(data["digits"]), period=int(data["period"])
            ),
            secret=box.open(str(data["secret"]), _pending_aad(username)),
        )


def _pending_aad(username: str) -> str:
    return f"pending_totp:{username}"


class TotpService:
    """Register, check and remove users' TOTP devices (see the module docstring)."""

    def __init__(
        self,
        *,
        config: Config,
        store: TotpStore,
        clock: Clock,
        regulator: Regulator,
        limiter: RateLimiter,
        users: UserBackend,
        outbox: OutboxWorker,
        notifier: Notifier,
        renderer: MailRenderer,
        audit: AuditSink = audit,
    ) -> None:
        """Register the outbox jobs (the added and removed mails); nothing else happens."""
        self._config = config
        self._totp = config.totp
        self._store = store
        self._clock = clock
        self._regulator = regulator
        self._limiter = limiter
        self._buckets = buckets_from_config(config.server.endpoints.rate_limits.second_factor_totp)
        self._users = users
        self._outbox = outbox
        self._notifier = notifier
        self._renderer = renderer
        self._audit = audit
        outbox.register(ADDED_MAIL, self.deliver_added_mail)
        outbox.register(REMOVED_MAIL, self.deliver_removed_mail)

    @property
    def enabled(self) -> bool:
        """Tell whether TOTP is on (totp.disable is false)."""
        return not self._totp.disable

    async def registered(self, username: str) -> bool:
        """Tell whether the user has a second factor to use now (TOTP on and registered)."""
        return self.enabled and await self.configuration(username) is not None

    async def configuration(self, username: str) -> TotpConfiguration | None:
        """Return the user's registration (secret decrypted), or None when there is none."""
        return await self._store.get_totp_configuration(username)

    def start_registration(self, username: str) -> PendingTotp:
        """Return a new secret with the configured parameters for `username`; nothing is saved.

        The secret is totp.secret_size random bytes; algorithm, digits and period are the
        configured ones (Authelia's totp.algorithm/digits/period); the issuer is
        Config.totp_issuer.
        """
        t = self._totp
        return PendingTotp(
            username=username,
            issuer=self._config.totp_issuer,
            parameters=TotpParameters(t.algorithm, t.digits, t.period),
            secret=new_secret(t.secret_size),
        )

    async def complete_registration(
        self, username: str, pending: PendingTotp, code: str, ip: str
    ) -> None:
        """Save the pending registration if `code` matches its secret now (± totp.skew).

        Raises SecondFactorFailedError for a wrong code, a pending registration of another
        user, or TOTP disabled. Replaces an existing registration (TotpRegistration refuses
        that first). The code's step counts as used, audit `totp_registered`, and the "a
        second factor was added" mail is queued.
        """
        now = self._clock.now()
        step = matching_step(
            pending.secret, pending.parameters, code.strip(), at=now, skew=self._totp.skew
        )
        if step is None or pending.username != username or not self.enabled:
            self._audit("totp_registration_failed", username=username, ip=ip)
            raise SecondFactorFailedError()
        p = pending.parameters
        await self._store.save_totp_configuration(
            TotpConfiguration(
                username=username,
                created_at=now,
                last_used_at=now,
                issuer=pending.issuer,
                algorithm=p.algorithm,
                digits=p.digits,
                period=p.period,
                secret=pending.secret,
            )
        )
        if not self._totp.disable_reuse_security_policy:
            await self._store.totp_step_use(username, step, at=now, keep_for=self._keep_for(p))
        self._audit("totp_registered", username=username, ip=ip)
        await self._outbox.enqueue(
            ADDED_MAIL, {"username": username, "ip": ip, "at": now, "method": "totp"}
        )

    async def limit(self, ip: str) -> None:
        """Count one code submitted from `ip`; raise RateLimitedError (429) when over a bucket
        of server.endpoints.rate_limits.second_factor_totp (Authelia's per-IP limit)."""
        retry_after = await self._limiter.hit(f"ip:second-factor-totp:{ip}", self._buckets)
        if retry_after is not None:
            self._audit("second_factor_throttled", ip=ip, method="totp")
            raise RateLimitedError(int(retry_after))

    async def verify(self, username: str, code: str, ip: str) -> None:
        """Accept the user's current code or raise SecondFactorFailedError.

        Order: the per-IP rate limit (`limit`: RateLimitedError, 429); the regulation ban is
        read; the code is checked whatever the ban (so the time taken does not tell a ban); a
        banned subject is refused without counting; a wrong code, no registration or TOTP
        disabled counts a failure; a matching code whose step, or a later one, was already used
        (a replay, unless totp.disable_reuse_security_policy) counts a failure too. On success
        last_used_at is set. Audit second_factor_succeeded/_failed, never the code. Raises
        StorageError/DecryptionError when the storage fails.
        """
        await self.limit(ip)
        banned = await self._regulator.banned_until(username, ip)
        now = self._clock.now()
        registration = await self._store.get_totp_configuration(username) if self.enabled else None
        step: int | None = None
        if registration is not None:
            params = _parameters(registration)
            step = matching_step(
                registration.secret, params, code.strip(), at=now, skew=self._totp.skew
            )
        if banned is not None:
            self._failed(username, ip, "banned")
        if registration is None:
            await self._regulator.record_failure(username, ip)
            self._failed(username, ip, "no_device")
        if step is None:
            await self._regulator.record_failure(username, ip)
            self._failed(username, ip, "wrong")
        assert registration is not None and step is not None  # noqa: S101 - refused above
        if not self._totp.disable_reuse_security_policy:
            first = await self._store.totp_step_use(
                username, step, at=now, keep_for=self._keep_for(_parameters(registration))
            )
            if not first:
                await self._regulator.record_failure(username, ip)
                self._failed(username, ip, "replayed")
        await self._store.touch_totp(username, now)
        self._audit("second_factor_succeeded", username=username, ip=ip, method="totp")

    async def delete(self, username: str, *, actor: str, ip: str | None = None) -> bool:
        """Remove the user's TOTP registration; True if there was one.

        `actor` says who asked ("user", "admin"): audit `totp_removed` with it; the "a second
        factor was removed" mail is queued.
        """
        removed = await self._store.delete_totp_configuration(username)
        if removed:
            now = self._clock.now()
            self._audit("totp_removed", username=username, actor=actor, ip=ip)
            await self._outbox.enqueue(
                REMOVED_MAIL,
                {"username": username, "ip": ip or "", "at": now, "method": "totp", "actor": actor},
            )
        return removed

    def _failed(self, username: str, ip: str, reason: str) -> None:
        self._audit("second_factor_failed", username=username, ip=ip, method="totp", reason=reason)
        raise SecondFactorFailedError()

    def _keep_for(self, params: TotpParameters) -> float:
        # A step's code is accepted while now lies within ±skew steps of it: 2*skew+1 periods
        # in all; one more period of margin.
        return float((2 * self._totp.skew + 2) * params.period)

    async def deliver_added_mail(self, message: OutboxMessage) -> None:
        """Tell the user a second factor was added, with time and address (outbox job)."""
        await self._deliver(message, "second_factor_added", N_("A second factor was added"))

    async def deliver_removed_mail(self, message: OutboxMessage) -> None:
        """Tell the user a second factor was removed, with time and who (outbox job)."""
        await self._deliver(message, "second_factor_removed", N_("A second factor was removed"))

    async def _deliver(self, message: OutboxMessage, template: str, title: str) -> None:
        payload = message.payload
        user = await self._users.get_user(str(payload["username"]))
        if user is None or not user.emails:
            return
        base = self._config.portal_url
        language = await self._renderer.language_of(user.username)
        mail = self._renderer.render(
            template,
            to=", ".join(user.emails),
            title=title,
            language=language,
            context={
                "display_name": user.display_name or user.username,
                "username": user.username,
                "at": self._renderer.when(float(payload["at"]), language),
                "ip": str(payload.get("ip") or ""),
                "by_admin": payload.get("actor") == "admin",
                "method": self._renderer.gettext(
                    METHOD_NAMES.get(str(payload["method"]), str(payload["method"])), language
                ),
                "reset_url": f"{base}/reset-password/step1",
                "portal_url": base,
            },
        )
        await self._notifier.send(mail)


def _parameters(registration: TotpConfiguration) -> TotpParameters:
    algorithm = registration.algorithm
    if algorithm not in ("SHA1", "SHA256", "SHA512"):
        raise ValueError("stored TOTP algorithm is not SHA1, SHA256 or SHA512")
    return TotpParameters(algorithm, registration.digits, registration.period)  # type: ignore[arg-type]
