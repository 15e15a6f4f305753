"""The portal's one exception tree: every PortalError subclass lives here, nowhere else.

errors_middleware (middlewares.py) answers a PortalError that reaches it with `status`,
`public_message` (JSON for the API, errors/{status}.html or errors/error.html for pages) and
`response_headers()`; the exception's own text is for the log only. Page handlers catch the ones
marked [page] and answer with a page of their own (the form again with the message, or the
"invalid link" page). Start-up errors stop `portal serve` / `validate-config` with their text.

    PortalError                      500  "Something went wrong on our side..." (the default)
    +-- ConfigError                  start-up: every configuration problem, one per line
    +-- StartupCheckError            start-up: a backend failed its check before the port opens
    +-- BackendUnavailableError      503  a backend cannot be reached now; retry later
    |   +-- HashingBusyError         503  too many password hashes waiting (+ Retry-After)
    +-- UserBackendError             500  the user backend failed
    |   +-- UnsupportedHashError     500  a stored hash the portal cannot read
    |   +-- PasswordWriteError       500  a new password was not written (the old one holds)
    +-- StorageError                 500  the storage backend failed
    |   +-- StorageUnavailableError  503  the storage engine cannot be reached now (also a
    |   |   |                             BackendUnavailableError)
    |   |   +-- SessionStoreUnavailableError  503  Redis (session.redis) cannot be reached now
    |   +-- DecryptionError          500  a sealed value did not open (wrong key, altered data)
    +-- NotifierError                500  a notifier failed
    |   +-- DeliveryError            outbox: one mail not delivered; `permanent`, else retried
    +-- PermanentJobError            outbox: a job that can never succeed (logged, dropped)
    +-- RateLimitedError             429  too many requests from one client (+ Retry-After)
    +-- SignInFailedError            401  "Incorrect username or password.", for all [page]
    +-- SignInRequiredError          401  an API call that needs a signed-in session had none
    +-- ElevationFailedError         401  the one-time code is wrong, expired, used, revoked [page]
    +-- ElevationRequiredError       403  a sensitive setting needs an elevated session first
    +-- PasswordChangeRequiredError  401  right password, but it must be changed first [page]
    +-- CurrentPasswordRejectedError 401  a signed-in change's current password is wrong, or
    |                                     the account or address is banned: one answer [page]
    +-- SecondFactorFailedError      401  "Incorrect code.": wrong, replayed, expired, no
    |                                     device or banned, one answer for all [page]
    +-- TotpAlreadyRegisteredError   409  a TOTP device is registered: remove it first
    +-- TotpNotRegisteredError       404  no TOTP device to remove
    +-- SessionNotFoundError         404  not one of the user's own live sessions
    +-- WebAuthnCredentialExistsError  409  that passkey, or one of that name, is registered
    +-- WebAuthnCredentialNotFoundError  404  the user has no passkey with that id
    +-- WebAuthnFailedError          401  a passkey ceremony refused (one answer for all) [page]
    +-- WebAuthnNotAllowedError      403  the authenticator is refused by webauthn.filtering
    +-- PasswordRejectedError        400  the new password breaks the policy: `reasons` [page]
    |   +-- ResetFormRejectedError   400  reset step 2 refused its form, the link still good [page]
    |       +-- ResetCodeRejectedError  400  its second factor was missing or refused [page]
    +-- InvalidTokenError            400  "This link is invalid or has expired." [page]
    +-- PartnerTokenRejectedError    401  a partner's sign-in token refused, one answer for
    |                                     every reason (trusted_issuers) [page]
    +-- BadRequestError              400  the client sent something unusable (message given)
        +-- PayloadTooLargeError     413
        +-- UnsupportedMediaTypeError   415  a body in a content coding the portal does not take
        +-- CsrfError                403  "This form has expired..."
        +-- SecurityAnswersRejectedError  400  the settings' questions or answers: `reasons` [page]
        +-- CaptchaFailedError       400  the anti-robot check is missing or wrong [page]
            +-- CaptchaUnavailableError  503  the CAPTCHA vendor cannot answer now (fail closed)

Not in the tree: portal.cli's CliError, a command-line mistake printed as one line on stderr; it
never becomes an HTTP answer, so it has no status to carry. The users-file package's parse
errors (users/file/document.py) never leave that package.
"""

