"""The session cookie: its value (random, checked, hashed) and its attributes and lifetimes.

The browser holds a random value; storage holds only its SHA-256 (`stored_id`), so a leaked
database opens no session. The attributes follow Authelia's session.cookies: Secure over https,
HttpOnly, SameSite as configured, a Domain unless the domain is an IP address or 'localhost', and
a Max-Age only for a remembered session.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from portal.config import SessionCookieConfig

_T = TypeVar("_T")

_VALUE_BYTES = 32  # secrets.token_urlsafe(32): 256 random bits, 43 characters
# SECURITY: anything that is not plausibly one of our values is refused before hashing or any
# storage call, so junk cookies (huge, binary, non-ASCII) cost nothing and raise nothing.
_VALUE = re.compile(r"[A-Za-z0-9_-]{32,128}")


def new_value() -> str:
    """Return a fresh cookie value: 32 bytes from the OS CSPRNG, URL-safe base64 (43 chars)."""
    return secrets.token_urlsafe(_VALUE_BYTES)


def stored_id(value: str) -> str:
    """Return the id storage keeps for a cookie value: its SHA-256, 64 hex digits."""
    return hashlib.sha256(value.encode("ascii")).hexdigest()


def stored_id_of(value: object) -> str | None:
    """Return stored_id(value), or None when value cannot be one of our cookie values."""
    if not isinstance(value, str) or _VALUE.fullmatch(value) is None:
        return None
    return stored_id(value)


def cookie_attributes(cookie: SessionCookieConfig, *, remember_me: bool) -> dict[str, Any]:
    """Return the keyword arguments for aiohttp's set_cookie for this cookie domain."""
    attributes: dict[str, Any] = {
        "path": "/",
        # SECURITY: Secure whenever the portal is served over https (config allows plain http
        # only on loopback); HttpOnly so page scripts never read the session value.
        "secure": urlsplit(cookie.authelia_url).scheme == "https",
        "httponly": True,
        "samesite": _required(cookie.same_site, "same_site").capitalize(),
    }
    # Browsers refuse a Domain attribute of an IP address or 'localhost': host-only there.
    if not _host_only(cookie.domain):
        attributes["domain"] = cookie.domain
    if remember_me and remember_me_seconds(cookie) > 0:
        attributes["max_age"] = int(remember_me_seconds(cookie))
    # Otherwise no max_age: a browser-session cookie, gone when the browser closes (Authelia).
    return attributes


def remember_me_seconds(cookie: SessionCookieConfig) -> float:
    """Return the cookie domain's remember_me in seconds; 0 means remember me is off.

    ValueError if the option is unset (a cookie not taken from SessionConfig.cookies).
    """
    return cookie_seconds(cookie.remember_me, "remember_me")


def cookie_seconds(value: timedelta | None, name: str) -> float:
    """Return a cookie domain's duration option `name` in seconds; ValueError if it is unset."""
    return _required(value, name).total_seconds()


def _host_only(domain: str) -> bool:
    if domain == "localhost":
        return True
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        return False
    return True


def _required(value: _T | None, name: str) -> _T:
    if value is None:
        raise ValueError(
            f"session cookie option {name!r} is unset: pass a cookie from SessionConfig.cookies"
        )
    return value
