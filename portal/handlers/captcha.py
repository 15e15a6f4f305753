"""The ALTCHA widget's challenge endpoint."""

from __future__ import annotations

from aiohttp import web

from portal.handlers.common import request_ip
from portal.keys import CAPTCHA


async def challenge_get(request: web.Request) -> web.Response:
    """Return a fresh signed challenge; never cached, counted per client address."""
    challenge = await request.app[CAPTCHA].challenge(request_ip(request))
    response = web.json_response(challenge)
    response.headers["Cache-Control"] = "no-store"
    return response
