"""Load GET /api/authz/auth-request with a valid session cookie under wrk, against the real portal.

The goal (auth_request issue): on loopback at 64 connections, the portal answers at least half as
many requests per second as a bare aiohttp handler run the same way in the same script, and its
p99 latency stays under 10 ms.

    python bench/auth_request.py [--duration 10] [--connections 64] [--threads 2]
                                 [--log-level warn] [--identity-token] [--metrics]

The portal runs as an admin runs it (`python -m portal serve`: file backend, sqlite, filesystem
notifier) with `log.level: warn` unless told otherwise: at `info` every request writes an access
log line, which is measured separately with `--log-level info`. One sign-in through
/api/firstfactor gives the session cookie; wrk then sends nginx's headers (X-Original-URL,
X-Original-Method, X-Forwarded-For) with that cookie, as nginx's auth_request subrequest does.
The baseline is a bare aiohttp handler in a child process answering 200 with the same Remote-*
headers, loaded the same way right after. The two servers never run at the same time.

With --identity-token the portal is loaded twice, with identity_token off and on (an ES256 key it
generates; every 200 then carries a signed Remote-JWT, reused per session and site until a fifth
of its lifespan is left), and the ratio on/off is printed too; the other goals are judged on
the run with the token.

With --metrics the portal is loaded once more with telemetry.metrics on (its listener on another
free port, never scraped during the run): every request then goes through the metrics middleware
(a counter, a histogram, and the authz counter), and the ratio on/off is printed.

Needs wrk (Debian: `apt-get install wrk`); without it, says so and exits 2. Prints figures and
PASS/FAIL lines; exits 0 whatever the verdicts, 1 if a server failed to start or wrk failed.
Not a test: timings depend on the machine, so pytest never runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from aiohttp import web
from argon2 import PasswordHasher

AUTHZ = "/api/authz/auth-request"
HOST = "127.0.0.1"
DOMAIN = "example.com"
PROTECTED = f"https://app.{DOMAIN}/hello"
USERNAME = "john"
PASSWORD = "bench-password"  # noqa: S105 - the benchmark user's throwaway password
JOHN = {
    "Remote-User": "john",
    "Remote-Groups": "admins,dev",
    "Remote-Name": "John Doe",
    "Remote-Email": "john.doe@example.com",
}
GOAL_RATIO = 0.5
GOAL_P99_MS = 10.0
WARMUP_SECONDS = 2

_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


# --- the baseline server (run by this script in a child process) ----------------------------


async def _baseline_authz(request: web.Request) -> web.Response:
    return web.Response(status=200, headers=JOHN)


async def _baseline_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "OK"})


def serve_baseline(port: int) -> None:
    """Serve the bare handler until killed (this script's --serve-baseline mode)."""
    app = web.Application()
    app.router.add_get(AUTHZ, _baseline_authz)
    app.router.add_get(HEALTH, _baseline_health)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


# --- the portal as an admin runs it ---------------------------------------------------------


def write_users(path: Path) -> None:
    """Write a users file holding john, with a cheap argon2 hash (sign-in is not measured)."""
    digest = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    users = {
        USERNAME: {
            "displayname": JOHN["Remote-Name"],
            "password": digest,
            "email": JOHN["Remote-Email"],
            "groups": JOHN["Remote-Groups"].split(","),
        }
    }
    write_yaml(path, {"users": users})


def write_config(
    directory: Path,
    port: int,
    log_level: str,
    identity_token: bool = False,
    metrics_port: int | None = None,
) -> Path:
    """Write the portal's configuration; the secrets come from the environment."""
    raw: dict[str, Any] = {
        "server": {"address": f"tcp://{HOST}:{port}", "trusted_proxies": [f"{HOST}/32"]},
        "log": {"level": log_level, "file_path": str(directory / "portal-log.txt")},
        "authentication_backend": {"file": {"path": str(directory / "users.yml")}},
        "notifier": {"filesystem": {"filename": str(directory / "notification.txt")}},
        "session": {"cookies": [{"domain": DOMAIN, "authelia_url": f"https://portal.{DOMAIN}"}]},
        "storage": {"local": {"path": str(directory / "db.sqlite3")}},
        "access_control": {
            "default_policy": "deny",
            "rules": [{"domain": f"app.{DOMAIN}", "policy": "one_factor"}],
        },
    }
    name = "configuration.yml"
    if identity_token:
        raw["identity_token"] = {"enabled": True}
        name = "configuration-identity-token.yml"
    if metrics_port is not None:
        address = f"tcp://{HOST}:{metrics_port}/metrics"
        raw["telemetry"] = {"metrics": {"enabled": True, "address": address}}
        name = "configuration-metrics.yml"
    return write_yaml(directory / name, raw)


async def session_cookie(url: str) -> str:
    """Sign in once through /api/firstfactor; return the Cookie header nginx would pass on."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url + "/api/firstfactor", json={"username": USERNAME, "password": PASSWORD}
        ) as response:
            body = await response.text()
            if response.status != 200:
                raise RuntimeError(f"sign-in answered {response.status}: {body}")
            # The cookie is for example.com: read Set-Cookie, the jar would not send it here.
            morsel = response.cookies.get("portal_session")
            if morsel is None:
                raise RuntimeError("sign-in set no portal_session cookie")
            return f"portal_session={morsel.value}"


def nginx_headers(cookie: str) -> dict[str, str]:
    """Return the headers nginx's auth_request subrequest carries (snippets/portal-location)."""
    return {
        "Cookie": cookie,
        "X-Original-URL": PROTECTED,
        "X-Original-Method": "GET",
        "X-Forwarded-For": HOST,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": f"app.{DOMAIN}",
        "X-Forwarded-URI": "/hello",
    }


async def check_answer(url: str, headers: dict[str, str], token: bool = False) -> str | None:
    """Ask the endpoint once; return why the answer is not john's 200 (with a Remote-JWT when
    `token`, without one otherwise), or None if it is."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url + AUTHZ, headers=headers, allow_redirects=False) as response:
            await response.read()
            got = {name: response.headers.get(name) for name in JOHN}
            if response.status != 200 or got != JOHN:
                return f"status {response.status}, headers {got}"
            if ("Remote-JWT" in response.headers) != token:
                return f"Remote-JWT {'missing' if token else 'sent'}"
    return None


# --- wrk ------------------------------------------------------------------------------------


@dataclass
class Load:
    """What wrk measured against one server."""

    name: str
    requests_per_second: float
    requests: int
    percentiles_ms: dict[int, float]
    non_2xx: int
    socket_errors: int
    output: str
    cpu_us: float = float("nan")  # the server's CPU time (user + system) per request, in µs


def wrk(url: str, headers: dict[str, str], *, threads: int, connections: int, seconds: int) -> str:
    """Run wrk with --latency against url and return what it printed."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    result = subprocess.run(
        [*command, url + AUTHZ], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk exited with {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def wrk_version() -> str:
    """Return wrk's version line, e.g. "wrk debian/4.1.0-3+b2"."""
    result = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).split(" [")[0].strip()


def parse(name: str, output: str) -> Load:
    """Read requests/s, the latency percentiles and the errors from wrk's output."""
    rps, total = _RPS.search(output), _TOTAL.search(output)
    if rps is None or total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    percentiles = {
        int(p): float(value) * _UNIT_MS[unit] for p, value, unit in _PERCENTILE.findall(output)
    }
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    return Load(
        name=name,
        requests_per_second=float(rps.group(1)),
        requests=int(total.group(1)),
        percentiles_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        output=output,
    )


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) process pid has used so far, in seconds (Linux's
    /proc; nan elsewhere): per request, a figure that other load on the machine barely moves."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    name: str,
    url: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    pid: int,
) -> Load:
    """Warm the server up with a short run, then measure it (wrk runs in a worker thread)."""
    options = {"threads": args.threads, "connections": args.connections}
    await asyncio.to_thread(wrk, url, headers, seconds=WARMUP_SECONDS, **options)
    before = cpu_seconds(pid)
    output = await asyncio.to_thread(wrk, url, headers, seconds=args.duration, **options)
    result = parse(name, output)
    result.cpu_us = (cpu_seconds(pid) - before) / max(result.requests, 1) * 1e6
    return result


