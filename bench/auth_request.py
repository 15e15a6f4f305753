"""Load GET /api/authz/auth-request with a valid session cookie under wrk, against the real portal.

The goal (issue 19, goal 1): on loopback at 64 connections, at the default log level (`info`),
the portal answers at least 0.8x as many requests per second as a bare aiohttp handler run the
same way, on the same kind of event loop, in the same script, and its p99 latency stays under
5 ms. Judged on the portal as shipped (identity_token off, refresh_interval `always`, the file
backend's default), and printed for each variant: identity token on, refresh_interval `disable`.

    python bench/auth_request.py [--duration 10] [--connections 64] [--threads 2]
                                 [--log-level info] [--metrics] [--only-default]

The portal runs as an admin runs it (`python -m portal serve`: file backend, sqlite, filesystem
notifier) with `log.level: info` unless told otherwise (the authz endpoints write their access
line at `debug` only). One sign-in through /api/firstfactor gives the session cookie; wrk then
sends nginx's headers (X-Original-URL, X-Original-Method, X-Forwarded-For) with that cookie, as
nginx's auth_request subrequest does. The baseline is a bare aiohttp handler in a child process
answering 200 with the same Remote-* headers, loaded the same way right after. The servers never
run at the same time. Both run on uvloop when it is installed (`pip install portal[speed]`:
`portal serve` then picks it), else on asyncio's loop; the first line says which.

Variants (each a portal of its own, loaded the same way): `authz-port` (the defaults, with
server.authz_address set and wrk asking there: the authz listener, an asyncio protocol with
httptools, portal/authz_listener.py; the first line of the goals), `main-port` (the defaults,
asked on the portal's own listener, where Authelia's nginx snippets ask), and on the authz
listener:
`portal+jwt` (identity_token on: an ES256 key it generates; every 200 then carries a signed
Remote-JWT, reused per session and site until a fifth of its lifespan is left), `refresh-off`
(authentication_backend.refresh_interval `disable`), and with --metrics `portal+met`
(telemetry.metrics on, its listener on another free port, never scraped during the run).
--only-default loads `authz-port` only. Each server's CPU time per request (user + system, from
/proc) is printed too: a figure other load on the machine moves less than requests/s.

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

from portal.cli import event_loop_factory

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
GOAL_RATIO = 0.8
GOAL_P99_MS = 5.0
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
    factory, _ = event_loop_factory()  # the loop `portal serve` picks
    web.run_app(app, host=HOST, port=port, access_log=None, print=None, loop=factory())


class _MinimalProtocol(asyncio.Protocol):
    """The authz listener's machinery with nothing of the portal: httptools reads each request,
    one task per request writes a fixed 200 with john's Remote-* headers (bench/nginx.py's
    `minimal` case: what an authorizer built like portal/authz_listener.py allows)."""

    answer = (
        "HTTP/1.1 200 OK\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in JOHN.items())
        + "Cache-Control: no-store\r\nContent-Length: 0\r\n\r\n"
    ).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import httptools  # noqa: PLC0415 - the portal's dependency, only this mode needs it

        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.write())

    async def write(self) -> None:
        assert isinstance(self.transport, asyncio.Transport)  # noqa: S101
        self.transport.write(self.answer)


def serve_minimal(port: int) -> None:
    """Serve _MinimalProtocol until killed (this script's --serve-minimal mode)."""

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_MinimalProtocol, HOST, port)
        await server.serve_forever()

    factory, _ = event_loop_factory()  # the loop `portal serve` picks
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve())


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
    refresh_interval: str | None = None,
    authz_port: int | None = None,
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
    if refresh_interval is not None:
        raw["authentication_backend"]["refresh_interval"] = refresh_interval
        name = f"configuration-refresh-{refresh_interval}.yml"
    if authz_port is not None:
        raw["server"]["authz_address"] = f"tcp://{HOST}:{authz_port}"
        name = name.replace(".yml", "-authz-port.yml")
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
    """Return the headers nginx's auth_request subrequest carries (snippets/portal-location),
    X-Request-Id included (nginx's $request_id: 32 hex digits; one for the whole run here)."""
    return {
        "Cookie": cookie,
        "X-Original-URL": PROTECTED,
        "X-Original-Method": "GET",
        "X-Forwarded-For": HOST,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": f"app.{DOMAIN}",
        "X-Forwarded-URI": "/hello",
        "X-Real-IP": HOST,
        "X-Request-Id": "0123456789abcdef" * 2,
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
        f"  {result.name:<11} {result.requests_per_second:>10,.0f} {result.requests:>9,} "
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
    ask_url: str | None = None,
) -> Load | None:
    """Start one server, load it (at ask_url, default url: the authz listener's when it has
    one), stop it; None (after saying why) if it did not come up."""
    log = directory / f"{name}.out"
    process = start(command, directory, log, env)
    try:
        if not await wait_until_up(url, process):
            print(f"error: the {name} did not start; its output:", file=sys.stderr)
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            return None
        headers = await headers_for(url)
        problem = await check_answer(ask_url or url, headers, token)
        if problem is not None:
            print(f"error: the {name} does not answer john's 200: {problem}", file=sys.stderr)
            return None
        return await load(name, ask_url or url, headers, args, process.pid)
    finally:
        stop(process)


