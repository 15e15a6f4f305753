"""identity_token over HTTP: what an app behind nginx receives from a real auth_request answer,
checked by two independent implementations fetching the portal's real /.well-known/jwks.json
(joserfc in Python, jose in Node), and the per-app HS256 tokens by Node's jsonwebtoken."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from aiohttp import ClientResponse
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from tests.conftest import FakeClock
from tests.integration.node import run_node
from tests.unit.test_config_identity_token import EC_PEM, pem
from tests.web.conftest import DEMO_PASSWORD, Portal, StartPortal

ISSUER = "https://auth.example.com"
APP = "https://app.example.com"
WIKI = "https://wiki.example.com:8443"
WIKI_SECRET = "wiki-secret-" + "w" * 32
OTHER_SECRET = "other-secret-" + "o" * 32
SETTINGS: dict[str, Any] = {
    "session": {"cookies": [{"domain": "example.com", "authelia_url": ISSUER}]},
    "access_control": {
        "default_policy": "one_factor",
        "rules": [{"domain": "closed.example.com", "policy": "deny"}],
    },
    "identity_token": {"enabled": True},
}

# Node's jose, as an app would use it: the key set fetched over HTTP from the portal.
JOSE_VERIFY = """
const { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } = require("jose");
const input = JSON.parse(require("fs").readFileSync(0));
(async () => {
  const keys = createRemoteJWKSet(new URL(input.jwks));
  const out = [];
  for (const check of input.checks) {
    try {
      const { payload, protectedHeader } = await jwtVerify(check.token, keys, {
        issuer: input.issuer, audience: check.audience, algorithms: [check.alg],
        currentDate: new Date(input.now * 1000),
      });
      out.push({ ok: true, payload, header: protectedHeader });
    } catch (e) {
      out.push({ ok: false, code: e.code });
    }
  }
  console.log(JSON.stringify(out));
})();
"""

# Node's jsonwebtoken with a shared secret (the article's Node example).
JSONWEBTOKEN_VERIFY = """
const jwt = require("jsonwebtoken");
const input = JSON.parse(require("fs").readFileSync(0));
const out = input.secrets.map((secret) => {
  try {
    const claims = jwt.verify(input.token, secret, {
      algorithms: ["HS256"], audience: input.audience, issuer: input.issuer,
      clockTimestamp: input.now,
    });
    return { ok: true, claims };
  } catch (e) {
    return { ok: false, message: e.message };
  }
});
console.log(JSON.stringify(out));
"""


@pytest.fixture
def clock() -> FakeClock:
    """Real time, so that nothing but the test moves a token's validity."""
    return FakeClock(float(int(time.time())))


async def session_cookie(portal: Portal, username: str = "john") -> str:
    """Sign in through /api/firstfactor; return the session cookie's value."""
    response = await portal.client.post(
        "/api/firstfactor", json={"username": username, "password": DEMO_PASSWORD}
    )
    assert response.status == 200, await response.text()
    return response.cookies["portal_session"].value


async def auth_request(portal: Portal, url: str, cookie: str | None) -> ClientResponse:
    """Ask what nginx asks for url, with the session cookie (if any)."""
    headers = {"X-Original-URL": url, "X-Original-Method": "GET"}
    if cookie is not None:
        headers["Cookie"] = f"portal_session={cookie}"
    return await portal.client.get(
        "/api/authz/auth-request", headers=headers, allow_redirects=False
    )


async def token_for(portal: Portal, url: str, cookie: str) -> str:
    response = await auth_request(portal, url, cookie)
    assert response.status == 200
    return response.headers["Remote-JWT"]


async def jwks_of(portal: Portal) -> dict[str, Any]:
    response = await portal.client.get("/.well-known/jwks.json")
    assert response.status == 200
    keys: dict[str, Any] = await response.json(content_type="application/jwk-set+json")
    return keys


def python_claims(token: str, jwks: dict[str, Any], audience: str, alg: str) -> dict[str, Any]:
    """Verify with joserfc, as a Python app would; return the claims."""
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[alg])  # type: ignore[arg-type]
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": audience}
    ).validate(decoded.claims)
    return decoded.claims


async def node_checks(portal: Portal, checks: list[dict[str, str]], now: float) -> list[Any]:
    """Verify tokens with Node's jose against the portal's JWKS URL, fetched over HTTP."""
    data = {
        "jwks": str(portal.client.make_url("/.well-known/jwks.json")),
        "issuer": ISSUER,
        "now": now,
        "checks": checks,
    }
    # In a thread: the portal must answer node's request for the key set meanwhile.
    result: list[Any] = await asyncio.to_thread(run_node, JOSE_VERIFY, data)
    return result


