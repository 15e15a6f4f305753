"""The portal's one exception tree; middlewares.py maps it to HTTP.

    PortalError
    +-- ConfigError            the configuration is invalid (every problem, listed)
    +-- StartupCheckError      a backend failed its start-up check
    +-- BackendUnavailableError a backend cannot be reached now (503)
    +-- UserBackendError
    |   +-- UnsupportedHashError      a stored hash the portal cannot read
    |   +-- PasswordWriteError        a password could not be written
    +-- StorageError
    +-- RateLimitedError       too many requests from one client (429 + Retry-After)
    +-- PasswordChangeRequiredError  the password is right but must be changed first (401)
    +-- PasswordRejectedError  the new password breaks the policy (400, with reasons)
    |   +-- ResetFormRejectedError  reset step 2 refused its form, the link still good (400)
    +-- BadRequestError        the client sent something unusable (400)
        +-- PayloadTooLargeError      (413)
        +-- UnsupportedMediaTypeError a body in a content coding the portal does not take (415)
        +-- CsrfError                 (403)
        +-- CaptchaFailedError        the anti-robot check is missing or wrong (400)
            +-- CaptchaUnavailableError   the CAPTCHA vendor cannot answer now (503)
"""

from __future__ import annotations

from typing import Literal

# Why a right password opens nothing until it is changed (an administrator's demand, or age).
ChangeReason = Literal["must_change", "expired"]


class PortalError(Exception):
    """Base of every error the portal raises on purpose."""

    status = 500
    public_message = "Something went wrong on our side. Please try again later."

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
    public_message = "This service is temporarily unavailable. Please try again in a few minutes."


class UserBackendError(PortalError):
    """The user backend failed."""


class UnsupportedHashError(UserBackendError):
    """A stored password hash is in a format the portal cannot verify."""


class PasswordWriteError(UserBackendError):
    """A new password could not be written; the old one is still in place."""


class RateLimitedError(PortalError):
    """The client made too many requests; it may try again after `retry_after` seconds."""

    status = 429
    public_message = "Too many attempts. Please wait a few minutes and try again."

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limited for {retry_after}s")
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str]:
        """Tell the client when to come back."""
        return {"Retry-After": str(self.retry_after)}


class PasswordChangeRequiredError(PortalError):
    """The password is right, but the backend lets nobody in with it until it is changed.

    Only ever raised once the password was proven: the state is told to its owner, no one else.
    """

    status = 401

    def __init__(self, reason: ChangeReason) -> None:
        super().__init__(f"password change required ({reason})")
        self.reason: ChangeReason = reason
        first = (
            "Your password has expired."
            if reason == "expired"
            else "Your administrator asks you to choose a new password."
        )
        self.public_message = f"{first} Choose a new one before you sign in."


class PasswordRejectedError(PortalError):
    """The new password does not meet the policy; `reasons` say why, one sentence each."""

    status = 400

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.public_message = " ".join(reasons)


class ResetFormRejectedError(PasswordRejectedError):
    """Reset step 2 refused its form (the password, or the anti-robot check) while the link is
    still good: the page shows the form again for `username`, with `reasons` (the password's,
    one sentence each; empty when the CAPTCHA failed) or `public_message` (the CAPTCHA's).
    """

    def __init__(self, username: str, reasons: list[str], message: str = "") -> None:
        super().__init__(reasons)
        self.username = username
        self.public_message = message or self.public_message


class StorageError(PortalError):
    """The storage backend failed."""


class BadRequestError(PortalError):
    """The client sent a request the portal cannot use."""

    status = 400
    public_message = "The request could not be understood."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.public_message)
        if message:
            self.public_message = message


class PayloadTooLargeError(BadRequestError):
    """The request body is larger than the portal accepts."""

    status = 413
    public_message = "The request is too large."


class UnsupportedMediaTypeError(BadRequestError):
    """The request body comes in a content coding (gzip, deflate, ...) the portal does not take."""

    status = 415
    public_message = "The request body is in a form this page does not take."


class CsrfError(BadRequestError):
    """The form's anti-forgery token is missing or wrong."""

    status = 403
    public_message = "This form has expired. Please reload the page and try again."


class CaptchaFailedError(BadRequestError):
    """The form's anti-robot check is missing, wrong, expired or used already."""

    public_message = "The anti-robot check failed. Please complete it and try again."


class CaptchaUnavailableError(CaptchaFailedError):
    """The CAPTCHA vendor could not be asked (down, slow or answering garbage): fail closed."""

    status = 503
    public_message = (
        "The anti-robot check cannot be completed right now. Please try again in a few minutes."
    )
