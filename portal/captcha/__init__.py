"""The anti-robot check (moving from portal/captcha.py into a package like users/ and notify/)."""

from portal.captcha.altcha import (
    CHALLENGE_URL,
    MAX_SOLUTION,
    VENDORS,
    AltchaCaptcha,
    Captcha,
    CaptchaGuard,
    CaptchaWidget,
    RemoteCaptcha,
    Vendor,
    altcha_keys,
)

__all__ = [
    "CHALLENGE_URL",
    "MAX_SOLUTION",
    "VENDORS",
    "AltchaCaptcha",
    "Captcha",
    "CaptchaGuard",
    "CaptchaWidget",
    "RemoteCaptcha",
    "Vendor",
    "altcha_keys",
]
