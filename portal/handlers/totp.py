"""Registering and removing TOTP over HTTP: Authelia's JSON API (/api/secondfactor/totp/register,
/api/secondfactor/totp) and the settings page /settings/one-time-password. Every route needs an
elevated session (require_elevation); the decisions are TotpRegistration's.
"""

from __future__ import annotations

from typing import Any

import segno
from aiohttp import web
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict

from portal.bodies import read_form
from portal.errors import SecondFactorFailedError
from portal.handlers.common import parse_json, render_page, request_ip, require_session, see_other
from portal.handlers.elevation import require_elevation
from portal.keys import TOTP, TOTP_REGISTRATION
from portal.mail import when
from portal.second_factor import PendingTotp
from portal.sessions import Session

TOTP_SETTINGS = "/settings/one-time-password"
# Result pages of the form (redirect-after-POST): each says only what the stored state confirms.
REGISTERED = TOTP_SETTINGS + "/registered"
REMOVED = TOTP_SETTINGS + "/removed"


def qr_svg(text: str) -> Markup:
    """Return `text` as a QR code in an inline <svg> (segno; error correction M).

    Only presentation attributes (fill, stroke, a transform): no style attribute and no script,
    so the page's Content-Security-Policy stays 'self'. Dark modules on a white quiet zone of
    four modules whatever the theme, as scanners expect (ISO/IEC 18004 section 9.1).
    """
    code = segno.make(text, error="m", micro=False)
    svg = code.svg_inline(
        scale=1,
        border=4,
        dark="#000",
        light="#fff",
        omitsize=True,
        svgclass="qr",
        lineclass=None,
        title="QR code of the secret for your app",
    )
    return Markup(svg)  # noqa: S704 - segno's own markup; the text is inside path data only


def grouped(secret: str) -> str:
    """Return the base32 secret in groups of four letters for reading it out ("ABCD EFGH ...")."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


# -- JSON API (Authelia's routes and shapes) ----------------------------------------------------


class TokenBody(BaseModel):
    """POST /api/secondfactor/totp/register: the code the app shows now."""

    model_config = ConfigDict(extra="ignore", str_max_length=64)

    token: str


async def api_register_put(request: web.Request) -> web.Response:
    """Start a registration: {"status":"OK","data":{"secret_base32", "otpauth_url"}}; the body
    (Authelia's algorithm/length/period choices) is ignored: the configured ones apply."""
    session = await require_elevation(request)
    pending = await request.app[TOTP_REGISTRATION].begin(session, request_ip(request))
    data = {"secret_base32": pending.secret_base32, "otpauth_url": pending.otpauth_url}
    return web.json_response({"status": "OK", "data": data})


async def api_register_post(request: web.Request) -> web.Response:
    """Complete the registration with {"token": "123456"}: {"status":"OK"}, else 401 KO."""
    session = await require_elevation(request)
    body = await parse_json(request, TokenBody)
    await request.app[TOTP_REGISTRATION].complete(session, body.token, request_ip(request))
    return web.json_response({"status": "OK"})


async def api_totp_delete(request: web.Request) -> web.Response:
    """Remove the user's TOTP device: {"status":"OK"}, 404 KO when there is none."""
    session = await require_elevation(request)
    await request.app[TOTP_REGISTRATION].remove(session, request_ip(request))
    return web.json_response({"status": "OK"})


# -- the settings page ----------------------------------------------------------------------------


async def _page(
    request: web.Request,
    session: Session,
    status: int = 200,
    *,
    forms: bool = True,
    **context: Any,
) -> web.Response:
    """Render the settings page; forms=False for the result pages (state and a link only)."""
    registration = await request.app[TOTP].configuration(session.username)
    pending: PendingTotp | None = None
    if registration is None and forms:
        pending = request.app[TOTP_REGISTRATION].pending(session)
    context.update(
        registered_at=when(registration.created_at) if registration else None,
        registered=context.get("registered", False) and registration is not None,
        removed=context.get("removed", False) and registration is None,
        forms=forms,
    )
    if pending is not None:
        context.update(
            secret=pending.secret_base32,
            secret_grouped=grouped(pending.secret_base32),
            otpauth_url=pending.otpauth_url,
            qr=qr_svg(pending.otpauth_url),
            digits=pending.parameters.digits,
        )
    return render_page(request, "settings_one_time_password.html", status, **context)


async def settings_get(request: web.Request) -> web.Response:
    """Show whether TOTP is set up, and the registration in progress (QR code, secret, form)."""
    return await _page(request, await require_elevation(request, TOTP_SETTINGS))


async def settings_registered_get(request: web.Request) -> web.Response:
    """The page after a registration; it says "set up" only while a device is registered."""
    session = await require_session(request, TOTP_SETTINGS)
    return await _page(request, session, registered=True, forms=False)


async def settings_removed_get(request: web.Request) -> web.Response:
    """The page after a removal; it says "removed" only while no device is registered."""
    session = await require_session(request, TOTP_SETTINGS)
    return await _page(request, session, removed=True, forms=False)


async def settings_post(request: web.Request) -> web.Response:
    """action=start: begin a registration; action=confirm: check the code; action=remove."""
    session = await require_elevation(request, TOTP_SETTINGS)
    fields = await read_form(request)
    service, ip = request.app[TOTP_REGISTRATION], request_ip(request)
    action = fields.get("action")
    if action == "start":
        await service.begin(session, ip)
        raise see_other(TOTP_SETTINGS + "#totp-setup")
    if action == "remove":
        await service.remove(session, ip)
        raise see_other(REMOVED)
    try:
        await service.complete(session, fields.get("token", ""), ip)
    except SecondFactorFailedError as exc:
        return await _page(request, session, status=exc.status, error=exc.public_message)
    raise see_other(REGISTERED)