async def run(args: argparse.Namespace, directory: Path) -> int:
    """Run the whole benchmark in directory; return the exit status."""
    write_users(directory / "users.yml")
    env = portal_environment()
    level = args.log_level
    # name -> (configuration, port, whether its 200s carry a Remote-JWT, port asked)
    variants: dict[str, tuple[Path, int, bool, int]] = {}
    port, authz = free_port(), free_port()
    variants["authz-port"] = (
        write_config(directory, port, level, authz_port=authz),
        port,
        False,
        authz,
    )
    if not args.only_default:
        port = free_port()
        variants["main-port"] = (write_config(directory, port, level), port, False, port)
        port, authz = free_port(), free_port()
        signing = write_config(directory, port, level, identity_token=True, authz_port=authz)
        variants["portal+jwt"] = (signing, port, True, authz)
        port, authz = free_port(), free_port()
        refresh = write_config(directory, port, level, refresh_interval="disable", authz_port=authz)
        variants["refresh-off"] = (refresh, port, False, authz)
    if args.metrics:
        port, authz = free_port(), free_port()
        metered = write_config(directory, port, level, metrics_port=free_port(), authz_port=authz)
        variants["portal+met"] = (metered, port, False, authz)

    async def portal_headers(url: str) -> dict[str, str]:
        return nginx_headers(await session_cookie(url))

    async def baseline_headers(url: str) -> dict[str, str]:
        # The same request, cookie included: the bare handler ignores it.
        return nginx_headers("portal_session=" + "x" * 43)

    print(
        f"GET {AUTHZ} with a valid session cookie: wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s --latency on loopback, after a {WARMUP_SECONDS} s warm-up run; "
        f"portal log.level {level!r}; event loop {event_loop_factory()[1]} (both servers); "
        f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, {wrk_version()}"
    )
    results: list[Load] = []
    try:
        for name, (config, port, token, asked) in variants.items():
            url = f"http://{HOST}:{port}"
            result = await serve_and_load(
                name,
                portal_command(config),
                url,
                directory,
                env,
                args,
                portal_headers,
                token,
                f"http://{HOST}:{asked}",
            )
            if result is None:
                return 1
            results.append(result)
        baseline_port = free_port()
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
        f"\n  {'server':<11} {'req/s':>10} {'requests':>9} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'non-2xx':>8} {'errors':>7} {'CPU µs':>7}"
    )
    for result in [*results, baseline]:
        print(row(result))
    print(f"\n  {'server':<11} {'ratio req/s':>11} {'ratio CPU':>10}   (portal vs baseline)")
    for result in results:
        ratio = result.requests_per_second / baseline.requests_per_second
        print(f"  {result.name:<11} {ratio:>11.2f} {baseline.cpu_us / result.cpu_us:>10.2f}")
    baseline_p99 = baseline.percentiles_ms.get(99, float("nan"))
    print(f"  baseline p99: {baseline_p99:.2f} ms")
    if baseline_p99 >= GOAL_P99_MS:
        # Little's law: 64 connections kept busy wait 64 / rate on average.
        print(
            f"  note  the bare handler's own p99 is {baseline_p99:.2f} ms at "
            f"{args.connections} connections ({baseline.requests_per_second:,.0f} req/s, so "
            f"{args.connections / baseline.requests_per_second * 1000:.1f} ms on average): "
            f"p99 < {GOAL_P99_MS:g} ms is out of reach here whatever the portal does"
        )

    print("\ngoals (authz-port's lines are issue 19's goal 1: the defaults, on the authz listener)")
    for result in results:
        ratio = result.requests_per_second / baseline.requests_per_second
        p99 = result.percentiles_ms.get(99, float("inf"))
        verdict(ratio >= GOAL_RATIO, f"{result.name}: ratio {ratio:.2f} (>= {GOAL_RATIO})")
        verdict(p99 < GOAL_P99_MS, f"{result.name}: p99 {p99:.2f} ms (< {GOAL_P99_MS:g} ms)")
        verdict(
            result.non_2xx == 0 and result.socket_errors == 0,
            f"{result.name}: every answer a 200 ({result.non_2xx} non-2xx, "
            f"{result.socket_errors} socket errors)",
        )
    if args.show_wrk:
        for result in [*results, baseline]:
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
        default="info",
        choices=["warn", "info"],
        help="the portal's log.level (info: the default, as Authelia's)",
    )
    parser.add_argument("--show-wrk", action="store_true", help="print wrk's own output too")
    parser.add_argument(
        "--only-default",
        action="store_true",
        help="load the portal with its defaults only (no identity-token or refresh variant)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="load the portal with telemetry.metrics off and on, and print the ratio",
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-minimal", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    if args.serve_minimal:
        serve_minimal(args.serve_minimal)
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
