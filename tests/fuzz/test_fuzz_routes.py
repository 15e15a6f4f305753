"""A bounded fuzz run against the real portal process (issue 11): bad input never gets a 5xx,
never hangs, and never floods the log.

Hypothesis draws raw requests for every route (tests/fuzz/strategies.py) and they go over a
plain socket to `python -m portal serve`, one at a time, so each answer and each log line belongs
to one request. The run is cut in rounds of ROUND_EXAMPLES, each with its own fixed seed (the
first one is printed; PORTAL_FUZZ_SEED picks another, PORTAL_FUZZ_SECONDS the budget). A round
that meets a new kind of fault lets hypothesis shrink it for at most SHRINK_SECONDS; the next
rounds count that kind and look for others. The test fails listing every kind found, each with
the smallest raw request that showed it, its status and the end of its traceback.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.errors import Flaky

from portal.app import create_app
from portal.middlewares import NO_SUCH_ROUTE
from tests.conftest import ConfigFactory
from tests.fuzz.server import (
    PROFILES,
    FuzzPortal,
    LoggedTraceback,
    refresh_target,
    start_portal,
    stop_portal,
    tracebacks,
    wait_for_quiet_log,
    wait_until_healthy,
)
from tests.fuzz.strategies import METHODS, ROUTES, RawRequest, raw_requests
from tests.fuzz.wire import Exchange, exchange

DEFAULT_SEED = 11
DEFAULT_SECONDS = 120.0
ROUND_EXAMPLES = 100
SHRINK_SECONDS = 10.0
HANG_SECONDS = float(os.environ.get("PORTAL_FUZZ_HANG_SECONDS", "10"))
# The log rule: a bad request costs one short line; averaged over the run, at most this much.
# Measured on the fuzz traffic: the access line and audit events come to ~90 bytes a request;
# the tracebacks of today's main triple that (~295), which this bound catches.
LOG_BYTES_PER_REQUEST = 200
# One request may log a few lines (an access line, an audit event), never more than this.
LOG_BYTES_ONE_REQUEST = 2048


class ServerFault(AssertionError):
    """The portal answered a request badly; each kind of fault gets its own subclass, so
    hypothesis shrinks and reports every kind separately."""


@dataclass
class Fault:
    """One kind of fault: the smallest request that showed it and what the server did."""

    signature: str
    raw: bytes
    answer: Exchange
    logged: tuple[LoggedTraceback, ...]
    log_bytes: int
    hits: int = 1

    def report(self) -> str:
        """Describe the fault with its minimal request, for the failure message."""
        raw = repr(self.raw)
        raw = raw if len(raw) <= 1500 else raw[:1500] + f"... ({len(self.raw)} bytes)"
        lines = [
            f"== {self.signature}  ({self.hits} hits)",
            f"   answer: {self.answer.status_class} {self.answer.status} "
            f"{self.answer.error}, log {self.log_bytes} bytes",
            f"   request: {raw}",
        ]
        for logged in self.logged[:2]:
            lines.append(f"   log: {logged.message}")
            lines += [f"      {line}" for line in logged.last_lines]
        return "\n".join(lines)


def _method(method: str) -> str:
    return method if method in METHODS else "odd"


class Campaign:
    """Send generated requests one by one, check each answer and its log, remember faults."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Prepare an empty tally; no request is sent after deadline, shrinking included."""
        self.loop = loop
        self.deadline = deadline
        self.faults: dict[str, Fault] = {}
        self.known: set[str] = set()  # found in an earlier round: counted, not shrunk again
        self.classes: dict[str, type[ServerFault]] = {}
        self.memo: dict[bytes, str] = {}
        self.statuses: Counter[str] = Counter()
        self.requests = 0
        self.round_stop = deadline

    def start_round(self) -> None:
        """Allow sending until the deadline again; shrinking may shorten it."""
        self.known = set(self.faults)
        self.round_stop = self.deadline

    def check(self, portal: FuzzPortal, request: RawRequest) -> None:
        """Send the request, raise a ServerFault subclass if the answer or the log is wrong."""
        raw = request.to_bytes()
        if raw in self.memo:  # the same bytes again (hypothesis replays its minimal example)
            raise self._fault_class(self.memo[raw])(self.memo[raw])
        if time.monotonic() > self.round_stop:
            return  # out of time: every further example passes without being sent
        before = portal.log_size()
        sending = exchange(raw, portal.port, timeout=HANG_SECONDS, linger=2.0)
        answer = self.loop.run_until_complete(sending)
        after = wait_for_quiet_log(portal, before)
        self.requests += 1
        self.statuses[answer.status_class] += 1
        logged = tuple(tracebacks(portal.read_log(before)[:65536]))
        signature = self._signature(request, answer, logged, after - before)
        if signature is None:
            return
        fault = self.faults.get(signature)
        if fault is None:
            self.faults[signature] = Fault(signature, raw, answer, logged, after - before)
            # Shrink this round's new faults for a while, then let the round run out.
            self.round_stop = min(self.round_stop, time.monotonic() + SHRINK_SECONDS)
        else:
            fault.hits += 1
            if (len(raw), raw) < (len(fault.raw), fault.raw):
                fault.raw, fault.answer, fault.logged = raw, answer, logged
                fault.log_bytes = after - before
        if signature in self.known:
            return
        self.memo[raw] = signature
        raise self._fault_class(signature)(signature)

    def _signature(
        self,
        request: RawRequest,
        answer: Exchange,
        logged: tuple[LoggedTraceback, ...],
        log_bytes: int,
    ) -> str | None:
        """Name the kind of fault: where it was raised when the log says, else the route."""
        where = f"{_method(request.method)} {request.route}"
        if logged:
            where = f"{logged[-1].exception_type} at {logged[-1].place}"
        if answer.hung:
            return f"hang: {_method(request.method)} {request.route} ({answer.error})"
        if answer.status is not None and answer.status >= 500:
            return f"{answer.status}: {where}"
        if logged:
            return f"traceback ({answer.status_class}): {where}"
        if log_bytes > LOG_BYTES_ONE_REQUEST:
            return f"log flood ({answer.status_class}): {where}"
        return None

    def _fault_class(self, signature: str) -> type[ServerFault]:
        if signature not in self.classes:
            name = f"ServerFault{len(self.classes)}"
            self.classes[signature] = type(name, (ServerFault,), {})
        return self.classes[signature]

    def run_round(self, portal: FuzzPortal, round_seed: int) -> None:
        """Run one round of generated requests against the portal with a fixed seed."""
        self.start_round()

        @settings(
            max_examples=ROUND_EXAMPLES,
            database=None,
            deadline=None,
            phases=(Phase.generate, Phase.shrink),
            verbosity=Verbosity.quiet,
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=True,
        )
        @seed(round_seed)
        @given(raw_requests(portal.target))
        def one_request(request: RawRequest) -> None:
            self.check(portal, request)

        try:
            one_request()
        except (ServerFault, Flaky, ExceptionGroup) as exc:
            if not _only_faults(exc):
                raise


