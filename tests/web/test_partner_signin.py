"""Sign-in with a partner's signed token (trusted_issuers, issue 17), told over HTTP.

Tokens come from the libraries partners use: Node's jsonwebtoken (a shared secret, HS256) and
joserfc (an EC P-256 key, ES256, its public key given in PEM or served as a JWKS by a real
aiohttp server on a loopback port). Odd tokens an attacker would send are built with PyJWT or by
hand. Every refusal gets the same status and body; the audit says why.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt as pyjwt
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestServer
from joserfc import jwt as jose_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from tests.conftest import START
from tests.integration.node import run_node
from tests.web.conftest import (
    PORTAL_URL,
    Client,
    Portal,
    StartPortal,
    audit_events,
    csrf_of,
    has_session,
    signed_in,
)
from tests.web.test_reset_postgres import on_postgres
from tests.web.test_second_factor_signin import code_now, register_totp

SECRET = "partner-shared-secret-" + "s" * 42  # 64 bytes: HS256 to HS512 would all accept it
HS_ISSUER = "https://shop.example.net"
EC_ISSUER = "https://crm.example.org"
JWKS_ISSUER = "https://hr.example.com"
PRIVATE = "http://127.0.0.1/private"
SECURE = "http://127.0.0.1/secure/board"
RULES: dict[str, Any] = {
    "default_policy": "deny",
    "rules": [
        {"domain": "127.0.0.1", "resources": ["^/secure"], "policy": "two_factor"},
        {"domain": "127.0.0.1", "policy": "one_factor"},
    ],
}
MINUTE_AGO, NOW = int(START) - 60, int(START)
REFUSED = {"status": "KO", "message": "This sign-in link is invalid or has expired."}
EC_KEY = ECKey.generate_key("P-256")
JWKS_KEY = ECKey.generate_key("P-256", parameters={"kid": "hr-2026"})


# --- the partners ---------------------------------------------------------------------------


@dataclass
class JwksServer:
    """A partner's JWKS endpoint on a loopback port, recording every request it gets."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    raw: bytes | None = None  # sent as is instead of the document, when set


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    state = JwksServer(url="")
    state.document = dict(KeySet([JWKS_KEY]).as_dict(private=False))

    async def serve(request: web.Request) -> web.Response:
        state.requests.append(
            {"method": request.method, "path": request.path_qs, "headers": dict(request.headers)}
        )
        if state.raw is not None:
            return web.Response(
                body=state.raw, status=state.status, content_type="application/json"
            )
        return web.json_response(state.document, status=state.status)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("/.well-known/jwks.json"))
    yield state
    await server.close()


def partners(jwks_url: str | None = None, **hs_overrides: Any) -> list[dict[str, Any]]:
    """The trusted_issuers an admin writes: a shared-secret shop, a CRM with a PEM key, and an
    HR system publishing a JWKS (when its URL is given)."""
    found: list[dict[str, Any]] = [
        {
            "name": "Shop",
            "issuer": HS_ISSUER,
            "algorithms": ["HS256"],
            "secret": SECRET,
            **hs_overrides,
        },
        {
            "name": "CRM",
            "issuer": EC_ISSUER,
            "algorithms": ["ES256"],
            "public_keys": [EC_KEY.as_pem(private=False).decode()],
        },
    ]
    if jwks_url:
        found.append(
            {"name": "HR", "issuer": JWKS_ISSUER, "algorithms": ["ES256"], "jwks_url": jwks_url}
        )
    return found


@pytest.fixture
async def portal(start_portal: StartPortal, jwks_server: JwksServer) -> Portal:
    return await start_portal(access_control=RULES, trusted_issuers=partners(jwks_server.url))


