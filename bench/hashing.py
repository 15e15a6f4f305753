"""Event-loop lag and memory while eight sign-ins hash their passwords at once (issue 19, goal 3).

The goal: while 8 sign-ins run at once against users hashed with argon2id at Authelia's defaults
(64 MiB, 3 iterations, 4 lanes: the portal's defaults too, portal/config/authentication_backend/
hashing.py), GET /api/health answers within 20 ms at most and 10 ms at the 99th percentile, and
the portal's peak resident memory stays under 250 MB.

    python bench/hashing.py [--rounds 3] [--signins 8] [--interval 0.002]
                            [--concurrency default|N ...]

The portal runs as an admin runs it (`python -m portal serve`: file backend, sqlite, filesystem
notifier, the default log level). The users file holds real argon2id hashes made with the
default parameters. Each round first probes /api/health for a second with nothing else going on
(the machine's own noise), then sends the sign-ins through /api/firstfactor all at once, half for
known users with their right password and half for usernames nobody has (the portal verifies a
stored hash for those too), in an order shuffled anew for each round by a seeded random.Random
(the same orders on every run) and drawn so that both kinds sit at the same places on average:
the hashing queue is first come first served, so a fixed order (known, unknown, known, ...) made
each unknown name wait one hash more than the known one before it (its median 170-290 ms
higher), and a plain shuffle of 3 bursts can be as lopsided. Meanwhile a probe thread polls
/api/health over one kept-alive connection every `--interval` seconds until the last sign-in has
its answer. The probe is a plain blocking socket in a thread of its own, so the figures are the
portal's lag, not this script's.

Prints, per round and over all rounds: the health probe's max, p99, p90 and median latency during
the sign-ins (and when idle), the sign-ins' own latencies, the portal's peak resident memory
(VmHWM from /proc/<pid>/status: the peak since it started, start-up included) and the load
average, then PASS/FAIL lines. `--concurrency` sets password_hashing.concurrency: several values
run one portal after the other and end with a summary line each, to compare settings in one run
(`--concurrency 6 default`: 6 is what the default thread pool ran on 2 cores before the queue;
`default` leaves the key unset). Linux only (/proc). Exits 0 whatever the verdicts, 1 if a
portal failed to start or a sign-in got an unexpected answer. Not a test: timings depend on the
machine, so pytest never runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from _portal import (
    HEALTH,
    free_port,
    portal_command,
    portal_environment,
    start,
    stop,
    wait_until_up,
    write_yaml,
)
from argon2 import PasswordHasher

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PASSWORD = "bench-password"  # noqa: S105 - the benchmark users' throwaway password
MAX_MS, P99_MS, RSS_MB = 20.0, 10.0, 250.0
SEED = 19  # the shuffles of the bursts' order: the same on every run, for every setting
SHUFFLES = 200  # shuffles drawn per burst, the most even kept


def write_users(path: Path, count: int) -> list[str]:
    """Write `count` users sharing one argon2id hash at Authelia's defaults; return their names."""
    hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, hash_len=32)
    digest = hasher.hash(PASSWORD)
    names = [f"user{i:02d}" for i in range(count)]
    users = {n: {"displayname": n, "password": digest, "email": f"{n}@example.com"} for n in names}
    write_yaml(path, {"users": users})
    return names


def write_config(directory: Path, port: int, concurrency: int | None) -> Path:
    """Write the portal's configuration; the secrets come from the environment."""
    raw: dict[str, Any] = {
        "server": {"address": f"tcp://{HOST}:{port}"},
        "log": {"file_path": str(directory / "portal-log.txt")},
        "authentication_backend": {"file": {"path": str(directory / "users.yml")}},
        "notifier": {"filesystem": {"filename": str(directory / "notification.txt")}},
        "session": {"cookies": [{"domain": HOST, "authelia_url": f"http://{HOST}:{port}"}]},
        "storage": {"local": {"path": str(directory / "db.sqlite3")}},
        # Every unknown name fails once: no ban for the script's address after the first round.
        "regulation": {"modes": ["user"]},
    }
    if concurrency is not None:
        raw["password_hashing"] = {"concurrency": concurrency}
    return write_yaml(directory / "configuration.yml", raw)


