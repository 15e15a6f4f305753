"""Opening a listener of the portal's own beside `server.address`: the metrics' and the authz's."""

from __future__ import annotations

from aiohttp import web

from portal.errors import StartupCheckError


async def listen(
    runner: web.BaseRunner, key: str, shown: object, *, unix: str | None, host: str, port: int
) -> None:
    """Start `runner` (already set up) on the unix socket at path `unix`, or else on host:port
    (host "" means every address). When that fails, clean the runner up and raise
    StartupCheckError "<key>: cannot listen on <shown>: <reason>" (shown: the address as
    configured, `key` its configuration key)."""
    site: web.BaseSite
    if unix is not None:
        site = web.UnixSite(runner, unix)
    else:
        site = web.TCPSite(runner, host or None, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupCheckError(f"{key}: cannot listen on {shown}: {exc.strerror or exc}") from None
