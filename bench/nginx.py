"""Through nginx (issue 19, goal 2): a static page protected by the portal costs at most 4x the
same page unprotected, and an anonymous visitor is as fast as a signed-in one.

Run:  .venv/bin/python bench/nginx.py [--duration 8] [--keepalive N] [--unix] [--log-level warn]
                                     [--authz-listener]

A real nginx (/usr/sbin/nginx, in the foreground, from a temporary directory laid out as Debian's
/etc/nginx) serves one static page with the SHIPPED deploy/nginx/ files: conf.d/portal-http.conf
(the "portal" upstream, its address and, with --keepalive, its `keepalive` size the only
values changed) and the snippets proxy.conf, portal-location.conf and portal-authrequest.conf,
included in a plain-http server block on loopback as the README tells admins to (see
`server_block`). The portal runs as an admin runs it (`python -m portal serve`: file backend,
sqlite, filesystem notifier, log.level `info` unless --log-level says otherwise), on a loopback
port or, with --unix, on a unix socket (server.address unix://...). With --authz-listener the
portal also listens on server.authz_address (a loopback port) and nginx asks its auth_request
questions there: the shipped portal_authz upstream in portal-http.conf, uncommented, and
portal-location.conf's proxy_pass pointed at it, as the README tells admins to.

wrk (-t2 -c64 by default, --latency, after a 2 s warm-up run) loads six cases one after the other:
  open       the page in a location without auth_request
  ceiling    the page behind the same auth_request subrequest, answered 200 by nginx itself
  minimal    the same, answered by the authz listener's machinery with nothing of the portal
             (bench/auth_request.py's --serve-minimal: asyncio and httptools, a fixed 200 with
             john's Remote-* headers) on the portal's kind of event loop, over TCP with
             keepalive 64 whatever --keepalive and --unix say (its upstream and CPU columns
             are the minimal server's)
  session    the page protected, with a valid session cookie (one sign-in through /api/firstfactor)
  anonymous  the page protected, no cookie: the portal's 401, nginx's 302 to the sign-in page
  denied     a protected page a rule denies, with the session cookie: the portal's 403
and prints requests/s, p50/p90/p99, the ratios, how many connections nginx opened to the
portal during each case (TCP only: the sockets to the portal's port that entered TIME-WAIT,
read with `ss`, from 0.5 s in to 0.5 s before the end, as wrk's stop drops the questions in
flight; nginx closes an upstream connection when the answer carries a body it does not read, or
when its idle `keepalive` pool is full), and the CPU time per request of the portal and of
nginx (read from /proc: it depends less on other load than requests/s do).

Goals (PASS/FAIL): session >= 0.25x open; anonymous p99 < 10 ms and anonymous >= 0.8x session.

Needs wrk and ss (Debian: apt-get install wrk iproute2); without wrk, says so and exits 2.
Exits 0 whatever the verdicts, 1 if a server failed to start or wrk failed. Not a test: timings
depend on the machine, so pytest never runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import auth_request as authz
from _portal import (
    REPO,
    free_port,
    portal_command,
    portal_environment,
    start,
    stop,
    wait_until_up,
    write_yaml,
)
from argon2 import PasswordHasher

NGINX = "/usr/sbin/nginx"
DEPLOY = REPO / "deploy" / "nginx"
HOST = "127.0.0.1"
DOMAIN = "example.com"
APP_HOST = f"app.{DOMAIN}"
USERNAME = "john"
PASSWORD = "bench-password"  # noqa: S105 - the benchmark user's throwaway password
PAGE = "<!doctype html><title>Hello</title><p>" + "A static page behind the portal. " * 16
WARMUP_SECONDS = 2
GOAL_SESSION_RATIO = 0.25
GOAL_ANONYMOUS_P99_MS = 10.0
GOAL_ANONYMOUS_RATIO = 0.8

# The shipped values the bench changes, and nothing else.
SHIPPED_PORTAL_ADDRESS = "server 127.0.0.1:9091;"
_KEEPALIVE = re.compile(r"^(\s*keepalive) \d+;", re.MULTILINE)
SNIPPETS = ("proxy.conf", "portal-location.conf", "portal-authrequest.conf")
# The authz listener's upstream and question, shipped commented out; --authz-listener turns them on.
SHIPPED_AUTHZ_UPSTREAM = (
    "#upstream portal_authz {\n#    server 127.0.0.1:9092;\n#    keepalive 64;\n#}\n"
)
SHIPPED_AUTHZ_QUESTION = "    proxy_pass http://portal/api/authz/auth-request;"


@dataclass(frozen=True)
class Case:
    """One load: the path on app.example.com, whether the session cookie goes with it, and the
    status every answer must have."""

    name: str
    path: str
    cookie: bool
    status: int


CASES = (
    Case("open", "/open/index.html", cookie=False, status=200),
    # The ceiling: the same auth_request subrequest, with the shipped snippets' headers and
    # keep-alive, answered 200 by an nginx server of its own at no cost: what nginx alone allows.
    Case("ceiling", "/ceiling/index.html", cookie=True, status=200),
    # The same subrequest answered by the authz listener's machinery with nothing of the portal
    # (bench/auth_request.py --serve-minimal: 200 with john's Remote-* headers) on the portal's
    # event loop: what an authorizer built like the authz listener allows, before any work.
    Case("minimal", "/minimal/index.html", cookie=True, status=200),
    Case("session", "/index.html", cookie=True, status=200),
    Case("anonymous", "/index.html", cookie=False, status=302),
    Case("denied", "/deny/index.html", cookie=True, status=403),
)


@dataclass
class Load:
    """What wrk measured for one case, and the upstream connections nginx opened meanwhile."""

    case: Case
    requests_per_second: float
    requests: int
    percentiles_ms: dict[int, float]
    unexpected: int  # wrk's "Non-2xx or 3xx" count, when the case expects a 2xx or 3xx
    socket_errors: int
    upstream_opened: int | None  # None: not countable (unix socket)
    portal_cpu_us: float = 0.0  # the portal's CPU time per request, microseconds
    nginx_cpu_us: float = 0.0  # nginx's (all its processes), per request


# --- the portal -------------------------------------------------------------------------------


def write_portal_files(
    directory: Path, address: str, log_level: str, authz_address: str | None = None
) -> Path:
    """Write john's users file and the portal's configuration (with server.authz_address when
    given); return the configuration's path."""
    digest = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    users = {
        USERNAME: {
            "displayname": "John Doe",
            "password": digest,
            "email": "john.doe@example.com",
            "groups": ["admins", "dev"],
        }
    }
    write_yaml(directory / "users.yml", {"users": users})
    raw: dict[str, Any] = {
        "server": {"address": address},
        "log": {"level": log_level, "file_path": str(directory / "portal-log.txt")},
        "authentication_backend": {"file": {"path": str(directory / "users.yml")}},
        "notifier": {"filesystem": {"filename": str(directory / "notification.txt")}},
        "session": {"cookies": [{"domain": DOMAIN, "authelia_url": f"https://portal.{DOMAIN}"}]},
        "storage": {"local": {"path": str(directory / "db.sqlite3")}},
        "access_control": {
            "default_policy": "deny",
            "rules": [
                {"domain": APP_HOST, "resources": ["^/deny"], "policy": "deny"},
                {"domain": APP_HOST, "policy": "one_factor"},
            ],
        },
    }
    if authz_address is not None:
        raw["server"]["authz_address"] = authz_address
    return write_yaml(directory / "configuration.yml", raw)


