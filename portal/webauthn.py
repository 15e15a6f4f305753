"""Passkeys and security keys (WebAuthn Level 3) as a second factor: the ceremonies, with
py_webauthn (the `webauthn` package) doing the cryptography and the checks of section 7.

WebAuthnService decides; handlers translate. Authelia 4.39's behaviour (internal/handlers/
handler_register_webauthn.go, handler_sign_webauthn.go, schema/webauthn.go):

- The relying party is fixed by the configuration, never by request headers: its id is the
  first cookie's `domain`, its origin the scheme, host and port of that cookie's `authelia_url`.
- A challenge is 32 random bytes, single-use and bound to where it was issued: the caller keeps
  `Challenge.record` (a purpose, the challenge's SHA-256, an expiry after webauthn.timeout) in
  the session, drops it before checking the answer (`take_challenge`), and a response whose
  clientDataJSON carries another challenge is refused.
- Registration excludes the user's credentials and applies webauthn.filtering (AAGUID lists,
  prohibit_backup_eligibility); every addition and removal queues the second-factor mail.
- An assertion must name one of the user's credentials; its signature counter must grow when
  either count is non-zero (section 6.1.1: otherwise the authenticator may be a clone), and the
  new count is stored by compare-and-set, so a replay racing the original loses too. The backup
  eligibility flag must not change (section 6.1.3).
- Every refusal is one WebAuthnFailedError; regulation counts it like a wrong TOTP code (the
  same Regulator) and the audit says second_factor_failed with method "webauthn" and a reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol
from urllib.parse import urlsplit

import webauthn
from webauthn.helpers import exceptions as webauthn_errors
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorAttachment,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from portal.audit import AuditSink, audit
from portal.clock import Clock
from portal.config import Config
from portal.errors import (
    DecryptionError,
    RateLimitedError,
    WebAuthnCredentialExistsError,
    WebAuthnCredentialNotFoundError,
    WebAuthnFailedError,
    WebAuthnNotAllowedError,
)
from portal.i18n import N_, gettext
from portal.notify.outbox import OutboxWorker
from portal.ratelimit import RateLimiter, buckets_from_config
from portal.regulation import Regulator
from portal.second_factor import ADDED_MAIL, REMOVED_MAIL
from portal.storage.base import RateLimitStore, WebAuthnCredential, WebAuthnCredentialStore
from portal.storage.encryption import SecretBox

Purpose = Literal["register", "second_factor", "reset", "passkey_login"]
DESCRIPTION_MAX = 64
# Why clean_description refuses a name (formatted with `most`=DESCRIPTION_MAX): the passkey
# script's messages (portal.handlers.webauthn.script_messages) translate each one too.
NAME_LENGTH_REASON = N_("a passkey's name has 1 to %(most)s characters")
NAME_CONTROL_REASON = N_("a passkey's name cannot hold control characters")
_TRANSPORTS = {t.value for t in AuthenticatorTransport}
# What py_webauthn raises for a response it refuses, and what a malformed one makes it raise
# (RecursionError: JSON nested past the parser's limit, as bodies.read_json says).
_MALFORMED = (
    webauthn_errors.WebAuthnException,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    binascii.Error,
    RecursionError,
)


class WebAuthnStorage(WebAuthnCredentialStore, RateLimitStore, Protocol):
    """The storage roles the ceremonies use: the credentials, and rate-limit events (the
    per-IP limit and the single use of challenges sealed in cookies)."""


@dataclass(frozen=True)
class RelyingParty:
    """The relying party the ceremonies name: `id` (a domain), `name`, `origin` (scheme://host)."""

    id: str
    name: str
    origin: str


def relying_party(config: Config) -> RelyingParty:
    """Return the relying party from the configuration alone: the first cookie's domain and the
    origin of its authelia_url (WebAuthn Level 3 section 5.1.4.1 step 8 / 7.2 step 9)."""
    cookie = config.session.cookies[0]
    url = urlsplit(cookie.authelia_url)
    return RelyingParty(
        id=cookie.domain, name=config.webauthn_display_name, origin=f"{url.scheme}://{url.netloc}"
    )


@dataclass(frozen=True)
class Challenge:
    """A challenge issued: `options` go to the browser, `record` stays with the caller."""

    options: dict[str, Any]
    record: dict[str, Any]


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(challenge: bytes) -> str:
    return hashlib.sha256(challenge).hexdigest()


def response_challenge(response: dict[str, Any]) -> bytes:
    """Return the challenge a RegistrationResponseJSON or AuthenticationResponseJSON signed
    (from its clientDataJSON); WebAuthnFailedError when it is not there."""
    try:
        client_data = json.loads(_b64url_decode(str(response["response"]["clientDataJSON"])))
        return _b64url_decode(str(client_data["challenge"]))
    # RecursionError: a clientDataJSON nested past the parser's limit (a 500 before).
    except (KeyError, TypeError, ValueError, binascii.Error, RecursionError):
        raise WebAuthnFailedError() from None


def _credential_id(response: dict[str, Any]) -> bytes:
    try:
        return _b64url_decode(str(response["rawId"]))
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise WebAuthnFailedError() from None


def clean_description(text: str) -> str:
    """Return a credential's name with its runs of white space made one space; ValueError when
    empty, longer than DESCRIPTION_MAX characters (Authelia's limit is 64 too), or holding a
    control character (Unicode category Cc: NUL, which PostgreSQL's text cannot store, escape
    sequences, C1 controls)."""
    text = " ".join(text.split())
    if not text or len(text) > DESCRIPTION_MAX:
        raise ValueError(gettext(NAME_LENGTH_REASON) % {"most": DESCRIPTION_MAX})
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise ValueError(gettext(NAME_CONTROL_REASON))
    return text


class WebAuthnService:
    """Register, check, rename and remove users' WebAuthn credentials (see the module)."""

    def __init__(
        self,
        *,
        config: Config,
        store: WebAuthnStorage,
        clock: Clock,
        regulator: Regulator,
        limiter: RateLimiter,
        outbox: OutboxWorker,
        user_handle_key: bytes,
        encryption_key: str,
        audit: AuditSink = audit,
    ) -> None:
        """Keep the parts; `user_handle_key` derives each user's opaque WebAuthn user.id,
        `encryption_key` (storage.encryption_key) seals challenges kept in cookies."""
        self._box = SecretBox(encryption_key)
        self._config = config
        self._webauthn = config.webauthn
        self._rp = relying_party(config)
        self._store = store
        self._clock = clock
        self._regulator = regulator
        self._limiter = limiter
        self._buckets = buckets_from_config(config.server.endpoints.rate_limits.second_factor_totp)
        self._outbox = outbox
        self._handle_key = user_handle_key
        self._audit = audit

    @property
    def enabled(self) -> bool:
        """Tell whether WebAuthn is on (webauthn.disable is false)."""
        return not self._webauthn.disable

    @property
    def relying_party(self) -> RelyingParty:
        """Return the relying party the ceremonies name."""
        return self._rp

    async def credentials(self, username: str) -> list[WebAuthnCredential]:
        """Return the user's credentials, oldest first."""
        return await self._store.list_webauthn_credentials(username)

    async def registered(self, username: str) -> bool:
        """Tell whether the user has a passkey to use now (WebAuthn on and one registered)."""
        return self.enabled and bool(await self._store.list_webauthn_credentials(username))

    def user_handle(self, username: str) -> bytes:
        """Return the user's WebAuthn user.id: 32 opaque bytes, stable, no personal data
        (WebAuthn Level 3 section 14.6.1: the handle must not reveal the username)."""
        return hmac.new(self._handle_key, b"webauthn-user:" + username.encode(), "sha256").digest()

    # -- challenges ------------------------------------------------------------------------------

    def _record(self, purpose: Purpose, challenge: bytes, **extra: Any) -> dict[str, Any]:
        expires = self._clock.now() + self._webauthn.timeout.total_seconds()
        return {"purpose": purpose, "sha256": _digest(challenge), "expires": expires, **extra}

    def check_challenge(
        self, record: dict[str, Any] | None, purpose: Purpose, response: dict[str, Any]
    ) -> bytes:
        """Return the challenge `response` signed if `record` (taken from where it was kept, and
        dropped there first: single use) issued it for `purpose` and has not lapsed; else
        WebAuthnFailedError."""
        challenge = response_challenge(response)
        if (
            not isinstance(record, dict)
            or record.get("purpose") != purpose
            or float(record.get("expires") or 0) <= self._clock.now()
            or not hmac.compare_digest(str(record.get("sha256") or ""), _digest(challenge))
        ):
            raise WebAuthnFailedError()
        return challenge

    # -- registration ----------------------------------------------------------------------------

    async def begin_registration(
        self, username: str, display_name: str, description: str
    ) -> Challenge:
        """Return creation options for a new credential named `description` (cleaned with
        clean_description: ValueError), excluding the user's credentials.

        WebAuthnCredentialExistsError when the user has a credential of that name.
        """
        description = clean_description(description)
        existing = await self._store.list_webauthn_credentials(username)
        if any(c.description == description for c in existing):
            raise WebAuthnCredentialExistsError()
        criteria = self._webauthn.selection_criteria
        challenge = secrets.token_bytes(32)
        options = webauthn.generate_registration_options(
            rp_id=self._rp.id,
            rp_name=self._rp.name,
            user_id=self.user_handle(username),
            user_name=username,
            user_display_name=display_name or username,
            challenge=challenge,
            timeout=int(self._webauthn.timeout.total_seconds() * 1000),
            attestation=AttestationConveyancePreference(
                self._webauthn.attestation_conveyance_preference
            ),
            authenticator_selection=AuthenticatorSelectionCriteria(
                authenticator_attachment=(
                    AuthenticatorAttachment(criteria.attachment) if criteria.attachment else None
                ),
                resident_key=ResidentKeyRequirement(criteria.discoverability),
                require_resident_key=criteria.discoverability == "required",
                user_verification=UserVerificationRequirement(criteria.user_verification),
            ),
            exclude_credentials=[_descriptor(c) for c in existing],
        )
        return Challenge(
            options=json.loads(webauthn.options_to_json(options)),
            record=self._record("register", challenge, description=description),
        )

    async def complete_registration(
        self, username: str, record: dict[str, Any] | None, response: dict[str, Any], ip: str
    ) -> WebAuthnCredential:
        """Verify a RegistrationResponseJSON against the registration `record` and save it.

        Raises WebAuthnFailedError (bad or stale challenge, origin, rp id, attestation),
        WebAuthnNotAllowedError (webauthn.filtering), WebAuthnCredentialExistsError (known
        credential or name taken meanwhile). Audit webauthn_registered; the "a second factor
        was added" mail is queued.
        """
        challenge = self.check_challenge(record, "register", response)
        assert record is not None  # noqa: S101 - check_challenge refuses None
        try:
            verified = webauthn.verify_registration_response(
                credential=response,
                expected_challenge=challenge,
                expected_rp_id=self._rp.id,
                expected_origin=self._rp.origin,
                require_user_verification=(
                    self._webauthn.selection_criteria.user_verification == "required"
                ),
            )
        except _MALFORMED as exc:
            self._audit(
                "webauthn_registration_failed", username=username, ip=ip, reason=type(exc).__name__
            )
            raise WebAuthnFailedError() from None
        backup_eligible = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
        self._filter(verified.aaguid, backup_eligible, username, ip)
        inner = response.get("response")
        transports = inner.get("transports") if isinstance(inner, dict) else None
        transports = transports if isinstance(transports, list) else []
        now = self._clock.now()
        credential = WebAuthnCredential(
            id=0,
            username=username,
            description=str(record.get("description") or "Passkey"),
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            aaguid=verified.aaguid,
            transports=tuple(str(t) for t in transports if t in _TRANSPORTS),
            backup_eligible=backup_eligible,
            backup_state=verified.credential_backed_up,
            created_at=now,
        )
        new_id = await self._store.add_webauthn_credential(credential)
        self._audit("webauthn_registered", username=username, ip=ip, aaguid=verified.aaguid)
        await self._outbox.enqueue(
            ADDED_MAIL, {"username": username, "ip": ip, "at": now, "method": "webauthn"}
        )
        return WebAuthnCredential(**{**credential.__dict__, "id": new_id})

    def _filter(self, aaguid: str, backup_eligible: bool, username: str, ip: str) -> None:
        rules = self._webauthn.filtering
        permitted = {str(a) for a in rules.permitted_aaguids}
        prohibited = {str(a) for a in rules.prohibited_aaguids}
        reason = None
        if permitted and aaguid not in permitted:
            reason = "aaguid_not_permitted"
        elif aaguid in prohibited:
            reason = "aaguid_prohibited"
        elif rules.prohibit_backup_eligibility and backup_eligible:
            reason = "backup_eligible"
        if reason is not None:
            self._audit("webauthn_registration_refused", username=username, ip=ip, reason=reason)
            raise WebAuthnNotAllowedError()

    # -- management ------------------------------------------------------------------------------

    async def rename(self, username: str, credential_id: int, description: str) -> None:
        """Rename the user's credential (clean_description: ValueError); NotFound/Exists errors."""
        if not await self._store.rename_webauthn_credential(
            username, credential_id, clean_description(description)
        ):
            raise WebAuthnCredentialNotFoundError()

    async def remove(
        self, username: str, credential_id: int, *, actor: str, ip: str | None = None
    ) -> None:
        """Delete the user's credential (WebAuthnCredentialNotFoundError when there is no such
        one); audit webauthn_removed with `actor`, and queue the removal mail."""
        if not await self._store.delete_webauthn_credential(username, credential_id):
            raise WebAuthnCredentialNotFoundError()
        now = self._clock.now()
        self._audit("webauthn_removed", username=username, actor=actor, ip=ip)
        await self._outbox.enqueue(
            REMOVED_MAIL,
            {"username": username, "ip": ip or "", "at": now, "method": "webauthn", "actor": actor},
        )

    # -- authentication --------------------------------------------------------------------------

    async def begin_authentication(self, username: str | None, purpose: Purpose) -> Challenge:
        """Return request options for an assertion: allowing the user's credentials, or (username
        None: a passkey login) any discoverable one, with user verification required."""
        allow = (
            [_descriptor(c) for c in await self._store.list_webauthn_credentials(username)]
            if username is not None
            else []
        )
        verification = (
            "required" if username is None else self._webauthn.selection_criteria.user_verification
        )
        challenge = secrets.token_bytes(32)
        options = webauthn.generate_authentication_options(
            rp_id=self._rp.id,
            challenge=challenge,
            timeout=int(self._webauthn.timeout.total_seconds() * 1000),
            allow_credentials=allow,
            user_verification=UserVerificationRequirement(verification),
        )
        return Challenge(
            options=json.loads(webauthn.options_to_json(options)),
            record=self._record(purpose, challenge),
        )

    async def limit(self, ip: str) -> None:
        """Count one assertion from `ip`; RateLimitedError (429) over a bucket of
        server.endpoints.rate_limits.second_factor_totp (the same limit as codes)."""
        retry_after = await self._limiter.hit(f"ip:second-factor-webauthn:{ip}", self._buckets)
        if retry_after is not None:
            self._audit("second_factor_throttled", ip=ip, method="webauthn")
            raise RateLimitedError(int(retry_after))

    async def verify(
        self,
        username: str | None,
        record: dict[str, Any] | None,
        purpose: Purpose,
        response: dict[str, Any],
        ip: str,
    ) -> WebAuthnCredential:
        """Accept an AuthenticationResponseJSON for `username` (None: a passkey login, which
        needs user verification and names its user by the credential) or raise.

        Order as TotpService.verify: the per-IP limit (RateLimitedError); the challenge
        (WebAuthnFailedError, counted); the credential must be the user's; the ban is read;
        the assertion is verified whatever the ban; a banned subject is refused without
        counting; any other refusal counts a failure under regulation. Returns the credential
        as it was before this use.
        """
        await self.limit(ip)
        credential = (
            await self._store.get_webauthn_credential(_credential_id(response))
            if self.enabled
            else None
        )
        subject = username or (credential.username if credential else None)
        try:
            challenge = self.check_challenge(record, purpose, response)
        except WebAuthnFailedError:
            await self._refuse(subject, ip, "challenge", purpose)
        if credential is None or (username is not None and credential.username != username):
            await self._refuse(subject, ip, "unknown_credential", purpose)
        assert credential is not None and subject is not None  # noqa: S101 - refused above
        if username is None and not self._handle_matches(response, credential.username):
            await self._refuse(subject, ip, "user_handle", purpose)
        banned = await self._regulator.banned_until(subject, ip)
        reason: str | None = None
        try:
            verified = webauthn.verify_authentication_response(
                credential=response,
                expected_challenge=challenge,
                expected_rp_id=self._rp.id,
                expected_origin=self._rp.origin,
                credential_public_key=credential.public_key,
                credential_current_sign_count=credential.sign_count,
                require_user_verification=(
                    username is None
                    or self._webauthn.selection_criteria.user_verification == "required"
                ),
            )
        except _MALFORMED as exc:
            reason = "counter" if "sign count" in str(exc) else "assertion"
        if banned is not None:
            self._failed(subject, ip, "banned", purpose)
        if reason is not None:
            await self._refuse(subject, ip, reason, purpose)
        eligible = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
        if eligible != credential.backup_eligible or (
            eligible and self._webauthn.filtering.prohibit_backup_eligibility
        ):
            await self._refuse(subject, ip, "backup_eligibility", purpose)
        if not await self._store.webauthn_credential_use(
            credential.id,
            previous=credential.sign_count,
            sign_count=verified.new_sign_count,
            backup_state=verified.credential_backed_up,
            at=self._clock.now(),
        ):
            await self._refuse(subject, ip, "counter", purpose)
        self._audit(
            "second_factor_succeeded",
            username=subject,
            ip=ip,
            method="webauthn",
            purpose=purpose,
        )
        return credential

    def _handle_matches(self, response: dict[str, Any], username: str) -> bool:
        # WebAuthn Level 3 section 7.2 step 6: a discoverable credential names its user; it
        # must be the user the credential was registered to.
        inner = response.get("response")
        handle = inner.get("userHandle") if isinstance(inner, dict) else None
        try:
            given = _b64url_decode(str(handle)) if handle else b""
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(given, self.user_handle(username))

    def seal(self, challenge: Challenge, bound_to: str) -> str:
        """Return the challenge's record sealed (AES-GCM with storage.encryption_key) and bound
        to `bound_to`, for a caller with no session to keep it in (a cookie)."""
        return self._box.seal(json.dumps(challenge.record).encode(), f"webauthn:{bound_to}")

    async def unseal_once(self, sealed: str, bound_to: str) -> dict[str, Any] | None:
        """Return the record `seal` sealed for `bound_to` on its first use only (the rate-limit
        store counts uses across instances); None when it does not open or was used."""
        try:
            record = json.loads(self._box.open(sealed, f"webauthn:{bound_to}"))
        except (DecryptionError, ValueError):
            return None
        return await self.claim(record if isinstance(record, dict) else None)

    async def claim(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        """Return `record` on its challenge's first claim only, else None: the rate-limit store
        counts claims of its SHA-256 across instances, so two answers racing for one challenge
        (two requests reading one session record) get it once. rate_limit_hit records and reads
        in one step on both engines (PostgreSQL: under a transaction-scoped advisory lock on the
        key), which tests/contract/test_rate_limits.py checks with two instances racing."""
        if record is None:
            return None
        uses = await self._store.rate_limit_hit(
            f"webauthn-challenge:{record.get('sha256')}",
            at=self._clock.now(),
            keep_for=self._webauthn.timeout.total_seconds(),
        )
        return record if len(uses) == 1 else None

    async def _refuse(
        self, username: str | None, ip: str, reason: str, purpose: Purpose
    ) -> NoReturn:
        if username is not None:
            await self._regulator.record_failure(username, ip)
        self._failed(username, ip, reason, purpose)

    def _failed(self, username: str | None, ip: str, reason: str, purpose: Purpose) -> NoReturn:
        # `purpose` tells a passkey login (authelia_authn_passkey) from a second factor.
        self._audit(
            "second_factor_failed",
            username=username,
            ip=ip,
            method="webauthn",
            reason=reason,
            purpose=purpose,
        )
        raise WebAuthnFailedError()


def _descriptor(credential: WebAuthnCredential) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(
        id=credential.credential_id,
        transports=[AuthenticatorTransport(t) for t in credential.transports if t in _TRANSPORTS],
    )
