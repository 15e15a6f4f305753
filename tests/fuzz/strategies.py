"""Hypothesis strategies that build raw HTTP/1.1 requests for every route of the portal.

A request is kept as bytes, written as the generator chose them: header values and bodies may
hold non-ASCII text, invalid UTF-8, unknown charsets, encodings that do not match the body,
broken multipart, JSON nested thousands deep, JWTs signed with the portal's test secret whose
claims are absurd. The framing is always complete (an exact Content-Length, a finished chunked
body, or a header the parser refuses outright), so a server that stops answering is hanging,
not waiting for bytes that will never come. Simple choices come first in every draw, so
hypothesis shrinks a failing request towards a short, readable one.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import hashlib
import hmac
import json
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast
from urllib.parse import quote, quote_plus

from hypothesis import strategies as st

BodyKind = Literal["none", "form", "json", "authz"]
T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    """One path of the portal, the methods it answers and what its body is made of."""

    path: str
    methods: tuple[str, ...]
    body: BodyKind
    fields: tuple[str, ...] = ()
    query: tuple[str, ...] = ()


SIGNIN_FORM = ("username", "password", "remember_me", "rd", "captcha")
STEP1_FORM = ("username", "captcha")
STEP2_FORM = ("password", "password_confirm", "captcha")
ANSWERS_FORM = ("username", "ticket", "answer_0", "answer_1", "answer_2")
SETTINGS_FORM = (
    "action",
    "password",
    "question_0",
    "answer_0",
    "question_1",
    "answer_1",
    "question_2",
    "answer_2",
)
# An AuthenticationResponseJSON's or RegistrationResponseJSON's fields, and the portal's own.
WEBAUTHN_JSON = ("id", "rawId", "type", "response", "description", "targetURL", "keepMeLoggedIn")
FIRSTFACTOR_JSON = ("username", "password", "keepMeLoggedIn", "targetURL", "captcha")

# The whole URL surface (portal/routes.py) with the security questions, the self-hosted CAPTCHA
# and the identity token switched on; test_fuzz_routes checks that nothing the app registers is
# missing.
ROUTES: tuple[Route, ...] = (
    Route("/", ("GET", "POST"), "form", SIGNIN_FORM, ("rd",)),
    Route("/api/firstfactor", ("POST",), "json", FIRSTFACTOR_JSON),
    Route("/logout", ("GET",), "none", (), ("rd",)),
    Route("/language/{code}", ("GET",), "none", (), ("back",)),
    Route("/api/logout", ("POST",), "json"),
    Route("/api/authz/auth-request", ("GET",), "authz"),
    Route("/api/verify", ("GET",), "authz"),
    # With identity_token.enabled (issue 17).
    Route("/.well-known/jwks.json", ("GET",), "none"),
    Route("/api/health", ("GET",), "none"),
    Route("/api/openapi.yml", ("GET",), "none"),
    Route("/api/captcha/challenge", ("GET",), "none"),
    Route("/static/portal.css", ("GET",), "none"),
    Route("/reset-password/step1", ("GET", "POST"), "form", STEP1_FORM),
    Route("/reset-password/step2", ("GET", "POST"), "form", STEP2_FORM, ("token",)),
    Route("/revoke/reset-password", ("GET", "POST"), "form", (), ("token",)),
    Route("/reset-password/step1/sent", ("GET",), "none"),
    Route("/reset-password/done", ("GET",), "none"),
    Route("/reset-password/cancelled", ("GET",), "none"),
    Route(
        "/api/reset-password/identity/start", ("POST",), "json", ("username", "answers", "captcha")
    ),
    Route("/api/reset-password/identity/finish", ("POST",), "json", ("token",)),
    Route("/api/reset-password", ("POST", "DELETE"), "json", ("token", "password", "captcha")),
    Route("/reset-password/step1/answers", ("POST",), "form", ANSWERS_FORM),
    Route("/api/reset-password/identity/questions", ("POST",), "json", ("username", "captcha")),
    Route("/settings/security-questions", ("GET", "POST"), "form", SETTINGS_FORM),
    Route("/settings/security-questions/saved", ("GET",), "none"),
    Route("/settings/security-questions/removed", ("GET",), "none"),
    Route("/api/user/session/elevation", ("GET", "POST", "PUT"), "json", ("otc",)),
    Route("/api/user/session/elevation/{delete_id}", ("DELETE",), "json"),
    Route("/settings/elevate", ("GET", "POST"), "form", ("next",), ("next",)),
    Route("/settings/elevate/code", ("GET", "POST"), "form", ("otc", "next"), ("next",)),
    Route("/revoke/one-time-code", ("GET", "POST"), "form", ("id",), ("id",)),
    Route("/revoke/one-time-code/done", ("GET",), "none"),
    Route("/api/state", ("GET",), "none"),
    Route("/api/user/info", ("GET",), "none"),
    Route("/2fa/one-time-password", ("GET", "POST"), "form", ("token", "rd"), ("rd",)),
    Route("/api/secondfactor/totp", ("POST", "DELETE"), "json", ("token", "targetURL")),
    Route("/api/secondfactor/totp/register", ("PUT", "POST"), "json", ("token",)),
    Route("/settings/one-time-password", ("GET", "POST"), "form", ("action", "token")),
    Route("/settings/one-time-password/registered", ("GET",), "none"),
    Route("/settings/one-time-password/removed", ("GET",), "none"),
    Route("/settings", ("GET",), "none"),
    Route("/settings/sessions", ("POST",), "form", ("action", "id")),
    Route("/api/user/sessions", ("GET", "DELETE"), "json"),
    Route("/api/user/sessions/{session_id}", ("DELETE",), "json"),
    Route("/api/change-password", ("POST",), "json", ("old_password", "new_password")),
    Route(
        "/settings/password",
        ("GET", "POST"),
        "form",
        ("current_password", "password", "password_confirm"),
    ),
    Route("/settings/password/changed", ("GET",), "none"),
    # Passkeys (issue 16); the passkey sign-in with webauthn.enable_passkey_login.
    Route("/api/secondfactor/webauthn/credential/register", ("PUT", "POST"), "json", WEBAUTHN_JSON),
    Route("/api/secondfactor/webauthn/credentials", ("GET",), "none"),
    Route(
        "/api/secondfactor/webauthn/credential/{credential_id}",
        ("PUT", "DELETE"),
        "json",
        ("description",),
    ),
    Route("/api/secondfactor/webauthn", ("GET", "POST"), "json", WEBAUTHN_JSON),
    Route("/api/firstfactor/passkey", ("GET", "POST"), "json", WEBAUTHN_JSON),
    Route("/2fa/password", ("GET", "POST"), "form", ("password", "rd"), ("rd",)),
    Route("/api/firstfactor/reauthenticate", ("POST",), "json", ("password", "targetURL")),
    Route("/api/reset-password/webauthn", ("GET",), "json", ("token",)),
    Route("/reset-password/step2/webauthn", ("GET",), "none"),
    Route("/settings/passkeys", ("GET", "POST"), "form", ("action", "id", "description")),
    Route("/settings/passkeys/added", ("GET",), "none"),
    Route("/settings/passkeys/renamed", ("GET",), "none"),
    Route("/settings/passkeys/removed", ("GET",), "none"),
    # Sign-in with a partner's signed token (issue 17), with trusted_issuers.
    Route("/sso/jwt", ("GET", "POST"), "form", ("rd",), ("token", "rd")),
    Route("/api/sso/jwt", ("POST",), "json", ("token", "targetURL")),
)
OTHER_PATHS = (
    "/nowhere",
    "/api/nowhere",
    "/static/",
    "/static/vendor/altcha/altcha.js",
    "/static/../pyproject.toml",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/vendor/altcha/../../../portal/app.py",
    "/static/\xff",
    "//api/health",
    "/API/FIRSTFACTOR",
    "/api/%66irstfactor",
    "/reset-password/step2/",
    "/%00",
    "/%ff%fe",
    "*",
)
METHODS = (
    "GET",
    "POST",
    "HEAD",
    "OPTIONS",
    "DELETE",
    "PUT",
    "PATCH",
    "TRACE",
    "PROPFIND",
    "get",
    "X" * 64,
)
BROKEN_METHODS = ("G\xffT", "POST ", "", "CONNECT", "GET\x00")

CSRF_COOKIE = "portal_csrf"
SESSION_COOKIE = "portal_session"
RESET_COOKIES = ("portal_reset", "portal_revoke")
USERS = ("john", "bob", "JOHN ", " john", "john.doe@authelia.com", "nobody", "james")
STRINGS = (
    "",
    "password",
    "é",
    "a" * 300,
    "\x00",
    "\ud800",
    "\u202e\u0301",
    "𝔍𝔬𝔥𝔫",
    "ǅ",
    "ﬀ" * 40,
    "%",
    "%ff",
    "\r\nSet-Cookie: x=1",
    "<script>alert(1)</script>",
    "{{7*7}}",
    "' OR 1=1 --",
    "*)(uid=*",
    "../../etc/passwd",
    "1" * 2000,
)
CHARSETS = (
    "utf-8",
    "UTF-8",
    "latin-1",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "ascii",
    "bogus",
    "rot13",
    "base64",
    "hex",
    "zlib",
    "bz2",
    "uu",
    "quopri",
    "idna",
    "punycode",
    "utf-8-sig",
    "cp1252",
    "shift_jis",
    "utf-7",
    "\xff",
    "",
    '"utf-8"',
    "utf8;x",
    "x" * 200,
)
ENCODINGS = (
    "gzip",
    "deflate",
    "br",
    "identity",
    "gzip, deflate",
    "x-gzip",
    "zstd",
    "bogus",
    "\xe9",
    "",
)
HOSTS = (
    "127.0.0.1",
    "auth.example.com",
    "app.example.com",
    "localhost",
    "\xff",
    "127.0.0.1:9091, evil",
    "a:b",
    "[::1]",
    "[::1",
    "",
    ":80",
    "example.com:99999",
    "é.example.com",
    "xn--.example.com",
    "a..b",
    "host:-1",
    "[fe80::1%25eth0]:80",
    "127.0.0.1:0x50",
    "a" * 300,
)
EXPECTS = ("100-continue", "100-Continue", "\xe9", "\xff\xfe", "bogus", "")
URL_HOSTS = (
    "app.example.com",
    "example.com",
    "public.example.com",
    "auth.example.com",
    "evil.org",
    "127.0.0.1",
    "[::1]",
    "APP.EXAMPLE.COM",
    "app.example.com.",
    "xn--",
    "%zz.example.com",
    "a..example.com",
    "é.example.com",
    "\x00.example.com",
    "evil.org\\@app.example.com",
    "user:pw@app.example.com",
    "",
)
URL_PORTS = (
    "",
    ":443",
    ":0",
    ":65535",
    ":65536",
    ":99999",
    ":-1",
    ":1e3",
    ":",
    ":" + "9" * 30,
    ":٣",
)
URL_SCHEMES = (
    "https://",
    "http://",
    "HTTPS://",
    "//",
    "javascript:",
    "ftp://",
    "https:/",
    "https:\\\\",
    "",
)


@dataclass(frozen=True)
class Target:
    """What the generator knows about the portal under fuzz (its address, secret, live state)."""

    port: int
    jwt_secret: str
    issuer: str
    sessions: tuple[str, ...] = ()
    reset_tokens: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ROUTES  # the ones this portal serves


@dataclass(frozen=True)
class RawRequest:
    """One HTTP request as it goes on the wire, with the route it was built for."""

    method: str
    route: str
    request_line: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""
    framing: tuple[bytes, ...] = field(default=(b"length",))

    def to_bytes(self) -> bytes:
        """Return the request's bytes, framing included."""
        lines = [self.request_line]
        lines += [name + b": " + value for name, value in self.headers]
        body = self.body
        kind = self.framing[0]
        if kind == b"length":
            if body:
                lines.append(b"Content-Length: " + str(len(body)).encode())
        elif kind == b"chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = _chunked(body, self.framing[1:])
        elif kind == b"header":  # an explicit, possibly contradictory, framing header
            lines.append(self.framing[1])
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _chunked(body: bytes, extension: tuple[bytes, ...]) -> bytes:
    ext = extension[0] if extension else b""
    pieces = [body[i : i + 997] for i in range(0, len(body), 997)]
    out = b"".join(b"%X%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces)
    return out + b"0\r\n\r\n"


_sampled_from = functools.cache(st.sampled_from)


def _choice(options: tuple[T, ...]) -> st.SearchStrategy[T]:
    """Return sampled_from(options), built once per tuple (hypothesis validates each new one)."""
    return cast(st.SearchStrategy[T], _sampled_from(options))


def rarely(draw: st.DrawFn, n: int) -> bool:
    """Draw True one time in n; shrinks to False, so a minimal example drops the odd choice."""
    return draw(st.integers(0, n - 1)) == n - 1


# -- text and bytes ------------------------------------------------------------------------------


def _encode(text: str, how: str) -> bytes:
    """Turn text into bytes as a sloppy or hostile client would (lone surrogates kept)."""
    if how == "latin-1":
        return text.encode("latin-1", "replace")
    return text.encode("utf-8", "surrogatepass")


def _utf16_text(data: bytes) -> str:
    """Read bytes as UTF-16 code units: any code point of the BMP, lone surrogates included."""
    return data[: len(data) // 2 * 2].decode("utf-16-le", "surrogatepass")


def _ascii_text(data: bytes) -> str:
    return bytes(byte & 0x7F for byte in data).decode("ascii")


# One draw each (a string of bytes read as text), so a request costs few hypothesis draws.
texts = st.one_of(
    _choice(USERS + STRINGS),
    st.binary(max_size=48).map(_utf16_text),
    st.binary(max_size=80).map(_ascii_text),
)
raw_bytes = st.binary(max_size=48)


@functools.cache
@st.composite
def header_values(draw: st.DrawFn, choices: Sequence[str] = ()) -> bytes:
    """Draw a header value: one of choices, or text in some encoding, or raw bytes."""
    pick = draw(st.integers(0, 3)) if choices else draw(st.integers(1, 3))
    if pick == 0:
        return draw(_choice(tuple(choices))).encode("latin-1", "replace")
    if pick == 1:
        return _encode(draw(texts), draw(_choice(("utf-8", "latin-1"))))
    if pick == 2:
        return draw(raw_bytes).replace(b"\r", b"").replace(b"\n", b"")
    return draw(raw_bytes)  # CR and LF left in: a broken header line


@functools.cache
@st.composite
def urls(draw: st.DrawFn) -> str:
    """Draw a redirect target or an original URL: sane, hostile or impossible."""
    scheme = draw(_choice(URL_SCHEMES))
    host = draw(st.one_of(_choice(URL_HOSTS), st.binary(max_size=16).map(_utf16_text)))
    port = draw(_choice(URL_PORTS))
    path = draw(_choice(("/", "", "/admin", "/a b", "/%zz", "/\\evil", "/é", "/../..")))
    rest = draw(_choice(("", "?q=1", "#frag", "?rd=https://evil.org", "\t", "\x00")))
    return scheme + host + port + path + rest


# -- tokens --------------------------------------------------------------------------------------

TIME_VALUES = (
    "NOW",
    "NOW+3600",
    "NOW-3600",
    "0",
    "-1",
    "1" + "0" * 400,
    "-1" + "0" * 400,
    "9223372036854775808",
    "1e400",
    "-1e400",
    "1.5",
    "NaN",
    "Infinity",
    "true",
    "null",
    '"1700000000"',
    "[]",
    "{}",
    "9" * 5000,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(header_json: str, payload_json: str, secret: str, algorithm: str = "HS256") -> str:
    """Return a compact JWT of exactly these JSON texts, HMAC-signed with the secret."""
    digest = {"HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(algorithm, hashlib.sha256)
    signing_input = f"{_b64(header_json.encode())}.{_b64(payload_json.encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def _time_literal(value: str) -> str:
    now = int(time.time())
    if value.startswith("NOW"):
        return str(now + int(value[3:] or 0))
    return value


_TIME_CLAIM = _choice(TIME_VALUES).map(_time_literal)
_EXTREME_TIME = _choice(
    ("1" + "0" * 400, "1e400", "-1" + "0" * 400, "9223372036854775808", "9" * 5000, "NaN")
)
_ODD_CLAIM = st.one_of(
    _TIME_CLAIM,
    _choice(
        (
            json.dumps("portal:revoke-reset-password"),
            '["portal:reset-password"]',
            json.dumps("RevokeResetPassword"),
            json.dumps("a\x00b"),
            '""',
            json.dumps("é" * 3),
            "1",
        )
    ),
    texts.map(json.dumps),
)


@functools.cache
@st.composite
def claim_sets(
    draw: st.DrawFn, target: Target, base: tuple[tuple[str, str], ...] | None = None
) -> str:
    """Draw a payload's JSON text: each claim a JSON literal, some absurd, some missing."""
    literal = json.dumps
    claims: dict[str, str] = (
        dict(base)
        if base
        else {
            "iss": literal(target.issuer),
            "aud": literal("portal:reset-password"),
            "sub": literal("john"),
            "iat": _time_literal("NOW"),
            "nbf": _time_literal("NOW"),
            "exp": _time_literal("NOW+3600"),
            "jti": literal("A" * 22),
            "action": literal("ResetPassword"),
            "pwd": literal("x" * 43),
        }
    )
    if draw(st.booleans()):  # a time claim out of any range first: the likeliest trouble
        claims[draw(_choice(("iat", "nbf", "exp")))] = draw(_EXTREME_TIME)
    for name in draw(st.lists(_choice(tuple(sorted(claims))), max_size=3, unique=True)):
        if draw(st.booleans()):
            del claims[name]
        else:
            claims[name] = draw(_ODD_CLAIM)
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in claims.items()) + "}"


def _payload_of(token: str) -> tuple[tuple[str, str], ...] | None:
    try:
        part = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, IndexError):
        return None
    if not isinstance(payload, dict):
        return None
    return tuple((k, json.dumps(v)) for k, v in payload.items())


@functools.cache
@st.composite
def tokens(draw: st.DrawFn, target: Target) -> str:
    """Draw a reset token: a real one, one re-signed with odd claims, or JWT-shaped junk."""
    header = '{"alg":"HS256","typ":"JWT"}'
    kind = draw(st.integers(0, 9))
    if kind == 0 and target.reset_tokens:
        return draw(_choice(target.reset_tokens))
    if kind <= 2 and target.reset_tokens:
        # A real token's claims (its jti is on record) with one made absurd, signed again.
        base = _payload_of(draw(_choice(target.reset_tokens)))
        return sign(header, draw(claim_sets(target, base)), target.jwt_secret)
    if kind <= 6:
        return sign(header, draw(claim_sets(target)), target.jwt_secret)
    if kind == 7:
        odd_header = draw(
            _choice(
                (
                    '{"alg":"none"}',
                    '{"alg":"HS512","typ":"JWT"}',
                    '{"alg":"HS256","kid":"../../x"}',
                    '{"alg":null}',
                    '{"alg":["HS256"]}',
                    '{"alg":"HS256","typ":"JWS"}',
                    '{"alg":"HS256","crit":["b64"]}',
                    "[]",
                    "0",
                )
            )
        )
        return sign(odd_header, draw(claim_sets(target)), target.jwt_secret, "HS512")
    if kind == 8:
        return draw(
            _choice(
                (
                    "a.b.c",
                    "a.b",
                    "...",
                    "e30.e30.",
                    "e30.bnVsbA.x",
                    "=.=.=",
                    "ey" * 3000,
                    "ä.b.c",
                    "a.b.c.d.e",
                )
            )
        )
    return draw(texts)


# -- bodies --------------------------------------------------------------------------------------


@functools.cache
@st.composite
def field_values(draw: st.DrawFn, target: Target, name: str) -> str:
    """Draw a value for a named form or JSON field, shaped like what the field takes."""
    if name in ("rd", "targetURL") and draw(st.booleans()):
        return draw(urls())
    if name == "token" and not rarely(draw, 5):
        return draw(tokens(target))
    if name in ("username",) and draw(st.booleans()):
        return draw(_choice(USERS))
    if name in ("password", "password_confirm") and draw(st.booleans()):
        return draw(_choice(("password", "correct horse battery staple 42", "")))
    if name == "captcha" and draw(st.booleans()):
        challenge = {
            "algorithm": draw(_choice(("SHA-256", "PBKDF2/SHA-256", "x", 1))),
            "challenge": draw(texts),
            "salt": draw(texts),
            "signature": draw(texts),
            "number": draw(_choice((1, -1, 10**400))),
        }
        return base64.b64encode(json.dumps(challenge).encode()).decode()
    if name == "action":
        return draw(_choice(("remove", "save", "")))
    return draw(texts)


@functools.cache
@st.composite
def csrf_pairs(draw: st.DrawFn) -> tuple[str | None, str | None]:
    """Draw the CSRF cookie and form field: matching and well-formed, or not."""
    token = _b64(draw(st.binary(min_size=32, max_size=32)))  # 43 characters, as minted
    kind = draw(st.integers(0, 9))
    if kind <= 6:
        return token, token
    if kind == 7:
        return token, draw(_choice(("é", "\ud800", token[:-1], token + "=", "")))
    if kind == 8:
        return draw(texts), draw(texts)
    return draw(_choice(((None, token), (token, None))))


@st.composite
def form_pairs(
    draw: st.DrawFn, target: Target, fields: Sequence[str], csrf: str | None
) -> list[tuple[str, str]]:
    """Draw the (name, value) pairs of a form: its real fields, the CSRF field, extras."""
    names = [n for n in fields if not rarely(draw, 5)]  # the route's fields, most of them
    names += draw(st.lists(_choice(tuple(fields) or ("username",)), max_size=2))
    pairs = [(n, draw(field_values(target, n))) for n in names]
    if csrf is not None:
        pairs.insert(draw(st.integers(0, len(pairs))), ("csrf_token", csrf))
    if draw(st.booleans()):
        pairs.append((draw(_choice(("_charset_", "x", "", "csrf_token"))), draw(texts)))
    return pairs


def _urlencode(pairs: Sequence[tuple[str, str]], how: str) -> bytes:
    if how == "raw":  # the bytes as typed, nothing escaped
        return b"&".join(_encode(k, "utf-8") + b"=" + _encode(v, "utf-8") for k, v in pairs)
    if how == "latin-1":
        return "&".join(
            quote_plus(k, encoding="latin-1", errors="replace")
            + "="
            + quote_plus(v, encoding="latin-1", errors="replace")
            for k, v in pairs
        ).encode()
    return "&".join(
        quote_plus(k, errors="surrogatepass") + "=" + quote_plus(v, errors="surrogatepass")
        for k, v in pairs
    ).encode()


@st.composite
def multipart_bodies(draw: st.DrawFn, pairs: Sequence[tuple[str, str]]) -> tuple[str, bytes]:
    """Draw a multipart body and its boundary parameter: well-formed or broken one way."""
    boundary = draw(_choice(("fuzzboundary", "é-boundary", "", "a" * 80, 'b"q')))
    declared = boundary
    kind = draw(st.integers(0, 6))
    if kind == 1:
        declared = "other"  # the body's boundary is not the declared one
    parts = []
    for name, value in pairs:
        disposition = f'form-data; name="{name}"'
        extra = ""
        if kind == 3:
            disposition += '; filename="a.txt"'
        if kind == 4:
            extra = "Content-Type: text/plain; charset=bogus\r\n"
        if kind == 5:
            extra = "Content-Transfer-Encoding: base64\r\n"
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n{value}\r\n"
        )
    body = "".join(parts).encode("utf-8", "surrogatepass")
    if kind == 2:
        body = body[: max(0, len(body) // 2)]  # a truncated part, no closing boundary
    elif kind == 6:
        body += b"--" + boundary.encode() + b"\r\nno headers here\r\n"
    else:
        body += f"--{boundary}--\r\n".encode()
    parameter = "" if draw(st.booleans()) and kind == 0 else f"; boundary={declared}"
    if rarely(draw, 6):
        parameter = ""  # no boundary at all
    return parameter, body


_ODD_JSON = st.sampled_from(
    (True, None, 0, -1, 1.5, 10**400, [], {}, ["a", "b"], [1, None], {"a": "b"}, "x" * 5000)
)


@functools.cache
@st.composite
def json_values(draw: st.DrawFn, target: Target, name: str) -> object:
    """Draw a JSON value for a field: usually the right type, sometimes any other."""
    kind = draw(st.integers(0, 3))
    if kind <= 1:
        return draw(field_values(target, name))
    if kind == 2:
        return draw(_ODD_JSON)
    return draw(st.lists(texts, max_size=4))


@functools.cache
@st.composite
def json_bodies(draw: st.DrawFn, target: Target, fields: Sequence[str]) -> bytes:
    """Draw a JSON body: an object with the route's fields, or JSON that is hard to read."""
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        names = [n for n in fields if not rarely(draw, 5)]  # the route's fields, most of them
        body = {n: draw(json_values(target, n)) for n in names}
        return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == 6:
        depth = draw(_choice((100, 1000, 3000, 20000)))
        opener = draw(_choice(("[", '{"a":')))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if kind == 7:
        return draw(
            _choice(
                (
                    b"",
                    b"null",
                    b"[]",
                    b'"x"',
                    b"1",
                    b"{",
                    b'{"a":NaN}',
                    b'{"username":"a","username":1}',
                    b"\xef\xbb\xbf{}",
                    b'{"username":"\xff"}',
                    b'{"username":"\\ud800"}',
                    b"1" * 5000,
                    b'{"token":' + b"9" * 5000 + b"}",
                )
            )
        )
    if kind == 8:
        text = json.dumps({n: draw(texts) for n in fields})
        return text.encode(draw(_choice(("utf-16", "utf-32", "utf-16-be"))))
    return draw(raw_bytes)


def _compress(body: bytes, encoding: str, really: bool) -> bytes:
    if not really:
        return body  # the header says so, the body is plain
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body, mtime=0)
    if encoding == "deflate":
        return zlib.compress(body)
    return body


# -- the request ---------------------------------------------------------------------------------


@functools.cache
@st.composite
def addresses(draw: st.DrawFn) -> str:
    """Draw an X-Forwarded-For value: addresses in every form proxies write, or junk."""
    hops = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 9))
        if kind <= 3:
            hops.append(str(draw(st.ip_addresses(v=4))))
        elif kind <= 5:
            hops.append(str(draw(st.ip_addresses(v=6))))
        elif kind <= 7:
            address = draw(st.ip_addresses())
            port = draw(_choice(("4711", "0", "65536", "99999999999", "x", "")))
            hops.append(f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}")
        elif kind == 8:
            hops.append(
                draw(
                    _choice(
                        (
                            '"203.0.113.9"',
                            "unknown",
                            "",
                            "::ffff:10.0.0.1",
                            "_hidden",
                            "1.2.3.4.5",
                            "[::1",
                        )
                    )
                )
            )
        else:
            hops.append(draw(texts))
    return ", ".join(hops)