async def session_cookie(url: str) -> str:
    """Sign in once through /api/firstfactor, straight to the portal; return the Cookie header."""
    connector = aiohttp.UnixConnector(path=url[len("unix:") :]) if url.startswith("unix:") else None
    base = "http://localhost" if connector is not None else url
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            base + "/api/firstfactor",
            json={"username": USERNAME, "password": PASSWORD},
            # as nginx says it: a unix-socket peer has no address of its own
            headers={"X-Forwarded-For": HOST},
        ) as response:
            body = await response.text()
            if response.status != 200:
                raise RuntimeError(f"sign-in answered {response.status}: {body}")
            morsel = response.cookies.get("portal_session")
            if morsel is None:
                raise RuntimeError("sign-in set no portal_session cookie")
            return f"portal_session={morsel.value}"


# --- nginx ------------------------------------------------------------------------------------


def server_block(port: int, root: Path, ceiling_port: int, minimal: str) -> str:
    """Return the protected site's server block: the snippets included as the README says (the
    location snippet at server level; proxy.conf and the auth_request snippet in the protected
    location), a static page instead of proxy_pass, /open/ the same page without the portal, and
    /ceiling/ the same page behind copies of the snippets asking an nginx server that answers
    200 at once (ceiling_port) instead of the portal, and /minimal/ the same asking the
    minimal server at `minimal` (host:port)."""
    return f"""\
server {{
    listen {HOST}:{port};
    server_name {APP_HOST};
    root {root};

    include snippets/portal-location.conf;

    location / {{
        include snippets/proxy.conf;
        include snippets/portal-authrequest.conf;
    }}

    location /open/ {{
    }}

    include snippets/ceiling-location.conf;

    location /ceiling/ {{
        include snippets/proxy.conf;
        include snippets/ceiling-authrequest.conf;
    }}

    include snippets/minimal-location.conf;

    location /minimal/ {{
        include snippets/proxy.conf;
        include snippets/minimal-authrequest.conf;
    }}
}}

upstream minimal {{
    server {minimal};
    keepalive 64;
}}

upstream ceiling {{
    server {HOST}:{ceiling_port};
    keepalive 64;
}}

server {{
    listen {HOST}:{ceiling_port};
    location / {{
        return 200;
    }}
}}
"""