from __future__ import annotations

from typing import Literal

from portal.i18n import N_

# Why a right password opens nothing until it is changed (an administrator's demand, or age).
ChangeReason = Literal["must_change", "expired"]

# Why a reset (or revoke) link was refused; logged and audited, never shown to the client.
InvalidTokenReason = Literal[
    # decided from the token itself (portal/tokens.py):
    "malformed",
    "header",
    "algorithm",
    "signature",
    "claims",
    "audience",
    "issuer",
    "action",
    "expired",
    "not_yet_valid",
    "too_long",
    # decided by the reset service from storage and the user backend:
    "unknown",
    "used",
    "revoked",
    "user",
    "disabled",
    "password_changed",
]

# Why a partner's sign-in token was refused (portal/partner_tokens.py, portal/signin.py); logged
# and audited, never shown to the client.
PartnerTokenReason = Literal[
    "too_long",
    "malformed",
    "header",  # jku, x5u, jwk, x5c or crit: the token would steer its own verification
    "type",  # a typ header naming another kind of token (at+jwt, logout+jwt, ...)
    "alg_none",
    "unknown_issuer",
    "algorithm",  # an algorithm not pinned for that issuer
    "kid",  # a key id not in the issuer's key set
    "keys_unavailable",  # the issuer's jwks_url could not be fetched or read
    "signature",
    "audience",
    "claims",  # a required claim missing or of the wrong type
    "expired",
    "not_yet_valid",
    "lifespan",  # exp - iat over max_lifespan
    "used",  # its jti was used already
    "user",  # the claim names no user of the backend
    "disabled",
    "password_change",  # the user must change the password before any session
    "group",  # the user is in none of allowed_groups
]


class PortalError(Exception):
    """Base of every error the portal raises on purpose."""

    status = 500
    public_message = N_("Something went wrong on our side. Please try again later.")

    def response_headers(self) -> dict[str, str]:
        """Return headers the error response must carry (Retry-After, ...)."""
        return {}


class ConfigError(PortalError):
    """The configuration has one or more problems, each naming its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StartupCheckError(PortalError):
    """A backend failed the check it runs before the port opens."""


class BackendUnavailableError(PortalError):
    """A backend cannot be reached right now; the request may be retried."""

    status = 503
    public_message = N_(
        "This service is temporarily unavailable. Please try again in a few minutes."
    )


class HashingBusyError(BackendUnavailableError):
    """Too many password hashes are already waiting their turn (portal.password_hashing): the
    same 503 for everyone, known user or not, with when to come back (load shedding, OWASP
    ASVS 4.0 V11.1.4 "anti-automation")."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"password hashing queue full; retry after {retry_after}s")
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str]:
        """Tell the client when to come back."""
        return {"Retry-After": str(self.retry_after)}


class UserBackendError(PortalError):
    """The user backend failed."""


class UnsupportedHashError(UserBackendError):
    """A stored password hash is in a format the portal cannot verify."""


class PasswordWriteError(UserBackendError):
    """A new password could not be written; the old one is still in place."""


class StorageError(PortalError):
    """The storage backend failed."""


class StorageUnavailableError(StorageError, BackendUnavailableError):
    """The storage engine (PostgreSQL) cannot be reached right now: 503, retry later.

    Both a StorageError (what storage callers catch) and a BackendUnavailableError (the 503
    "temporarily unavailable" answer, the same for every request).
    """

    status = 503


class SessionStoreUnavailableError(StorageUnavailableError):
    """The session store (session.redis) cannot be reached now: 503, and no session opens."""


class DecryptionError(StorageError):
    """A value sealed with storage.encryption_key did not open: another key, or altered data.

    Never says which, and never carries the value (portal/storage/encryption.py).
    """


