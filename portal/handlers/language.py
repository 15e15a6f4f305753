"""The language switch: /language/{code}?back=PATH sets the portal_language cookie and goes back.

Plain links, so the switch works without JavaScript. `back` must be a path on the portal
(one leading slash, no scheme, no host, no backslash or control character): anything else goes
to the start page, so the switch is never an open redirect (OWASP ASVS 5.0 V3.7).
"""

from __future__ import annotations

import re

from aiohttp import web

from portal.i18n import COOKIE, LANGUAGES
from portal.keys import CONFIG

# A year: the choice is a preference, not a secret; the switch replaces it.
COOKIE_MAX_AGE = 365 * 24 * 3600
MAX_BACK = 2048
# A path on this portal: "/" then anything but a second "/" or "\" first (//host, /\host are
# other hosts to a browser), and no control character or space anywhere.
_SAFE_BACK = re.compile(r"/(?![/\\])[^\x00-\x20\x7f\\]*")


def safe_back(back: str | None) -> str:
    """Return back if it is a path on the portal (at most 2048 characters), else "/"."""
    if back is None or len(back) > MAX_BACK or _SAFE_BACK.fullmatch(back) is None:
        return "/"
    return back


async def language_get(request: web.Request) -> web.Response:
    """Keep the chosen language in the cookie and answer 303 to `back` (raised, as aiohttp wants
    its HTTP exceptions; 404 for a language the portal does not speak)."""
    code = request.match_info["code"]
    if code not in LANGUAGES:
        raise web.HTTPNotFound()
    response = web.HTTPSeeOther(safe_back(request.query.get("back")))
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        COOKIE,
        code,
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Lax",
        # SECURITY: the portal's public address says https, not the hop from nginx (plain
        # HTTP when nginx ends TLS), as for every other cookie of the portal.
        secure=request.app[CONFIG].portal_is_https,
    )
    raise response