def main_conf(workdir: Path, workers: str) -> str:
    """Return nginx.conf: Debian's http block (conf.d/*.conf), no access log, files in workdir."""
    temp = workdir / "temp"
    return f"""\
user root;
worker_processes {workers};
error_log {workdir / "error.log"} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};

    include conf.d/*.conf;
}}
"""


def write_nginx(
    workdir: Path,
    port: int,
    upstream: str,
    keepalive: int | None,
    workers: str,
    minimal: str,
    authz_upstream: str | None = None,
) -> str:
    """Lay out workdir as /etc/nginx with the shipped files; return the upstream block in use
    (with authz_upstream: the shipped portal_authz upstream, uncommented, at that address, and
    portal-location.conf asking it)."""
    for sub in ("conf.d", "snippets", "temp", "www/open", "www/deny"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    http = (DEPLOY / "portal-http.conf").read_text()
    if SHIPPED_PORTAL_ADDRESS not in http:
        raise RuntimeError(f"portal-http.conf no longer holds {SHIPPED_PORTAL_ADDRESS!r}")
    http = http.replace(SHIPPED_PORTAL_ADDRESS, f"server {upstream};")
    if keepalive is not None:
        http, count = _KEEPALIVE.subn(rf"\1 {keepalive};", http)
        if count != 1:
            raise RuntimeError("portal-http.conf holds no single `keepalive N;` line")
    name = "upstream portal"
    if authz_upstream is not None:
        if SHIPPED_AUTHZ_UPSTREAM not in http:
            raise RuntimeError("portal-http.conf no longer holds the portal_authz upstream")
        live = f"upstream portal_authz {{\n    server {authz_upstream};\n    keepalive 64;\n}}\n"
        http, name = http.replace(SHIPPED_AUTHZ_UPSTREAM, live), "upstream portal_authz"
    (workdir / "conf.d" / "portal-http.conf").write_text(http)
    for snippet in SNIPPETS:
        text = (DEPLOY / snippet).read_text()
        if authz_upstream is not None and snippet == "portal-location.conf":
            if SHIPPED_AUTHZ_QUESTION not in text:
                raise RuntimeError(f"{snippet} no longer holds {SHIPPED_AUTHZ_QUESTION.strip()!r}")
            text = text.replace(
                SHIPPED_AUTHZ_QUESTION, SHIPPED_AUTHZ_QUESTION.replace("portal/", "portal_authz/")
            )
        (workdir / "snippets" / snippet).write_text(text)
    for page in ("www/index.html", "www/open/index.html", "www/deny/index.html"):
        (workdir / page).write_text(PAGE)
    for other in ("ceiling", "minimal"):
        for snippet in ("portal-location.conf", "portal-authrequest.conf"):
            text = (workdir / "snippets" / snippet).read_text()
            text = text.replace("/internal/portal/authz", f"/internal/{other}/authz")
            text = re.sub(
                r"proxy_pass http://portal(_authz)?/", f"proxy_pass http://{other}/", text
            )
            (workdir / "snippets" / snippet.replace("portal", other)).write_text(text)
        (workdir / "www" / other).mkdir(exist_ok=True)
        (workdir / "www" / other / "index.html").write_text(PAGE)
    app_conf = server_block(port, workdir / "www", free_port(), minimal)
    (workdir / "conf.d" / "app.conf").write_text(app_conf)
    (workdir / "nginx.conf").write_text(main_conf(workdir, workers))
    start_upstream = http.index(name)
    block = http[start_upstream : http.index("}", start_upstream) + 1].splitlines()
    return "\n".join(line for line in block if line.strip() and not line.strip().startswith("#"))


def start_nginx(workdir: Path) -> subprocess.Popen[bytes]:
    """Start nginx in the foreground, in its own process group."""
    command = [NGINX, "-p", f"{workdir}/", "-c", str(workdir / "nginx.conf")]
    command += ["-g", f"daemon off; pid {workdir / 'nginx.pid'};"]
    with (workdir / "nginx.out").open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_nginx(process: subprocess.Popen[bytes]) -> None:
    """Stop nginx's process group (master and workers)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# --- measuring --------------------------------------------------------------------------------


def time_wait(port: int) -> set[str]:
    """Return the TCP connections to or from port now in TIME-WAIT (as ss prints them)."""
    result = subprocess.run(
        ["ss", "-tanH", "state", "time-wait", f"( dport = :{port} or sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {" ".join(line.split()) for line in result.stdout.splitlines() if line.strip()}


def cpu_seconds(pids: list[int]) -> float:
    """Return the CPU time (user + system, seconds) the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14 and 15)
    return total / ticks


