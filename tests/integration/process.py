"""The process plumbing the server fixtures share (slapd.py, samba_ad.py, nginx.py): free ports,
a server started in the foreground with its output in a log file, waiting until it is ready or
has died, and stopping it for sure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def accepts(host: str, port: int) -> bool:
    """Tell whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def spawn(
    command: Sequence[str],
    cwd: Path,
    log: IO[bytes],
    *,
    env: dict[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a server in cwd, no stdin, stdout and stderr into log (env None: inherit ours)."""
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=new_session,
    )


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    timeout: float,
    interval: float,
    exited: Callable[[int], Exception],
    timed_out: Callable[[], Exception],
) -> None:
    """Poll ready() until it is true; raise exited(status) if the process ends first, or
    timed_out() once timeout seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise exited(process.returncode)
        if ready():
            return
        if time.monotonic() > deadline:
            raise timed_out()
        time.sleep(interval)


def stop_process(
    process: subprocess.Popen[bytes] | None,
    timeout: float,
    *,
    log: IO[bytes] | None = None,
    group: bool = False,
) -> None:
    """SIGTERM the process, SIGKILL it (its whole process group with group) if it is still
    there after timeout, wait for it; then close its log. None is nothing to stop."""
    try:
        if process is not None:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if group:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
                process.wait()
    finally:
        if log is not None:
            log.close()


def read_log(path: Path, offset: int = 0) -> str:
    """Return what the file holds from offset on ("" if there is no file)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def tail(text: str, name: str, lines: int = 30) -> str:
    """Return the last lines of a server's output, or a note that it wrote nothing."""
    return "\n".join(text.splitlines()[-lines:]) or f"({name} wrote nothing)"
