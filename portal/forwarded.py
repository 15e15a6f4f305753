"""The client's address: the peer, or what trusted proxies wrote in X-Forwarded-For; nothing else.

The rule (OWASP ASVS 14.5, RFC 7239 section 5.2 for the forms; MDN's X-Forwarded-For "selecting
an IP address"): walk the hops from the peer leftwards while the hop we stand on is a trusted
proxy; the first hop that is not one is the client. A hop a trusted proxy wrote that cannot be
read as an address makes the whole request's address unknown (None): it is never replaced by the
proxy's own address, which would hand the visitor the proxy's network rules and buckets.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Protocol

from multidict import MultiMapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The forms proxies write (nginx, HAProxy, Envoy, Traefik, cloud load balancers): an address,
# an IPv4 address with a port, a bracketed IPv6 address with or without a port, optionally in
# RFC 7239's double quotes. Ports are 1 to 5 ASCII digits; ranges are checked after.
_HOP = re.compile(
    r'(?P<q>"?)(?:\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<v6port>[0-9]{1,5}))?'
    r"|(?P<v4>[0-9.]+):(?P<v4port>[0-9]{1,5})"
    r"|(?P<bare>[0-9A-Fa-f:.]+))(?P=q)"
)


class RequestView(Protocol):
    """What the client's address and the request id are read from: an aiohttp request, or the
    authz listener's own (portal/authz_listener.py)."""

    @property
    def remote(self) -> str | None:
        """The peer's address as aiohttp gives it: an IP address, '' for a unix socket peer,
        None when unknown."""

    @property
    def headers(self) -> MultiMapping[str]:
        """The request's header fields, names case-insensitive."""


def _unmapped(address: IPAddress) -> IPAddress:
    """Return the IPv4 address inside an IPv4-mapped IPv6 one (::ffff:a.b.c.d), else address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def read_hop(hop: str) -> IPAddress | None:
    """Read one X-Forwarded-For entry as an address, dropping a port; None if unreadable.

    Accepted: `a.b.c.d`, `a.b.c.d:port`, an IPv6 address, `[v6]`, `[v6]:port`, each optionally
    double-quoted (RFC 7239 section 6). An IPv4-mapped IPv6 address is read as its IPv4 address,
    so network rules written for IPv4 match a visitor seen through a dual-stack proxy. Refused:
    names, `unknown`, RFC 7239 obfuscated identifiers, a port outside 1..65535, brackets around
    IPv4, anything else.
    """
    match = _HOP.fullmatch(hop.strip())
    if match is None:
        return None
    port = match["v6port"] or match["v4port"]
    if port is not None and not 0 < int(port) <= 65535:
        return None
    text = match["v6"] or match["v4"] or match["bare"]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if match["v6"] is not None and address.version != 6:
        return None
    if match["v4"] is not None and address.version != 4:
        return None
    return _unmapped(address)


def _peer(request: RequestView) -> IPAddress | None:
    """Return the TCP peer's address, or None for a peer without one (a unix socket)."""
    try:
        return _unmapped(ipaddress.ip_address(request.remote or ""))
    except ValueError:
        return None


def _trusted(address: IPAddress, trusted_proxies: Sequence[Network]) -> bool:
    return any(address in net for net in trusted_proxies)


def client_address(request: RequestView, trusted_proxies: Sequence[Network]) -> IPAddress | None:
    """Return the client's address; None when it cannot be known.

    X-Forwarded-For (every header of that name, in order, comma-separated hops) is believed only
    from a trusted proxy, hop by hop. A unix-socket peer counts as a trusted local proxy (the
    socket's file permissions decide who may connect), so its X-Forwarded-For is read; without
    one its client is unknown. None also when a hop a trusted proxy wrote is unreadable.
    """
    headers = request.headers.getall("X-Forwarded-For", ())
    # Empty list elements are ignored (RFC 9110 section 5.6.1.2); a header with nothing else in
    # it says nothing about the client, which is not the same as naming the proxy.
    hops = [part for header in headers for part in header.split(",") if part.strip()]
    peer = _peer(request)
    if headers and not hops and (peer is None or _trusted(peer, trusted_proxies)):
        return None
    if peer is None and request.remote:
        return None  # a peer name that is not an address: nothing to go on
    candidate = peer
    # SECURITY: walk from the peer leftwards and stop at the first hop we do not trust: entries
    # left of it were written by the client and can be anything (Authelia trusted the first one).
    for hop in reversed(hops):
        if candidate is not None and not _trusted(candidate, trusted_proxies):
            break
        # SECURITY: a hop a trusted proxy wrote that we cannot read makes the address unknown;
        # falling back to the proxy's own address would let the visitor pass as the proxy.
        candidate = read_hop(hop)
        if candidate is None:
            return None
    return candidate


# X-Forwarded-For values longer than this are resolved every time rather than remembered, so the
# memo stays small whatever clients send.
_MEMO_HEADER_LIMIT = 256


class ClientAddresses:
    """Resolve each request's client address, remembering answers for repeated header values.

    nginx's auth_request sends the same peer and X-Forwarded-For for every request of a visitor;
    resolving it once instead of parsing every hop again is a measurable share of that hot path.
    """

    def __init__(self, trusted_proxies: Sequence[Network], *, size: int = 4096) -> None:
        self._trusted = tuple(trusted_proxies)
        self._size = size
        self._memo: dict[tuple[str | None, tuple[str, ...]], IPAddress | None] = {}
        self._peers: dict[str | None, bool] = {}

    def from_proxy(self, request: RequestView) -> bool:
        """Tell whether the request's peer is a trusted proxy (server.trusted_proxies), or a
        unix socket (whose file permissions decide who may connect). Remembered per peer."""
        remote = request.remote
        try:
            return self._peers[remote]
        except KeyError:
            pass
        peer = _peer(request)
        trusted = (peer is None and not remote) or (
            peer is not None and _trusted(peer, self._trusted)
        )
        if len(self._peers) >= self._size:
            self._peers.clear()
        self._peers[remote] = trusted
        return trusted

    def parsed(self, request: RequestView) -> IPAddress | None:
        """Return the client's address, or None when it cannot be known (a malformed request)."""
        forwarded = tuple(request.headers.getall("X-Forwarded-For", ()))
        key = (request.remote, forwarded)
        try:
            return self._memo[key]
        except KeyError:
            pass
        address = client_address(request, self._trusted)
        if sum(len(value) for value in forwarded) <= _MEMO_HEADER_LIMIT:
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[key] = address
        return address