def children(pid: int) -> list[int]:
    """Return the pids of a process's children (nginx's workers), read from /proc."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def wrk(url: str, cookie: str | None, args: argparse.Namespace, seconds: int) -> str:
    """Run wrk with --latency against url and return what it printed."""
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency"]
    command += ["-H", f"Host: {APP_HOST}"]
    if cookie is not None:
        command += ["-H", f"Cookie: {cookie}"]
    result = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk exited with {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def parse(case: Case, output: str, opened: int | None) -> Load:
    """Read requests/s, the latency percentiles and the errors from wrk's output (wrk's own
    reading is bench/auth_request.py's parse)."""
    load = authz.parse(case.name, output)
    return Load(
        case=case,
        requests_per_second=load.requests_per_second,
        requests=load.requests,
        percentiles_ms=load.percentiles_ms,
        unexpected=load.non_2xx if case.status < 400 else 0,
        socket_errors=load.socket_errors,
        upstream_opened=opened,
    )


async def check_case(url: str, case: Case, cookie: str) -> None:
    """Ask once; raise RuntimeError unless the answer has the case's status (and, for the
    anonymous visitor, nginx's redirect to the portal)."""
    headers = {"Host": APP_HOST, **({"Cookie": cookie} if case.cookie else {})}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            await response.read()
            location = response.headers.get("Location", "")
            if response.status != case.status or (
                case.status == 302 and not location.startswith(f"https://portal.{DOMAIN}/?rd=")
            ):
                raise RuntimeError(f"{case.name}: {response.status} {location!r}")


async def load(
    base: str,
    case: Case,
    cookie: str,
    portal_port: int | None,
    processes: tuple[list[int], list[int]],
    args: argparse.Namespace,
) -> Load:
    """Warm up, then measure one case; count the upstream connections closed meanwhile."""
    url = base + case.path
    await check_case(url, case, cookie)
    sent = cookie if case.cookie else None
    await asyncio.to_thread(wrk, url, sent, args, WARMUP_SECONDS)
    cpu_before = [cpu_seconds(pids) for pids in processes]
    running = asyncio.ensure_future(asyncio.to_thread(wrk, url, sent, args, args.duration))
    opened = None
    if portal_port is not None:
        # Counted from 0.5 s in to 0.5 s before the end: when wrk stops, nginx drops the
        # connections of the questions still in flight, whatever the configuration.
        await asyncio.sleep(0.5)
        before = time_wait(portal_port)
        await asyncio.sleep(args.duration - 1.0)
        opened = len(time_wait(portal_port) - before)
    output = await running
    cpu = [cpu_seconds(pids) - was for pids, was in zip(processes, cpu_before, strict=True)]
    result = parse(case, output, opened)
    result.portal_cpu_us, result.nginx_cpu_us = (1e6 * c / max(result.requests, 1) for c in cpu)
    return result


# --- report -----------------------------------------------------------------------------------


def verdict(ok: bool, text: str) -> None:
    """Print one PASS/FAIL line."""
    print(f"  {'PASS' if ok else 'FAIL'}  {text}")


