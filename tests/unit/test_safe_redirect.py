"""safe_redirect: every redirect target is judged as a browser (WHATWG URL) will read it."""

from __future__ import annotations

import pytest

from portal.signin import safe_redirect
from tests.conftest import ConfigFactory

COOKIES = {
    "cookies": [
        {"domain": "127.0.0.1", "authelia_url": "http://127.0.0.1"},
        {"domain": "example.com", "authelia_url": "https://auth.example.com"},
    ]
}

# Targets a browser would read as another host, or could not open, or reads differently.
REFUSED = [
    "https://evil.org\\@app.example.com/",  # the example: one backslash
    "https://evil.org\\\\@app.example.com/",
    "https:\\\\evil.org\\app.example.com",
    "https://evil.org%5C@app.example.com/",
    "https://john:secret@app.example.com/",  # user info, even under our domain
    "https://@app.example.com/",
    "https://app.example.com:99999/",  # issue 11.5: no browser can open this port
    "https://app.example.com:-1/",
    "https://app.example.com:0/",  # found in review
    "https://app.example.com:00/",
    "https://app.example.com\t.evil.org/",
    "https://app.example.com\n/",
    "https://app.example.com\x00/",
    " https://app.example.com/",
    "https://app.example.com%2f@evil.org/",
    "https://evil.org#@app.example.com/",
    "https://evil.org?@app.example.com/",
    "https://app.example.com.evil.org/",
    "https://example.com.evil.org/",
    "http://app.example.com/",  # plain http outside loopback
    "//app.example.com/",
    "/\\evil.org/",
    "https:/evil.org/app.example.com",
    "javascript:alert(1)//app.example.com",
    "data:text/html,app.example.com",
    "https://xn--/",
    "https://[::1/",
    "https://%ZZapp.example.com/",
]

# Targets under the cookie domain, and the form the browser (and the portal) will use.
ACCEPTED = [
    ("https://app.example.com/path?q=1#top", "https://app.example.com/path?q=1#top"),
    ("https://APP.Example.COM/x", "https://app.example.com/x"),
    ("https://app.example.com:8443/", "https://app.example.com:8443/"),
    ("https://app.example.com:443/a", "https://app.example.com/a"),
    ("https://b\u00fccher.example.com/", "https://xn--bcher-kva.example.com/"),
    ("https://app.example.com/caf\u00e9", "https://app.example.com/caf%C3%A9"),
    ("http://127.0.0.1:8080/private", "http://127.0.0.1:8080/private"),
]


@pytest.mark.parametrize("target", REFUSED)
def test_a_target_a_browser_could_read_differently_is_refused(
    make_config: ConfigFactory, target: str
) -> None:
    assert safe_redirect(make_config(session=COOKIES), target) is None


@pytest.mark.parametrize(("target", "landing"), ACCEPTED)
def test_a_target_under_a_cookie_domain_becomes_what_the_browser_opens(
    make_config: ConfigFactory, target: str, landing: str
) -> None:
    assert safe_redirect(make_config(session=COOKIES), target) == landing


@pytest.mark.parametrize("target", [None, "", "https://app.example.com/" + "a" * 4096])
def test_no_target_or_an_overlong_one_is_refused(
    make_config: ConfigFactory, target: str | None
) -> None:
    assert safe_redirect(make_config(session=COOKIES), target) is None
