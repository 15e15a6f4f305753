"""The endpoint nginx asks on every request to a protected site: may this visitor pass?"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web

from portal.handlers.common import live_session
from portal.keys import ACCESS, ADDRESSES, CONFIG, COOKIES
from portal.users.base import User

log = logging.getLogger("portal.authz")


async def auth_request_get(request: web.Request) -> web.Response:
    """Answer 200 with Remote-* headers, 401 with where to sign in, or 403."""
    app = request.app
    original = request.headers.get("X-Original-URL", "")
    method = request.headers.get("X-Original-Method", "GET").upper()
    access = app[ACCESS]
    try:
        # An unknown or unreadable client address is malformed like any other header.
        address = app[ADDRESSES].parsed(request)
        if address is None:
            raise ValueError("unreadable client address")
        target = access.target(original, method, address)
    except ValueError:
        # SECURITY: a request we cannot read is never let through.
        return web.Response(status=401, text="401 Unauthorized: missing or malformed request")
    cookie = app[COOKIES].for_host(target.host)
    session = None
    if cookie is not None:
        session = await live_session(request, cookie)
    user = None
    if session is not None:
        user = User(session.username, session.display_name, session.emails, session.groups)
    decision = access.decide(target, user)
    if decision.required == "bypass":
        return web.Response(status=200)
    if decision.required == "deny":
        return web.Response(status=403, text="403 Forbidden")
    if session is None:
        portal = cookie.authelia_url if cookie is not None else app[CONFIG].portal_url
        location = f"{portal}/?rd={quote(original, safe='')}"
        return web.Response(status=401, headers={"Location": location}, text="401 Unauthorized")
    return web.Response(
        status=200,
        headers={
            "Remote-User": session.username,
            "Remote-Groups": ",".join(session.groups),
            "Remote-Name": session.display_name,
            "Remote-Email": session.emails[0] if session.emails else "",
        },
    )
