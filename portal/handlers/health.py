"""The health endpoint that load balancers and nginx probe."""

from __future__ import annotations

from aiohttp import web


async def health_get(request: web.Request) -> web.Response:
    """Answer that the portal is up."""
    return web.json_response({"status": "OK"})
