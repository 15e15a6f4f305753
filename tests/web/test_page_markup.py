"""What the pages say and how assistive technology reads them (issue 12): error lists inside
an alert, hints tied to their field, titles that match the page, a word after signing out, a
429 page that says when to come back, and a CAPTCHA message for a form that showed no widget."""

from __future__ import annotations

import re

from tests.web.conftest import (
    Portal,
    StartPortal,
    choose_password,
    csrf_of,
    open_link,
    request_reset,
    reset_link_from,
    sign_in,
)

POLICY = {"password_policy": {"standard": {"enabled": True, "min_length": 12}}}
_TITLE = re.compile(r"<title>([^<]*)</title>")


def title_of(page: str) -> str:
    found = _TITLE.search(page)
    assert found is not None
    return found.group(1)


def tag_with_id(page: str, element_id: str) -> str:
    """Return the opening tag of the element with this id."""
    found = re.search(rf'<[a-z]+\b[^>]*\bid="{element_id}"[^>]*>', page)
    assert found is not None, element_id
    return found.group(0)


async def test_refused_password_reasons_are_a_plain_list_inside_an_alert(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**POLICY)
    await request_reset(portal.client, "john")
    await open_link(portal.client, reset_link_from(await portal.next_mail()))
    refused = await choose_password(portal.client, "short")
    assert refused.status == 400
    page = await refused.text()
    # A <ul> keeps its list role (axe: listitem, aria-allowed-role); the alert wraps it.
    assert not re.search(r"<ul\b[^>]*\brole=", page)
    assert 'role="alert"' in tag_with_id(page, "password-errors")
    errors = page.split('id="password-errors"', 1)[1]
    assert errors.index("<ul") < errors.index("</div>")


async def test_the_password_hints_describe_the_field(start_portal: StartPortal) -> None:
    portal = await start_portal(**POLICY)
    await request_reset(portal.client, "john")
    shown = await open_link(portal.client, reset_link_from(await portal.next_mail()))
    page = await shown.text()
    assert 'id="password-hints"' in page
    described = tag_with_id(page, "password")
    assert re.search(r'aria-describedby="[^"]*\bpassword-hints\b', described)
    refused = await choose_password(portal.client, "short")
    described = tag_with_id(await refused.text(), "password")
    assert re.search(r'aria-describedby="password-hints password-errors"', described)


async def test_the_signed_in_page_is_titled_signed_in(portal: Portal) -> None:
    assert title_of(await (await portal.client.get("/")).text()).startswith("Sign in")
    assert (await sign_in(portal.client)).status == 302
    assert title_of(await (await portal.client.get("/")).text()).startswith("Signed in")


async def test_signing_out_says_so(portal: Portal) -> None:
    assert (await sign_in(portal.client)).status == 302
    out = await portal.client.get("/logout")
    assert out.status == 200
    page = await out.text()
    assert 'id="signed-out"' in page and "You are signed out." in page
    assert 'id="sign-in-button"' in page
    # Only who is not signed in is told so.
    assert (await sign_in(portal.client)).status == 302
    still_in = await (await portal.client.get(str(out.url.relative()))).text()
    assert "You are signed out." not in still_in


async def test_the_429_page_says_what_happened_and_when_to_come_back(
    start_portal: StartPortal,
) -> None:
    bucket = {"buckets": [{"period": "10 minutes", "requests": 1}]}
    portal = await start_portal(
        server={"endpoints": {"rate_limits": {"reset_password_start": bucket}}}
    )
    assert (await request_reset(portal.client, "a")).status == 200
    refused = await request_reset(portal.client, "john")
    assert refused.status == 429
    page = await refused.text()
    assert "This did not work" not in page
    assert "<h1>Too many attempts</h1>" in page
    assert title_of(page).startswith("Too many attempts")
    minutes = -(-int(refused.headers["Retry-After"]) // 60)
    assert minutes == 10
    assert "Please try again in 10 minutes." in page


async def test_a_sign_in_that_showed_no_widget_is_asked_to_complete_the_one_shown_now(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(
        captcha={
            "enabled_on": ["login"],
            "altcha": {"cost": 1, "max_number": 50},
            "login_after_failures": 1,
        },
    )
    assert (await sign_in(portal.client, "john", "wrong")).status == 401
    # From another address (its own cookie jar, no widget seen), John types the right password.
    response = await portal.client.post(
        "/",
        data={
            "username": "john",
            "password": "password",
            "csrf_token": csrf_of(await (await portal.client.get("/")).text()),
        },
        headers={"X-Forwarded-For": "198.51.100.7"},
        allow_redirects=False,
    )
    assert response.status == 400
    page = await response.text()
    assert "The anti-robot check failed" not in page
    assert "Please complete the anti-robot check shown below, then sign in again." in page
    assert "<altcha-widget" in page
