"""The elevated session over HTTP: Authelia's JSON API (/api/user/session/elevation), the pages
that mail and check a one-time code, the mail's revoke page, and `require_elevation`, which every
sensitive setting calls first.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from portal.bodies import read_form
from portal.errors import ElevationFailedError, ElevationRequiredError, SignInRequiredError
from portal.handlers.common import (
    current_session,
    parse_json,
    render_page,
    request_ip,
    require_session,
    see_other,
)
from portal.headers import is_api
from portal.keys import ELEVATION
from portal.sessions import Session

ELEVATE = "/settings/elevate"
ELEVATE_CODE = ELEVATE + "/code"
REVOKE = "/revoke/one-time-code"
REVOKED = REVOKE + "/done"
# What a next path may hold: printable ASCII without a backslash; "//" or any control or space
# would let a browser read it as another host (WHATWG URL strips tabs and newlines).
_NEXT_SHAPE = re.compile(r"/[!-\[\]-~]*")


def safe_next(target: str | None) -> str:
    """Return target if it is an internal path (one leading "/", no "//", no backslash, no
    space or control character), else "/" (OWASP Unvalidated Redirects and Forwards)."""
    if target and _NEXT_SHAPE.fullmatch(target) and "//" not in target:
        return target
    return "/"


async def require_elevation(request: web.Request, back_to: str | None = None) -> Session:
    """Return the signed-in session if it may change sensitive settings now; else answer.

    For the JSON API: SignInRequiredError (401) without a session, ElevationRequiredError (403,
    `{"status":"KO","message":...}`) without an elevation. For pages: a 303 to sign in, or to
    /settings/elevate?next=<back_to, default the request's path> (raises web.HTTPSeeOther).
    Whether the session counts as elevated is ElevationService.check's decision.
    """
    back = safe_next(back_to or request.path_qs)
    if is_api(request):
        session = await current_session(request)
        if session is None:
            raise SignInRequiredError()
        await request.app[ELEVATION].check(session, request_ip(request))
        return session
    session = await require_session(request, back)
    try:
        await request.app[ELEVATION].check(session, request_ip(request))
    except ElevationRequiredError:
        raise see_other(f"{ELEVATE}?next={quote(back, safe='/')}") from None
    return session


async def _api_session(request: web.Request) -> Session:
    session = await current_session(request)
    if session is None:
        raise SignInRequiredError()
    return session


# -- JSON API (Authelia's routes and shapes) ----------------------------------------------------


class ElevationBody(BaseModel):
    """PUT /api/user/session/elevation: the typed one-time code."""

    model_config = ConfigDict(extra="ignore", str_max_length=256)

    otc: str


async def api_elevation_post(request: web.Request) -> web.Response:
    """Mail a one-time code: {"status":"OK","data":{"delete_id": ...}}."""
    session = await _api_session(request)
    delete_id = await request.app[ELEVATION].start(session, request_ip(request))
    return web.json_response({"status": "OK", "data": {"delete_id": delete_id}})


async def api_elevation_put(request: web.Request) -> web.Response:
    """Check the code {"otc": ...} and elevate the session: {"status":"OK"}."""
    session = await _api_session(request)
    body = await parse_json(request, ElevationBody)
    await request.app[ELEVATION].finish(session, body.otc, request_ip(request))
    return web.json_response({"status": "OK"})


async def api_elevation_get(request: web.Request) -> web.Response:
    """Say whether the session is elevated: {"status":"OK","data":{"elevated", "expires", ...}}."""
    session = await _api_session(request)
    state = await request.app[ELEVATION].state(session, request_ip(request))
    return web.json_response({"status": "OK", "data": state})


async def api_elevation_delete(request: web.Request) -> web.Response:
    """Revoke the code with that delete_id (no session needed: the id is the capability, as in
    Authelia; the mail's link leads here through the revoke page)."""
    revoked = await request.app[ELEVATION].revoke(
        request.match_info["delete_id"], request_ip(request)
    )
    if not revoked:
        return web.json_response(
            {"status": "KO", "message": "This code is unknown, used, cancelled or expired."},
            status=400,
        )
    return web.json_response({"status": "OK"})


# -- pages ----------------------------------------------------------------------------------------


async def elevate_get(request: web.Request) -> web.Response:
    """Explain the one-time code and offer to mail it (nothing is mailed by opening the page)."""
    target = safe_next(request.query.get("next"))
    session = await require_session(request, f"{ELEVATE}?next={quote(target, safe='/')}")
    state = await request.app[ELEVATION].state(session, request_ip(request))
    return render_page(request, "elevate.html", next=target, state=state)


async def elevate_post(request: web.Request) -> web.Response:
    """Mail a code, then show the form to type it (redirect-after-POST)."""
    fields = await read_form(request)
    target = safe_next(fields.get("next"))
    session = await require_session(request, f"{ELEVATE}?next={quote(target, safe='/')}")
    await request.app[ELEVATION].start(session, request_ip(request))
    raise see_other(f"{ELEVATE_CODE}?next={quote(target, safe='/')}")


async def elevate_code_get(request: web.Request) -> web.Response:
    """Show the form to type the mailed code."""
    target = safe_next(request.query.get("next"))
    await require_session(request, f"{ELEVATE}?next={quote(target, safe='/')}")
    return render_page(request, "elevate_code.html", next=target)


async def elevate_code_post(request: web.Request) -> web.Response:
    """Check the code; on success go to `next` (an internal path), else show the form again."""
    fields = await read_form(request)
    target = safe_next(fields.get("next"))
    session = await require_session(request, f"{ELEVATE}?next={quote(target, safe='/')}")
    try:
        await request.app[ELEVATION].finish(session, fields.get("otc", ""), request_ip(request))
    except ElevationFailedError as exc:
        return render_page(
            request, "elevate_code.html", status=exc.status, next=target, error=exc.public_message
        )
    raise see_other(target)


async def revoke_code_get(request: web.Request) -> web.Response:
    """Ask before cancelling the code (link scanners open links: opening revokes nothing)."""
    public_id = request.query.get("id", "")[:64]
    return render_page(request, "revoke_code_confirm.html", public_id=public_id)


async def revoke_code_post(request: web.Request) -> web.Response:
    """Cancel the code the form names, then say so (or that it could not be cancelled)."""
    fields = await read_form(request)
    if not await request.app[ELEVATION].revoke(fields.get("id", ""), request_ip(request)):
        return render_page(request, "revoke_code_invalid.html", status=400)
    raise see_other(REVOKED)


async def revoke_code_done_get(request: web.Request) -> web.Response:
    """Say the code is cancelled."""
    return render_page(request, "revoke_code_done.html")
