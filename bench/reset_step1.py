"""Time POST /reset-password/step1 for existing and unknown users against the real portal.

Two questions, both about what an attacker can time:

- Does the answer itself tell? Existing and unknown users' requests, interleaved: the medians
  should differ by less than 2 ms, both under 10 ms on a 2-core machine.
- Does the answer after it tell? Each measured request (the primer) is followed at once by a
  probe (a request for another unknown identifier), and the probe is timed too: the work the
  outbox worker does for the primer overlaps the probe. The medians of the probes after an
  existing and after an unknown user's request must differ by less than 0.5 ms.

Primers of both kinds come in a seeded random order, in pairs with a pause between them (long
enough for the worker to finish the previous pair's jobs, a probe's included), so each probe
sees only its own primer's work. A bare aiohttp handler is timed the same way in
the same run: its "after" difference is this method's noise floor on this machine. A 95%
bootstrap interval of each difference says whether the figure means anything under the load
of the moment. The portal's files live in a temporary directory ($TMPDIR): on a disk, the fsync
of each real mail's append can hold up the probe's SQLite writes, which no decoy can mimic;
with TMPDIR=/dev/shm only the event loop's share of the worker's work is left to measure.

    python bench/reset_step1.py [--requests 500] [--warmup 20] [--pause-ms 30]

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
GOAL_AFTER_DIFF_MS = 0.5
GOAL_MEDIAN_MS = 10.0
SEED = 20240601
BOOTSTRAP_ROUNDS = 1000
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
                    },
                    # Lift the global cap too: past it nothing is queued for anyone, and the
                    # worker's work (what the probes measure) would vanish from the run.
                    "reset_password_global": {
                        "buckets": [{"period": "1 hour", "requests": 100000}]
                    },
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
    locations: set[str] = field(default_factory=set)

    def percentile(self, p: int) -> float:
        """Return the p-th percentile (inclusive method)."""
        return statistics.quantiles(self.times, n=100, method="inclusive")[p - 1]

    @property
    def median(self) -> float:
        """Return the median time."""
        return statistics.median(self.times)


@dataclass(frozen=True)
class Pair:
    """One primer (an existing or an unknown user) and the probe sent right after it."""

    kind: str  # "existing" or "unknown": the primer's
    primer: str
    probe: str  # always an unknown identifier, never used twice


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
        series.locations.add(response.headers.get("Location", ""))


def plan(existing: list[str], unknown: list[str], probes: list[str]) -> list[Pair]:
    """Pair every primer with a probe; primers of both kinds in a seeded random order."""
    primers = [("existing", n) for n in existing] + [("unknown", n) for n in unknown]
    random.Random(SEED).shuffle(primers)
    return [Pair(kind, name, probe) for (kind, name), probe in zip(primers, probes, strict=True)]


async def measure(url: str, pairs: list[Pair], warmup: int, pause: float) -> dict[str, Series]:
    """Load the form once for its CSRF token, warm up, then time every primer and its probe.

    The probe goes out as soon as the primer's answer is in, as an attacker's second request
    would; the pause before each pair lets the previous pair's work finish.
    """
    # unsafe=True: the jar otherwise refuses cookies from an IP address such as 127.0.0.1.
    jar = aiohttp.CookieJar(unsafe=True)
    series = {k: Series(k) for k in ("existing", "unknown", "after existing", "after unknown")}
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(url + STEP1) as response:
            match = CSRF.search(await response.text())
        csrf = match.group(1) if match else "unused-by-the-baseline"
        for index, pair in enumerate(pairs):
            measured = index >= warmup
            await asyncio.sleep(pause)
            await post_step1(
                session, url, csrf, pair.primer, series[pair.kind] if measured else None
            )
            await post_step1(
                session, url, csrf, pair.probe, series[f"after {pair.kind}"] if measured else None
            )
    return series


def difference_interval(first: list[float], second: list[float]) -> tuple[float, float]:
    """Return a 95% bootstrap interval of median(second) - median(first)."""
    rng = random.Random(SEED)
    diffs = sorted(
        statistics.median(rng.choices(second, k=len(second)))
        - statistics.median(rng.choices(first, k=len(first)))
        for _ in range(BOOTSTRAP_ROUNDS)
    )
    return diffs[int(0.025 * BOOTSTRAP_ROUNDS)], diffs[int(0.975 * BOOTSTRAP_ROUNDS) - 1]


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


def load_average() -> str:
    """Return the 1-minute load average, or '?' where the system does not say."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


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


def after_difference(series: dict[str, Series]) -> tuple[float, float, float]:
    """Return the probes' median difference (after existing - after unknown) and its interval."""
    after_unknown, after_existing = series["after unknown"], series["after existing"]
    low, high = difference_interval(after_unknown.times, after_existing.times)
    return after_existing.median - after_unknown.median, low, high


def verdict(ok: bool, text: str) -> None:
    """Print one PASS/FAIL line."""
    print(f"  {'PASS' if ok else 'FAIL'}  {text}")


