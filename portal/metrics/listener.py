"""The metrics listener: telemetry.metrics.address, a small aiohttp server of its own."""

from __future__ import annotations

import logging

from aiohttp import web

from portal.config import MetricsConfig
from portal.errors import StartupCheckError
from portal.metrics.core import CONTENT_TYPE, Metrics

log = logging.getLogger("portal.metrics")


async def start_listener(metrics: Metrics, config: MetricsConfig) -> web.AppRunner:
    """Serve the metrics at telemetry.metrics.address, beside the portal's own listener.

    GET (and HEAD) on the address's path answer the text format; anything else 404/405. Raises
    StartupCheckError naming telemetry.metrics.address when it cannot listen there.
    """

    async def scrape(request: web.Request) -> web.Response:
        await metrics.refresh()
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get(config.address.path, scrape, name="metrics")
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=config.timeouts.idle.total_seconds(),
    )
    await runner.setup()
    address = config.address
    site: web.BaseSite
    if address.scheme == "unix":
        site = web.UnixSite(runner, address.socket)
    else:
        site = web.TCPSite(runner, address.host or None, address.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupCheckError(
            f"telemetry.metrics.address: cannot listen on {address}: {exc.strerror or exc}"
        ) from None
    log.info("metrics served on %s", address)
    return runner
