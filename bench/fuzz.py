"""Send 100,000 generated requests to the real portal and print what came back (issue 11).

    python bench/fuzz.py [--requests 100000] [--max-seconds 1800] [--concurrency 8]
                         [--seed 11] [--recombine 9] [--hang-seconds 10] [--keep DIR]
                         [--openapi-examples 200] [--openapi-max-seconds S] [--no-raw]

Starts the portal (`python -m portal serve`, both profiles of tests/fuzz/server.py) on free
127.0.0.1 ports in a scratch directory, and sends it requests drawn by the hypothesis strategies
of tests/fuzz/strategies.py over raw sockets, each followed by `--recombine` variants that mix
in parts of recent ones (drawing is the slow part; recombining is cheap). Stops after
`--requests` requests or `--max-seconds`, whichever comes first, then prints: requests by status
class, the 5xx count, the 5xx and the tracebacks grouped by where the log says they were raised,
hangs, log bytes per request and requests per second, and PASS/FAIL lines for the issue's goals.
Then schemathesis runs over each portal's GET /api/openapi.yml (tests/fuzz/openapi_fuzz.py:
signed in with an elevated session, then anonymous; `--openapi-examples` cases per operation and
phase, `--openapi-max-seconds` to keep fuzzing until that time is spent) and its figures are
printed: operations, cases, failures. Exits 1 when a goal is missed, 2 when the portal does not
start. Not a test: `make test` runs the short, shrinking versions (tests/fuzz/test_fuzz_routes.py,
tests/fuzz/test_openapi_fuzz.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings  # noqa: E402

from tests.fuzz.openapi_fuzz import FuzzFigures, run_schemathesis  # noqa: E402
from tests.fuzz.server import (  # noqa: E402 - after the path is set
    PROFILES,
    FuzzPortal,
    LoggedTraceback,
    refresh_target,
    scan_log,
    start_portal,
    stop_portal,
    wait_until_healthy,
)
from tests.fuzz.strategies import METHODS, RawRequest, raw_requests, recombine  # noqa: E402
from tests.fuzz.wire import Exchange, exchange  # noqa: E402

ROUND = 200  # examples per hypothesis run; each run has its own seed
LOG_BYTES_PER_REQUEST = 200  # ~90 without tracebacks (access line, audit events)
REFRESH_EVERY = 2000  # requests between fresh sign-ins (fuzzed sign-outs end the sessions)


@dataclass
class Tally:
    """What the requests got, counted as they come back."""

    sent: int = 0
    drawn: int = 0
    seconds: float = 0.0
    classes: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    hangs: Counter[str] = field(default_factory=Counter)
    smallest: dict[str, bytes] = field(default_factory=dict)

    def record(self, request: RawRequest, raw: bytes, answer: Exchange) -> None:
        """Count one answer; keep the smallest request of each 5xx route and hang route."""
        self.sent += 1
        self.classes[answer.status_class] += 1
        method = request.method if request.method in METHODS else "odd"
        where = f"{answer.status} {method} {request.route}"
        if answer.hung:
            self.hangs[where] += 1
        elif answer.status is not None and answer.status >= 500:
            self.server_errors[where] += 1
        else:
            return
        if where not in self.smallest or len(raw) < len(self.smallest[where]):
            self.smallest[where] = raw


class Producer(threading.Thread):
    """Draw requests with hypothesis in a thread, round after round, until told to stop."""

    def __init__(
        self,
        portals: dict[str, FuzzPortal],
        base_seed: int,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[tuple[str, RawRequest]],
    ) -> None:
        """Prepare to feed queue (on loop) with requests for the portals."""
        super().__init__(name="fuzz-producer", daemon=True)
        self.portals = portals
        self.base_seed = base_seed
        self.loop = loop
        self.queue = queue
        self.room = threading.Semaphore(1000)  # at most this many drawn and not yet sent
        self.stop = threading.Event()

    def run(self) -> None:
        """Run hypothesis rounds, alternating profiles, until stopped."""
        for number in range(10**6):  # bounded; stop ends it long before
            if self.stop.is_set():
                return
            profile = PROFILES[number % len(PROFILES)]
            self._round(profile, self.base_seed + number)

    def _round(self, profile: str, round_seed: int) -> None:
        portal = self.portals[profile]

        @settings(
            max_examples=ROUND,
            database=None,
            deadline=None,
            phases=(Phase.generate,),
            verbosity=Verbosity.quiet,
            suppress_health_check=list(HealthCheck),
        )
        @seed(round_seed)
        @given(raw_requests(portal.target))
        def draw(request: RawRequest) -> None:
            while not self.stop.is_set():
                if self.room.acquire(timeout=0.2):
                    self.loop.call_soon_threadsafe(self.queue.put_nowait, (profile, request))
                    return

        draw()


async def send_all(portals: dict[str, FuzzPortal], args: argparse.Namespace) -> Tally:
    """Send generated and recombined requests until the count or the time is reached."""
    tally = Tally()
    queue: asyncio.Queue[tuple[str, RawRequest]] = asyncio.Queue()
    producer = Producer(portals, args.seed, asyncio.get_running_loop(), queue)
    rng = random.Random(args.seed)
    recent: dict[str, deque[RawRequest]] = {p: deque(maxlen=200) for p in PROFILES}
    deadline = time.monotonic() + args.max_seconds
    refreshing = asyncio.Lock()

    claimed = 0

    def claim() -> bool:
        """Take one request of the budget (exactly --requests go out, whatever the workers)."""
        nonlocal claimed
        if claimed >= args.requests or time.monotonic() >= deadline:
            return False
        claimed += 1
        return True

    async def send(portal: FuzzPortal, request: RawRequest) -> None:
        raw = request.to_bytes()
        answer = await exchange(raw, portal.port, timeout=args.hang_seconds)
        tally.record(request, raw, answer)
        if tally.sent % REFRESH_EVERY == 0 and not refreshing.locked():
            async with refreshing:
                for each in portals.values():
                    await refresh_target(each)

    async def worker() -> None:
        while claimed < args.requests and time.monotonic() < deadline:
            try:
                profile, request = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                if not producer.is_alive():
                    return  # the producer failed (its traceback is on stderr)
                continue
            producer.room.release()
            if not claim():
                return
            tally.drawn += 1
            portal = portals[profile]
            await send(portal, request)
            recent[profile].append(request)
            for _ in range(args.recombine):
                if not claim():
                    return
                await send(portal, recombine(request, rng.choice(recent[profile]), rng))

    producer.start()
    started = time.monotonic()
    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        producer.stop.set()
        producer.join(timeout=60)
    tally.seconds = time.monotonic() - started
    return tally


def _group(found: list[LoggedTraceback]) -> list[tuple[int, LoggedTraceback]]:
    groups: dict[str, list[LoggedTraceback]] = {}
    for logged in found:
        groups.setdefault(f"{logged.exception_type} at {logged.place}", []).append(logged)
    return sorted(((len(g), g[0]) for g in groups.values()), key=lambda item: -item[0])


def report(
    portals: dict[str, FuzzPortal],
    tally: Tally,
    log_start: dict[str, int],
    args: argparse.Namespace,
) -> bool:
    """Print the figures; return whether every goal of the issue is met."""
    sent = max(1, tally.sent)
    print(
        f"fuzz: {tally.sent} requests in {tally.seconds:.0f} s "
        f"({tally.sent / max(tally.seconds, 1e-9):.0f} requests/s), concurrency "
        f"{args.concurrency}, seed {args.seed}; {tally.drawn} drawn by hypothesis, "
        f"{tally.sent - tally.drawn} recombined"
    )
    order = ("2xx", "3xx", "4xx", "5xx", "closed", "hang")
    print(
        "status classes: "
        + "  ".join(
            f"{name} {tally.classes[name]} ({100 * tally.classes[name] / sent:.1f}%)"
            for name in order
        )
    )
    fives = tally.classes["5xx"]
    print(f"5xx: {fives}")
    for where, count in tally.server_errors.most_common():
        print(f"  {count:6d}  {where}")
    print(f"hangs (no answer within {args.hang_seconds:.0f} s): {tally.classes['hang']}")
    for where, count in tally.hangs.most_common():
        print(f"  {count:6d}  {where}")

    log_bytes = 0
    server_faults: list[LoggedTraceback] = []
    client_faults: list[LoggedTraceback] = []
    for name, portal in portals.items():
        log_bytes += portal.log_size() - log_start[name]
        with portal.log_file.open(encoding="utf-8", errors="replace") as log:
            log.seek(log_start[name])
            for logged in scan_log(log):
                (client_faults if logged.client_fault else server_faults).append(logged)
    per_request = log_bytes / sent
    print(
        f"log: {log_bytes} bytes, {per_request:.0f} bytes/request; tracebacks: "
        f"{len(server_faults) + len(client_faults)}"
    )
    print(
        f"distinct 5xx signatures (exception at deepest portal frame > last frame), "
        f"{len(_group(server_faults))}:"
    )
    for count, logged in _group(server_faults):
        print(
            f"  {count:6d}  {logged.exception_type} at {logged.place}\n"
            f"          e.g. {logged.message[:110]}\n          {logged.exception[:110]}"
        )
    print(
        f"tracebacks logged for malformed requests (client faults), "
        f"{len(_group(client_faults))} kinds:"
    )
    for count, logged in _group(client_faults):
        print(f"  {count:6d}  {logged.exception_type} at {logged.place}")
    if tally.smallest:
        print("smallest request per 5xx/hang route:")
        for where, raw in sorted(tally.smallest.items()):
            text = repr(raw)
            print(f"  {where}: {text[:600]}{'...' if len(text) > 600 else ''}")

    goals = [
        (f"5xx count is 0 ({fives})", fives == 0),
        (f"no hang ({tally.classes['hang']})", tally.classes["hang"] == 0),
        (
            f"log bytes/request <= {LOG_BYTES_PER_REQUEST} ({per_request:.0f})",
            per_request <= LOG_BYTES_PER_REQUEST,
        ),
        (
            f"no traceback in the log ({len(server_faults) + len(client_faults)})",
            not server_faults and not client_faults,
        ),
    ]
    for name, portal in portals.items():
        alive = portal.process.poll() is None
        goals.append((f"the {name} portal is still running", alive))
    for text, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return all(ok for _, ok in goals)


def openapi_report(
    portals: dict[str, FuzzPortal], directory: Path, args: argparse.Namespace
) -> bool:
    """Run schemathesis over each portal's document; print its figures; return whether clean."""
    total = FuzzFigures()
    logged = 0
    for name, portal in portals.items():
        start = portal.log_size()
        figures = run_schemathesis(
            portal,
            directory / "schemathesis",
            max_examples=args.openapi_examples,
            seed=args.seed,
            max_time=args.openapi_max_seconds,
            workers=2,
        )
        print(f"{name}: {figures.summary()}")
        if not figures.passed:
            print("\n".join(figures.outputs)[-30000:])
        total.operations += figures.operations
        total.cases += figures.cases
        total.failures += figures.failures
        total.errors += figures.errors
        total.seconds += figures.seconds
        total.exit_codes += figures.exit_codes
        with portal.log_file.open(encoding="utf-8", errors="replace") as log:
            log.seek(start)
            found = list(scan_log(log))
        logged += len(found)
        for count, first in _group(found):
            print(f"  {count:6d}  traceback: {first.exception_type} at {first.place}")
    print(total.summary())
    print(f"{'PASS' if total.passed else 'FAIL'}: every answer matches GET /api/openapi.yml")
    print(f"{'PASS' if not logged else 'FAIL'}: no traceback in the log under schemathesis")
    return total.passed and not logged


