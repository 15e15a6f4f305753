"""Build every service once, from the configuration and the dependencies; no logic."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from portal.access_control import AccessControl
from portal.authz import Authorizer
from portal.captcha import CaptchaGuard
from portal.config import Config
from portal.deps import Dependencies
from portal.elevation import ElevationService
from portal.forwarded import ClientAddresses
from portal.i18n import Catalogs, LanguageRecorder, load_catalogs
from portal.identity_token import IdentityTokens
from portal.mail import MailRenderer, template_dirs
from portal.notify.outbox import OutboxWorker
from portal.partner_tokens import PartnerTokens
from portal.password_change import PasswordChanger
from portal.password_self_change import PasswordSelfChange
from portal.ratelimit import RateLimiter, buckets_from_config
from portal.regulation import Regulator
from portal.reset import PasswordResetService
from portal.second_factor import TotpService
from portal.security_questions import SecurityQuestionsService
from portal.sessions import SessionStore
from portal.signin import CookieDomains, SignInService
from portal.tokens import ResetTokens
from portal.totp_registration import TotpRegistration
from portal.webauthn import WebAuthnService


@dataclass(frozen=True)
class Services:
    """Every service an application runs, each built once and shared by every handler."""

    outbox: OutboxWorker
    sessions: SessionStore
    authz: Authorizer
    addresses: ClientAddresses
    passwords: PasswordChanger
    password_self_change: PasswordSelfChange
    signin: SignInService
    reset: PasswordResetService
    questions: SecurityQuestionsService
    captcha: CaptchaGuard
    elevation: ElevationService
    totp: TotpService
    totp_registration: TotpRegistration
    webauthn: WebAuthnService
    identity_tokens: IdentityTokens
    # Every language's compiled catalog (portal/locale), for pages and mails.
    catalogs: Catalogs


def build_services(config: Config, deps: Dependencies) -> Services:
    """Build every service on deps: one rate limiter, one regulator, one token issuer for all.

    Raises ValueError when captcha.enabled_on names a form but deps carries no CAPTCHA
    (captcha_from_config builds it): the forms would otherwise go unchecked.
    """
    if config.captcha.enabled_on and deps.captcha is None:
        # SECURITY: fail closed; before build_services the app built the CAPTCHA from config.
        raise ValueError(
            "captcha.enabled_on names forms to check but the Dependencies carry no CAPTCHA "
            "(build it with portal.deps.captcha_from_config)"
        )
    storage, clock, users = deps.storage, deps.clock, deps.users
    outbox = OutboxWorker(
        storage,
        clock,
        poll_interval=config.notifier.outbox.poll_interval.total_seconds(),
        lease=config.notifier.outbox.lease.total_seconds(),
    )
    sessions = SessionStore(
        deps.sessions or storage,
        clock,
        users=users,
        refresh_interval=config.authentication_backend.refresh_seconds,
        audit=deps.audit,
        # The key of the sessions' public ids: session.secret, else storage.encryption_key.
        public_id_secret=(
            config.session.secret or config.storage.encryption_key
        ).get_secret_value(),
    )
    limiter = RateLimiter(storage, clock)
    regulator = Regulator(storage, clock, config.regulation)
    identity_tokens = IdentityTokens(config.identity_token, storage, clock)
    authz = Authorizer(
        AccessControl(config.access_control),
        CookieDomains(config),
        sessions,
        config.portal_url,
        identity_tokens,
    )
    addresses = ClientAddresses(config.server.trusted_proxies)
    catalogs = load_catalogs()
    renderer = MailRenderer(
        template_dirs(config.notifier.template_path),
        catalogs=catalogs,
        languages=storage,
        default_language=config.default_language,
        timezone=config.notifier.timezone,
    )
    passwords = PasswordChanger(
        config=config,
        users=users,
        sessions=sessions,
        outbox=outbox,
        notifier=deps.notifier,
        renderer=renderer,
    )
    languages = LanguageRecorder(storage, clock)
    password_self_change = PasswordSelfChange(
        users=users,
        passwords=passwords,
        regulator=regulator,
        verifications=storage,
        clock=clock,
        languages=languages,
        audit=deps.audit,
    )
    signin = SignInService(
        config=config,
        users=users,
        sessions=sessions,
        regulator=regulator,
        limiter=limiter,
        partner_tokens=PartnerTokens(config, clock=clock, store=storage),
        languages=languages,
        partner_buckets=buckets_from_config(config.server.endpoints.rate_limits.sso_jwt),
        audit=deps.audit,
    )
    totp = TotpService(
        config=config,
        store=storage,
        clock=clock,
        regulator=regulator,
        limiter=limiter,
        users=users,
        outbox=outbox,
        notifier=deps.notifier,
        renderer=renderer,
        audit=deps.audit,
    )
    webauthn = WebAuthnService(
        config=config,
        store=storage,
        clock=clock,
        regulator=regulator,
        limiter=limiter,
        outbox=outbox,
        # The users' opaque WebAuthn handles, derived from a key only this portal knows.
        user_handle_key=hashlib.sha256(
            b"portal webauthn user handle\0"
            + config.storage.encryption_key.get_secret_value().encode()
        ).digest(),
        encryption_key=config.storage.encryption_key.get_secret_value(),
        audit=deps.audit,
    )
    reset = PasswordResetService(
        config=config,
        users=users,
        storage=storage,
        notifier=deps.notifier,
        outbox=outbox,
        passwords=passwords,
        renderer=renderer,
        clock=clock,
        limiter=limiter,
        regulator=regulator,
        second_factor=totp,
        webauthn=webauthn,
        languages=languages,
        tokens=ResetTokens(
            config.identity_validation.reset_password, issuer=config.portal_url, clock=clock
        ),
        audit=deps.audit,
    )
    questions = SecurityQuestionsService(
        config=config,
        users=users,
        storage=storage,
        reset=reset,
        regulator=regulator,
        hasher=deps.answer_hasher,
        hashing=deps.hashing,
        clock=clock,
        audit=deps.audit,
    )
    totp_registration = TotpRegistration(
        totp=totp,
        sessions=sessions,
        clock=clock,
        encryption_key=config.storage.encryption_key.get_secret_value(),
    )
    elevation = ElevationService(
        config=config,
        users=users,
        storage=storage,
        sessions=sessions,
        outbox=outbox,
        notifier=deps.notifier,
        renderer=renderer,
        clock=clock,
        limiter=limiter,
        has_second_factor=lambda username: _any_second_factor(totp, webauthn, username),
        audit=deps.audit,
    )
    captcha = CaptchaGuard(
        config.captcha,
        deps.captcha,
        limiter=limiter,
        challenge_buckets=buckets_from_config(
            config.server.endpoints.rate_limits.captcha_challenge
        ),
        on_failure={
            "reset_password_start": reset.limit_start,
            "reset_password_finish": reset.limit_finish,
            "login": signin.record_captcha_failure,
        },
        login_failures=signin.recent_failures,
    )
    return Services(
        outbox=outbox,
        sessions=sessions,
        authz=authz,
        addresses=addresses,
        passwords=passwords,
        password_self_change=password_self_change,
        signin=signin,
        reset=reset,
        questions=questions,
        captcha=captcha,
        elevation=elevation,
        totp=totp,
        totp_registration=totp_registration,
        webauthn=webauthn,
        identity_tokens=identity_tokens,
        catalogs=catalogs,
    )


async def _any_second_factor(totp: TotpService, webauthn: WebAuthnService, username: str) -> bool:
    """Tell whether the user has a second factor to use now: TOTP or a passkey."""
    return await totp.registered(username) or await webauthn.registered(username)
