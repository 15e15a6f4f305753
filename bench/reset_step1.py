"""Time POST /reset-password/step1 for existing and unknown users against the real portal.

The goal (reset timing issue): at least 200 requests of each kind, interleaved; the medians differ
by less than 2 ms and both stay under 10 ms on a 2-core machine. A bare aiohttp handler is timed
the same way in the same run, as the baseline the portal's figures are read against.

    python bench/reset_step1.py [--requests 200] [--warmup 20]

Prints figures and PASS/FAIL lines; exits 0 unless a server failed to start. Not a test: timings
depend on the machine, so pytest never runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from _portal import (
    free_port,
    portal_command,
    portal_environment,
    start,
    stop,
    wait_until_up,
    write_yaml,
)
from aiohttp import web
from argon2 import PasswordHasher

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from portal.notify.filesystem import split_messages  # noqa: E402 - after the path is set

STEP1 = "/reset-password/step1"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
GOAL_DIFF_MS = 2.0
GOAL_MEDIAN_MS = 10.0
SEED = 20240601
# A page about the size of the portal's "check your email" answer.
BASELINE_BODY = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Check your email</title>"
    "</head><body><main><h1>Check your email</h1><p id='reset-sent'>" + "x" * 900 + "</p></main>"
    "</body></html>"
)


# --- the baseline server (run by this script in a child process) ----------------------------------


async def _baseline_post(request: web.Request) -> web.Response:
    await request.post()
    return web.Response(text=BASELINE_BODY, content_type="text/html")


async def _baseline_get(request: web.Request) -> web.Response:
    return web.Response(text=BASELINE_BODY, content_type="text/html")


def serve_baseline(port: int) -> None:
    """Serve the bare handler until killed (this script's --serve-baseline mode)."""
    app = web.Application()
    app.router.add_get(STEP1, _baseline_get)
    app.router.add_post(STEP1, _baseline_post)
    app.router.add_get("/api/health", _baseline_get)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the portal as an admin runs it --------------------------------------------------------------


def write_users(path: Path, count: int) -> list[str]:
    """Write a users file of `count` users sharing one cheap argon2 hash; return their names."""
    digest = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("bench-password")
    names = [f"user{i:04d}" for i in range(count)]
    users = {
        name: {
            "displayname": f"User {name}",
            "password": digest,
            "email": f"{name}@example.com",
            "groups": [],
        }
        for name in names
    }
    write_yaml(path, {"users": users})
    return names


def write_config(directory: Path, port: int) -> Path:
    """Write the portal's configuration; the secrets come from the environment."""
    raw = {
        "server": {
            "address": f"tcp://127.0.0.1:{port}",
            "endpoints": {
                "rate_limits": {
                    # One client sends every request: lift the per-IP limit, keep the others.
                    "reset_password_start": {
                        "buckets": [{"period": "1 minute", "requests": 100000}]
                    }
                }
            },
        },
        "authentication_backend": {"file": {"path": str(directory / "users.yml")}},
        "notifier": {"filesystem": {"filename": str(directory / "notification.txt")}},
        "session": {
            "cookies": [{"domain": "127.0.0.1", "authelia_url": f"http://127.0.0.1:{port}"}]
        },
        "storage": {"local": {"path": str(directory / "db.sqlite3")}},
    }
    return write_yaml(directory / "configuration.yml", raw)


# --- timing ------------------------------------------------------------------------------------


@dataclass
class Series:
    """Wall times of one kind of request, in milliseconds, and what came back."""

    name: str
    times: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    body_sizes: set[int] = field(default_factory=set)

    def percentile(self, p: int) -> float:
        """Return the p-th percentile (inclusive method)."""
        return statistics.quantiles(self.times, n=100, method="inclusive")[p - 1]

    @property
    def median(self) -> float:
        """Return the median time."""
        return statistics.median(self.times)


async def post_step1(
    session: aiohttp.ClientSession, url: str, csrf: str, username: str, series: Series | None
) -> None:
    """POST the step-1 form once and record its wall time in series (None: warm-up)."""
    began = time.perf_counter()
    async with session.post(
        url + STEP1, data={"csrf_token": csrf, "username": username}, allow_redirects=False
    ) as response:
        body = await response.read()
    elapsed = (time.perf_counter() - began) * 1000
    if series is not None:
        series.times.append(elapsed)
        series.statuses[response.status] = series.statuses.get(response.status, 0) + 1
        series.body_sizes.add(len(body))


def plan(existing: list[str], unknown: list[str]) -> list[tuple[str, str]]:
    """Interleave the two kinds in a seeded random order.

    Fully shuffled, not alternated or shuffled in pairs: then either kind follows an existing
    user's request equally often, and the mail work the portal does after answering one
    (the outbox) weighs on both kinds alike.
    """
    order = [("existing", n) for n in existing] + [("unknown", n) for n in unknown]
    random.Random(SEED).shuffle(order)
    return order


async def measure(
    url: str, existing: list[str], unknown: list[str], warmup: int, pause: float
) -> dict[str, Series]:
    """Load the form once for its CSRF token, warm up, then time the interleaved POSTs.

    Besides one series per kind, each request is also filed under the kind of the request
    before it ("unknown after existing", ...), which shows work carried over between requests.
    """
    # unsafe=True: the jar otherwise refuses cookies from an IP address such as 127.0.0.1.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(url + STEP1) as response:
            match = CSRF.search(await response.text())
        csrf = match.group(1) if match else "unused-by-the-baseline"
        half = warmup // 2
        for _, name in plan(existing[:half], unknown[:half]):
            await post_step1(session, url, csrf, name, None)
        kinds = ("existing", "unknown")
        series = {k: Series(k) for k in kinds}
        series.update({f"{k} after {p}": Series(f"{k} after {p}") for k in kinds for p in kinds})
        previous = None
        for kind, name in plan(existing[half:], unknown[half:]):
            if pause:
                await asyncio.sleep(pause)
            await post_step1(session, url, csrf, name, series[kind])
            if previous is not None:
                after = series[f"{kind} after {previous}"]
                after.times.append(series[kind].times[-1])
            previous = kind
    return series


async def drained_mail_count(path: Path, expected: int, timeout: float = 20.0) -> int:
    """Wait until the notification file holds `expected` mails, or stops growing for 3 s."""
    deadline = time.monotonic() + timeout
    count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(split_messages(path.read_bytes())) if path.exists() else 0
        if now != count:
            count, last_change = now, time.monotonic()
        if count >= expected or time.monotonic() - last_change > 3:
            break
        await asyncio.sleep(0.2)
    return count


# --- report ------------------------------------------------------------------------------------


def table(title: str, series: dict[str, Series]) -> None:
    """Print n, median, p95 and p99 of each series."""
    print(f"\n{title}")
    print(f"  {'kind':<26} {'n':>5} {'median':>9} {'p95':>9} {'p99':>9}   statuses  body sizes")
    for s in series.values():
        if len(s.times) < 2:
            continue
        print(
            f"  {s.name:<26} {len(s.times):>5} {s.median:>7.2f}ms {s.percentile(95):>7.2f}ms "
            f"{s.percentile(99):>7.2f}ms   {s.statuses or ''}  {sorted(s.body_sizes) or ''}"
        )


def verdict(ok: bool, text: str) -> None:
    """Print one PASS/FAIL line."""
    print(f"  {'PASS' if ok else 'FAIL'}  {text}")


async def run(requests: int, warmup: int, pause: float, directory: Path) -> int:
    """Run the whole benchmark in directory; return the exit status."""
    half = warmup // 2
    names = write_users(directory / "users.yml", max(250, requests + half))
    existing = names[: requests + half]
    # Distinct and never in the users file, the same length as the existing names.
    unknown = [f"nobo{i:04d}" for i in range(requests + half)]
    portal_port, baseline_port = free_port(), free_port()
    config = write_config(directory, portal_port)
    env = portal_environment()

    portal_log, baseline_log = directory / "portal.log", directory / "baseline.log"
    portal = start(portal_command(config), directory, portal_log, env)
    baseline = start([sys.executable, str(Path(__file__).resolve()), "--serve-baseline",
                      str(baseline_port)], directory, baseline_log, env)  # fmt: skip
    try:
        for name, process, url, log in (
            ("portal", portal, f"http://127.0.0.1:{portal_port}", portal_log),
            ("baseline", baseline, f"http://127.0.0.1:{baseline_port}", baseline_log),
        ):
            if not await wait_until_up(url, process):
                print(f"error: the {name} server did not start; its output:", file=sys.stderr)
                print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
                return 1

        print(f"POST {STEP1}: {requests} existing + {requests} unknown users, interleaved "
              f"(seeded shuffle), after {2 * half} warm-up requests, "
              f"{pause * 1000:g} ms pause between requests; "
              f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}")  # fmt: skip
        portal_series = await measure(
            f"http://127.0.0.1:{portal_port}", existing, unknown, warmup, pause
        )
        mails = await drained_mail_count(directory / "notification.txt", len(existing))
        recipients = (
            {str(m["To"]) for m in split_messages((directory / "notification.txt").read_bytes())}
            if mails
            else set()
        )
        baseline_series = await measure(
            f"http://127.0.0.1:{baseline_port}", existing, unknown, warmup, pause
        )
    finally:
        stop(portal)
        stop(baseline)

    table("portal (python -m portal serve, file backend, sqlite, filesystem notifier)",
          portal_series)  # fmt: skip
    table("baseline (bare aiohttp handler, fixed HTML body)", baseline_series)

    known, stranger = portal_series["existing"], portal_series["unknown"]
    diff = stranger.median - known.median
    base = statistics.median(baseline_series["existing"].times + baseline_series["unknown"].times)
    portal_all = statistics.median(known.times + stranger.times)
    print("\nfigures")
    print(f"  median difference (unknown - existing): {diff:+.2f} ms")
    print(f"  ratio of medians unknown/existing:      {stranger.median / known.median:.3f}")
    carried = (
        statistics.median(portal_series["existing after existing"].times
                          + portal_series["unknown after existing"].times)
        - statistics.median(portal_series["existing after unknown"].times
                            + portal_series["unknown after unknown"].times)
    )  # fmt: skip
    print(f"  after an existing vs after an unknown:  {carried:+.2f} ms (median, both kinds)")
    print(f"  portal vs baseline, ratio of medians:   {portal_all / base:.2f} "
          f"({portal_all:.2f} ms vs {base:.2f} ms)")  # fmt: skip
    unknown_mailed = {f"{n}@example.com" for n in unknown} & recipients
    print(f"  mails written: {mails} for {len(existing)} existing users (warm-up included), "
          f"{len(unknown_mailed)} to unknown users")  # fmt: skip

    print("\ngoals")
    verdict(abs(diff) < GOAL_DIFF_MS, f"medians differ by {abs(diff):.2f} ms (< {GOAL_DIFF_MS} ms)")
    verdict(known.median < GOAL_MEDIAN_MS,
            f"existing median {known.median:.2f} ms (< {GOAL_MEDIAN_MS} ms)")  # fmt: skip
    verdict(stranger.median < GOAL_MEDIAN_MS,
            f"unknown median {stranger.median:.2f} ms (< {GOAL_MEDIAN_MS} ms)")  # fmt: skip
    verdict(known.statuses == {200: requests} and stranger.statuses == {200: requests},
            "every measured request answered 200")  # fmt: skip
    verdict(known.body_sizes == stranger.body_sizes, "the same page size for both kinds")
    verdict(mails == len(existing) and not unknown_mailed,
            "one mail per existing user and none for unknown ones")  # fmt: skip
    return 0


def main() -> int:
    """Parse the arguments and run the benchmark (or the baseline server)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="measured requests per kind")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests (both kinds)")
    parser.add_argument(
        "--pause-ms", type=float, default=0.0, help="pause before each measured request"
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    if args.requests < 2:
        parser.error("--requests must be at least 2")
    with tempfile.TemporaryDirectory(prefix="bench-reset-") as directory:
        return asyncio.run(
            run(args.requests, max(0, args.warmup), args.pause_ms / 1000, Path(directory))
        )


if __name__ == "__main__":
    sys.exit(main())