# --- report ---------------------------------------------------------------------------------


def verdict(ok: bool, text: str) -> None:
    """Print one PASS/FAIL line."""
    print(f"  {'PASS' if ok else 'FAIL'}  {text}")


def row(result: Load) -> str:
    """Format one server's figures."""
    p = result.percentiles_ms
    return (
        f"  {result.name:<10} {result.requests_per_second:>10,.0f} {result.requests:>9,} "
        f"{p.get(50, float('nan')):>8.2f} {p.get(90, float('nan')):>8.2f} "
        f"{p.get(99, float('nan')):>8.2f} {result.non_2xx:>8} {result.socket_errors:>7} "
        f"{result.cpu_us:>7.1f}"
    )


async def serve_and_load(
    name: str,
    command: list[str],
    url: str,
    directory: Path,
    env: dict[str, str],
    args: argparse.Namespace,
    headers_for: Callable[[str], Awaitable[dict[str, str]]],
    token: bool = False,
) -> Load | None:
    """Start one server, load it, stop it; None (after saying why) if it did not come up."""
    log = directory / f"{name}.out"
    process = start(command, directory, log, env)
    try:
        if not await wait_until_up(url, process):
            print(f"error: the {name} did not start; its output:", file=sys.stderr)
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            return None
        headers = await headers_for(url)
        problem = await check_answer(url, headers, token)
        if problem is not None:
            print(f"error: the {name} does not answer john's 200: {problem}", file=sys.stderr)
            return None
        return await load(name, url, headers, args, process.pid)
    finally:
        stop(process)


