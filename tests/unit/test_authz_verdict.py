"""The auth_request verdict (Authorizer.verdict) on real sessions in SQLite: what nginx is told."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from portal.access_control import AccessControl
from portal.authz import Authorizer, Outcome
from portal.sessions import SessionStore
from portal.signin import CookieDomains
from portal.storage.sqlite import SqliteStorage
from portal.users.base import User
from tests.conftest import ConfigFactory, FakeClock

JOHN = User("john", "John Doe", ("john.doe@authelia.com",), ("admins", "dev"))
IP = ip_address("192.0.2.7")
RULES = {
    "default_policy": "deny",
    "rules": [
        {"domain": "public.example.com", "policy": "bypass"},
        {"domain": "app.example.com", "policy": "one_factor"},
        {"domain": "secure.example.com", "policy": "two_factor"},
    ],
}


@pytest.fixture
def sessions(storage: SqliteStorage, clock: FakeClock) -> SessionStore:
    return SessionStore(storage, clock)


@pytest.fixture
def authorizer(make_config: ConfigFactory, sessions: SessionStore) -> Authorizer:
    config = make_config(access_control=RULES)
    return Authorizer(
        AccessControl(config.access_control), CookieDomains(config), sessions, config.portal_url
    )


def no_cookies(name: str) -> list[str]:
    return []


async def test_a_signed_in_user_passes_with_their_remote_headers(
    authorizer: Authorizer, sessions: SessionStore, make_config: ConfigFactory
) -> None:
    cookie = make_config().session.cookies[0]
    value = await sessions.create(JOHN, cookie, remember_me=False)
    sent = {cookie.name: ["stale-value-from-a-parent-domain", value]}

    verdict = await authorizer.verdict(
        "https://app.example.com/x", "get", IP, lambda name: sent.get(name, [])
    )

    assert verdict.outcome is Outcome.ALLOW
    assert dict(verdict.headers) == {
        "Remote-User": "john",
        "Remote-Groups": "admins,dev",
        "Remote-Name": "John Doe",
        "Remote-Email": "john.doe@authelia.com",
    }
    # Built once per session read and shared by every answer for it: nobody may change it.
    with pytest.raises(TypeError):
        verdict.headers["Remote-User"] = "mallory"  # type: ignore[index]


async def test_an_anonymous_visitor_is_sent_to_the_cookie_domains_portal_and_back(
    authorizer: Authorizer,
) -> None:
    verdict = await authorizer.verdict("https://app.example.com/a?b=c", "GET", IP, no_cookies)

    assert verdict.outcome is Outcome.SIGN_IN
    assert (
        verdict.location == "https://auth.example.com/?rd=https%3A%2F%2Fapp.example.com%2Fa%3Fb%3Dc"
    )


async def test_bypass_passes_without_headers_and_deny_forbids(authorizer: Authorizer) -> None:
    public = await authorizer.verdict("https://public.example.com/", "GET", IP, no_cookies)
    other = await authorizer.verdict("https://other.example.com/", "GET", IP, no_cookies)

    assert (public.outcome, dict(public.headers)) == (Outcome.ALLOW, {})
    assert other.outcome is Outcome.FORBIDDEN


@pytest.mark.parametrize(
    ("url", "method", "ip"),
    [
        ("", "GET", IP),  # no X-Original-URL
        ("https://app.example.com/", "GET", None),  # unreadable client address
        ("https://app.example.com/", "G E T", IP),
        ("ftp://app.example.com/", "GET", IP),
    ],
)
async def test_a_request_that_cannot_be_read_is_never_let_through(
    authorizer: Authorizer, url: str, method: str, ip: IPv4Address | IPv6Address | None
) -> None:
    verdict = await authorizer.verdict(url, method, ip, no_cookies)

    assert verdict.outcome is Outcome.MALFORMED


# --- two_factor: the session's level decides ---------------------------------------------------

SECURE = "https://secure.example.com/board?x=1"
BACK_TO_SECURE = "https://auth.example.com/?rd=https%3A%2F%2Fsecure.example.com%2Fboard%3Fx%3D1"


async def test_a_two_factor_site_sends_an_anonymous_visitor_to_sign_in(
    authorizer: Authorizer,
) -> None:
    verdict = await authorizer.verdict(SECURE, "GET", IP, no_cookies)

    assert (verdict.outcome, verdict.location, dict(verdict.headers)) == (
        Outcome.SIGN_IN,
        BACK_TO_SECURE,
        {},
    )


async def test_a_one_factor_session_is_sent_to_the_portal_for_its_second_factor(
    authorizer: Authorizer, sessions: SessionStore, make_config: ConfigFactory
) -> None:
    cookie = make_config().session.cookies[0]
    value = await sessions.create(JOHN, cookie, remember_me=False)
    sent = {cookie.name: [value]}

    verdict = await authorizer.verdict(SECURE, "GET", IP, lambda name: sent.get(name, []))
    one_factor_site = await authorizer.verdict(
        "https://app.example.com/", "GET", IP, lambda name: sent.get(name, [])
    )

    assert (verdict.outcome, verdict.location, dict(verdict.headers)) == (
        Outcome.SIGN_IN,
        BACK_TO_SECURE,
        {},
    )
    assert one_factor_site.outcome is Outcome.ALLOW


async def test_a_two_factor_session_passes_with_its_remote_headers(
    authorizer: Authorizer, sessions: SessionStore, make_config: ConfigFactory
) -> None:
    cookie = make_config().session.cookies[0]
    first = await sessions.create(JOHN, cookie, remember_me=False)
    value = await sessions.raise_level(first, cookie, method="otp")
    sent = {cookie.name: [value]}
    before = {cookie.name: [first]}

    verdict = await authorizer.verdict(SECURE, "GET", IP, lambda name: sent.get(name, []))
    old_cookie = await authorizer.verdict(SECURE, "GET", IP, lambda name: before.get(name, []))

    assert verdict.outcome is Outcome.ALLOW
    assert verdict.headers["Remote-User"] == "john"
    assert verdict.headers["Remote-Groups"] == "admins,dev"
    # The id changed with the level: the cookie from before the code opens nothing.
    assert old_cookie.outcome is Outcome.SIGN_IN
