"""Each bad request issue 11 names, sent as raw bytes to the real portal process: the answer is
never a 5xx, and the log gets at most a short line or two for it, never a traceback.

These are the fuzz run's findings kept as plain regression tests; the bytes go over a socket
unchanged (aiohttp's client would normalise a Host or Expect header it cannot encode).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fuzz.server import (
    FuzzPortal,
    refresh_target,
    start_portal,
    stop_portal,
    tracebacks,
    wait_for_quiet_log,
    wait_until_healthy,
)
from tests.fuzz.strategies import sign
from tests.fuzz.wire import exchange

CSRF = "A" * 43
# A bad request is worth a short line in the log (and the access line), nothing like a traceback.
LOG_BYTES_AT_MOST = 600
Build = Callable[[FuzzPortal], bytes]


def _request(
    method: str,
    target: str,
    headers: tuple[tuple[str, bytes], ...] = (),
    body: bytes = b"",
    host: bytes | None = None,
) -> Build:
    """Return a builder of the raw request for a given portal (its port goes in Host)."""

    def build(portal: FuzzPortal) -> bytes:
        lines = [
            f"{method} {target} HTTP/1.1".encode(),
            b"Host: " + (host if host is not None else f"127.0.0.1:{portal.port}".encode()),
        ]
        lines += [name.encode() + b": " + value for name, value in headers]
        if body:
            lines.append(f"Content-Length: {len(body)}".encode())
        return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n" + body

    return build


def _form(
    path: str,
    body: bytes,
    content_type: bytes = b"application/x-www-form-urlencoded",
    **extra: bytes,
) -> Build:
    headers = (
        ("Cookie", f"portal_csrf={CSRF}".encode()),
        ("Content-Type", content_type),
        *((k.replace("_", "-"), v) for k, v in extra.items()),
    )
    return _request("POST", path, headers, body)


def _json(
    path: str,
    body: bytes,
    content_type: bytes = b"application/json",
    host: bytes | None = None,
    **extra: bytes,
) -> Build:
    headers = (
        ("Content-Type", content_type),
        *((k.replace("_", "-"), v) for k, v in extra.items()),
    )
    return _request("POST", path, headers, body, host=host)


def _with_session(build_target: str) -> Build:
    """GET the target with the live session cookie of the portal (redirects need a session)."""

    def build(portal: FuzzPortal) -> bytes:
        cookie = f"portal_session={portal.target.sessions[0]}".encode()
        return _request("GET", build_target, (("Cookie", cookie),))(portal)

    return build


def _token_with_huge_iat(portal: FuzzPortal) -> str:
    """A reset token signed with the portal's secret whose iat is 10^400."""
    now = int(time.time())
    claims = (
        f'{{"iss":"{portal.target.issuer}","aud":"portal:reset-password","sub":"john",'
        f'"iat":1{"0" * 400},"nbf":{now},"exp":{now + 600},"jti":"{"A" * 22}",'
        f'"action":"ResetPassword","pwd":"{"x" * 43}"}}'
    )
    return sign('{"alg":"HS256","typ":"JWT"}', claims, portal.target.jwt_secret)


def _huge_iat_cookie(portal: FuzzPortal) -> bytes:
    cookie = f"portal_reset={_token_with_huge_iat(portal)}".encode()
    return _request("GET", "/reset-password/step2", (("Cookie", cookie),))(portal)


def _huge_iat_json(portal: FuzzPortal) -> bytes:
    body = json.dumps({"token": _token_with_huge_iat(portal)}).encode()
    return _json("/api/reset-password/identity/finish", body)(portal)


FORM = b"application/x-www-form-urlencoded"
USERNAME = b"csrf_token=" + CSRF.encode() + b"&username=john"
MULTIPART = (
    b'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
    + CSRF.encode()
    + b'\r\n--b\r\nContent-Disposition: form-data; name="username"\r\n\r\njohn\r\n'
    + b"--b--\r\n"
)
IMPOSSIBLE_PORT = b"https%3A%2F%2Fapp.example.com%3A99999%2F"
DEEP = b"[" * 3000 + b"]" * 3000
STEP1 = "/reset-password/step1"
FIRSTFACTOR = "/api/firstfactor"
SIGN_IN = b'{"username": "john", "password": "wrong"}'