def row(result: Load) -> str:
    """Format one case's figures."""
    p = result.percentiles_ms
    opened = "n/a" if result.upstream_opened is None else f"{result.upstream_opened:,}"
    return (
        f"  {result.case.name:<10} {result.requests_per_second:>9,.0f} {result.requests:>9,} "
        f"{p.get(50, float('nan')):>7.2f} {p.get(90, float('nan')):>7.2f} "
        f"{p.get(99, float('nan')):>7.2f} {result.unexpected + result.socket_errors:>7} "
        f"{opened:>9} {result.portal_cpu_us:>7.0f} {result.nginx_cpu_us:>7.0f}"
    )


async def run(args: argparse.Namespace, directory: Path) -> int:
    """Run the whole benchmark in directory; return the exit status."""
    portal_port = None if args.unix else free_port()
    if args.unix:
        socket_path = directory / "portal.sock"
        address, upstream = f"unix://{socket_path}", f"unix:{socket_path}"
        portal_url = f"unix:{socket_path}"
    else:
        address, upstream = f"tcp://{HOST}:{portal_port}", f"{HOST}:{portal_port}"
        portal_url = f"http://{HOST}:{portal_port}"
    authz_port = free_port() if args.authz_listener else None
    authz_address = None if authz_port is None else f"tcp://{HOST}:{authz_port}"
    config = write_portal_files(directory, address, args.log_level, authz_address)
    nginx_port = free_port()
    nginx_dir = directory / "nginx"
    authz_upstream = None if authz_port is None else f"{HOST}:{authz_port}"
    minimal_port = free_port()
    block = write_nginx(
        nginx_dir,
        nginx_port,
        upstream,
        args.keepalive,
        args.workers,
        f"{HOST}:{minimal_port}",
        authz_upstream,
    )

    print(
        f"A static page through nginx: wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s --latency after a {WARMUP_SECONDS} s warm-up; portal log.level "
        f"{args.log_level!r}; nginx worker_processes {args.workers}; {os.cpu_count()} CPU(s), "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {authz.wrk_version()}\n"
        + "\n".join("  " + line for line in block.splitlines())
    )
    portal = start(
        portal_command(config), directory, directory / "portal.out", portal_environment()
    )
    minimal = start(
        [sys.executable, str(Path(authz.__file__).resolve()), "--serve-minimal", str(minimal_port)],
        directory,
        directory / "minimal.out",
        portal_environment(),
    )
    nginx = None
    try:
        nginx = start_nginx(nginx_dir)
        if portal_url.startswith("unix:"):
            up = await wait_for_socket(Path(portal_url[len("unix:") :]), portal)
        else:
            up = await wait_until_up(portal_url, portal)
        if not up or not await wait_until_up(f"http://{HOST}:{minimal_port}", minimal):
            print("error: the portal or the minimal server did not start:", file=sys.stderr)
            for out in ("portal.out", "minimal.out"):
                print((directory / out).read_text(errors="replace")[-4000:], file=sys.stderr)
            return 1
        await asyncio.sleep(0.3)
        if nginx.poll() is not None:
            print((nginx_dir / "nginx.out").read_text(errors="replace"), file=sys.stderr)
            return 1
        cookie = await session_cookie(portal_url)
        base = f"http://{HOST}:{nginx_port}"
        workers = [nginx.pid, *children(nginx.pid)]
        asked = authz_port or portal_port  # where nginx's questions go: count its connections there
        results = []
        for case in CASES:
            # The minimal case's "portal" and "upstream" columns are the minimal server's.
            minimal_case = case.name == "minimal"
            processes = ([minimal.pid if minimal_case else portal.pid], workers)
            port = minimal_port if minimal_case else asked
            results.append(await load(base, case, cookie, port, processes, args))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if nginx is not None:
            stop_nginx(nginx)
        stop(portal)
        stop(minimal)

    report(results)
    return 0


async def wait_for_socket(path: Path, process: subprocess.Popen[bytes]) -> bool:
    """Wait up to 30 s for the portal's unix socket to answer /api/health."""
    for _ in range(300):
        if process.poll() is not None:
            return False
        if path.exists():
            try:
                connector = aiohttp.UnixConnector(path=str(path))
                async with aiohttp.ClientSession(connector=connector) as session:
                    async with session.get("http://localhost/api/health") as response:
                        if response.status == 200:
                            return True
            except aiohttp.ClientError:
                pass
        await asyncio.sleep(0.1)
    return False