@functools.cache
@st.composite
def query_strings(draw: st.DrawFn, target: Target, names: Sequence[str]) -> str:
    """Draw a query string with the route's parameters (tokens, redirect targets) and junk."""
    pairs: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(_choice(tuple(names) + ("x", "rd", "token")))
        value = draw(field_values(target, name))
        how = draw(st.integers(0, 2))
        if how == 0:
            pairs.append(f"{name}={quote(value, safe='', errors='surrogatepass')}")
        elif how == 1:
            pairs.append(f"{name}={value}")  # unescaped, as typed
        else:
            pairs.append(name)
    if rarely(draw, 7):
        pairs.append(draw(_choice(("token=%ff%fe", "rd=%C3%A9", "a=%", "&&", "=x", ";"))))
    return "?" + "&".join(pairs) if pairs else ""


@st.composite
def cookie_headers(
    draw: st.DrawFn, target: Target, csrf_cookie: str | None, route: Route
) -> bytes | None:
    """Draw the Cookie header: CSRF, session and reset cookies, well-formed or not."""
    parts: list[str] = []
    if csrf_cookie is not None:
        parts.append(f"{CSRF_COOKIE}={csrf_cookie}")
    session = draw(st.integers(0, 3))
    if session == 1 and target.sessions:
        parts.append(f"{SESSION_COOKIE}={draw(_choice(target.sessions))}")
    elif session == 2:
        parts.append(f"{SESSION_COOKIE}={draw(texts)}")
    if "token" in route.query and draw(st.booleans()):
        parts.append(f"{draw(_choice(RESET_COOKIES))}={draw(tokens(target))}")
    if rarely(draw, 5):
        parts.append(draw(_choice(('a="b', "=", ";;", "x=\\", "é=é", "$Version=1"))))
    if not parts:
        return None
    return _encode("; ".join(parts), draw(_choice(("utf-8", "latin-1"))))


