"""Prometheus metrics (telemetry.metrics): Authelia's, the portal's own, and their listener.

`core` holds the metrics and what moves them (audit events, requests, scrape-time reads),
`seams` the wrappers and the middleware that feed them, `listener` the server that serves them.
See core's docstring for the whole picture.
"""

from portal.metrics.core import (
    AUTHN_BUCKETS,
    CONTENT_TYPE,
    REQUEST_BUCKETS,
    Metrics,
    PoolStats,
)
from portal.metrics.listener import start_listener
from portal.metrics.seams import MeteredNotifier, MeteredUsers, request_middleware

__all__ = [
    "AUTHN_BUCKETS",
    "CONTENT_TYPE",
    "MeteredNotifier",
    "MeteredUsers",
    "Metrics",
    "PoolStats",
    "REQUEST_BUCKETS",
    "request_middleware",
    "start_listener",
]
