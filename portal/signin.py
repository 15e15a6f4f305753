"""Sign-in decisions: credentials, bans, sessions, and where a signed-in user may be sent."""

from __future__ import annotations

import re
import time

import ada_url

from portal.audit import AuditSink, audit
from portal.config import Config, SessionCookieConfig, is_loopback_host
from portal.errors import (
    ChangeReason,
    PartnerTokenReason,
    PartnerTokenRejectedError,
    PasswordChangeRequiredError,
    RateLimitedError,
    SignInFailedError,
)
from portal.i18n import LanguageRecorder
from portal.partner_tokens import PartnerToken, PartnerTokens
from portal.ratelimit import Bucket, RateLimiter
from portal.regulation import Regulator
from portal.sessions import SessionStore
from portal.users.base import User, UserBackend


def cookie_for_host(config: Config, host: str) -> SessionCookieConfig | None:
    """Return the cookie domain that covers host (the most specific one), if any."""
    host = host.lower().rstrip(".")
    matches = [
        c for c in config.session.cookies if host == c.domain or host.endswith("." + c.domain)
    ]
    return max(matches, key=lambda c: len(c.domain), default=None)


class CookieDomains:
    """Find the cookie domain covering a host, remembering the answer per host (a hot path)."""

    def __init__(self, config: Config, *, size: int = 1024) -> None:
        self._config = config
        self._size = size
        self._memo: dict[str, SessionCookieConfig | None] = {}

    def for_host(self, host: str) -> SessionCookieConfig | None:
        """Return the cookie domain that covers host (the most specific one), if any."""
        try:
            return self._memo[host]
        except KeyError:
            pass
        found = cookie_for_host(self._config, host)
        # Hosts come from request headers: the memo is bounded, and a DNS name is at most 253.
        if len(host) <= 253:
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[host] = found
        return found


