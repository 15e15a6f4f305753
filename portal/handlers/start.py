"""The portal's start page (the sign-in form replaces it)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from portal.keys import CONFIG


def forgot_password_url(request: web.Request) -> str | None:
    """Return where "Forgot password?" leads: ours, the configured custom_url, or nowhere."""
    reset = request.app[CONFIG].authentication_backend.password_reset
    if reset.disable:
        return None
    return reset.custom_url or "/reset-password/step1"


async def start_get(request: web.Request) -> web.Response:
    """Show the start page."""
    context = {"forgot_url": forgot_password_url(request)}
    return aiohttp_jinja2.render_template("pages/start.html", request, context)