async def run(args: argparse.Namespace, directory: Path) -> int:
    """Run the whole benchmark in directory; return the exit status."""
    write_users(directory / "users.yml")
    portal_port, baseline_port, token_port = free_port(), free_port(), free_port()
    config = write_config(directory, portal_port, args.log_level)
    token_config = write_config(directory, token_port, args.log_level, identity_token=True)
    metered_port = free_port()
    metered_config = write_config(directory, metered_port, args.log_level, metrics_port=free_port())
    env = portal_environment()

    async def portal_headers(url: str) -> dict[str, str]:
        return nginx_headers(await session_cookie(url))

    async def baseline_headers(url: str) -> dict[str, str]:
        # The same request, cookie included: the bare handler ignores it.
        return nginx_headers("portal_session=" + "x" * 43)

    print(
        f"GET {AUTHZ} with a valid session cookie: wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s --latency on loopback, after a {WARMUP_SECONDS} s warm-up run; "
        f"portal log.level {args.log_level!r}"
        + (" (no access log line is written)" if args.log_level != "info" else "")
        + f"; {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, {wrk_version()}"
    )
    try:
        portal = await serve_and_load(
            "portal",
            portal_command(config),
            f"http://{HOST}:{portal_port}",
            directory,
            env,
            args,
            portal_headers,
        )
        if portal is None:
            return 1
        with_token = None
        if args.identity_token:
            with_token = await serve_and_load(
                "portal+jwt",
                portal_command(token_config),
                f"http://{HOST}:{token_port}",
                directory,
                env,
                args,
                portal_headers,
                token=True,
            )
            if with_token is None:
                return 1
        with_metrics = None
        if args.metrics:
            with_metrics = await serve_and_load(
                "portal+met",
                portal_command(metered_config),
                f"http://{HOST}:{metered_port}",
                directory,
                env,
                args,
                portal_headers,
            )
            if with_metrics is None:
                return 1
        baseline = await serve_and_load(
            "baseline",
            [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(baseline_port)],
            f"http://{HOST}:{baseline_port}",
            directory,
            env,
            args,
            baseline_headers,
        )
        if baseline is None:
            return 1
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    print(
        f"\n  {'server':<10} {'req/s':>10} {'requests':>9} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'non-2xx':>8} {'errors':>7} {'CPU µs':>7}"
    )
    print(row(portal))
    if with_token is not None:
        print(row(with_token))
    if with_metrics is not None:
        print(row(with_metrics))
    print(row(baseline))
    ratio = portal.requests_per_second / baseline.requests_per_second
    print(f"\n  ratio portal/baseline (requests/s): {ratio:.2f}")
    print(
        f"  ratio baseline/portal CPU µs per request: {baseline.cpu_us / portal.cpu_us:.2f} "
        "(the same ratio by CPU time, which other load on the machine barely moves)"
    )
    if with_metrics is not None:
        on_off = with_metrics.requests_per_second / portal.requests_per_second
        print(f"  ratio portal+met/portal, metrics on/off (requests/s): {on_off:.2f}")
        print(
            f"  p99 metrics on/off: {with_metrics.percentiles_ms.get(99, float('nan')):.2f} / "
            f"{portal.percentiles_ms.get(99, float('nan')):.2f} ms"
        )
    if with_token is not None:
        on_off = with_token.requests_per_second / portal.requests_per_second
        print(f"  ratio portal+jwt/portal, identity token on/off (requests/s): {on_off:.2f}")
        ratio = with_token.requests_per_second / baseline.requests_per_second
        print(f"  ratio portal+jwt/baseline (requests/s): {ratio:.2f}")
        portal = with_token  # the goals below are judged with the token on
    p99 = portal.percentiles_ms.get(99, float("inf"))
    baseline_p99 = baseline.percentiles_ms.get(99, float("nan"))
    print(f"  {portal.name} p99: {p99:.2f} ms, baseline p99: {baseline_p99:.2f} ms")

    print("\ngoals")
    verdict(ratio >= GOAL_RATIO, f"ratio {ratio:.2f} (>= {GOAL_RATIO})")
    verdict(p99 < GOAL_P99_MS, f"{portal.name} p99 {p99:.2f} ms (< {GOAL_P99_MS:g} ms)")
    verdict(
        portal.non_2xx == 0 and portal.socket_errors == 0,
        f"every portal answer a 200 ({portal.non_2xx} non-2xx, {portal.socket_errors} socket "
        "errors)",
    )
    if args.show_wrk:
        for result in (portal, baseline):  # with --identity-token, portal is portal+jwt
            print(f"\nwrk against the {result.name}:\n{result.output}")
    return 0


def main() -> int:
    """Parse the arguments and run the benchmark (or the baseline server)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per server")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument(
        "--log-level",
        default="warn",
        choices=["warn", "info"],
        help="the portal's log.level ('info' writes an access log line per request)",
    )
    parser.add_argument("--show-wrk", action="store_true", help="print wrk's own output too")
    parser.add_argument(
        "--identity-token",
        action="store_true",
        help="load the portal with identity_token off and on, and print the ratio",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="load the portal with telemetry.metrics off and on, and print the ratio",
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    if shutil.which("wrk") is None:
        print(
            "error: wrk is not installed; this benchmark needs it (Debian: apt-get install wrk)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-authz-") as directory:
        return asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    sys.exit(main())
