"""`telemetry`: the Prometheus metrics listener (Authelia: schema/telemetry.go, same keys and
defaults; docs/content/configuration/telemetry/metrics.md).

`address` is a listener of its own, beside `server.address`: `tcp://[host]:port/path` (tcp4 and
tcp6 too; the path is where the metrics are served, `/metrics` when none is given) or
`unix:///path/to/socket` (the metrics then at `/metrics`). `buffers` are accepted for Authelia's
files and have no effect here: aiohttp sizes its buffers itself, and the metrics endpoint reads no
body. Of `timeouts`, `idle` is how long a kept-alive connection may wait for its next request;
`read` and `write` are accepted and have no effect (aiohttp has no per-read or per-write timeout).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field

from portal.config.types import Duration, Model

METRICS_PORT = 9959  # Prometheus's registered port for Authelia's exporter
METRICS_PATH = "/metrics"
_TCP = ("tcp", "tcp4", "tcp6")


@dataclass(frozen=True)
class MetricsAddress:
    """Where the metrics listener listens: scheme, host, port (tcp) or socket (unix), and the
    HTTP path the metrics are served at."""

    scheme: str
    host: str
    port: int
    socket: str
    path: str

    def __str__(self) -> str:
        """Show the address as a configuration would write it."""
        if self.scheme == "unix":
            return f"unix://{self.socket}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_metrics_address(value: Any) -> MetricsAddress:
    """Parse telemetry.metrics.address (Authelia's address syntax: a tcp scheme or unix).

    Raises ValueError naming what is wrong (scheme, port, path, socket).
    """
    if isinstance(value, MetricsAddress):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an address such as 'tcp://:9959/metrics'")
    text = value.strip()
    if "://" not in text:
        text = f"unix://{text}" if text.startswith("/") else f"tcp://{text}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc:
            raise ValueError(f"'{value}' must name an absolute socket path (unix:///path)")
        return MetricsAddress("unix", "", 0, parts.path, METRICS_PATH)
    if scheme not in _TCP:
        raise ValueError(f"scheme '{scheme}' is not supported; use 'tcp', 'tcp4', 'tcp6' or 'unix'")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"'{value}' has an invalid port") from exc
    if port is None:
        port = METRICS_PORT
    if port == 0:
        raise ValueError(f"'{value}' must name a port from 1 to 65535")
    path = parts.path or METRICS_PATH
    if path == "/":
        path = METRICS_PATH
    if parts.query or parts.fragment or "//" in path or not path.isprintable():
        raise ValueError(f"'{value}' must have a plain path such as /metrics")
    return MetricsAddress(scheme, parts.hostname or "", port, "", path)


class ServerBuffers(Model):
    """Authelia's server-buffers structure (bytes); accepted, without effect here."""

    read: int = Field(4096, gt=0)
    write: int = Field(4096, gt=0)


class ServerTimeouts(Model):
    """Authelia's server-timeouts structure; `idle` is the keep-alive timeout."""

    read: Duration = timedelta(seconds=6)
    write: Duration = timedelta(seconds=6)
    idle: Duration = timedelta(seconds=30)


class MetricsConfig(Model):
    """The Prometheus metrics listener (Authelia's telemetry.metrics)."""

    enabled: bool = False
    address: Annotated[MetricsAddress, BeforeValidator(parse_metrics_address)] = (
        parse_metrics_address(f"tcp://:{METRICS_PORT}{METRICS_PATH}")
    )
    buffers: ServerBuffers = ServerBuffers()
    timeouts: ServerTimeouts = ServerTimeouts()


class TelemetryConfig(Model):
    """Authelia's `telemetry` section: metrics only."""

    metrics: MetricsConfig = MetricsConfig()
