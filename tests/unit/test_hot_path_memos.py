"""The memos on nginx's hot path answer exactly what the uncached code answers, for every input.

auth_request remembers the client address per (peer, X-Forwarded-For), the cookie domain per
host and the parsed URL per URL. A memo that answered one visitor with another's address, or
let a malformed URL through the second time, would be a security bug, so each is checked
against the plain function on the inputs an attacker controls.
"""

from __future__ import annotations

import contextlib
from ipaddress import ip_address, ip_network

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from portal.access_control import AccessControl, Target
from portal.config import AccessControlConfig
from portal.forwarded import ClientAddresses, client_address
from portal.handlers.common import cookie_values
from portal.signin import CookieDomains, cookie_for_host
from tests.conftest import ConfigFactory

TRUSTED = (ip_network("127.0.0.0/8"),)


class _Transport:
    """The one thing make_mocked_request needs to report a peer address."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self._peer, 40000) if name == "peername" else default


def request(
    peer: str = "127.0.0.1", forwarded: str | None = None, cookie: str | None = None
) -> web.Request:
    """Build a real aiohttp request as it arrives from peer with these headers."""
    headers = {}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    if cookie is not None:
        headers["Cookie"] = cookie
    return make_mocked_request("GET", "/", headers=headers, transport=_Transport(peer))


@pytest.mark.parametrize(
    ("peer", "forwarded"),
    [
        ("127.0.0.1", "203.0.113.7"),
        ("127.0.0.1", "203.0.113.8"),  # same peer, another visitor: must not get .7
        ("198.51.100.9", "203.0.113.7"),  # an untrusted peer's header is not believed
        ("127.0.0.1", None),
        ("127.0.0.1", "10.0.0.1, 203.0.113.7"),
        ("127.0.0.1", "not-an-address"),
        ("127.0.0.1", "203.0.113.7, " + "1.2.3.4, " * 60 + "203.0.113.9"),  # too long to keep
    ],
)
def test_client_addresses_match_client_address_on_first_and_repeated_requests(
    peer: str, forwarded: str | None
) -> None:
    addresses = ClientAddresses(TRUSTED)
    for _ in range(2):
        # Interleave the others so the memo is warm with every other visitor.
        for other in ("203.0.113.7", "203.0.113.8", "192.0.2.1"):
            addresses.parsed(request("127.0.0.1", other))
        got = addresses.parsed(request(peer, forwarded))
        assert got == client_address(request(peer, forwarded), TRUSTED)


def test_client_addresses_stay_bounded() -> None:
    addresses = ClientAddresses(TRUSTED, size=8)
    for n in range(100):
        address = addresses.parsed(request("127.0.0.1", f"203.0.113.{n}"))
        assert address == ip_address(f"203.0.113.{n}")
    # The memo's size is the one thing no answer shows (a bounded memo and an unbounded one
    # answer alike), so this reads the private dict; there is no public count to ask instead.
    assert len(addresses._memo) <= 8


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("198.51.100.9", False),
        ("::1", False),
        ("::ffff:127.0.0.1", True),
        ("not-an-address", False),
    ],
)
def test_from_proxy_answers_the_same_every_time_and_stays_bounded(peer: str, trusted: bool) -> None:
    addresses = ClientAddresses(TRUSTED, size=4)
    for n in range(10):
        addresses.from_proxy(request(f"10.0.0.{n}"))  # fill the memo past its size
        assert addresses.from_proxy(request(peer)) is trusted
    assert len(addresses._peers) <= 4  # private, as above: no answer shows the size


HOSTS = [
    "app.example.com",
    "example.com",
    "deep.app.example.com",
    "other.org",
    "EXAMPLE.com.",
    "evil-example.com",
    "app.example.net",
]


@pytest.mark.parametrize("host", HOSTS)
def test_cookie_domains_match_cookie_for_host(make_config: ConfigFactory, host: str) -> None:
    config = make_config(
        session={
            "cookies": [
                {"domain": "example.com", "authelia_url": "https://auth.example.com"},
                {"domain": "app.example.net", "authelia_url": "https://auth.app.example.net"},
            ]
        }
    )
    domains = CookieDomains(config)
    expected = cookie_for_host(config, host)
    for _ in range(2):  # the second time comes from the memo
        # Warm the memo with every other host first, so a wrongly keyed memo answers wrongly.
        for other in HOSTS:
            if other != host:
                domains.for_host(other)
        assert domains.for_host(host) == expected


URLS = [
    "https://app.example.com/a/../admin?x=1",
    "https://app.example.com/a/../admin?x=2",  # differs only in the query
    "https://app.example.com/",
    "https://app.example.com:8443/",  # differs only in the port
    "http://app.example.com/%2e%2e/secret",
    "https://bypass.example.com@secret.example.com/",
    "ftp://app.example.com/",
    "https://app.example.com/%zz",
    "https://app.example.com/ x",
    "",
]


@pytest.mark.parametrize("url", URLS)
def test_access_control_target_matches_from_url_every_time(url: str) -> None:
    access = AccessControl(AccessControlConfig())
    for _ in range(2):  # the second time comes from the memo (or fails again)
        # Warm the memo with every other URL first: one keyed by host alone, or blind to the
        # query or the port, or holding a single entry, then answers this URL wrongly.
        for warm in URLS:
            if warm != url:
                with contextlib.suppress(ValueError):
                    access.target(warm, "GET", "192.0.2.1")
        try:
            expected = Target.from_url(url, "GET", "192.0.2.1")
        except ValueError:
            with pytest.raises(ValueError, match=r"."):
                access.target(url, "GET", "192.0.2.1")
            continue
        assert access.target(url, "GET", "192.0.2.1") == expected
        # The URL's parts are shared; method and address are the request's own.
        other = access.target(url, "post", ip_address("2001:db8::1"))
        assert (other.method, str(other.ip), other.host) == ("POST", "2001:db8::1", expected.host)
    with pytest.raises(ValueError, match="method"):
        access.target("https://app.example.com/", "G E T", "192.0.2.1")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, []),
        ("other=1", []),
        ("portal_session=abc", ["abc"]),
        ("a=1; portal_session=abc; b=2", ["abc"]),
        ('portal_session="abc"', ["abc"]),
        # a host cookie and a stale parent-domain one: both are tried, in the order sent
        ("portal_session=first; portal_session=second", ["first", "second"]),
        ("portal_session=same; portal_session=same", ["same"]),
        ("; ".join(f"portal_session=v{n}" for n in range(10)), ["v0", "v1", "v2", "v3"]),
        ("xportal_session=abc", []),
        ("portal_session", []),
        ("portal_session=", []),
    ],
)
def test_cookie_values_reads_every_value_of_one_cookie(
    header: str | None, expected: list[str]
) -> None:
    req = request(cookie=header)
    assert cookie_values(req, "portal_session") == expected
    # aiohttp keeps the last value only: the one a stale parent-domain cookie may hold.
    if len(expected) < 4:
        assert (req.cookies.get("portal_session") or None) == (expected[-1] if expected else None)