class NotifierError(PortalError):
    """A notifier failed."""


class DeliveryError(NotifierError):
    """Fail to deliver one message; `permanent` says whether a retry could ever succeed."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class PermanentJobError(PortalError):
    """A queued outbox job that can never succeed; it is dropped after logging."""


class RateLimitedError(PortalError):
    """The client made too many requests; it may try again after `retry_after` seconds."""

    status = 429
    public_message = N_("Too many attempts. Please wait a few minutes and try again.")

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limited for {retry_after}s")
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str]:
        """Tell the client when to come back."""
        return {"Retry-After": str(self.retry_after)}


class SignInFailedError(PortalError):
    """Wrong credentials, unknown user, disabled user or a ban: one answer for all."""

    status = 401
    public_message = N_("Incorrect username or password.")


class SignInRequiredError(PortalError):
    """An API call that needs a signed-in session came without one (pages redirect instead)."""

    status = 401
    public_message = N_("You need to sign in first.")


class ElevationFailedError(PortalError):
    """The typed one-time code opened no elevation: wrong, expired, used, revoked or another
    user's; one answer for all (Authelia's elevation refuses them alike)."""

    status = 401
    public_message = N_("The code is incorrect or has expired. Ask for a new one and try again.")


class ElevationRequiredError(PortalError):
    """A sensitive setting needs an elevated session first (Authelia's RequireElevated, 403).

    `second_factor`: the user must first prove their second factor (require_second_factor).
    """

    status = 403
    public_message = N_("Confirm your identity with a one-time code first.")

    def __init__(self, *, second_factor: bool = False) -> None:
        super().__init__("elevation required" + (" (second factor)" if second_factor else ""))
        self.second_factor = second_factor
        if second_factor:
            self.public_message = N_("Sign in with your second factor first.")


class SecondFactorFailedError(PortalError):
    """A second-factor code was refused: wrong, replayed, expired, no device or a ban.

    One answer for every case, so a guesser learns nothing (portal/second_factor.py).
    """

    status = 401
    public_message = N_("Incorrect code.")


class TotpAlreadyRegisteredError(PortalError):
    """A TOTP registration was asked for by a user who has a device: remove it first
    (portal/totp_registration.py says why)."""

    status = 409
    public_message = N_("You already have a one-time password app set up. Remove it first.")


class TotpNotRegisteredError(PortalError):
    """A TOTP device removal was asked for by a user who has none."""

    status = 404
    public_message = N_("You have no one-time password app set up.")


class SessionNotFoundError(PortalError):
    """A user asked to end a session that is not one of their own live sessions (another
    user's id is not theirs: the same answer, so it tells nothing about other users)."""

    status = 404
    public_message = N_("You have no active session with that id.")


class WebAuthnCredentialExistsError(PortalError):
    """The credential is registered already, or the user has one with that description."""

    status = 409
    public_message = N_("This passkey, or one with this name, is registered already.")


class WebAuthnCredentialNotFoundError(PortalError):
    """A rename or removal named a passkey the user does not have."""

    status = 404
    public_message = N_("You have no such passkey.")


class WebAuthnFailedError(PortalError):
    """A WebAuthn ceremony was refused: bad or stale challenge, wrong origin or signature,
    unknown or removed credential, a counter that did not increase (a cloned authenticator),
    a ban. One answer for all; the reason goes to the audit only."""

    status = 401
    public_message = N_("The passkey was not accepted.")


class WebAuthnNotAllowedError(PortalError):
    """The authenticator is refused by webauthn.filtering (AAGUID lists, backup eligibility)."""

    status = 403
    public_message = N_("This kind of passkey or security key is not allowed here.")


class PasswordChangeRequiredError(PortalError):
    """The password is right, but the backend lets nobody in with it until it is changed.

    Only ever raised once the password was proven: the state is told to its owner, no one else.
    """

    status = 401

    def __init__(self, reason: ChangeReason) -> None:
        super().__init__(f"password change required ({reason})")
        self.reason: ChangeReason = reason
        self.public_message = (
            N_("Your password has expired. Choose a new one before you sign in.")
            if reason == "expired"
            else N_(
                "Your administrator asks you to choose a new password. "
                "Choose a new one before you sign in."
            )
        )


class CurrentPasswordRejectedError(PortalError):
    """A signed-in password change came with a wrong current password, or under a regulation
    ban: one answer for both, as a sign-in gives (portal/password_self_change.py)."""

    status = 401
    public_message = N_("Your current password is not correct.")


class PasswordRejectedError(PortalError):
    """The new password does not meet the policy; `reasons` say why, one sentence each."""

    status = 400

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.public_message = " ".join(reasons)


class InvalidTokenError(PortalError):
    """Refuse a reset token; `reason` is for the log, the client sees one generic message."""

    status = 400
    public_message = N_("This link is invalid or has expired.")

    def __init__(self, reason: InvalidTokenReason) -> None:
        # SECURITY: the message names the reason only, never the token (it is a credential).
        super().__init__(f"invalid reset token: {reason}")
        self.reason: InvalidTokenReason = reason


class PartnerTokenRejectedError(PortalError):
    """Refuse a partner's sign-in token; `reason` is for the log and the audit, the client sees
    one message and one status whatever it is (trusted_issuers)."""

    status = 401
    public_message = N_("This sign-in link is invalid or has expired.")

    def __init__(self, reason: PartnerTokenReason) -> None:
        # SECURITY: the message names the reason only, never the token (it is a credential).
        super().__init__(f"partner token refused: {reason}")
        self.reason: PartnerTokenReason = reason


class ResetFormRejectedError(PasswordRejectedError):
    """Reset step 2 refused its form (the password, or the anti-robot check) while the link is
    still good: the page shows the form again for `username`, with `reasons` (the password's,
    one sentence each; empty when the CAPTCHA failed) or `public_message` (the CAPTCHA's).
    """

    def __init__(self, username: str, reasons: list[str], message: str = "") -> None:
        super().__init__(reasons)
        self.username = username
        self.public_message = message or self.public_message


class ResetCodeRejectedError(ResetFormRejectedError):
    """Reset step 2 refused its form because the second factor's code was missing or refused
    while the link is still good (ASVS 5.0 6.4.3): the form shows `public_message` next to
    the code field. One message for wrong, replayed, expired and banned (SecondFactorFailedError's).
    """

    def __init__(self, username: str, message: str) -> None:
        super().__init__(username, [], message)


class BadRequestError(PortalError):
    """The client sent a request the portal cannot use."""

    status = 400
    public_message = N_("The request could not be understood.")

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.public_message)
        if message:
            self.public_message = message


class PayloadTooLargeError(BadRequestError):
    """The request body is larger than the portal accepts."""

    status = 413
    public_message = N_("The request is too large.")


class UnsupportedMediaTypeError(BadRequestError):
    """The request body comes in a content coding (gzip, deflate, ...) the portal does not take."""

    status = 415
    public_message = N_("The request body is in a form this page does not take.")


class CsrfError(BadRequestError):
    """The form's anti-forgery token is missing or wrong."""

    status = 403
    public_message = N_("This form has expired. Please reload the page and try again.")


class SecurityAnswersRejectedError(BadRequestError):
    """The questions or answers chosen in the settings cannot be used; `reasons` say why and
    `answers` name the answers (by position) that are at fault."""

    def __init__(self, reasons: list[str], answers: frozenset[int] = frozenset()) -> None:
        super().__init__(" ".join(reasons))
        self.reasons = reasons
        self.answers = answers


class CaptchaFailedError(BadRequestError):
    """The form's anti-robot check is missing, wrong, expired or used already."""

    public_message = N_("The anti-robot check failed. Please complete it and try again.")


class CaptchaUnavailableError(CaptchaFailedError):
    """The CAPTCHA vendor could not be asked (down, slow or answering garbage): fail closed."""

    status = 503
    public_message = N_(
        "The anti-robot check cannot be completed right now. Please try again in a few minutes."
    )