def report(results: list[Load]) -> None:
    """Print the table, the ratios and the verdicts."""
    by_name = {result.case.name: result for result in results}
    print(
        f"\n  {'case':<10} {'req/s':>9} {'requests':>9} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'wrong':>7} {'upstream':>9} {'portal':>7} {'nginx':>7}"
    )
    for result in results:
        print(row(result))
    print("  (wrong: unexpected statuses and socket errors; upstream: connections nginx opened")
    print("   to the portal during the run but its first and last 0.5 s, from TIME-WAIT sockets;")
    print("   portal, nginx: their CPU time per request in microseconds, which depends less on")
    print(
        "   other load than req/s does; for `minimal`, the minimal server's in the portal column)"
    )
    opened, session, anonymous = by_name["open"], by_name["session"], by_name["anonymous"]
    protected_ratio = session.requests_per_second / opened.requests_per_second
    anonymous_ratio = anonymous.requests_per_second / session.requests_per_second
    denied_ratio = by_name["denied"].requests_per_second / session.requests_per_second
    anonymous_p99 = anonymous.percentiles_ms.get(99, float("inf"))
    ceiling_ratio = by_name["ceiling"].requests_per_second / opened.requests_per_second
    print(f"\n  ratio session/open (requests/s):      {protected_ratio:.2f}")
    print(
        f"  ratio ceiling/open (requests/s):      {ceiling_ratio:.2f}   (nginx alone: the "
        "same subrequest answered 200 at no cost)"
    )
    print(f"  ratio session/ceiling (requests/s):   {protected_ratio / ceiling_ratio:.2f}")
    minimal_ratio = by_name["minimal"].requests_per_second / opened.requests_per_second
    print(
        f"  ratio minimal/open (requests/s):      {minimal_ratio:.2f}   (nginx asking the authz "
        "listener's machinery: a fixed 200 and john's Remote-* headers)"
    )
    print(f"  ratio session/minimal (requests/s):   {protected_ratio / minimal_ratio:.2f}")
    print(f"  ratio anonymous/session (requests/s): {anonymous_ratio:.2f}")
    print(f"  ratio denied/session (requests/s):    {denied_ratio:.2f}")
    print("\ngoals")
    verdict(
        protected_ratio >= GOAL_SESSION_RATIO,
        f"protected with a session {protected_ratio:.2f}x the open page (>= {GOAL_SESSION_RATIO})",
    )
    verdict(
        anonymous_p99 < GOAL_ANONYMOUS_P99_MS,
        f"anonymous p99 {anonymous_p99:.2f} ms (< {GOAL_ANONYMOUS_P99_MS:g} ms)",
    )
    verdict(
        anonymous_ratio >= GOAL_ANONYMOUS_RATIO,
        f"anonymous {anonymous_ratio:.2f}x the signed-in rate (>= {GOAL_ANONYMOUS_RATIO})",
    )
    if ceiling_ratio < GOAL_SESSION_RATIO:
        print(
            f"  note  nginx alone reaches {ceiling_ratio:.2f}x with an authorizer that costs "
            f"nothing: {GOAL_SESSION_RATIO}x is out of reach here whatever the portal does"
        )
    elif minimal_ratio < GOAL_SESSION_RATIO:
        print(
            f"  note  nginx asking the authz listener's machinery without a verdict reaches "
            f"{minimal_ratio:.2f}x: {GOAL_SESSION_RATIO}x is out of reach here for it"
        )
    wrong = sum(result.unexpected + result.socket_errors for result in results)
    verdict(wrong == 0, f"every answer as expected ({wrong} unexpected or socket errors)")


def main() -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per case")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument(
        "--keepalive", type=int, help="the upstream's `keepalive` (default: as shipped)"
    )
    parser.add_argument("--unix", action="store_true", help="nginx reaches the portal by socket")
    parser.add_argument(
        "--authz-listener",
        action="store_true",
        help="the portal answers auth_request on server.authz_address; nginx asks there",
    )
    parser.add_argument("--workers", default="auto", help="nginx worker_processes (Debian: auto)")
    parser.add_argument(
        "--log-level", default="info", choices=["info", "warn"], help="the portal's log.level"
    )
    args = parser.parse_args()
    for tool in ("wrk", "ss"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed; this benchmark needs it", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as directory:
        return asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    sys.exit(main())
