"""The metrics listener: telemetry.metrics.address, a small aiohttp server of its own."""

from __future__ import annotations

import logging

from aiohttp import web

from portal.config import MetricsConfig
from portal.listen import listen
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
    unix = address.socket if address.scheme == "unix" else None
    await listen(
        runner,
        "telemetry.metrics.address",
        address,
        unix=unix,
        host=address.host,
        port=address.port,
    )
    log.info("metrics served on %s", address)
    return runner
