"""A tiny protected application for the nginx tests: it answers every path with what nginx told
it, as JSON, so a test can see who the app believes the visitor is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"
REMOTE_HEADERS = ("Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email", "Remote-JWT")
_REMOTE_NAMES = frozenset(name.lower() for name in REMOTE_HEADERS)
FORWARDED_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Original-URL")


@dataclass
class ProtectedApp:
    """The running app: its address, and every request that got through nginx to it."""

    host: str
    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        """Return host:port, as nginx's proxy_pass wants it."""
        return f"{self.host}:{self.port}"


def echo(request: web.Request) -> dict[str, Any]:
    """Describe a request: path, query, method, and every value of the headers that matter."""
    return {
        "path": request.path,
        "query": request.query_string,
        "method": request.method,
        # Every value, not the first: a forged header next to the real one must show.
        "remote": {
            name: request.headers.getall(name) for name in REMOTE_HEADERS if name in request.headers
        },
        # A Remote-* name spelled with '_' (Remote_JWT): frameworks that map headers to
        # HTTP_REMOTE_JWT (WSGI, CGI, PHP) would take it for the real one.
        "smuggled": sorted(
            name
            for name in request.headers
            if "_" in name and name.lower().replace("_", "-") in _REMOTE_NAMES
        ),
        "forwarded": {
            name: request.headers.getall(name)
            for name in FORWARDED_HEADERS
            if name in request.headers
        },
    }


def create_protected_app(app: ProtectedApp) -> web.Application:
    """Build the aiohttp application that records and echoes every request."""

    async def answer(request: web.Request) -> web.Response:
        seen = echo(request)
        app.seen.append(seen)
        return web.json_response(seen)

    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", answer)
    return web_app


@asynccontextmanager
async def run_protected_app(host: str = HOST) -> AsyncIterator[ProtectedApp]:
    """Serve the app on a free port of host until the block ends."""
    app = ProtectedApp(host, 0)
    runner = web.AppRunner(create_protected_app(app), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        app.port = runner.addresses[0][1]
        yield app
    finally:
        await runner.cleanup()