def _route_label(path: str) -> str:
    return path if any(route.path == path for route in ROUTES) else "other"


_CONTROL = bytes(range(32)).replace(b"\t", b"") + b"\x7f"
_UNSAFE_IN_TARGET = frozenset(range(33)) | {0x23, 0x7F} | frozenset(range(0x80, 0x100))


def _clean_value(value: bytes) -> bytes:
    """Drop the control bytes the HTTP parser refuses in a header value (non-ASCII stays)."""
    return value.translate(None, _CONTROL).strip()


def _clean_target(target: bytes) -> bytes:
    """Percent-encode what the HTTP parser refuses in a request target."""
    return b"".join(
        b"%%%02X" % byte if byte in _UNSAFE_IN_TARGET else bytes([byte]) for byte in target
    )


@functools.cache
def _optional_headers(port: int) -> dict[bytes, st.SearchStrategy[bytes]]:
    """Return the strategies of the headers a request may carry (built once per port)."""
    return {
        b"X-Forwarded-For": addresses().map(lambda a: _encode(a, "utf-8")),
        b"X-Original-URL": urls().map(lambda u: _encode(u, "utf-8")),
        b"X-Original-Method": header_values(("GET", "POST", "HEAD", "get", "")),
        b"Expect": header_values(EXPECTS),
        b"Origin": header_values(
            ("null", f"http://127.0.0.1:{port}", "https://evil.org", "http://127.0.0.1")
        ),
        b"Accept": header_values(("text/html", "application/json", "*/*")),
        b"Sec-Fetch-Site": header_values(("same-origin", "cross-site", "none")),
        b"Range": header_values(("bytes=0-10", "bytes=abc", "bytes=5-1", "bytes=-0")),
        b"If-Modified-Since": header_values(("Thu, 01 Jan 1970 00:00:00 GMT", "yesterday")),
        b"Accept-Language": header_values(("en", "*;q=x")),
        b"Connection": header_values(("close", "keep-alive", "upgrade")),
        b"X-Forwarded-Proto": header_values(("https", "http")),
        b"X-Forwarded-Host": header_values(HOSTS),
    }