def peak_rss_mb(pid: int) -> float:
    """Return the process's peak resident set size (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc status")


class HealthProbe(threading.Thread):
    """Poll GET /api/health every `interval` seconds until stopped; keep each latency (ms)."""

    def __init__(self, port: int, interval: float) -> None:
        """Connect lazily to 127.0.0.1:port; nothing is sent before start()."""
        super().__init__(daemon=True)
        self._port = port
        self._interval = interval
        self._done = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0

    def run(self) -> None:
        """Send one request at a time over one kept-alive connection."""
        conn = http.client.HTTPConnection(HOST, self._port, timeout=10)
        try:
            while not self._done.is_set():
                began = time.perf_counter()
                try:
                    conn.request("GET", HEALTH)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        self.errors += 1
                except (OSError, http.client.HTTPException):
                    self.errors += 1
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, self._port, timeout=10)
                self.latencies.append((time.perf_counter() - began) * 1000)
                self._done.wait(self._interval)
        finally:
            conn.close()

    def finish(self) -> list[float]:
        """Stop polling and return the latencies (ms)."""
        self._done.set()
        self.join()
        return self.latencies


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of values (fraction in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def describe(values: list[float]) -> str:
    """Format max, p99, p90 and median of latencies in ms."""
    return (
        f"max {max(values):7.1f}  p99 {percentile(values, 0.99):7.1f}  "
        f"p90 {percentile(values, 0.9):7.1f}  median {statistics.median(values):6.1f} ms"
        f"  (n={len(values)})"
    )


@dataclass
class Figures:
    """What the rounds measured: health latencies (ms) and sign-in latencies (ms) by kind."""

    idle: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    known: list[float] = field(default_factory=list)
    unknown: list[float] = field(default_factory=list)


async def sign_in(url: str, username: str) -> tuple[float, int]:
    """Sign in through /api/firstfactor on a fresh client; return (latency ms, status)."""
    async with aiohttp.ClientSession() as session:
        began = time.perf_counter()
        async with session.post(
            url + "/api/firstfactor", json={"username": username, "password": PASSWORD}
        ) as response:
            await response.read()
            return (time.perf_counter() - began) * 1000, response.status


def shuffled(who: list[tuple[str, bool]], order: random.Random) -> list[tuple[str, bool]]:
    """Return the (name, is known) sign-ins in a shuffled order where known and unknown names sit
    at the same places on average (as near as their counts allow): the most even of SHUFFLES
    shuffles drawn from `order`, the first one found if several are as even."""

    def unevenness(candidate: list[tuple[str, bool]]) -> float:
        places = {
            kind: [i for i, (_, known) in enumerate(candidate) if known is kind]
            for kind in (True, False)
        }
        if not places[True] or not places[False]:
            return 0.0
        return abs(statistics.fmean(places[True]) - statistics.fmean(places[False]))

    return min((order.sample(who, len(who)) for _ in range(SHUFFLES)), key=unevenness)


async def one_round(
    url: str,
    port: int,
    names: list[str],
    serial: int,
    signins: int,
    interval: float,
    order: random.Random,
) -> Figures:
    """Probe idle for a second, then during a burst of sign-ins sent in an order drawn from
    `order`; return the round's figures."""
    figures = Figures()
    probe = HealthProbe(port, interval)
    probe.start()
    await asyncio.sleep(1.0)
    figures.idle = probe.finish()
    who = shuffled(
        [
            (names[i % len(names)], True) if i % 2 == 0 else (f"nobody{serial:02d}x{i:02d}", False)
            for i in range(signins)
        ],
        order,
    )
    probe = HealthProbe(port, interval)
    probe.start()
    await asyncio.sleep(0.05)  # a few quiet samples first
    results = await asyncio.gather(*(sign_in(url, name) for name, _ in who))
    figures.busy = probe.finish()
    for (name, is_known), (latency, status) in zip(who, results, strict=True):
        expected = 200 if is_known else 401
        if status != expected:
            raise RuntimeError(f"sign-in of {name} answered {status}, expected {expected}")
        (figures.known if is_known else figures.unknown).append(latency)
    return figures