def claims(issuer: str = HS_ISSUER, jti: str = "order-1", **changes: Any) -> dict[str, Any]:
    """A partner's claims at the fake clock's time: john, valid for a minute."""
    now = int(START)
    base = {"iss": issuer, "aud": PORTAL_URL, "sub": "john", "iat": now, "exp": now + 60}
    base["jti"] = jti
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def node_token(**options: Any) -> str:
    """Mint an HS256 token the way a Node partner does, with jsonwebtoken."""
    script = """
const jwt = require("jsonwebtoken");
const input = JSON.parse(require("fs").readFileSync(0));
const token = jwt.sign({ iat: input.iat }, input.secret, {
  algorithm: "HS256", expiresIn: 60, issuer: input.iss, audience: input.aud,
  subject: input.sub, jwtid: input.jti,
});
console.log(JSON.stringify(token));
"""
    data = {"secret": SECRET, "iat": int(START), "iss": HS_ISSUER, "aud": PORTAL_URL}
    data.update({"sub": "john", "jti": "node-1", **options})
    token: str = run_node(script, data)
    return token


def ec_token(**changes: Any) -> str:
    """Mint an ES256 token with joserfc and the CRM's EC key."""
    return jose_jwt.encode({"alg": "ES256"}, claims(EC_ISSUER, **changes), EC_KEY)


def jwks_token(**changes: Any) -> str:
    """Mint an ES256 token with joserfc and the HR system's published key (its kid)."""
    header = {"alg": "ES256", "kid": "hr-2026"}
    return jose_jwt.encode(header, claims(JWKS_ISSUER, **changes), JWKS_KEY)


