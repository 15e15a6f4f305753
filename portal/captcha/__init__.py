"""The anti-robot check: ALTCHA's self-hosted proof of work, or a vendor's siteverify API.

`Captcha` (base.py) is the seam: `AltchaCaptcha` (altcha.py) issues HMAC-signed, expiring
challenges and accepts each solved one once; `RemoteCaptcha` (remote.py) asks Turnstile, hCaptcha
or reCAPTCHA and fails closed. `CaptchaGuard` (guard.py) decides which forms need it (and, for
sign-in, after how many failures) and counts a failed check where the form already counts requests.
"""

from portal.captcha.altcha import AltchaCaptcha, altcha_keys
from portal.captcha.base import CHALLENGE_URL, MAX_SOLUTION, Captcha
from portal.captcha.guard import CaptchaGuard, CaptchaWidget
from portal.captcha.remote import VENDORS, RemoteCaptcha, Vendor

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
