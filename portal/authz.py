"""The auth_request verdict: may this visitor reach this URL, and as whom (Authelia's authz).

Authorizer.verdict reads the cookie of the domain covering the URL's host, the session and its
user, asks portal.access_control for the level the URL needs, and answers ALLOW (with Remote-*
headers, and the signed identity token when identity_token is enabled: portal.identity_token),
SIGN_IN (with the sign-in URL), FORBIDDEN or MALFORMED; handlers/authz.py maps that to nginx's
response (Authelia: internal/handlers/handler_authz*.go).

A `two_factor` URL is let through only for a session at two factors (Session.level, read with the
session: no storage call of its own); a one-factor session is sent to the portal like an anonymous
visitor, where it is asked for its second factor (Authelia's handler_authz_util.go
`isAuthzResult`: Unauthorized below the required level).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import quote

from portal.access_control import AccessControl, Level, Target
from portal.config import SessionCookieConfig
from portal.identity_token import IdentityTokens
from portal.sessions import TWO_FACTORS, Miss, Session, SessionStore
from portal.signin import CookieDomains
from portal.users.base import User


class Outcome(enum.Enum):
    """What nginx's auth_request is told (Authelia's authz endpoint answers the same way)."""

    ALLOW = 200  # with the signed-in user's Remote-* headers (none for bypass)
    SIGN_IN = 401  # with where to sign in, coming back to the original URL
    FORBIDDEN = 403
    MALFORMED = 400  # answered 401: a request that cannot be read is never let through


class Verdict(NamedTuple):
    """The auth_request decision: its outcome, Remote-* headers (ALLOW), sign-in URL (SIGN_IN).

    A named tuple: immutable, and cheaper to make than a frozen dataclass (one per request)."""

    outcome: Outcome
    headers: Mapping[str, str] = MappingProxyType({})
    location: str = ""


_PASS = Verdict(Outcome.ALLOW)
_FORBIDDEN = Verdict(Outcome.FORBIDDEN)
_MALFORMED = Verdict(Outcome.MALFORMED)


class Authorizer:
    """Decide every auth_request: may this visitor reach this URL, and as whom."""

    def __init__(
        self,
        access: AccessControl,
        cookies: CookieDomains,
        sessions: SessionStore,
        portal_url: str,
        identity: IdentityTokens | None = None,
    ) -> None:
        """Take the compiled rules, the cookie domains, the sessions, the default portal URL
        and, when identity_token is enabled, what signs the identity token."""
        self._access = access
        self._cookies = cookies
        self._sessions = sessions
        self._portal_url = portal_url
        self._identity = identity if identity is not None and identity.enabled else None

    async def verdict(
        self,
        url: str,
        method: str,
        ip: IPv4Address | IPv6Address | None,
        cookie_values: Callable[[str], Sequence[str]],
    ) -> Verdict:
        """Judge nginx's X-Original-URL and X-Original-Method for the client address ip (None:
        unreadable), reading the session from cookie_values(name), the values sent under name.

        The session cookie is the one of the cookie domain covering the URL's host; the sign-in
        URL is that domain's authelia_url (else the portal's) with `rd` the original URL.
        """
        known = self.verdict_now(url, method, ip, cookie_values)
        if known is not None:
            return known
        assert ip is not None  # noqa: S101 - else verdict_now answered MALFORMED
        target = self._access.target(url, method.upper(), ip)  # verdict_now read it: no error
        cookie = self._cookies.for_host(target.host)
        session = None
        if cookie is not None:
            session = await self._sessions.first_live_read(cookie_values(cookie.name or ""), cookie)
        verdict = self._judge(url, target, cookie, session)
        if self._signed(verdict) and session is not None and cookie is not None:
            assert self._identity is not None  # noqa: S101 - _signed is False without it
            # The issuer is the portal the visitor signed in to: this cookie domain's.
            token = await self._identity.token(session, target, cookie.authelia_url)
            verdict = verdict._replace(headers={**verdict.headers, self._identity.header: token})
        return verdict

    def verdict_now(
        self,
        url: str,
        method: str,
        ip: IPv4Address | IPv6Address | None,
        cookie_values: Callable[[str], Sequence[str]],
    ) -> Verdict | None:
        """Answer as verdict does when no coroutine is needed: the session is in memory
        (SessionStore.first_live_cached) and no identity token is to be signed; else None (then
        await verdict). nginx's auth_request thus usually costs no coroutine at all."""
        try:
            if ip is None:
                raise ValueError("unreadable client address")
            target = self._access.target(url, method.upper(), ip)
        except ValueError:
            return _MALFORMED  # SECURITY: a request we cannot read is never let through.
        cookie = self._cookies.for_host(target.host)
        session = None
        if cookie is not None:
            found = self._sessions.first_live_cached(cookie_values(cookie.name or ""), cookie)
            if isinstance(found, Miss):
                return None
            session = found
        verdict = self._judge(url, target, cookie, session)
        return None if self._signed(verdict) else verdict

    def _signed(self, verdict: Verdict) -> bool:
        """Tell whether the verdict's answer carries an identity token: a signed-in visitor let
        through (not a bypass) while identity_token is enabled."""
        return (
            self._identity is not None and verdict.outcome is Outcome.ALLOW and verdict is not _PASS
        )

    def _judge(
        self, url: str, target: Target, cookie: SessionCookieConfig | None, session: Session | None
    ) -> Verdict:
        """The verdict for target with that session (None: anonymous), without identity token."""
        user = session.user if session is not None else None
        required = self._access.decide(target, user).required
        if required == "bypass":
            return _PASS
        if required == "deny":
            return _FORBIDDEN
        # SECURITY: a two_factor URL needs the second factor proven on this very session.
        if session is None or (required == "two_factor" and session.level < TWO_FACTORS):
            portal = cookie.authelia_url if cookie is not None else self._portal_url
            return Verdict(Outcome.SIGN_IN, location=f"{portal}/?rd={quote(url, safe='')}")
        return Verdict(Outcome.ALLOW, headers=session.remote_headers)

    @property
    def second_factor_enabled(self) -> bool:
        """Tell whether any rule (or the default policy) asks for two factors."""
        return self._access.second_factor_enabled

    def required_level(
        self, url: str, user: User, ip: IPv4Address | IPv6Address | str
    ) -> Level | None:
        """Return the level access_control asks of user to GET url from ip (where a sign-in
        may send them next); None for a URL the rules cannot read (never let through).

        Authelia asks the same before it sends a browser on after a factor (response.go
        Handle1FAResponse, `GetRequiredLevel`).
        """
        try:
            return self._access.decide(self._access.target(url, "GET", ip), user).required
        except ValueError:
            return None
