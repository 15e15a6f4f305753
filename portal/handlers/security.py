"""The security settings page /settings and the user's sessions over HTTP.

/settings gathers the account's security on one page: the password, the second factors, the
security questions and the active sessions, each session with a form that signs it out.
GET /api/user/sessions lists the sessions; DELETE /api/user/sessions/{id} ends one and
DELETE /api/user/sessions every one but the current (the JSON shapes: README, "Security
settings"). Ending sessions needs no elevated session: it can only take access away.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from portal.bodies import read_form
from portal.errors import SessionNotFoundError, SignInRequiredError
from portal.handlers.common import (
    current_session,
    render_page,
    require_session,
    route_path,
    see_other,
    session_cookie,
)
from portal.handlers.signin import SIGNED_OUT
from portal.keys import CONFIG, QUESTIONS, SESSIONS, TOTP, WEBAUTHN
from portal.mail import when
from portal.session_cookies import cookie_attributes
from portal.sessions import ListedSession, Session

SETTINGS = "/settings"
SESSIONS_FORM = SETTINGS + "/sessions"
# The page after a form (redirect-after-POST), with what happened as a query word.
ENDED_ONE, ENDED_OTHERS = "ended", "ended_others"
PASSWORD_PAGE = "/settings/password"  # noqa: S105 - a path (pwchange builds the page)

# Words of a User-Agent naming a browser or a system, in order of precedence (Edge and Opera
# say "Chrome" too, Chrome says "Safari", Android says "Linux").
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Windows", "Windows"),
    ("Linux", "Linux"),
)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def device_name(user_agent: str) -> str:
    """Return a readable name for a User-Agent: "Firefox on Linux", "Chrome", "Android"; the
    string itself (printable ASCII, at most 60 characters) when it names neither; "Unknown
    device" when empty. A hint, not a fact: any client may send any User-Agent."""
    browser = next((name for word, name in _BROWSERS if word in user_agent), None)
    system = next((name for word, name in _SYSTEMS if word in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or system or ""
    text = _UNPRINTABLE.sub("", user_agent).strip()
    if not text:
        return "Unknown device"
    return text if len(text) <= 60 else text[:59] + "…"


async def _listed(request: web.Request, session: Session) -> list[ListedSession]:
    return await request.app[SESSIONS].list_user_sessions(
        session.username, request.app[CONFIG].session.cookies, current_id=session.id
    )


def _has_path(request: web.Request, path: str) -> bool:
    return any(r.canonical == path for r in request.app.router.resources())


# -- the page -------------------------------------------------------------------------------------


async def _page(
    request: web.Request, session: Session, status: int = 200, **context: Any
) -> web.Response:
    sessions = await _listed(request, session)
    totp = await request.app[TOTP].configuration(session.username)
    questions_url = route_path(request, "security_questions")
    questions_set_at = (
        await request.app[QUESTIONS].set_at(session.username) if questions_url else None
    )
    rows = [
        {
            "id": s.id,
            "current": s.current,
            "device": device_name(s.user_agent),
            "user_agent": s.user_agent,
            "ip": s.ip or "Unknown",
            "created_at": when(s.created_at),
            "last_seen_at": when(s.last_seen_at),
        }
        for s in sessions
    ]
    passkeys_url = route_path(request, "webauthn_settings")
    passkeys = [
        {
            "description": c.description,
            "added": when(c.created_at),
            "last_used": when(c.last_used_at) if c.last_used_at else None,
        }
        for c in (await request.app[WEBAUTHN].credentials(session.username) if passkeys_url else [])
    ]
    context.update(
        username=session.username,
        display_name=session.display_name or session.username,
        password_url=PASSWORD_PAGE if _has_path(request, PASSWORD_PAGE) else None,
        reset_url=route_path(request, "reset_step1"),
        totp_url=route_path(request, "totp_settings"),
        totp_added_at=when(totp.created_at) if totp else None,
        totp_last_used_at=when(totp.last_used_at) if totp and totp.last_used_at else None,
        passkeys_url=passkeys_url,
        passkeys=passkeys,
        questions_url=questions_url,
        questions_set_at=when(questions_set_at) if questions_set_at else None,
        sessions=rows,
        others=sum(not s.current for s in sessions),
    )
    return render_page(request, "settings.html", status, **context)


async def settings_get(request: web.Request) -> web.Response:
    """Show the account's security; ?ended or ?ended_others says what the last form did."""
    session = await require_session(request, SETTINGS)
    return await _page(
        request,
        session,
        ended=ENDED_ONE in request.query,
        ended_others=ENDED_OTHERS in request.query,
    )


async def sessions_post(request: web.Request) -> web.Response:
    """action=end with id: sign that session out (the current one: sign out here too);
    action=end_others: every session but this one. Then back to /settings (303)."""
    session = await require_session(request, SETTINGS)
    fields = await read_form(request)
    sessions = request.app[SESSIONS]
    if fields.get("action") == "end_others":
        await sessions.destroy_user(session.username, keep=session.id)
        raise see_other(f"{SETTINGS}?{ENDED_OTHERS}")
    ended = await sessions.end_user_session(session.username, fields.get("id", ""))
    if ended is None:
        error = "That session is no longer active, or is not one of yours."
        return await _page(request, session, status=404, error=error)
    if ended == session.id:
        response = see_other(f"/?{SIGNED_OUT}")
        _clear_cookie(request, response)
        raise response
    raise see_other(f"{SETTINGS}?{ENDED_ONE}")


def _clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    cookie = session_cookie(request)
    attributes = cookie_attributes(cookie, remember_me=False)
    response.del_cookie(cookie.name or "", domain=attributes.get("domain"), path="/")


# -- JSON API -------------------------------------------------------------------------------------


async def _api_session(request: web.Request) -> Session:
    session = await current_session(request)
    if session is None:
        raise SignInRequiredError()
    return session


async def api_sessions_get(request: web.Request) -> web.Response:
    """Answer `{"status":"OK","data":[{"id","current","created_at","last_seen_at","ip",
    "user_agent"}]}`: the signed-in user's live sessions, oldest first, times in Unix seconds;
    401 `{"status":"KO"}` without a session."""
    session = await _api_session(request)
    data = [
        {
            "id": s.id,
            "current": s.current,
            "created_at": s.created_at,
            "last_seen_at": s.last_seen_at,
            "ip": s.ip,
            "user_agent": s.user_agent,
        }
        for s in await _listed(request, session)
    ]
    return web.json_response({"status": "OK", "data": data})


async def api_session_delete(request: web.Request) -> web.Response:
    """End one of the user's own sessions by its public id: `{"status":"OK"}`; ending the
    current one signs out (the cookie is cleared); 404 KO for an id that is not one of the
    user's live sessions (another user's included)."""
    session = await _api_session(request)
    ended = await request.app[SESSIONS].end_user_session(
        session.username, request.match_info["session_id"]
    )
    if ended is None:
        raise SessionNotFoundError()
    response = web.json_response({"status": "OK"})
    if ended == session.id:
        _clear_cookie(request, response)
    return response


async def api_sessions_delete(request: web.Request) -> web.Response:
    """End every session of the user but the current one: `{"status":"OK","data":{"ended": n}}`."""
    session = await _api_session(request)
    ended = await request.app[SESSIONS].destroy_user(session.username, keep=session.id)
    return web.json_response({"status": "OK", "data": {"ended": ended}})
