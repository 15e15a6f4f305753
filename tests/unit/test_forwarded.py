"""The client's address behind trusted proxies: every form a proxy writes, never the proxy's own.

Issue 10.2: from a trusted proxy, `X-Forwarded-For: 203.0.113.9:4711` used to be unreadable, and
the proxy's address was used instead, so the visitor got the proxy's network rules and buckets.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from portal.forwarded import ClientAddresses, client_address, read_hop
from tests.conftest import ConfigFactory

TRUSTED = (ip_network("127.0.0.0/8"), ip_network("::1/128"))


class _Transport:
    """The one thing make_mocked_request needs to report a peer address."""

    def __init__(self, peer: str | None) -> None:
        self._peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name != "peername":
            return default
        # A unix socket's peer name is "" (no address); TCP's is (host, port).
        return (self._peer, 40000) if self._peer else ""


def request(peer: str | None, *forwarded: str) -> web.Request:
    """Build a real aiohttp request from peer, carrying each X-Forwarded-For header given."""
    headers = [("X-Forwarded-For", value) for value in forwarded]
    return make_mocked_request("GET", "/", headers=CIMultiDict(headers), transport=_Transport(peer))


@pytest.mark.parametrize(
    ("hop", "address"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("203.0.113.9:4711", "203.0.113.9"),  # the example
        (" 203.0.113.9:4711 ", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ('"[2001:db8::1]:4711"', "2001:db8::1"),  # RFC 7239's quoted form
        ("::ffff:203.0.113.9", "203.0.113.9"),  # an IPv4 visitor on a dual-stack proxy
        ("[::ffff:203.0.113.9]:4711", "203.0.113.9"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
    ],
)
def test_every_form_a_proxy_writes_is_read_as_the_visitors_address(hop: str, address: str) -> None:
    assert read_hop(hop) == ip_address(address)


@pytest.mark.parametrize(
    "hop",
    [
        "",
        "unknown",
        "_hidden",
        "not-an-address",
        "203.0.113.9:",
        "203.0.113.9:99999",
        "203.0.113.9:0x10",
        "203.0.113.9:-1",
        "[2001:db8::1",
        "2001:db8::1]",
        "[203.0.113.9]:1",
        "[2001:db8::1]:",
        "[2001:db8::1]x",
        "203.0.113.9:80:80",
        "203.0.113",
        "0x7f.1",
        "203.0.113.9\x00",
        "２０３.0.113.9",
        '"203.0.113.9',
    ],
)
def test_a_hop_no_proxy_writes_is_unreadable(hop: str) -> None:
    assert read_hop(hop) is None


@pytest.mark.parametrize(
    ("peer", "forwarded", "address"),
    [
        ("127.0.0.1", ("203.0.113.9:4711",), "203.0.113.9"),
        ("127.0.0.1", ("[2001:db8::1]:4711",), "2001:db8::1"),
        ("::1", ("203.0.113.9",), "203.0.113.9"),
        ("::ffff:127.0.0.1", ("203.0.113.9",), "203.0.113.9"),  # a dual-stack listener
        ("127.0.0.1", ("198.51.100.1, 127.0.0.2:80, 203.0.113.9",), "203.0.113.9"),
        ("127.0.0.1", ("garbage, 203.0.113.9",), "203.0.113.9"),  # left of the visitor: theirs
        ("127.0.0.1", ("198.51.100.1", "127.0.0.2:4711"), "198.51.100.1"),  # two headers
        # empty list elements are ignored (RFC 9110 section 5.6.1.2)
        ("127.0.0.1", ("203.0.113.9, ",), "203.0.113.9"),
        ("127.0.0.1", ("203.0.113.9", ""), "203.0.113.9"),
        ("198.51.100.7", ("",), "198.51.100.7"),  # an untrusted peer's empty header: ignored
        ("198.51.100.7", ("garbage",), "198.51.100.7"),  # an untrusted peer is not believed
        ("127.0.0.1", (), "127.0.0.1"),
        # A unix socket's peer is the local proxy (the socket's permissions decide who connects).
        (None, ("203.0.113.9:4711",), "203.0.113.9"),
    ],
)
def test_the_client_is_the_first_hop_no_trusted_proxy_wrote(
    peer: str | None, forwarded: tuple[str, ...], address: str
) -> None:
    assert client_address(request(peer, *forwarded), TRUSTED) == ip_address(address)


@pytest.mark.parametrize(
    ("peer", "forwarded"),
    [
        ("127.0.0.1", ("not-an-address",)),
        ("127.0.0.1", ("203.0.113.9:99999",)),
        ("127.0.0.1", ("203.0.113.9, garbage",)),
        ("127.0.0.1", ("garbage, 127.0.0.2",)),  # the proxy at .2 wrote garbage
        ("127.0.0.1", ("",)),  # a header with no hop in it: not the proxy's address either
        ("127.0.0.1", (" , ",)),
        (None, ()),  # a unix socket without the header: nobody knows who it is
    ],
)
def test_an_unreadable_hop_from_a_trusted_proxy_is_no_address_never_the_proxys(
    peer: str | None, forwarded: tuple[str, ...]
) -> None:
    assert client_address(request(peer, *forwarded), TRUSTED) is None
    addresses = ClientAddresses(TRUSTED)
    for _ in range(2):  # cold and warm memo
        assert addresses.parsed(request(peer, *forwarded)) is None


@pytest.mark.parametrize(
    "configured", ["::ffff:10.0.0.1/128", "::ffff:10.0.0.0/104", "10.0.0.1/32", "::ffff:0:0/96"]
)
@pytest.mark.parametrize("peer", ["10.0.0.1", "::ffff:10.0.0.1"])
def test_a_proxy_trusted_in_either_form_is_trusted_in_either_form(
    make_config: ConfigFactory, configured: str, peer: str
) -> None:
    # Found in review: the peer is read as IPv4, so a network written the mapped way must be
    # IPv4 too, or the proxy is not trusted and every visitor passes as the proxy.
    config = make_config(server={"trusted_proxies": [configured]})
    found = client_address(request(peer, "203.0.113.9"), config.server.trusted_proxies)
    assert found == ip_address("203.0.113.9")