def _only_faults(exc: BaseException) -> bool:
    """Tell whether hypothesis raised nothing but our own faults (possibly grouped)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_faults(inner) for inner in exc.exceptions)
    return isinstance(exc, ServerFault | Flaky)


@pytest.fixture
def portals(tmp_path: Path) -> Iterator[dict[str, FuzzPortal]]:
    """Start the portal in every profile, with live sessions and real reset tokens."""
    running = {profile: start_portal(tmp_path / profile, profile) for profile in PROFILES}
    try:

        async def prepare() -> None:
            for portal in running.values():
                await wait_until_healthy(portal)
                await refresh_target(portal, tokens=True)

        asyncio.run(prepare())
        yield running
    finally:
        for portal in running.values():
            stop_portal(portal)


def test_every_route_is_fuzzed(make_config: ConfigFactory) -> None:
    """The generator knows every route the app registers, with every method."""
    config = make_config(
        identity_validation={"reset_password": {"security_questions": {"enabled": True}}},
        captcha={"enabled_on": ["login"]},
        webauthn={"enable_passkey_login": True},
        identity_token={"enabled": True},
        trusted_issuers=[
            {"name": "Shop", "issuer": "shop", "algorithms": ["HS256"], "secret": "s" * 32}
        ],
    )
    app = create_app(config)
    known = {(method, route.path) for route in ROUTES for method in route.methods}
    registered = set()
    for route in app.router.routes():
        if route.name == NO_SUCH_ROUTE:
            continue  # the fallback answering 404/405 for every path nobody else takes
        path = route.resource.canonical if route.resource is not None else ""
        if route.method != "HEAD":
            registered.add((route.method, "/static/portal.css" if path == "/static" else path))
    assert registered - known == set()


def test_no_request_gets_a_5xx_hangs_or_floods_the_log(portals: dict[str, FuzzPortal]) -> None:
    """Drive every route with generated requests for the budget; no 5xx, hang or traceback."""
    budget = float(os.environ.get("PORTAL_FUZZ_SECONDS", DEFAULT_SECONDS))
    base_seed = int(os.environ.get("PORTAL_FUZZ_SEED", DEFAULT_SEED))
    print(f"fuzz: seed {base_seed}, {budget:.0f} s (PORTAL_FUZZ_SEED, PORTAL_FUZZ_SECONDS)")
    start_sizes = {name: portal.log_size() for name, portal in portals.items()}
    loop = asyncio.new_event_loop()
    campaign = Campaign(loop, time.monotonic() + budget)
    try:
        for number in range(100_000):  # bounded; the deadline ends it long before
            if time.monotonic() > campaign.deadline:
                break
            portal = portals[PROFILES[number % len(PROFILES)]]
            if number >= len(PROFILES) and number % 10 < len(PROFILES):
                loop.run_until_complete(refresh_target(portal))  # fuzzed sign-outs end sessions
            campaign.run_round(portal, base_seed + number)
    finally:
        loop.close()

    log_bytes = sum(p.log_size() - start_sizes[n] for n, p in portals.items())
    per_request = log_bytes / max(1, campaign.requests)
    print(
        f"fuzz: {campaign.requests} requests, {dict(campaign.statuses)}, {per_request:.0f} "
        f"log bytes/request, {len(campaign.faults)} kinds of fault"
    )
    problems = [
        fault.report() for fault in sorted(campaign.faults.values(), key=lambda f: f.signature)
    ]
    for name, portal in portals.items():
        if portal.process.poll() is not None:
            problems.append(f"== the {name} portal died: {portal.read_log()[-2000:]}")
        seen = {logged.place for f in campaign.faults.values() for logged in f.logged}
        for logged in tracebacks(portal.read_log(start_sizes[name])):
            if logged.place not in seen:  # logged outside any request (a worker)
                problems.append(
                    f"== unattributed traceback in {name}: {logged.message}\n      "
                    + "\n      ".join(logged.last_lines)
                )
                seen.add(logged.place)
    if per_request > LOG_BYTES_PER_REQUEST:
        problems.append(
            f"== the log grew {per_request:.0f} bytes per request (at most {LOG_BYTES_PER_REQUEST})"
        )
    assert not problems, (
        f"seed {base_seed}: {campaign.requests} requests, {dict(campaign.statuses)}\n"
        + "\n".join(problems)
    )