CASES: dict[str, Build] = {
    # Form bodies the parser cannot read.
    "form charset bogus": _form(STEP1, USERNAME, FORM + b"; charset=bogus"),
    "form charset rot13": _form(STEP1, USERNAME, FORM + b"; charset=rot13"),
    "form charset base64": _form(STEP1, USERNAME, FORM + b"; charset=base64"),
    "form invalid utf-8": _form(STEP1, USERNAME.replace(b"john", b"\xff")),
    "form invalid utf-8 escaped": _form(STEP1, USERNAME.replace(b"john", b"%ff")),
    "multipart without boundary": _form(STEP1, MULTIPART, b"multipart/form-data"),
    "multipart wrong boundary": _form(STEP1, MULTIPART, b"multipart/form-data; boundary=other"),
    "multipart truncated part": _form(STEP1, MULTIPART[:60], b"multipart/form-data; boundary=b"),
    "multipart non-ascii boundary": _form(
        STEP1, MULTIPART.replace(b"--b", "--é".encode()), "multipart/form-data; boundary=é".encode()
    ),
    "multipart latin-1 boundary": _form(
        STEP1, MULTIPART.replace(b"--b", b"--\xe9"), b"multipart/form-data; boundary=\xe9"
    ),
    "form deflate plain body": _form(STEP1, USERNAME, Content_Encoding=b"deflate"),
    "form gzip plain body": _form(STEP1, USERNAME, Content_Encoding=b"gzip"),
    # A CSRF field that is not ASCII, with a well-formed CSRF cookie.
    "csrf field non-ascii": _form(STEP1, b"csrf_token=%C3%A9&username=john"),
    "csrf field lone surrogate": _form(STEP1, b"csrf_token=%ED%A0%80&username=john"),
    # JSON bodies.
    "json charset bogus": _json(FIRSTFACTOR, SIGN_IN, b"application/json; charset=bogus"),
    "json charset zlib": _json(FIRSTFACTOR, SIGN_IN, b"application/json; charset=zlib"),
    "json nested 3000 deep": _json(FIRSTFACTOR, DEEP),
    "json nested 3000 deep (finish)": _json("/api/reset-password/identity/finish", DEEP),
    "json deflate plain body": _json(FIRSTFACTOR, SIGN_IN, Content_Encoding=b"deflate"),
    # Host headers the portal cannot parse.
    "host \\xff sign-in page": _request("GET", "/", host=b"\xff"),
    "host list sign-in page": _request("GET", "/", host=b"127.0.0.1:9091, evil"),
    "host a:b sign-in page": _request("GET", "/", host=b"a:b"),
    "host \\xff json sign-in": _json(FIRSTFACTOR, SIGN_IN, host=b"\xff"),
    "host a:b json sign-in": _json(FIRSTFACTOR, SIGN_IN, host=b"a:b"),
    "host list logout": _request("GET", "/logout", host=b"127.0.0.1:9091, evil"),
    "host a:b api logout": _request(
        "POST", "/api/logout", (("Content-Type", b"application/json"),), b"{}", host=b"a:b"
    ),
    "host xn-- logout": _request("GET", "/logout", host=b"xn--.example.com"),
    # Redirect targets with impossible ports.
    "rd port 99999 logout": _request("GET", "/logout?rd=https://app.example.com:99999/"),
    "rd port 99999 signed in": _with_session("/?rd=https://app.example.com:99999/"),
    "rd port 99999 sign-in form": _form("/", USERNAME + b"&password=x&rd=" + IMPOSSIBLE_PORT),
    "targetURL port 99999": _json(
        FIRSTFACTOR,
        b'{"username": "john", "password": "x", "targetURL": "https://app.example.com:99999/"}',
    ),
    # A non-ASCII Expect header, on any route.
    "expect non-ascii health": _request("GET", "/api/health", (("Expect", b"\xe9"),)),
    "expect non-ascii sign-in page": _request("GET", "/", (("Expect", b"\xe9"),)),
    "expect non-ascii json": _json(FIRSTFACTOR, SIGN_IN, Expect=b"\xe9"),
    # A reset token with a valid signature whose iat is 10^400.
    "token iat 10^400 step2": _huge_iat_cookie,
    "token iat 10^400 api": _huge_iat_json,
}


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzPortal]:
    """The plain portal, started once for these cases, with a live session."""
    running = start_portal(Path(tmp_path_factory.mktemp("known")) / "plain", "plain")
    try:

        async def prepare() -> None:
            await wait_until_healthy(running)
            await refresh_target(running)

        asyncio.run(prepare())
        yield running
    finally:
        stop_portal(running)


@pytest.mark.parametrize("build", CASES.values(), ids=CASES.keys())
def test_a_bad_request_gets_a_4xx_and_a_short_log_line(portal: FuzzPortal, build: Build) -> None:
    """The issue's example gets an answer below 500, and at most a short line in the log."""
    raw = build(portal)
    before = portal.log_size()
    answer = asyncio.run(exchange(raw, portal.port, timeout=10, linger=2.0))
    after = wait_for_quiet_log(portal, before)
    logged = portal.read_log(before)
    said = f"{answer.status_class} {answer.status} for {raw[:300]!r}\n{logged[-2000:]}"
    assert portal.process.poll() is None, f"the portal died: {said}"
    assert not answer.hung, f"no answer within 10 s: {said}"
    assert answer.status is not None and answer.status < 500, said
    assert not tracebacks(logged), f"a traceback in the log: {said}"
    assert after - before <= LOG_BYTES_AT_MOST, f"{after - before} bytes logged: {said}"
