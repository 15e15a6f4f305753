"""What the benchmarks share: the portal as an admin runs it (`python -m portal serve` with its
configuration and secrets), and starting, waiting for and stopping a server process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
HEALTH = "/api/health"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port nobody listens on at the moment."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_yaml(path: Path, data: Any) -> Path:
    """Write data as YAML (a configuration or users file) and return the path."""
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(data, handle)
    return path


def portal_environment() -> dict[str, str]:
    """Return our environment with the portal's secrets set and this repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "AUTHELIA_"))}
    env["PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET"] = "b" * 64
    env["PORTAL_STORAGE_ENCRYPTION_KEY"] = "k" * 40
    env["PORTAL_SESSION_SECRET"] = "s" * 40  # encrypts session records in Redis
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def portal_command(config: Path) -> list[str]:
    """Return the command line that serves the portal with this configuration file."""
    return [sys.executable, "-m", "portal", "serve", "--config", str(config)]


def start(
    args: Sequence[str], cwd: Path, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start a server process with its output going to a log file."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(args),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server with SIGTERM, killing it if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> bool:
    """Poll url/api/health for up to 30 s; False if the process exits or never answers."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                async with session.get(url + HEALTH) as response:
                    if response.status == 200:
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    return False
