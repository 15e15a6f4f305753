"""The endpoint nginx asks on every request to a protected site: may this visitor pass? And the
public keys its identity tokens are signed with (/.well-known/jwks.json)."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from portal.authz import Outcome
from portal.handlers.common import cookie_values
from portal.identity_token import JWKS_MAX_AGE
from portal.keys import ADDRESSES, AUTHZ, IDENTITY_TOKENS


async def auth_request_get(request: web.Request) -> web.Response:
    """Answer 200 with Remote-* headers, 401 with where to sign in, or 403 (Authorizer.verdict)."""
    verdict = await request.app[AUTHZ].verdict(
        request.headers.get("X-Original-URL", ""),
        request.headers.get("X-Original-Method", "GET"),
        request.app[ADDRESSES].parsed(request),
        partial(cookie_values, request),
    )
    if verdict.outcome is Outcome.ALLOW:
        return web.Response(status=200, headers=verdict.headers)
    if verdict.outcome is Outcome.FORBIDDEN:
        return web.Response(status=403, text="403 Forbidden")
    if verdict.outcome is Outcome.SIGN_IN:
        return web.Response(
            status=401, headers={"Location": verdict.location}, text="401 Unauthorized"
        )
    return web.Response(status=401, text="401 Unauthorized: missing or malformed request")


async def jwks_get(request: web.Request) -> web.Response:
    """Answer the identity token's public keys as a JWK Set (RFC 7517 section 5), cacheable.

    Registered only while identity_token.enabled: otherwise the path is a 404.
    """
    keys = await request.app[IDENTITY_TOKENS].jwks()
    return web.json_response(
        keys,
        content_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
    )
