"""Where a browser goes after signing in or out: decided as the browser will read the target.

Issue 10.1: `https://evil.org\\@app.example.com/` is `evil.org` to a browser (WHATWG URL treats
`\\` like `/` in special schemes), so the portal must never hand it back; and no target, however
odd, may answer 500 or open a session without setting its cookie.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.unit.test_safe_redirect import COOKIES
from tests.web.conftest import Portal, StartPortal, sign_in

# Representatives of each way a target goes wrong; tests/unit/test_safe_redirect.py has them all.
REFUSED = [
    "https://evil.org\\@app.example.com/",  # the example: one backslash
    "https://john:secret@app.example.com/",
    "https://app.example.com:99999/",  # issue 11.5: no browser can open this port
    "https://app.example.com\t.evil.org/",
]
ACCEPTED = [
    ("https://APP.Example.COM:443/caf\u00e9?q=1", "https://app.example.com/caf%C3%A9?q=1"),
    ("http://127.0.0.1:8080/private", "http://127.0.0.1:8080/private"),
]


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    return await start_portal(session=COOKIES)


@pytest.mark.parametrize("target", REFUSED)
async def test_the_form_sign_in_never_sends_the_browser_to_an_odd_target(
    portal: Portal, target: str
) -> None:
    response = await sign_in(portal.client, "john", "password", rd=target)
    assert response.status == 302
    assert response.headers["Location"] == "/"
    # SECURITY: a session opened is a session whose cookie the browser got.
    assert response.cookies["portal_session"].value


@pytest.mark.parametrize("target", REFUSED)
async def test_the_json_sign_in_never_hands_back_an_odd_target(portal: Portal, target: str) -> None:
    response = await portal.client.post(
        "/api/firstfactor",
        json={"username": "john", "password": "password", "targetURL": target},
    )
    assert response.status == 200
    assert await response.json() == {"status": "OK"}
    assert response.cookies["portal_session"].value


@pytest.mark.parametrize("target", REFUSED)
async def test_logout_never_sends_the_browser_to_an_odd_target(portal: Portal, target: str) -> None:
    response = await portal.client.get(
        f"/logout?rd={quote(target, safe='')}", allow_redirects=False
    )
    assert response.status == 302
    assert response.headers["Location"] == "/?signed_out"


@pytest.mark.parametrize("target", REFUSED)
async def test_a_signed_in_visit_never_goes_to_an_odd_target(portal: Portal, target: str) -> None:
    assert (await sign_in(portal.client)).status == 302
    response = await portal.client.get(f"/?rd={quote(target, safe='')}", allow_redirects=False)
    assert response.status == 200
    assert "Location" not in response.headers


@pytest.mark.parametrize(("target", "landing"), ACCEPTED)
async def test_a_target_under_a_cookie_domain_is_followed_as_the_browser_reads_it(
    portal: Portal, target: str, landing: str
) -> None:
    form = await sign_in(portal.client, "john", "password", rd=target)
    assert (form.status, form.headers["Location"]) == (302, landing)
    api = await portal.client.post(
        "/api/firstfactor",
        json={"username": "john", "password": "password", "targetURL": target},
    )
    assert await api.json() == {"status": "OK", "data": {"redirect": landing}}
    again = await portal.client.get(f"/?rd={quote(target, safe='')}", allow_redirects=False)
    assert (again.status, again.headers["Location"]) == (302, landing)
    out = await portal.client.get(f"/logout?rd={quote(target, safe='')}", allow_redirects=False)
    assert (out.status, out.headers["Location"]) == (302, landing)
