"""What the portal tells a page or a script about the visitor: GET /api/state and
GET /api/user/info (Authelia: internal/handlers/handler_state.go, handler_user_info.go)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from portal.handlers.common import current_session, session_cookie
from portal.handlers.second_factor import NOT_SIGNED_IN
from portal.keys import TOTP, WEBAUTHN

ANONYMOUS = 0  # Authelia's authentication.NotAuthenticated; 1 and 2 are Session.level


async def state_get(request: web.Request) -> web.Response:
    """Answer `{"status":"OK","data":{"username","authentication_level","factor_knowledge"}}`
    (plus `default_redirection_url` when the cookie domain has one), as Authelia's StateGET.

    authentication_level: 0 anonymous (username ""), 1 one factor, 2 two factors;
    factor_knowledge: the session was opened with the password (RFC 8176 amr "pwd").
    """
    session = await current_session(request)
    data: dict[str, Any] = {
        "username": session.username if session is not None else "",
        "authentication_level": session.level if session is not None else ANONYMOUS,
        "factor_knowledge": session is not None and "pwd" in session.amr,
    }
    if default := session_cookie(request).default_redirection_url:
        data["default_redirection_url"] = default
    return web.json_response({"status": "OK", "data": data})


async def user_info_get(request: web.Request) -> web.Response:
    """Answer the signed-in user's `{"status":"OK","data":{"display_name","emails","groups",
    "has_totp","has_webauthn","method"}}` (Authelia's UserInfoGET; method: the second factor
    offered first, "totp" unless the user has only a passkey: "webauthn"), or 403
    `{"status":"KO"}` with no session (Authelia's Require1FA)."""
    session = await current_session(request)
    if session is None:
        return web.json_response({"status": "KO", "message": NOT_SIGNED_IN}, status=403)
    has_totp = await request.app[TOTP].configuration(session.username) is not None
    has_webauthn = await request.app[WEBAUTHN].registered(session.username)
    data = {
        "display_name": session.display_name,
        "emails": list(session.emails),
        "groups": list(session.groups),
        "has_totp": has_totp,
        "has_webauthn": has_webauthn,
        "method": "webauthn" if has_webauthn and not has_totp else "totp",
    }
    return web.json_response({"status": "OK", "data": data})