def hs_token(
    headers: dict[str, Any] | None = None, secret: str = SECRET, algorithm: str = "HS256", **c: Any
) -> str:
    """Mint a shop token with PyJWT (for the odd ones an attacker sends)."""
    return pyjwt.encode(claims(**c), secret, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token() -> str:
    """A token with `alg: none` and no signature (RFC 7519 section 6)."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims()).encode())}."


def signed_by_hand(header: dict[str, Any], key: bytes = SECRET.encode()) -> str:
    """An HS256-signed shop token with exactly this header (PyJWT rewrites some fields)."""
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims()).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def nested_header(depth: int = 2000) -> str:
    """A shop token whose header is JSON nested deeper than Python's parser recurses."""
    head = _b64(b'{"alg":"HS256","x":' + b"[" * depth + b"]" * depth + b"}")
    return f"{head}.{_b64(json.dumps(claims()).encode())}.AAAA"


def confused_token() -> str:
    """An HS256 token whose HMAC key is the CRM's public key in PEM (algorithm confusion)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims(EC_ISSUER)).encode())
    key = EC_KEY.as_pem(private=False)
    mac = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


# --- what a browser and a script do -----------------------------------------------------------


async def open_partner_link(client: Client, token: str, rd: str = PRIVATE) -> ClientResponse:
    """Open the partner's link; the first answer (its 303) is in `history`."""
    response = await client.get("/sso/jwt", params={"token": token, "rd": rd})
    return response


async def confirm(client: Client, page: ClientResponse) -> ClientResponse:
    """Press Continue on the confirmation page."""
    html = await page.text()
    rd = html.split('name="rd" value="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    return await client.post(
        "/sso/jwt", data={"csrf_token": csrf_of(html), "rd": rd}, allow_redirects=False
    )


async def api_sign_in(client: Client, token: str, target: str = PRIVATE) -> ClientResponse:
    return await client.post("/api/sso/jwt", json={"token": token, "targetURL": target})


# --- accepted -------------------------------------------------------------------------------


async def test_a_node_partner_link_moves_the_token_out_and_asks_before_signing_in(
    portal: Portal,
) -> None:
    client = portal.client
    token = node_token()

    first = await client.get(
        "/sso/jwt", params={"token": token, "rd": PRIVATE}, allow_redirects=False
    )

    assert first.status == 303
    assert token not in first.headers["Location"]
    location = urlsplit(first.headers["Location"])
    assert (location.path, parse_qs(location.query)) == ("/sso/jwt", {"rd": [PRIVATE]})
    cookie = first.cookies["portal_sso_jwt"]
    assert cookie.value == token
    assert cookie["httponly"] and cookie["path"] == "/sso/jwt"
    assert cookie["samesite"] == "Lax" and 0 < int(cookie["max-age"]) <= 140
    assert not has_session(first)

    page = await client.get(first.headers["Location"], allow_redirects=False)
    html = await page.text()
    assert page.status == 200
    assert "Continue as <strong>John Doe</strong> (john) to" in html
    assert PRIVATE in html and "Shop" in html
    assert token not in html
    assert await signed_in(client) == 401, "opening the link signs nobody in"

    done = await confirm(client, page)

    assert done.status == 303
    assert done.headers["Location"] == PRIVATE
    assert has_session(done)
    assert await signed_in(client) == 200
    assert done.cookies["portal_sso_jwt"].value == "", "the used token's cookie is dropped"


async def test_an_ec_token_from_joserfc_signs_in_through_the_api(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    response = await api_sign_in(portal.client, ec_token())

    assert response.status == 200
    assert await response.json() == {"status": "OK", "data": {"redirect": PRIVATE}}
    assert has_session(response)
    assert await signed_in(portal.client) == 200
    [succeeded] = audit_events(caplog, "signin_succeeded")
    assert succeeded["method"] == "partner" and succeeded["partner"] == "CRM"
    assert succeeded["username"] == "john"
    state = await (await portal.client.get("/api/state")).json()
    assert state["data"]["authentication_level"] == 1


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [("RS256", RSAKey.generate_key(2048)), ("EdDSA", OKPKey.generate_key("Ed25519"))],
)
async def test_rsa_and_eddsa_partners_sign_in_and_a_kid_is_the_keys_thumbprint(
    start_portal: StartPortal, algorithm: str, key: Any
) -> None:
    partner = {
        "name": "ERP",
        "issuer": "https://erp.example.com",
        "algorithms": [algorithm],
        "public_keys": [key.as_pem(private=False).decode()],
    }
    portal = await start_portal(access_control=RULES, trusted_issuers=[partner])

    def token(jti: str, kid: str | None) -> str:
        header = {"alg": algorithm, **({"kid": kid} if kid else {})}
        erp = claims("https://erp.example.com", jti=jti)
        # joserfc asks for EdDSA by name and warns: RFC 9864 deprecates it for "Ed25519", which
        # PyJWT does not know yet; "EdDSA" is what partners' libraries (jose, PyJWT) still send.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            return jose_jwt.encode(header, erp, key, algorithms=[algorithm])

    assert (await api_sign_in(portal.client, token("1", None))).status == 200
    assert (await api_sign_in(portal.client, token("2", key.thumbprint()))).status == 200
    assert (await api_sign_in(portal.client, token("3", "erp-1"))).status == 401


async def test_a_key_from_the_partners_jwks_url_is_fetched_once_and_cached(
    portal: Portal, jwks_server: JwksServer
) -> None:
    first = await api_sign_in(portal.client, jwks_token(jti="hr-1"))
    second = await api_sign_in(portal.client, jwks_token(jti="hr-2"))

    assert first.status == 200 and second.status == 200
    [request] = jwks_server.requests
    assert request["method"] == "GET"
    assert request["path"] == "/.well-known/jwks.json"
    assert request["headers"]["Accept"] == "application/jwk-set+json, application/json"
    assert request["headers"]["Accept-Encoding"] == "identity", "the size cap is on what is sent"
    assert "Cookie" not in request["headers"] and "Authorization" not in request["headers"]


async def test_an_unknown_kid_fetches_the_jwks_again_at_most_once_a_minute(
    portal: Portal, jwks_server: JwksServer
) -> None:
    assert (await api_sign_in(portal.client, jwks_token(jti="hr-1"))).status == 200
    rotated = ECKey.generate_key("P-256", parameters={"kid": "hr-2027"})
    jwks_server.document = dict(KeySet([JWKS_KEY, rotated]).as_dict(private=False))
    header = {"alg": "ES256", "kid": "hr-2027"}

    def new_token(jti: str) -> str:
        return jose_jwt.encode(header, claims(JWKS_ISSUER, jti=jti), rotated)

    too_soon = await api_sign_in(portal.client, new_token("hr-2"))
    assert too_soon.status == 401, "fetched under a minute ago: the new kid is not known yet"
    assert len(jwks_server.requests) == 1

    portal.clock.advance(61)
    later = await api_sign_in(
        portal.client, jwks_token(jti="hr-3", iat=int(START) + 61, exp=int(START) + 121)
    )
    assert later.status == 200
    rotated_in = jose_jwt.encode(
        header, claims(JWKS_ISSUER, jti="hr-4", iat=int(START) + 61, exp=int(START) + 121), rotated
    )
    assert (await api_sign_in(portal.client, rotated_in)).status == 200
    assert len(jwks_server.requests) == 2


async def test_a_jwks_url_that_fails_refuses_like_any_bad_token_and_logs_no_token(
    start_portal: StartPortal, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    jwks_server.status = 500
    portal = await start_portal(access_control=RULES, trusted_issuers=partners(jwks_server.url))
    token = jwks_token()

    response = await api_sign_in(portal.client, token)

    assert response.status == 401 and await response.json() == REFUSED
    assert [e["reason"] for e in audit_events(caplog, "sso_jwt_rejected")] == ["keys_unavailable"]
    assert any("cannot fetch jwks_url" in r.getMessage() for r in caplog.records)
    assert all(token not in r.getMessage() for r in caplog.records)


async def test_a_two_factor_target_asks_for_the_second_factor_first(portal: Portal) -> None:
    page = await open_partner_link(portal.client, ec_token(), rd=SECURE)
    done = await confirm(portal.client, page)

    assert done.status == 303
    assert done.headers["Location"].startswith("/2fa/one-time-password?rd=")
    assert await signed_in(portal.client) == 200, "one factor opens one_factor sites"

    api = await api_sign_in(portal.client, ec_token(jti="again"), target=SECURE)
    assert await api.json() == {"status": "OK"}, "as Handle1FAResponse: not named yet"


async def test_a_partner_session_is_raised_to_two_factors_by_the_users_own_totp(
    portal: Portal,
) -> None:
    await register_totp(portal)
    assert (await api_sign_in(portal.client, ec_token(), target=SECURE)).status == 200
    state = await (await portal.client.get("/api/state")).json()
    assert state["data"] == {
        "username": "john",
        "authentication_level": 1,
        "factor_knowledge": False,
    }, "no password was proven"

    second = await portal.client.post(
        "/api/secondfactor/totp", json={"token": code_now(portal), "targetURL": SECURE}
    )

    assert await second.json() == {"status": "OK", "data": {"redirect": SECURE}}
    state = await (await portal.client.get("/api/state")).json()
    assert state["data"]["authentication_level"] == 2


async def test_while_the_jwks_url_fails_its_last_keys_serve_for_a_day(
    portal: Portal, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def at(offset: int, jti: str) -> str:
        return jwks_token(jti=jti, iat=NOW + offset, exp=NOW + offset + 60)

    assert (await api_sign_in(portal.client, at(0, "a"))).status == 200
    jwks_server.status = 503
    portal.clock.advance(3600)
    assert (await api_sign_in(portal.client, at(3600, "b"))).status == 200
    assert len(jwks_server.requests) == 2, "stale after 10 minutes: fetched again, and failed"
    portal.clock.advance(86400)
    late = await api_sign_in(portal.client, at(3600 + 86400, "c"))

    assert (late.status, await late.json()) == (401, REFUSED)
    assert [e["reason"] for e in audit_events(caplog, "sso_jwt_rejected")] == ["keys_unavailable"]


async def test_a_jwks_document_over_64_kib_is_not_read(
    start_portal: StartPortal, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    jwks_server.document = {**jwks_server.document, "padding": "x" * 70_000}
    portal = await start_portal(access_control=RULES, trusted_issuers=partners(jwks_server.url))

    response = await api_sign_in(portal.client, jwks_token())

    assert (response.status, await response.json()) == (401, REFUSED)
    assert [e["reason"] for e in audit_events(caplog, "sso_jwt_rejected")] == ["keys_unavailable"]


async def test_a_jwks_entry_with_alg_none_is_skipped_and_the_others_serve(
    portal: Portal, jwks_server: JwksServer
) -> None:
    # PyJWT has no "none" key type; the entry must not stop the partner's real key from serving.
    odd = {"kty": "RSA", "alg": "none", "n": "AQAB", "e": "AQAB", "kid": "odd"}
    jwks_server.document = {"keys": [odd, *jwks_server.document["keys"]]}

    response = await api_sign_in(portal.client, jwks_token())

    assert response.status == 200


async def test_a_jwks_document_nested_thousands_deep_refuses_like_a_failed_fetch(
    start_portal: StartPortal, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    jwks_server.raw = b'{"keys":' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # 40 KB, under the cap
    portal = await start_portal(access_control=RULES, trusted_issuers=partners(jwks_server.url))

    response = await api_sign_in(portal.client, jwks_token())

    assert (response.status, await response.json()) == (401, REFUSED)
    assert [e["reason"] for e in audit_events(caplog, "sso_jwt_rejected")] == ["keys_unavailable"]
    assert any("cannot fetch jwks_url" in r.getMessage() for r in caplog.records)


# --- refused --------------------------------------------------------------------------------

REFUSALS: dict[str, tuple[str, Callable[[], str]]] = {
    "alg none": ("alg_none", unsigned_token),
    "algorithm not pinned": ("algorithm", lambda: hs_token(algorithm="HS512")),
    "HS256 keyed with the EC public key": ("algorithm", confused_token),
    "jku header": ("header", lambda: hs_token({"jku": "https://evil.example/jwks"})),
    "x5u header": ("header", lambda: hs_token({"x5u": "https://evil.example/cert"})),
    "jwk header": ("header", lambda: hs_token({"jwk": {"kty": "oct", "k": "AAAA"}})),
    "x5c header": ("header", lambda: hs_token({"x5c": ["MIIB"]})),
    "crit header": ("header", lambda: hs_token({"crit": ["exp"]})),
    "b64 header": ("header", lambda: signed_by_hand({"alg": "HS256", "b64": True})),
    # RFC 8725 section 3.11: a token explicitly typed as another kind is not a sign-in token.
    "an OAuth access token (RFC 9068)": ("type", lambda: hs_token({"typ": "at+jwt"})),
    "a logout token": ("type", lambda: hs_token({"typ": "logout+jwt"})),
    "a typ that is no string": ("type", lambda: hs_token({"typ": ["JWT"]})),
    "a typ of null (present, and no string)": (
        "type",
        lambda: signed_by_hand({"alg": "HS256", "typ": None}),
    ),
    "an empty typ": ("type", lambda: signed_by_hand({"alg": "HS256", "typ": ""})),
    "kid not in the key set": (
        "kid",
        lambda: jose_jwt.encode({"alg": "ES256", "kid": "elsewhere"}, claims(EC_ISSUER), EC_KEY),
    ),
    "bad signature": ("signature", lambda: hs_token(secret="another-secret-" + "x" * 50)),
    "expired": ("expired", lambda: hs_token(iat=MINUTE_AGO - 30, exp=MINUTE_AGO)),
    "issued in the future": ("not_yet_valid", lambda: hs_token(iat=NOW + 60, exp=NOW + 90)),
    "not before the future": ("not_yet_valid", lambda: hs_token(nbf=NOW + 60)),
    "lifespan over max_lifespan": ("lifespan", lambda: hs_token(exp=NOW + 600)),
    "unknown issuer": ("unknown_issuer", lambda: hs_token(iss="https://evil.example")),
    "wrong audience": ("audience", lambda: hs_token(aud="https://app.example.com")),
    "no jti": ("claims", lambda: hs_token(jti=None)),
    "no iat": ("claims", lambda: hs_token(iat=None)),
    "no sub": ("claims", lambda: hs_token(sub=None)),
    "unknown user": ("user", lambda: hs_token(sub="nobody")),
    "a username in other case": ("user", lambda: hs_token(sub="John")),
    "over 8 KiB": ("too_long", lambda: hs_token(padding="x" * 9000)),
    "over 16 KiB": ("too_long", lambda: hs_token(padding="x" * 20000)),
    "not a JWT": ("malformed", lambda: "not-a-token"),
    "a header nested thousands deep": ("malformed", nested_header),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_each_bad_token_gets_the_one_refusal_and_no_session(
    portal: Portal, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    reason, make = REFUSALS[case]
    caplog.set_level(logging.INFO)
    token = make()

    response = await api_sign_in(portal.client, token)

    assert response.status == 401
    assert await response.json() == REFUSED
    assert not has_session(response)
    assert await signed_in(portal.client) == 401
    assert [e["reason"] for e in audit_events(caplog, "sso_jwt_rejected")] == [reason]
    assert all(token not in r.getMessage() for r in caplog.records)

    if reason == "too_long":
        return  # no link carries it: aiohttp refuses a request line over 8190 bytes itself
    page = await open_partner_link(portal.client, token)
    assert page.status == 401
    assert "This sign-in link is invalid or has expired." in await page.text()
    assert not has_session(page)


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "application/jwt"])
async def test_a_token_typed_jwt_or_not_at_all_signs_in(portal: Portal, typ: str | None) -> None:
    token = hs_token({"typ": typ})
    assert ("typ" in pyjwt.get_unverified_header(token)) == (typ is not None)

    response = await api_sign_in(portal.client, token)

    assert response.status == 200 and has_session(response)


async def test_the_confirmation_page_without_a_token_is_the_refusal(portal: Portal) -> None:
    page = await portal.client.get("/sso/jwt", allow_redirects=False)
    signin_page = await portal.client.get("/")
    csrf = csrf_of(await signin_page.text())
    posted = await portal.client.post("/sso/jwt", data={"csrf_token": csrf})

    assert page.status == 401 and posted.status == 401
    assert "This sign-in link is invalid or has expired." in await posted.text()
    assert not has_session(posted)


async def test_a_disabled_user_and_one_outside_allowed_groups_are_refused(
    start_portal: StartPortal, users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    text = users_file.read_text("utf-8")
    marker = "    email: bob.dylan@authelia.com\n"
    users_file.write_text(text.replace(marker, f"{marker}    disabled: true\n", 1), "utf-8")
    portal = await start_portal(
        access_control=RULES, trusted_issuers=partners(allowed_groups=["admins"])
    )

    disabled = await api_sign_in(portal.client, hs_token(sub="bob", jti="b"))
    outsider = await api_sign_in(portal.client, hs_token(sub="harry", jti="h"))
    admin = await api_sign_in(portal.client, hs_token(sub="john", jti="j"))

    assert (disabled.status, await disabled.json()) == (401, REFUSED)
    assert (outsider.status, await outsider.json()) == (401, REFUSED)
    assert admin.status == 200
    reasons = [e["reason"] for e in audit_events(caplog, "sso_jwt_rejected")]
    assert reasons == ["disabled", "group"]


async def test_the_email_claim_finds_the_user_by_address(start_portal: StartPortal) -> None:
    portal = await start_portal(
        access_control=RULES, trusted_issuers=partners(username_claim="email")
    )

    by_mail = await api_sign_in(portal.client, hs_token(email="john.doe@authelia.com"))
    by_name = await api_sign_in(portal.client, hs_token(email="john", jti="2"))

    assert by_mail.status == 200
    assert (by_name.status, await by_name.json()) == (401, REFUSED)


async def test_the_email_claim_matches_an_address_in_ascii_case_only(
    start_portal: StartPortal, users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    text = users_file.read_text("utf-8")
    # Bob's mailbox has an eszett; "strasse" is another mailbox, which Unicode case folding
    # (ß -> ss) would take for his; so would it James's for "jameſ" (a long s, -> s).
    users_file.write_text(text.replace("bob.dylan@", "bob.straße@", 1), "utf-8")
    portal = await start_portal(
        access_control=RULES, trusted_issuers=partners(username_claim="email")
    )

    folded = await api_sign_in(portal.client, hs_token(email="bob.strasse@authelia.com"))
    long_s = await api_sign_in(
        portal.client, hs_token(email="jame\u017f.dean@authelia.com", jti="s")
    )
    upper = await api_sign_in(portal.client, hs_token(email="BOB.STRAßE@AUTHELIA.COM", jti="u"))

    assert (folded.status, await folded.json()) == (401, REFUSED)
    assert (long_s.status, await long_s.json()) == (401, REFUSED)
    assert upper.status == 200, "ASCII letters in another case are the same address"
    assert [e["reason"] for e in audit_events(caplog, "sso_jwt_rejected")] == ["user", "user"]


async def test_a_token_works_once_then_is_refused(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = node_token()
    page = await open_partner_link(portal.client, token)
    assert (await confirm(portal.client, page)).status == 303

    again = await api_sign_in(portal.client, token)
    assert (again.status, await again.json()) == (401, REFUSED)
    reopened = await open_partner_link(portal.client, token)
    assert reopened.status == 401, "the confirmation page knows a used token too"
    assert [e["reason"] for e in audit_events(caplog, "sso_jwt_rejected")] == ["used", "used"]


async def test_a_token_used_on_one_replica_is_refused_on_the_other(
    start_portal: StartPortal,
) -> None:
    settings = {"access_control": RULES, "trusted_issuers": partners()}
    first, second = await start_portal(**settings), await start_portal(**settings)
    token = ec_token()

    assert (await api_sign_in(first.client, token)).status == 200
    replay = await api_sign_in(second.client, token)

    assert (replay.status, await replay.json()) == (401, REFUSED)


async def test_one_token_raced_on_two_replicas_opens_one_session(
    start_portal: StartPortal,
) -> None:
    settings = {"access_control": RULES, "trusted_issuers": partners()}
    first, second = await start_portal(**settings), await start_portal(**settings)
    token = hs_token(jti="raced")

    answers = await asyncio.gather(
        *(api_sign_in(portal.client, token) for portal in (first, second) * 3)
    )

    assert sorted(a.status for a in answers) == [200, 401, 401, 401, 401, 401]
    assert sum(has_session(a) for a in answers) == 1


async def test_a_token_used_on_one_postgres_replica_is_refused_on_the_other(
    start_portal: StartPortal, postgres_server: Any, postgres_database: str
) -> None:
    settings = {
        "access_control": RULES,
        "trusted_issuers": partners(),
        **on_postgres(postgres_server, postgres_database),
    }
    first, second = await start_portal(**settings), await start_portal(**settings)
    token = hs_token()

    results = [await api_sign_in(c.client, token) for c in (second, first)]

    assert [r.status for r in results] == [200, 401]


async def test_refused_tokens_are_limited_per_address(start_portal: StartPortal) -> None:
    limit = {"buckets": [{"period": "1 minute", "requests": 2}]}
    portal = await start_portal(
        access_control=RULES,
        trusted_issuers=partners(),
        server={"endpoints": {"rate_limits": {"sso_jwt": limit}}},
    )
    for n in range(2):
        assert (await api_sign_in(portal.client, hs_token(sub="nobody", jti=str(n)))).status == 401

    throttled = await api_sign_in(portal.client, hs_token())
    assert throttled.status == 429, "over the limit even a good token waits"
    assert not has_session(throttled)

    portal.clock.advance(61)
    later = hs_token(jti="later", iat=NOW + 61, exp=NOW + 121)
    assert (await api_sign_in(portal.client, later)).status == 200


async def test_the_token_reaches_no_log_and_no_address(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = node_token()

    page = await open_partner_link(portal.client, token)
    done = await confirm(portal.client, page)

    assert token not in str(page.url) and token not in done.headers["Location"]
    assert page.headers["Referrer-Policy"] == "no-referrer"
    logged = [r.getMessage() + json.dumps(getattr(r, "fields", {})) for r in caplog.records]
    assert any("/sso/jwt" in line for line in logged), "the access log saw the requests"
    assert all(token not in line for line in logged)
    assert all(token.split(".")[2] not in line for line in logged)


async def test_without_partners_the_routes_do_not_exist(start_portal: StartPortal) -> None:
    portal = await start_portal(access_control=RULES)

    assert (await portal.client.get("/sso/jwt")).status == 404
    assert (await api_sign_in(portal.client, hs_token())).status == 404