def verdict(ok: bool, text: str) -> None:
    """Print one PASS/FAIL line."""
    print(f"  {'PASS' if ok else 'FAIL'}  {text}")


def setting(concurrency: int | None) -> str:
    """Name a password_hashing.concurrency setting for the figures."""
    return "default" if concurrency is None else str(concurrency)


async def run(directory: Path, args: argparse.Namespace, concurrency: int | None) -> list[str]:
    """Start the portal in directory, run the rounds, print the figures; return a summary line.

    Raises RuntimeError if the portal does not start or a sign-in gets an unexpected answer.
    """
    names = write_users(directory / "users.yml", args.signins)
    port = free_port()
    config = write_config(directory, port, concurrency)
    log = directory / "portal.log"
    process = start(portal_command(config), REPO, log, portal_environment())
    url = f"http://{HOST}:{port}"
    print(f"\n== password_hashing.concurrency: {setting(concurrency)}")
    try:
        if not await wait_until_up(url, process):
            raise RuntimeError(f"the portal did not start:\n{log.read_text()}")
        await sign_in(url, names[0])  # warm up: the first sign-in's imports and caches
        started_rss = peak_rss_mb(process.pid)
        total = Figures()
        order = random.Random(SEED)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for serial in range(args.rounds):
            figures = await one_round(url, port, names, serial, args.signins, args.interval, order)
            print(f"round {serial + 1}: health during {describe(figures.busy)}")
            print(f"         health idle   {describe(figures.idle)}")
            print(
                f"         sign-ins known {statistics.median(figures.known):6.0f} ms median "
                f"{max(figures.known):6.0f} max, unknown "
                f"{statistics.median(figures.unknown):6.0f} ms median "
                f"{max(figures.unknown):6.0f} max"
            )
            for name in ("idle", "busy", "known", "unknown"):
                getattr(total, name).extend(getattr(figures, name))
        rss = peak_rss_mb(process.pid)
        load = os.getloadavg()
    finally:
        stop(process)
    print(f"all {args.rounds} rounds of {args.signins} sign-ins:")
    print(f"  health during sign-ins {describe(total.busy)}")
    print(f"  health idle            {describe(total.idle)}")
    print(f"  sign-in known          {describe(total.known)}")
    print(f"  sign-in unknown        {describe(total.unknown)}")
    print(f"  peak RSS {rss:.0f} MB (after the warm-up sign-in: {started_rss:.0f} MB)")
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in load)}")
    worst, p99 = max(total.busy), percentile(total.busy, 0.99)
    verdicts = [
        (worst < MAX_MS, f"health max {worst:.1f} ms < {MAX_MS:.0f} ms"),
        (p99 < P99_MS, f"health p99 {p99:.1f} ms < {P99_MS:.0f} ms"),
        (rss < RSS_MB, f"peak RSS {rss:.0f} MB < {RSS_MB:.0f} MB"),
    ]
    for ok, text in verdicts:
        verdict(ok, text)
    signins = total.known + total.unknown
    return [
        f"{setting(concurrency):>8}  health max {worst:6.1f} p99 {p99:6.1f} "
        f"p90 {percentile(total.busy, 0.9):5.1f} ms, idle p99 {percentile(total.idle, 0.99):5.1f} "
        f"ms, sign-in median {statistics.median(signins):5.0f} max {max(signins):5.0f} ms, "
        f"RSS {rss:4.0f} MB, load {os.getloadavg()[0]:.2f}"
    ]


def main() -> int:
    """Parse the arguments and run the benchmark once per setting in a temporary directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--signins", type=int, default=8, help="sign-ins sent at once per round")
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between probes")
    parser.add_argument(
        "--concurrency",
        nargs="+",
        default=["default"],
        help="password_hashing.concurrency values to run one after the other ('default': unset)",
    )
    args = parser.parse_args()
    summary: list[str] = []
    try:
        for value in args.concurrency:
            with tempfile.TemporaryDirectory() as tmp:
                concurrency = None if value == "default" else int(value)
                summary += asyncio.run(run(Path(tmp), args, concurrency))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if len(summary) > 1:
        print("\nsummary (one portal after the other, same machine, same minute):")
        print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
