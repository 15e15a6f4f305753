"""The organisation's logo and favicon, from Authelia's `server.asset_path`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from portal.config import Config

LOGO = "/static/media/logo.png"  # Authelia's address for it
FAVICON = "/favicon.ico"


def asset(config: Config, name: str) -> Path | None:
    """Return server.asset_path/name if the admin put that file there, else None."""
    directory = config.server.asset_path
    if directory is None or not (directory / name).is_file():
        return None
    return directory / name


def file_handler(
    path: Path, content_type: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Return a handler that serves this one file (only the files named are ever served)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(path, headers={"Content-Type": content_type})
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    return serve