@st.composite
def raw_requests(draw: st.DrawFn, target: Target) -> RawRequest:
    """Draw one complete raw request for some route of the portal under fuzz.

    One request in ten may be malformed on the wire (control bytes in headers, a broken
    request line, contradictory framing); the others are well-formed HTTP whose contents
    (headers, cookies, bodies, charsets, encodings, tokens) are what is odd, so they reach
    the portal's handlers.
    """
    wire = rarely(draw, 10)
    route = draw(_choice(target.routes))
    method = draw(_choice(route.methods))
    if rarely(draw, 6):
        method = draw(_choice(METHODS + (BROKEN_METHODS if wire else ())))
    others = OTHER_PATHS + tuple(r.path for r in ROUTES if r not in target.routes)
    path = draw(_choice(others)) if rarely(draw, 10) else route.path
    target_path = _encode(path + draw(query_strings(target, route.query)), "utf-8")
    if not wire:
        target_path = _clean_target(target_path)
    if rarely(draw, 20):
        target_path = f"http://127.0.0.1:{target.port}".encode() + target_path  # absolute form
    version = b"HTTP/1.1"
    if rarely(draw, 10):
        versions = ("HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "HTTP/0.9", "HTTP/1.1 x")
        version = draw(_choice(versions[: None if wire else 1])).encode()
    request_line = _encode(method, "utf-8") + b" " + target_path + b" " + version

    headers: list[tuple[bytes, bytes]] = []
    host = draw(_choice(HOSTS)) if rarely(draw, 5) else f"127.0.0.1:{target.port}"
    headers.append((b"Host", _encode(host, draw(_choice(("latin-1", "utf-8"))))))
    csrf_cookie, csrf_field = draw(csrf_pairs())
    cookie = draw(cookie_headers(target, csrf_cookie, route))
    if cookie is not None:
        headers.append((b"Cookie", cookie))
    optional = _optional_headers(target.port)
    wanted = draw(st.lists(_choice(tuple(optional)), max_size=3, unique=True))
    if b"X-Forwarded-For" not in wanted and (route.body == "authz" or not rarely(draw, 3)):
        wanted.insert(0, b"X-Forwarded-For")
    if b"X-Original-URL" not in wanted and route.body == "authz" and not rarely(draw, 6):
        wanted.insert(0, b"X-Original-URL")
    headers += [(name, draw(optional[name])) for name in wanted]
    if rarely(draw, 10):
        names: tuple[bytes, ...] = (b"X-Fuzz", b"Host", b"Content-Type", b"Cookie")
        if wire:
            names += (b"Bad Name", b"\xff", b"")
        headers.append((draw(_choice(names)), draw(header_values())))

    body, content_type = draw(bodies(target, route, method, csrf_field))
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    if body and rarely(draw, 8):
        encoding = draw(_choice(ENCODINGS))
        body = _compress(body, encoding, draw(st.booleans()))
        headers.append((b"Content-Encoding", _encode(encoding, "latin-1")))
    if not wire:
        headers = [(name, _clean_value(value)) for name, value in headers]
    framing: tuple[bytes, ...] = (b"length",)
    if rarely(draw, 10):
        framings: tuple[tuple[bytes, ...], ...] = ((b"chunked", b""), (b"chunked", b";ext=1"))
        if wire:
            framings += (
                (b"header", b"Content-Length: abc"),
                (b"header", b"Content-Length: -1"),
                (b"header", b"Content-Length: 0\r\nContent-Length: 5"),
                (b"header", b"Transfer-Encoding: gzip"),
                (b"header", b"Transfer-Encoding: chunked\r\nContent-Length: 3"),
                (b"header", b"Transfer-Encoding: chunked, chunked"),
            )
        framing = draw(_choice(framings))
        if framing[0] == b"header":
            body = b""  # the parser refuses the framing; nothing more to wait for
    # Mostly one request per connection: the server closes it once it has logged everything
    # for the request, so a late log line is never blamed on the next request.
    if not rarely(draw, 5) and not any(n.lower() == b"connection" for n, _ in headers):
        headers.append((b"Connection", b"close"))
    return RawRequest(
        method=method,
        route=_route_label(path),
        request_line=request_line,
        headers=tuple(headers),
        body=body,
        framing=framing,
    )


@st.composite
def bodies(
    draw: st.DrawFn, target: Target, route: Route, method: str, csrf: str | None
) -> tuple[bytes, bytes | None]:
    """Draw a body and its Content-Type: the route's own kind mostly, any other sometimes."""
    kind: str = route.body
    if method in ("GET", "HEAD") and not rarely(draw, 6):
        kind = "none"
    elif rarely(draw, 5):
        kind = draw(_choice(("none", "form", "multipart", "json", "bytes")))
    if kind == "form" and rarely(draw, 4):
        kind = "multipart"
    charset = draw(_choice(CHARSETS)) if rarely(draw, 4) else None
    fields = route.fields or ("username", "password", "token")
    if kind in ("none", "authz"):
        return b"", None
    if kind == "bytes":
        media = draw(
            _choice(
                (
                    "application/octet-stream",
                    "application/json",
                    "application/x-www-form-urlencoded",
                    "text/plain",
                )
            )
        )
        return draw(st.binary(max_size=200)), _content_type(media, charset, "")
    if kind == "json":
        media = "application/json"
        if rarely(draw, 6):
            media = draw(
                _choice(
                    ("text/plain", "application/json-patch+json", "APPLICATION/JSON", "", "json")
                )
            )
        return draw(json_bodies(target, fields)), _content_type(media, charset, "")
    pairs = draw(form_pairs(target, fields, csrf))
    if kind == "multipart":
        parameter, body = draw(multipart_bodies(pairs))
        return body, _content_type("multipart/form-data", charset, parameter)
    how = draw(_choice(("utf-8", "raw", "latin-1")))
    body = _urlencode(pairs, how)
    if charset is not None and charset in ("utf-16", "utf-32", "utf-16-le"):
        body = body.decode("latin-1").encode(charset)
    return body, _content_type("application/x-www-form-urlencoded", charset, "")


def _content_type(media: str, charset: str | None, extra: str) -> bytes:
    value = media
    if charset is not None:
        value += f"; charset={charset}"
    return _encode(value + extra, "utf-8")


# -- recombination (bench/fuzz.py) ---------------------------------------------------------------


def recombine(request: RawRequest, donor: RawRequest, rng: random.Random) -> RawRequest:
    """Return a variant of request with one part taken from donor (or one header dropped).

    Hypothesis draws a request in milliseconds; this costs microseconds, so a long run can
    send many requests per drawn one, each a new mix of parts the generator made.
    """
    change = rng.randrange(6)
    headers = list(request.headers)
    if change == 0:  # another request's body, with its own Content-Type and Content-Encoding
        kept = [h for h in headers if h[0].lower() not in _BODY_HEADERS]
        moved = [h for h in donor.headers if h[0].lower() in _BODY_HEADERS]
        return dataclasses.replace(
            request, headers=tuple(kept + moved), body=donor.body, framing=donor.framing
        )
    if change == 1:  # another request's path and query, with this one's method
        ours, theirs = request.request_line.split(b" "), donor.request_line.split(b" ")
        if len(ours) == 3 and len(theirs) == 3:
            line = b" ".join((ours[0], theirs[1], ours[2]))
            return dataclasses.replace(request, request_line=line, route=donor.route)
        return request
    if change == 2 and len(headers) > 1:  # one header fewer
        del headers[rng.randrange(1, len(headers))]
    elif donor.headers:  # one of the donor's headers, replacing ours of the same name
        name, value = rng.choice(donor.headers)
        if change == 3:
            headers = [h for h in headers if h[0].lower() != name.lower()]
        headers.insert(rng.randrange(len(headers) + 1), (name, value))
    return dataclasses.replace(request, headers=tuple(headers))


_BODY_HEADERS = frozenset({b"content-type", b"content-encoding"})
