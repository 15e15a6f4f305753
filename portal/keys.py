"""Every typed application key, keyed by role rather than by implementation."""

from __future__ import annotations

from aiohttp import web

from portal.authz import Authorizer
from portal.captcha import CaptchaGuard
from portal.config import Config
from portal.elevation import ElevationService
from portal.forwarded import ClientAddresses
from portal.identity_token import IdentityTokens
from portal.metrics import Metrics
from portal.notify.base import Notifier
from portal.notify.outbox import OutboxWorker
from portal.password_self_change import PasswordSelfChange
from portal.reset import PasswordResetService
from portal.second_factor import TotpService
from portal.security_questions import SecurityQuestionsService
from portal.sessions import SessionStore
from portal.signin import SignInService
from portal.storage.base import SessionProvider, Storage
from portal.totp_registration import TotpRegistration
from portal.users.base import UserBackend
from portal.webauthn import WebAuthnService

CONFIG = web.AppKey("config", Config)
USERS = web.AppKey("users", UserBackend)
STORAGE = web.AppKey("storage", Storage)
NOTIFIER = web.AppKey("notifier", Notifier)
OUTBOX = web.AppKey("outbox", OutboxWorker)
RESET = web.AppKey("reset", PasswordResetService)
PASSWORD_SELF_CHANGE = web.AppKey("password_self_change", PasswordSelfChange)
SESSIONS = web.AppKey("sessions", SessionStore)
# session.redis's store, or None when the session records live in STORAGE.
SESSION_RECORDS: web.AppKey[SessionProvider | None] = web.AppKey("session_records")
SIGNIN = web.AppKey("signin", SignInService)
AUTHZ = web.AppKey("authz", Authorizer)
ADDRESSES = web.AppKey("addresses", ClientAddresses)
QUESTIONS = web.AppKey("questions", SecurityQuestionsService)
CAPTCHA = web.AppKey("captcha", CaptchaGuard)
ELEVATION = web.AppKey("elevation", ElevationService)
TOTP = web.AppKey("totp", TotpService)
TOTP_REGISTRATION = web.AppKey("totp_registration", TotpRegistration)
WEBAUTHN = web.AppKey("webauthn", WebAuthnService)
IDENTITY_TOKENS = web.AppKey("identity_tokens", IdentityTokens)
# The application's metrics (telemetry.metrics), or None when they are off.
METRICS: web.AppKey[Metrics | None] = web.AppKey("metrics")
