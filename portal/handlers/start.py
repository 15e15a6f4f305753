"""Where "Forgot password?" leads."""

from __future__ import annotations

from aiohttp import web

from portal.keys import CONFIG


def forgot_password_url(request: web.Request) -> str | None:
    """Return where "Forgot password?" leads: ours, the configured custom_url, or nowhere."""
    reset = request.app[CONFIG].authentication_backend.password_reset
    if reset.disable:
        return None
    return reset.custom_url or "/reset-password/step1"
