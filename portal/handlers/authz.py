"""The endpoint nginx asks on every request to a protected site: may this visitor pass?"""

from __future__ import annotations

from functools import partial

from aiohttp import web

from portal.authz import Outcome
from portal.handlers.common import cookie_values
from portal.keys import ADDRESSES, AUTHZ


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