# Characters a browser strips, folds or reads as a separator before it parses a URL (WHATWG URL
# "remove all ASCII tab or newline", C0 controls and space trimming, "\\" as "/"): a target that
# holds one can mean one thing to a parser and another to the browser.
_UNREADABLE_TARGET = re.compile(r"[\x00-\x20\x7f\\]")
# What stands between "scheme:" (and its slashes) and the path: user info lives there.
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/*([^/?#]*)")
MAX_TARGET_LENGTH = 4096


def safe_redirect(config: Config, target: str | None) -> str | None:
    """Return the URL a browser would open for target if we may send it there, else None.

    Decides with a WHATWG URL parser (ada-url, the parser Node.js uses), so the host checked is
    the host a browser will go to, and returns that parser's serialization (ASCII, IDNA host,
    default port dropped), which is what goes into a Location header or a JSON `redirect`.
    Allowed: https (plain http only for a loopback host) to a host under a configured cookie
    domain, any valid port. Refused, whatever the host: user info, backslashes, control
    characters and spaces anywhere, more than 4096 characters, anything the parser refuses
    (an impossible port, a bad host). Used by every place that redirects to a visitor-chosen
    target (sign-in form and JSON, logout, the signed-in sign-in page). OWASP ASVS 5.1.5.
    """
    # SECURITY: refuse what browsers and other parsers could read differently, before parsing.
    if not target or len(target) > MAX_TARGET_LENGTH or _UNREADABLE_TARGET.search(target):
        return None
    try:
        url = ada_url.URL(target)
    except ValueError:
        return None
    # SECURITY: user info is how "https://trusted@evil" tricks are built; no app needs it here
    # (an empty one too: "https://@host" is odd, and odd targets are refused).
    authority = _AUTHORITY.match(target)
    if url.username or url.password or (authority is not None and "@" in authority.group(1)):
        return None
    # Port 0 is no port a browser opens (WHATWG URL parses it; fetch refuses it).
    if url.port == "0":
        return None
    scheme, host = url.protocol.rstrip(":"), url.hostname
    # SECURITY: only https under a configured cookie domain (plain http for loopback, as the
    # portal's own address may be); never another site, never a scheme-relative //evil.com.
    if scheme == "https" or (scheme == "http" and is_loopback_host(host.strip("[]"))):
        if host and cookie_for_host(config, host) is not None:
            return str(url.href)
    return None


# A..Z to a..z and nothing else: str.lower and str.casefold map other letters too (ß -> ss).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(address: str) -> str:
    """Return an email address with its ASCII letters in lower case, every other one as is.

    A partner's `email` claim names a mailbox: addresses are compared case-insensitively in
    ASCII only (as RFC 5321 section 2.4 domains, and mailboxes in practice). Unicode case
    folding would take another mailbox for the user's: `bob.strasse@` for `bob.straße@`, `ſ`
    (long s) for `s` (Unicode Technical Report 36, Unicode Security Considerations).
    """
    return address.translate(_ASCII_LOWER)


class SignInService:
    """Check credentials under regulation and open sessions."""

    def __init__(
        self,
        *,
        config: Config,
        users: UserBackend,
        sessions: SessionStore,
        regulator: Regulator,
        limiter: RateLimiter,
        partner_tokens: PartnerTokens,
        languages: LanguageRecorder,
        partner_buckets: tuple[Bucket, ...] = (),
        audit: AuditSink = audit,
    ) -> None:
        self._config = config
        self._languages = languages
        self._users = users
        self._sessions = sessions
        self._regulator = regulator
        self._limiter = limiter
        self._partner_tokens = partner_tokens
        # server.endpoints.rate_limits.sso_jwt: refused partner tokens per client address.
        self._partner_buckets = partner_buckets
        self._audit = audit

    async def _subject(self, identifier: str) -> tuple[User | None, str]:
        """Look the identifier up; regulation counts an account under its username, however it
        was typed (username or email), and anything else under what was typed."""
        user = await self._users.get_user(identifier)
        return user, user.username if user is not None else identifier

    async def recent_failures(self, username: str | None, ip: str) -> int:
        """Return how many sign-ins failed lately for the account (if named) or the address."""
        subject = None
        if username is not None and username.strip():
            _, subject = await self._subject(username.strip())
        return await self._regulator.recent_failures(subject, ip)

    async def record_captcha_failure(self, ip: str) -> None:
        """Count a failed sign-in CAPTCHA against the address (not the account typed)."""
        await self._regulator.record_failure(None, ip)
        self._audit("signin_captcha_failed", ip=ip)

    async def _check(self, username: str, password: str, ip: str, started: float) -> User:
        """Return the user whose password this is, under regulation; SignInFailedError for
        anything else (unknown, disabled, banned, wrong), PasswordChangeRequiredError when the
        password is right but must be changed first. `started` (time.perf_counter()) times the
        attempt: the audit events carry its `duration` in seconds (authelia_authn_duration)."""
        username = username.strip()
        if not username or not password or len(username) > 256 or len(password) > 1024:
            raise SignInFailedError()
        user, subject = await self._subject(username)
        # SECURITY: one count per account, so typing it as username and as email does not
        # double the tries before a ban.
        banned = await self._regulator.banned_until(subject, ip)
        # SECURITY: the password is checked whoever asks (the backend verifies a dummy hash for
        # unknown users), so the time taken does not tell who exists or who is banned.
        if user is not None and user.disabled:
            user = None
        change: ChangeReason | None = None
        try:
            ok = await self._users.check_password(user.username if user else username, password)
        except PasswordChangeRequiredError as exc:
            ok, change = True, exc.reason
        if banned is not None:
            self._audit(
                "signin_banned",
                username=username,
                ip=ip,
                until=int(banned),
                duration=_since(started),
            )
            raise SignInFailedError()
        if user is None or not ok:
            await self._regulator.record_failure(subject, ip)
            self._audit("signin_failed", username=username, ip=ip, duration=_since(started))
            raise SignInFailedError()
        # SECURITY: a forced change or an expired password opens no session; only now, with the
        # password proven, may the answer differ from a wrong password's.
        change = change or user.change_reason
        if change is not None:
            self._audit(
                "signin_password_change_required", username=user.username, ip=ip, reason=change
            )
            raise PasswordChangeRequiredError(change)
        return user

    async def sign_in(
        self,
        username: str,
        password: str,
        ip: str,
        *,
        remember_me: bool,
        host: str,
        user_agent: str = "",
    ) -> tuple[User, str, SessionCookieConfig]:
        """Open a session for good credentials; raise SignInFailedError for anything else.

        ip and user_agent are kept with the session for the user's list of sessions.

        Raise PasswordChangeRequiredError instead when the password is right but must be changed
        first (a directory's forced change or expiry): no session, and only its owner is told.
        """
        cookie = cookie_for_host(self._config, host) or self._config.session.cookies[0]
        started = time.perf_counter()
        user = await self._check(username, password, ip, started)
        value = await self._sessions.create(
            user, cookie, remember_me=remember_me, ip=ip, user_agent=user_agent
        )
        self._audit(
            "signin_succeeded",
            username=user.username,
            ip=ip,
            remember_me=remember_me,
            duration=_since(started),
        )
        await self._languages.record(user.username)
        return user, value, cookie

    async def sign_in_with_passkey(
        self, username: str, ip: str, *, remember_me: bool, host: str, user_agent: str = ""
    ) -> tuple[User, str, SessionCookieConfig]:
        """Open a session for the user whose passkey was just verified (webauthn's
        enable_passkey_login): one factor, amr "hwk", as Authelia 4.39 counts a passkey sign-in.

        SignInFailedError when the user is gone or disabled; PasswordChangeRequiredError when
        the password must be changed first (no session either way).
        """
        cookie = cookie_for_host(self._config, host) or self._config.session.cookies[0]
        user = await self._users.get_user(username)
        if user is None or user.disabled or user.username != username:
            self._audit("signin_failed", username=username, ip=ip, method="passkey")
            raise SignInFailedError()
        if user.change_reason is not None:
            raise PasswordChangeRequiredError(user.change_reason)
        value = await self._sessions.create(
            user, cookie, remember_me=remember_me, method="hwk", ip=ip, user_agent=user_agent
        )
        self._audit(
            "signin_succeeded",
            username=user.username,
            ip=ip,
            remember_me=remember_me,
            method="passkey",
        )
        await self._languages.record(user.username)
        return user, value, cookie

    async def reauthenticate(self, username: str, password: str, ip: str) -> None:
        """Check the password of a signed-in user (POST /api/firstfactor/reauthenticate,
        Authelia's FirstFactorReauthenticatePOST): the same checks, regulation and audit as a
        sign-in, and no session; the caller decides what the proven password adds to the session.

        Raises SignInFailedError (wrong, banned, gone, disabled) or PasswordChangeRequiredError.
        """
        started = time.perf_counter()
        user = await self._check(username, password, ip, started)
        if user.username != username:  # the name of another account's email: not this user
            raise SignInFailedError()
        self._audit("reauthenticated", username=user.username, ip=ip, duration=_since(started))

    # -- sign-in with a partner's signed token (trusted_issuers) -----------------------------------

    async def check_partner_token(self, token: str, ip: str) -> tuple[PartnerToken, User]:
        """Return the verified token and its user without using the token up (the confirmation
        page shows whom it signs in). Raises PartnerTokenRejectedError for every refusal (a
        token used already included) and RateLimitedError when `ip` is over sso_jwt."""
        return await self._partner_token_user(token, ip, use=False)

    async def sign_in_with_partner_token(
        self, token: str, ip: str, *, host: str, user_agent: str = ""
    ) -> tuple[User, str, SessionCookieConfig]:
        """Use a partner's token up (its jti, once across replicas) and open a one-factor
        session for its user: amr "fed" (RFC 8176 has no value for a federated sign-in), so a
        two_factor rule still asks for the user's own TOTP or passkey. Audit sso_jwt_accepted
        and signin_succeeded (method "partner", the partner's name), or sso_jwt_rejected with
        the reason. Raises PartnerTokenRejectedError or RateLimitedError; opens nothing then.
        """
        verified, user = await self._partner_token_user(token, ip, use=True)
        cookie = cookie_for_host(self._config, host) or self._config.session.cookies[0]
        value = await self._sessions.create(
            user, cookie, remember_me=False, method="fed", ip=ip, user_agent=user_agent
        )
        partner = verified.partner.name
        self._audit("sso_jwt_accepted", username=user.username, ip=ip, partner=partner)
        self._audit(
            "signin_succeeded",
            username=user.username,
            ip=ip,
            remember_me=False,
            method="partner",
            partner=partner,
        )
        await self._languages.record(user.username)
        return user, value, cookie

    async def _partner_token_user(
        self, token: str, ip: str, *, use: bool
    ) -> tuple[PartnerToken, User]:
        key = f"ip:sso-jwt:{ip}"
        wait = await self._limiter.full(key, self._partner_buckets)
        if wait is not None:
            self._audit("sso_jwt_throttled", ip=ip)
            raise RateLimitedError(int(wait))
        verified: PartnerToken | None = None
        try:
            verified = await self._partner_tokens.verify(token)
            user = await self._partner_user(verified)
            if use:
                await self._partner_tokens.claim(verified)
            elif await self._partner_tokens.used(verified):
                raise PartnerTokenRejectedError("used")
        except PartnerTokenRejectedError as exc:
            # SECURITY: every refusal counts against the address; the token is never logged.
            await self._limiter.hit(key, self._partner_buckets)
            partner = verified.partner if verified else self._partner_tokens.partner_of(token)
            self._audit(
                "sso_jwt_rejected",
                reason=exc.reason,
                partner=partner.name if partner else None,
                # Only a claim whose signature was verified: anyone can write an unsigned one.
                username=verified.subject if verified else None,
                ip=ip,
            )
            raise
        return verified, user

    async def _partner_user(self, token: PartnerToken) -> User:
        """Return the user the token names, or refuse: unknown (the username claim must be the
        exact username, or one of the user's addresses for `email`, equal but for the case of
        ASCII letters), disabled, a password to change first, or in none of the partner's
        allowed_groups."""
        user = await self._users.get_user(token.subject)
        reason: PartnerTokenReason | None = None
        if user is None:
            reason = "user"
        elif token.partner.username_claim == "sub" and user.username != token.subject:
            reason = "user"
        elif token.partner.username_claim == "email" and _ascii_lower(token.subject) not in {
            _ascii_lower(e) for e in user.emails
        }:
            reason = "user"
        elif user.disabled:
            reason = "disabled"
        elif user.change_reason is not None:
            reason = "password_change"
        elif token.partner.allowed_groups and not set(token.partner.allowed_groups) & set(
            user.groups
        ):
            reason = "group"
        if reason is not None or user is None:
            raise PartnerTokenRejectedError(reason or "user")
        return user


def _since(started: float) -> float:
    """Return the seconds since `started` (time.perf_counter()), to the tenth of a millisecond."""
    return round(time.perf_counter() - started, 4)
