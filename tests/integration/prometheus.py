"""A real Prometheus server (Debian's `prometheus` package) scraping one target, and promtool.

The server runs in the foreground in a temporary directory (its TSDB there too), listens on a
free loopback port, and scrapes the target every 500 ms; `query` asks its HTTP API
(/api/v1/query) for an instant vector. A missing binary is a failure, never a skip:
`make system-deps` installs the package.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.process import (
    HOST,
    free_port,
    read_log,
    spawn,
    stop_process,
    tail,
    wait_until_ready,
)

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SCRAPE_INTERVAL = "500ms"


def promtool_check_metrics(text: str) -> tuple[int, list[str]]:
    """Run `promtool check metrics` on exposition text; return its status and problem lines."""
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (done.stdout + done.stderr).decode()
    return done.returncode, [line for line in output.splitlines() if line.strip()]


@dataclass
class PrometheusServer:
    """A running Prometheus: its API's base URL and its log."""

    url: str
    log_path: Path

    def query(self, expression: str) -> list[dict[str, object]]:
        """Return the instant vector the expression evaluates to (each: metric, value)."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(address, timeout=5) as answer:  # noqa: S310 - loopback http
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def value(self, expression: str) -> float | None:
        """Return the single sample's value, or None when the vector is empty."""
        result = self.query(expression)
        if not result:
            return None
        assert len(result) == 1, result
        sample = result[0]["value"]
        assert isinstance(sample, list)
        return float(sample[1])


@contextmanager
def running_prometheus(workdir: Path, target: str, metrics_path: str) -> Iterator[PrometheusServer]:
    """Run Prometheus in workdir scraping http://target{metrics_path}; stop it afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (workdir / "prometheus.yml").write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  scrape_timeout: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n"
        "  - job_name: portal\n"
        f"    metrics_path: {metrics_path}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    log_path = workdir / "prometheus.log"
    log = log_path.open("wb")
    process = spawn(
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--web.console.templates=/nonexistent",
            "--web.console.libraries=/nonexistent",
        ],
        workdir,
        log,
    )
    server = PrometheusServer(f"http://{HOST}:{port}", log_path)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_until_ready(
            process,
            ready,
            timeout=START_TIMEOUT,
            interval=0.1,
            exited=lambda status: RuntimeError(
                f"prometheus exited with {status}:\n{tail(read_log(log_path), 'prometheus')}"
            ),
            timed_out=lambda: RuntimeError(
                f"prometheus was not ready in {START_TIMEOUT}s:\n"
                f"{tail(read_log(log_path), 'prometheus')}"
            ),
        )
        yield server
    finally:
        stop_process(process, STOP_TIMEOUT, log=log)