async def test_an_app_gets_a_token_python_and_node_verify_claim_by_claim(
    start_portal: StartPortal, clock: FakeClock
) -> None:
    portal = await start_portal(**SETTINGS)
    cookie = await session_cookie(portal)
    token = await token_for(portal, APP + "/some/page?x=1", cookie)
    jwks = await jwks_of(portal)

    claims = python_claims(token, jwks, APP, "ES256")
    now = int(clock.now())
    assert claims["iss"] == ISSUER
    assert claims["aud"] == APP
    assert claims["sub"] == "john"
    assert claims["name"] == "John Doe"
    assert claims["email"] == "john.doe@authelia.com"
    assert claims["groups"] == ["admins", "dev"]
    assert claims["amr"] == ["pwd"]
    assert claims["auth_time"] == now
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] == now + 300
    assert len(claims["jti"]) >= 16

    (node,) = await node_checks(portal, [{"token": token, "audience": APP, "alg": "ES256"}], now)
    assert node["ok"] is True
    assert node["payload"] == claims
    assert node["header"]["kid"] == jwks["keys"][0]["kid"]
    assert node["header"]["alg"] == "ES256"


async def test_a_token_for_one_site_is_refused_by_an_app_checking_another(
    start_portal: StartPortal, clock: FakeClock
) -> None:
    portal = await start_portal(**SETTINGS)
    token = await token_for(portal, APP + "/", await session_cookie(portal))
    with pytest.raises(Exception, match="aud"):
        python_claims(token, await jwks_of(portal), "https://other.example.com", "ES256")
    checks = [
        {"token": token, "audience": "https://other.example.com", "alg": "ES256"},
        {"token": token, "audience": APP, "alg": "RS256"},  # the app pins another algorithm
    ]
    refused = await node_checks(portal, checks, clock.now())
    assert [r["ok"] for r in refused] == [False, False]
    assert refused[0]["code"] == "ERR_JWT_CLAIM_VALIDATION_FAILED"


async def test_refusals_and_bypass_carry_no_token(
    start_portal: StartPortal, clock: FakeClock
) -> None:
    settings = {
        **SETTINGS,
        "access_control": {
            "default_policy": "one_factor",
            "rules": [
                {"domain": "closed.example.com", "policy": "deny"},
                {"domain": "public.example.com", "policy": "bypass"},
            ],
        },
    }
    portal = await start_portal(**settings)
    cookie = await session_cookie(portal)
    anonymous = await auth_request(portal, APP + "/", None)
    forbidden = await auth_request(portal, "https://closed.example.com/", cookie)
    bypass = await auth_request(portal, "https://public.example.com/", cookie)
    assert (anonymous.status, forbidden.status, bypass.status) == (401, 403, 200)
    for response in (anonymous, forbidden, bypass):
        assert "Remote-JWT" not in response.headers


async def test_the_same_token_is_reused_for_a_session_and_site_until_near_its_expiry(
    start_portal: StartPortal, clock: FakeClock
) -> None:
    portal = await start_portal(**SETTINGS)
    cookie = await session_cookie(portal)
    first = await token_for(portal, APP + "/a", cookie)
    assert await token_for(portal, APP + "/b", cookie) == first
    assert await token_for(portal, "https://other.example.com/", cookie) != first
    assert await token_for(portal, APP + "/a", await session_cookie(portal)) != first
    clock.advance(241)  # less than a fifth of the 300 s left
    assert await token_for(portal, APP + "/a", cookie) != first


async def test_the_jwks_is_cacheable_public_and_absent_when_disabled(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**SETTINGS)
    response = await portal.client.get("/.well-known/jwks.json")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    (key,) = (await response.json(content_type="application/jwk-set+json"))["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")

    disabled = await start_portal(**{**SETTINGS, "identity_token": {"enabled": False}})
    assert (await disabled.client.get("/.well-known/jwks.json")).status == 404
    cookie = await session_cookie(disabled)
    assert "Remote-JWT" not in (await auth_request(disabled, APP + "/", cookie)).headers


