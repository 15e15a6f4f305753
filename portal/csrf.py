"""Cross-site request forgery: the token forms echo, and the middleware that checks every write.

Double-submit cookie (OWASP CSRF Prevention Cheat Sheet): the token lives in an HttpOnly,
SameSite=Strict cookie (__Host- under https) and every form echoes it in `csrf_token`; a foreign
Origin or Sec-Fetch-Site: cross-site is refused first; the JSON API takes application/json only.
"""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import urlsplit

from aiohttp import web

from portal.bodies import read_form
from portal.errors import BadRequestError, CsrfError
from portal.headers import is_api
from portal.keys import CONFIG
from portal.middlewares import NO_SUCH_ROUTE, Handler

CSRF_FIELD = "csrf_token"
_CSRF_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_NEW_CSRF = web.RequestKey("new_csrf", str)
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_cookie_name(request: web.Request) -> str:
    """Name the CSRF cookie; under https the __Host- prefix keeps sibling subdomains out."""
    https = request.app[CONFIG].portal_is_https
    return "__Host-portal_csrf" if https else "portal_csrf"


def csrf_token(request: web.Request) -> str:
    """Return the token forms must echo in their csrf_token field, minting one if needed."""
    if _NEW_CSRF in request:
        return request[_NEW_CSRF]
    current = request.cookies.get(csrf_cookie_name(request), "")
    if _CSRF_SHAPE.fullmatch(current):
        return current
    request[_NEW_CSRF] = secrets.token_urlsafe(32)
    return request[_NEW_CSRF]


def _same_origin(request: web.Request) -> bool:
    # SECURITY: browsers label cross-site requests (Sec-Fetch-Site) and name their origin; a
    # foreign one is refused outright. Pages under Referrer-Policy: no-referrer make browsers
    # send "Origin: null" even to their own site, so null falls back to the CSRF token alone.
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    portal = urlsplit(request.app[CONFIG].portal_url)
    return origin == f"{portal.scheme}://{portal.netloc}"


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site writes: forms echo the CSRF cookie, the API takes JSON only."""
    routed = request.match_info.route.name != NO_SUCH_ROUTE
    if request.method in _UNSAFE and routed and request.match_info.http_exception is None:
        # SECURITY: browsers send Origin on cross-site POSTs; a foreign one is refused outright.
        if not _same_origin(request):
            raise CsrfError()
        if is_api(request):
            # SECURITY: a cross-site page cannot send application/json without a CORS preflight;
            # nor a DELETE of any kind (not a CORS-safelisted method), so one without a body
            # (`curl -X DELETE`) needs no content type.
            bodiless_delete = request.method == "DELETE" and not request.body_exists
            if request.content_type != "application/json" and not bodiless_delete:
                raise BadRequestError("Send the request body as application/json.")
        else:
            sent = (await read_form(request)).get(CSRF_FIELD, "")
            cookie = request.cookies.get(csrf_cookie_name(request), "")
            # SECURITY: compared as bytes: compare_digest refuses non-ASCII str (a 500 before).
            if not (
                _CSRF_SHAPE.fullmatch(cookie)
                and hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), cookie.encode())
            ):
                raise CsrfError()
    response = await handler(request)
    if _NEW_CSRF in request:
        https = request.app[CONFIG].portal_is_https
        response.set_cookie(
            csrf_cookie_name(request),
            request[_NEW_CSRF],
            path="/",
            secure=https,
            httponly=True,
            samesite="Strict",
        )
    return response
