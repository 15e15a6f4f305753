"""The signed-in password change over HTTP: the page /settings/password and Authelia's JSON route
POST /api/change-password. Both need an elevated session (require_elevation); the decisions are
PasswordSelfChange's (portal/password_self_change.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from portal.bodies import read_form
from portal.errors import CurrentPasswordRejectedError, PasswordRejectedError
from portal.handlers.common import parse_json, render_page, request_ip, require_session, see_other
from portal.handlers.elevation import require_elevation
from portal.keys import CONFIG, PASSWORD_SELF_CHANGE
from portal.password_policy import describe

PASSWORD_SETTINGS = "/settings/password"  # noqa: S105 - a path, not a secret
# The form's result page (redirect-after-POST).
CHANGED = PASSWORD_SETTINGS + "/changed"


def _page(request: web.Request, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("reasons", [])
    context.setdefault("current_error", "")
    hints = describe(request.app[CONFIG].password_policy)
    return render_page(request, "settings_password.html", status, hints=hints, **context)


async def password_get(request: web.Request) -> web.Response:
    """Show the form: current password, new password, the new one again."""
    await require_elevation(request, PASSWORD_SETTINGS)
    return _page(request)


async def password_post(request: web.Request) -> web.Response:
    """Change the password; show the form again with what is wrong, else go to CHANGED."""
    session = await require_elevation(request, PASSWORD_SETTINGS)
    form = await read_form(request)
    try:
        await request.app[PASSWORD_SELF_CHANGE].change(
            session,
            form.get("current_password", ""),
            form.get("password", ""),
            form.get("password_confirm", ""),
            request_ip(request),
        )
    except CurrentPasswordRejectedError as exc:
        return _page(request, exc.status, current_error=exc.public_message)
    except PasswordRejectedError as exc:
        return _page(request, exc.status, reasons=exc.reasons)
    raise see_other(CHANGED)


async def password_changed_get(request: web.Request) -> web.Response:
    """Say the password is changed and other sessions ended (signed in; no elevation needed)."""
    await require_session(request, PASSWORD_SETTINGS)
    return render_page(request, "settings_password_changed.html")


class ChangePasswordBody(BaseModel):
    """POST /api/change-password (Authelia's body): the current and the new password."""

    model_config = ConfigDict(extra="ignore", str_max_length=4096)

    old_password: str
    new_password: str


async def api_change_password_post(request: web.Request) -> web.Response:
    """Change the password: {"status":"OK"}; 400 {"status":"KO","message","reasons"} for a
    refused new password; 401 for a wrong current password (or no session); 403 unelevated."""
    session = await require_elevation(request)
    body = await parse_json(request, ChangePasswordBody)
    try:
        await request.app[PASSWORD_SELF_CHANGE].change(
            session, body.old_password, body.new_password, body.new_password, request_ip(request)
        )
    except PasswordRejectedError as exc:
        return web.json_response(
            {"status": "KO", "message": exc.public_message, "reasons": exc.reasons}, status=400
        )
    return web.json_response({"status": "OK"})