# joserfc 1.8 warns that RFC 9864 deprecates "EdDSA" for the fully specified "Ed25519"; the
# issue asks for EdDSA, which jose and PyJWT verify as Ed25519 all the same.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")
@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
    ],
    ids=["RS256", "EdDSA"],
)
async def test_configured_rs256_and_eddsa_keys_sign_and_every_key_is_published(
    start_portal: StartPortal, clock: FakeClock, algorithm: str, key: Any
) -> None:
    other: Any = (
        ed25519.Ed25519PrivateKey.generate()
        if algorithm == "EdDSA"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    keys = [{"key_id": "current", "key": pem(key)}, {"key_id": "next", "key": pem(other)}]
    section = {"enabled": True, "algorithm": algorithm, "keys": keys}
    settings = {**SETTINGS, "identity_token": section}
    portal = await start_portal(**settings)
    token = await token_for(portal, APP + "/", await session_cookie(portal))
    jwks = await jwks_of(portal)
    assert [k["kid"] for k in jwks["keys"]] == ["current", "next"]
    assert all(k["alg"] == algorithm for k in jwks["keys"])
    assert python_claims(token, jwks, APP, algorithm)["sub"] == "john"
    (node,) = await node_checks(
        portal, [{"token": token, "audience": APP, "alg": algorithm}], clock.now()
    )
    assert node["ok"] is True and node["header"]["kid"] == "current"
    assert node["payload"]["sub"] == "john"


async def test_an_application_with_a_shared_secret_gets_an_hs256_token_only_its_secret_opens(
    start_portal: StartPortal, clock: FakeClock
) -> None:
    applications = [
        {"domain": "wiki.example.com", "algorithm": "HS256", "secret": WIKI_SECRET},
        {"domain": ["*.apps.example.com"], "secret": OTHER_SECRET},
    ]
    settings = {**SETTINGS, "identity_token": {"enabled": True, "applications": applications}}
    portal = await start_portal(**settings)
    token = await token_for(portal, WIKI + "/page", await session_cookie(portal))

    data = {
        "token": token,
        "secrets": [WIKI_SECRET, OTHER_SECRET],
        "audience": WIKI,
        "issuer": ISSUER,
        "now": clock.now(),
    }
    own, other = await asyncio.to_thread(run_node, JSONWEBTOKEN_VERIFY, data)
    assert own["ok"] is True
    assert own["claims"]["sub"] == "john" and own["claims"]["aud"] == WIKI
    assert own["claims"]["groups"] == ["admins", "dev"]
    assert other == {"ok": False, "message": "invalid signature"}
    # The key set publishes no shared secret, and the HS token names no key of it.
    jwks_text = await (await portal.client.get("/.well-known/jwks.json")).text()
    assert WIKI_SECRET not in jwks_text and OTHER_SECRET not in jwks_text
    assert '"oct"' not in jwks_text
    assert "kid" not in jws.extract_compact(token.encode()).headers()


async def test_no_token_or_private_key_reaches_the_logs(
    start_portal: StartPortal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = [{"key_id": "main", "key": EC_PEM}]
    portal = await start_portal(**{**SETTINGS, "identity_token": {"enabled": True, "keys": keys}})
    token = await token_for(portal, APP + "/", await session_cookie(portal))
    await jwks_of(portal)
    body = EC_PEM.splitlines()[1]
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert token not in text and token.split(".")[2] not in text
        assert body not in text


def example_app() -> Any:
    """Import deploy/examples/identity_token_app.py, the example the README points to."""
    path = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "identity_token_app.py"
    spec = importlib.util.spec_from_file_location("identity_token_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_shipped_example_app_accepts_the_token_and_refuses_another_sites(
    start_portal: StartPortal,
) -> None:
    portal = await start_portal(**SETTINGS)
    cookie = await session_cookie(portal)
    token = await token_for(portal, APP + "/", cookie)
    other = await token_for(portal, "https://other.example.com/", cookie)
    jwks_url = str(portal.client.make_url("/.well-known/jwks.json"))
    checker = example_app().IdentityChecker(ISSUER, APP, jwks_url)

    # In a thread: PyJWKClient fetches the key set with blocking urllib from this portal.
    claims = await asyncio.to_thread(checker.claims, token)
    assert (claims["sub"], claims["name"], claims["aud"]) == ("john", "John Doe", APP)
    with pytest.raises(pyjwt.InvalidAudienceError):
        await asyncio.to_thread(checker.claims, other)
    with pytest.raises(pyjwt.PyJWTError):
        await asyncio.to_thread(checker.claims, token[:-4] + "AAAA")
