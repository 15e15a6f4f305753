"""Bad input gets a 4xx with the portal's usual page or JSON error, never a 500 (issue 11).

One plain regression test per example of the issue, and the other members of each kind found;
tests/fuzz drives every route with generated requests on top of these.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

import jwt
import pytest

from tests.web.conftest import Portal, StartPortal, csrf_of
from tests.web.test_reset_questions import ANSWERS, questions_on

CSRF_COOKIE = "portal_csrf"


@dataclass
class Answer:
    """What came back for a raw request: status, headers (lower-case names), body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def shows_the_portals_error(self) -> bool:
        """Tell whether the body is the portal's error page or JSON error, not aiohttp's text."""
        if self.headers.get("content-type", "").startswith("application/json"):
            status: object = json.loads(self.body)["status"]
            return status == "KO"
        return b'id="error-message"' in self.body or b"<form" in self.body


async def raw(portal: Portal, head: bytes, body: bytes = b"") -> Answer:
    """Send one request exactly as written (aiohttp's client would repair it); read the answer."""
    server = portal.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        length = b"Content-Length: %d\r\n" % len(body) if body else b""
        writer.write(head.rstrip(b"\r\n") + b"\r\n" + length + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    continued = b"HTTP/1.1 100 Continue\r\n\r\n"
    if data.startswith(continued):  # the interim answer to Expect: 100-continue
        data = data[len(continued) :]
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, rest)


async def csrf_pair(portal: Portal) -> tuple[str, str]:
    """Return a well-formed CSRF cookie value and the matching form token."""
    page = await portal.client.get("/")
    token = csrf_of(await page.text())
    return token, token


def form_post(path: str, content_type: bytes, cookie: str, extra: bytes = b"") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        + content_type
        + b"\r\nCookie: "
        + CSRF_COOKIE.encode()
        + b"="
        + cookie.encode()
        + b"\r\n"
        + extra
    )


FORM = b"application/x-www-form-urlencoded"
MULTIPART = b"multipart/form-data; boundary=x"
FIELD = b"username=john&csrf_token=%s"


def part(headers: bytes = b"", boundary: bytes = b"x", end: bytes = b"\r\n--x--\r\n") -> bytes:
    """Return a one-field multipart body, with extra part headers and a given ending."""
    disposition = b"Content-Disposition: form-data; name=a\r\n"
    return b"--" + boundary + b"\r\n" + disposition + headers + b"\r\nb" + end


UNREADABLE_FORMS = [
    (FORM + b"; charset=bogus", FIELD, b""),
    (FORM + b"; charset=rot13", FIELD, b""),
    (FORM + b"; charset=base64", FIELD, b""),
    (FORM, b"username=\xff&csrf_token=%s", b""),
    (b"multipart/form-data", b"--x\r\n", b""),  # no boundary
    (MULTIPART, part(boundary=b"y", end=b"\r\n--y--\r\n"), b""),  # another boundary
    (MULTIPART, part(end=b""), b""),  # cut short
    (b"multipart/form-data; boundary=\xe9", part(boundary=b"\xe9", end=b"\r\n--\xe9--\r\n"), b""),
    (MULTIPART, part(b"Content-Type: text/plain; charset=bogus\r\n"), b""),
    (MULTIPART, part(b"Content-Transfer-Encoding: bogus\r\n"), b""),
    (FORM, FIELD, b"Content-Encoding: deflate\r\n"),
    (FORM, FIELD, b"Content-Encoding: gzip\r\n"),
    (FORM, FIELD, b"Content-Encoding: br\r\n"),
    # codecs that decode to lone surrogates, which later fail to encode (found in review)
    (FORM + b"; charset=utf-7", b"username=%2B2AA-&csrf_token=%s", b""),
    (FORM + b"; charset=utf-7", b"username=john&csrf_token=%2B2AA-", b""),
    (FORM + b"; charset=unicode_escape", b"username=%5Cud800&csrf_token=%s", b""),
    (FORM + b"; charset=raw_unicode_escape", b"username=%5Cud800&csrf_token=%s", b""),
]
FORM_ROUTES = ["/", "/reset-password/step1", "/reset-password/step2", "/revoke/reset-password"]


@pytest.mark.parametrize(("content_type", "body", "extra"), UNREADABLE_FORMS)
@pytest.mark.parametrize("path", FORM_ROUTES)
async def test_a_form_body_the_parser_cannot_read_is_a_400(
    portal: Portal, path: str, content_type: bytes, body: bytes, extra: bytes
) -> None:
    cookie, token = await csrf_pair(portal)
    body = body.replace(b"%s", token.encode())
    answer = await raw(portal, form_post(path, content_type, cookie, extra), body)
    assert answer.status in (400, 415)
    assert answer.shows_the_portals_error()
    assert b"Traceback" not in answer.body


@pytest.mark.parametrize("sent", ["%C3%A9", "%C3%A9" * 43, "%FF", "\u00e9"])
async def test_a_csrf_field_with_non_ascii_text_is_refused_as_a_bad_token(
    portal: Portal, sent: str
) -> None:
    cookie, _ = await csrf_pair(portal)
    body = b"username=john&password=x&csrf_token=" + sent.encode()
    answer = await raw(portal, form_post("/", FORM, cookie), body)
    assert answer.status == 403
    assert answer.shows_the_portals_error()