async def run(requests: int, warmup: int, pause: float, directory: Path) -> int:
    """Run the whole benchmark in directory; return the exit status."""
    half = warmup // 2
    count = requests + half
    names = write_users(directory / "users.yml", max(250, count))
    existing = names[:count]
    # Distinct and never in the users file, the same length as the existing names.
    unknown = [f"nobo{i:04d}" for i in range(count)]
    probes = [f"prob{i:04d}" for i in range(2 * count)]
    # The warm-up pairs come first, one of each kind per two pairs, then the measured ones.
    pairs = plan(existing[:half], unknown[:half], probes[: 2 * half])
    pairs += plan(existing[half:], unknown[half:], probes[2 * half :])
    portal_port, baseline_port = free_port(), free_port()
    config = write_config(directory, portal_port)
    env = portal_environment()

    portal_log, baseline_log = directory / "portal.log", directory / "baseline.log"
    portal = start(portal_command(config), directory, portal_log, env)
    baseline = start(
        [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(baseline_port)],
        directory,
        baseline_log,
        env,
    )
    try:
        for name, process, url, log in (
            ("portal", portal, f"http://127.0.0.1:{portal_port}", portal_log),
            ("baseline", baseline, f"http://127.0.0.1:{baseline_port}", baseline_log),
        ):
            if not await wait_until_up(url, process):
                print(f"error: the {name} server did not start; its output:", file=sys.stderr)
                print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
                return 1

        print(
            f"POST {STEP1}: {requests} existing + {requests} unknown users (primers) in a "
            f"seeded random order, each followed at once by a probe (an unknown user), after "
            f"{2 * half} warm-up pairs, {pause * 1000:g} ms pause between pairs; "
            f"{os.cpu_count()} CPU(s), load average {load_average()}, "
            f"Python {sys.version.split()[0]}"
        )
        portal_series = await measure(f"http://127.0.0.1:{portal_port}", pairs, 2 * half, pause)
        mails = await drained_mail_count(directory / "notification.txt", len(existing))
        recipients = (
            {str(m["To"]) for m in split_messages((directory / "notification.txt").read_bytes())}
            if mails
            else set()
        )
        baseline_series = await measure(f"http://127.0.0.1:{baseline_port}", pairs, 2 * half, pause)
    finally:
        stop(portal)
        stop(baseline)
    print(f"load average after the run: {load_average()}")

    table(
        "portal (python -m portal serve, file backend, sqlite, filesystem notifier)", portal_series
    )
    table("baseline (bare aiohttp handler, fixed HTML body)", baseline_series)

    known, stranger = portal_series["existing"], portal_series["unknown"]
    diff = stranger.median - known.median
    base = statistics.median(baseline_series["existing"].times + baseline_series["unknown"].times)
    portal_all = statistics.median(known.times + stranger.times)
    after, low, high = after_difference(portal_series)
    floor, floor_low, floor_high = after_difference(baseline_series)
    print("\nfigures")
    print(f"  median difference (unknown - existing): {diff:+.2f} ms")
    print(f"  ratio of medians unknown/existing:      {stranger.median / known.median:.3f}")
    print(
        f"  probe after an existing user:           "
        f"{portal_series['after existing'].median:.2f} ms (median)"
    )
    print(
        f"  probe after an unknown user:            "
        f"{portal_series['after unknown'].median:.2f} ms (median)"
    )
    print(
        f"  after an existing - after an unknown:   {after:+.2f} ms "
        f"(95% interval {low:+.2f} .. {high:+.2f} ms)"
    )
    print(
        f"  the same on the baseline (noise floor): {floor:+.2f} ms "
        f"(95% interval {floor_low:+.2f} .. {floor_high:+.2f} ms)"
    )
    print(
        f"  portal vs baseline, ratio of medians:   {portal_all / base:.2f} "
        f"({portal_all:.2f} ms vs {base:.2f} ms)"
    )
    strangers = {f"{n}@example.com" for n in unknown + probes}
    unknown_mailed = strangers & recipients
    print(
        f"  mails written: {mails} for {len(existing)} existing users (warm-up included), "
        f"{len(unknown_mailed)} to unknown users"
    )

    print("\ngoals")
    verdict(
        abs(after) < GOAL_AFTER_DIFF_MS,
        f"the request after an existing user's and after an unknown one's differ by "
        f"{abs(after):.2f} ms (< {GOAL_AFTER_DIFF_MS} ms)",
    )
    verdict(abs(diff) < GOAL_DIFF_MS, f"medians differ by {abs(diff):.2f} ms (< {GOAL_DIFF_MS} ms)")
    verdict(
        known.median < GOAL_MEDIAN_MS,
        f"existing median {known.median:.2f} ms (< {GOAL_MEDIAN_MS} ms)",
    )
    verdict(
        stranger.median < GOAL_MEDIAN_MS,
        f"unknown median {stranger.median:.2f} ms (< {GOAL_MEDIAN_MS} ms)",
    )
    answered = [portal_series[k].statuses for k in portal_series]
    # Step 1 answers redirect-after-POST: a 303 to the one "check your email" page for everyone.
    verdict(all(s == {303: requests} for s in answered), "every measured request answered 303")
    places = {frozenset(s.locations) for s in portal_series.values()}
    verdict(places == {frozenset({STEP1 + "/sent"})}, "the same Location for every kind")
    sizes = {frozenset(s.body_sizes) for s in portal_series.values()}
    verdict(len(sizes) == 1, "the same page size for every kind")
    verdict(
        mails == len(existing) and not unknown_mailed,
        "one mail per existing user and none for unknown ones",
    )
    if not low < 0 < high and floor_low < 0 < floor_high:
        print("  note: the portal's interval excludes zero while the baseline's does not")
    return 0


def main() -> int:
    """Parse the arguments and run the benchmark (or the baseline server)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="measured primers per kind")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up pairs (both kinds)")
    parser.add_argument("--pause-ms", type=float, default=30.0, help="pause before each pair")
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