def main() -> int:
    """Run the fuzz campaign and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--recombine", type=int, default=9, help="variants sent after each drawn request"
    )
    parser.add_argument("--hang-seconds", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, help="keep the portals' files (logs) here")
    parser.add_argument(
        "--openapi-examples", type=int, default=200, help="schemathesis cases per operation"
    )
    parser.add_argument(
        "--openapi-max-seconds", type=float, help="schemathesis: fuzz until this time is spent"
    )
    parser.add_argument("--no-raw", action="store_true", help="only the schemathesis runs")
    args = parser.parse_args()
    if not 0 < args.requests <= 10_000_000 or not 0 < args.max_seconds <= 24 * 3600:
        parser.error("--requests and --max-seconds must be positive and bounded")
    if not 0 < args.openapi_examples <= 100_000 or not 0 < (args.openapi_max_seconds or 1) <= 86400:
        parser.error("--openapi-examples and --openapi-max-seconds must be positive and bounded")
    directory = Path(tempfile.mkdtemp(prefix="portal-fuzz-"))
    portals = {p: start_portal(directory / p, p) for p in PROFILES}
    try:
        try:

            async def prepare() -> None:
                for portal in portals.values():
                    await wait_until_healthy(portal)
                    await refresh_target(portal, tokens=True)

            asyncio.run(prepare())
        except RuntimeError as exc:
            print(f"the portal did not start: {exc}", file=sys.stderr)
            return 2
        ok = True
        if not args.no_raw:
            log_start = {name: portal.log_size() for name, portal in portals.items()}
            tally = asyncio.run(send_all(portals, args))
            ok = report(portals, tally, log_start, args)
        return 0 if openapi_report(portals, directory, args) and ok else 1
    finally:
        for portal in portals.values():
            stop_portal(portal)
        if args.keep is not None:
            with contextlib.suppress(FileExistsError):
                shutil.copytree(directory, args.keep)
            print(f"files kept in {args.keep}")
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