JSON_HEAD = b"POST /api/firstfactor HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.mark.parametrize(
    ("content_type", "body", "extra"),
    [
        (b"application/json; charset=bogus", b"{}", b""),
        (b"application/json; charset=rot13", b"{}", b""),
        (b"application/json", b"[" * 3000, b""),
        (b"application/json", b"[" * 3000 + b"]" * 3000, b""),
        (b"application/json", b'{"a":' * 3000 + b"1" + b"}" * 3000, b""),
        (b"application/json", b"\xff", b""),
        (b"application/json", b"1" * 5000, b""),
        (b"application/json", b"[]", b""),
        (b"application/json", b'"username"', b""),
        (
            b"application/json",
            b'{"username": "john", "password": "password"}',
            b"Content-Encoding: deflate\r\n",
        ),
    ],
)
async def test_a_json_body_the_parser_cannot_read_is_a_400(
    portal: Portal, content_type: bytes, body: bytes, extra: bytes
) -> None:
    head = JSON_HEAD + b"Content-Type: " + content_type + b"\r\n" + extra
    answer = await raw(portal, head, body)
    assert answer.status in (400, 415)
    assert json.loads(answer.body)["status"] == "KO"


@pytest.mark.parametrize(
    "host", [b"\xff", b"127.0.0.1:9091, evil", b"a:b", b"a b", b"[::1", b"x:99999"]
)
@pytest.mark.parametrize(
    "request_line", [b"GET / HTTP/1.1", b"GET /logout HTTP/1.1", b"POST /api/firstfactor HTTP/1.1"]
)
async def test_a_host_header_the_portal_cannot_read_is_a_400(
    portal: Portal, host: bytes, request_line: bytes
) -> None:
    head = request_line + b"\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n"
    body = b'{"username": "john", "password": "password"}' if b"POST" in request_line else b""
    answer = await raw(portal, head, body)
    assert answer.status == 400
    assert answer.shows_the_portals_error()
    assert "portal_session" not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "expect", [b"\xe9", b"\xff\xfe", "\u00e9".encode(), b"bogus", b"100-continue"]
)
@pytest.mark.parametrize("path", [b"/", b"/api/health", b"/nothing-here", b"/static/../x"])
async def test_an_odd_expect_header_on_any_route_gets_the_usual_answer(
    portal: Portal, expect: bytes, path: bytes
) -> None:
    head = b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: " + expect + b"\r\n"
    answer = await raw(portal, head)
    assert answer.status in (200, 404)
    assert re.search(rb"\xe9|\xff|bogus", answer.body) is None  # nothing is echoed


async def test_a_body_too_large_is_refused_before_the_client_sends_it(portal: Portal) -> None:
    # Expect: 100-continue asks whether to send the body: for one the portal refuses anyway,
    # the first answer is the final 413, never a 100 that invites 10 MB.
    server = portal.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"POST /api/firstfactor HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        first = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    assert first.startswith(b"HTTP/1.1 413 ")


async def test_a_signed_token_with_an_impossible_time_is_an_invalid_link(portal: Portal) -> None:
    secret = portal.config.identity_validation.reset_password.jwt_secret.get_secret_value()
    claims = {
        "iss": "http://127.0.0.1",
        "aud": "portal:reset-password",
        "sub": "john",
        "iat": 10**400,
        "nbf": 0,
        "exp": 2**40,
        "jti": "A" * 22,
        "action": "ResetPassword",
        "pwd": "x",
    }
    token = jwt.encode(claims, secret, algorithm="HS256")
    for call in (
        portal.client.post("/api/reset-password/identity/finish", json={"token": token}),
        portal.client.post("/api/reset-password", json={"token": token, "password": "x" * 20}),
        portal.client.delete("/api/reset-password", json={"token": token}),
    ):
        response = await call
        assert response.status == 400
        assert await response.json() == {
            "status": "KO",
            "message": "This link is invalid or has expired.",
        }
    page = await portal.client.get(f"/reset-password/step2?token={token}")
    assert page.status == 400 and "This link is invalid or has expired" in await page.text()


@pytest.mark.parametrize(
    "ticket", ["\u00b2\u00b2\u00b2.0123456789abcdef.x", "9" * 5000 + ".0123456789abcdef.x"]
)
async def test_a_questions_ticket_with_odd_digits_is_refused(
    start_portal: StartPortal, ticket: str
) -> None:
    # str.isdigit() takes "²", which int() refuses: the ticket's time is ASCII digits only.
    portal = await start_portal(**questions_on())
    page = await portal.client.get("/reset-password/step1")
    response = await portal.client.post(
        ANSWERS,
        data={
            "username": "john",
            "ticket": ticket,
            "answer_0": "a",
            "answer_1": "b",
            "csrf_token": csrf_of(await page.text()),
        },
    )
    assert response.status == 400
