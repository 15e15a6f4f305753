"""The endpoint nginx asks on every request to a protected site: may this visitor pass? And the
public keys its identity tokens are signed with (/.well-known/jwks.json)."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from portal.authz import Authorizer, Outcome
from portal.forwarded import ClientAddresses
from portal.handlers.common import cookie_values
from portal.identity_token import JWKS_MAX_AGE
from portal.keys import ADDRESSES, AUTHZ, IDENTITY_TOKENS


async def auth_request_get(request: web.Request) -> web.Response:
    """Answer 200 with Remote-* headers, 401 with where to sign in, or 403 (Authorizer.verdict).

    Every answer, /api/verify's too, has an empty body (Content-Length: 0): nginx's auth_request
    reads the headers only, and closes its kept-alive connection to the portal after an answer
    whose body it did not read, so a body on the 401s and 403s cost a new connection for each.
    The visitor never sees these bodies: nginx answers them with its own redirect or 403 page.
    (Authelia's authz handlers write a short body here; nginx would drop those connections too.)
    """
    return await decide(request.app[AUTHZ], request.app[ADDRESSES], request)


async def decide(
    authz: Authorizer, addresses: ClientAddresses, request: web.BaseRequest
) -> web.Response:
    """Ask `authz` about the request nginx describes (X-Original-URL, X-Original-Method, the
    client's address as `addresses` reads it, its cookies) and map the verdict to the answer
    auth_request_get documents; raises what Authorizer.verdict raises (a backend that is down).
    Shared by the portal's listener and the authz listener (portal/authz_listener.py)."""
    verdict = await authz.verdict(
        request.headers.get("X-Original-URL", ""),
        request.headers.get("X-Original-Method", "GET"),
        addresses.parsed(request),
        partial(cookie_values, request),
    )
    if verdict.outcome is Outcome.ALLOW:
        response = web.Response(status=200, headers=verdict.headers)
    elif verdict.outcome is Outcome.FORBIDDEN:
        response = web.Response(status=403)
    elif verdict.outcome is Outcome.SIGN_IN:
        response = web.Response(status=401, headers={"Location": verdict.location})
    else:
        response = web.Response(status=401)  # a request the portal cannot read
    # SECURITY: no cache on the way may keep an answer (the security-headers hook, which set
    # no-store, is skipped for these: FOR_NGINX): a 200's Remote-* headers belong to one
    # visitor, at a URL that is the same for every visitor.
    response.headers["Cache-Control"] = "no-store"
    return response


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
