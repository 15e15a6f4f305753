"""auth_request through nginx on SQLite, on PostgreSQL + Redis, and as two replicas; reset step 1
on PostgreSQL.

Issue 14's benchmark, in one run on one machine:

- auth_request: wrk loads https://app.example.com/hello through a real nginx serving the shipped
  configuration (deploy/nginx), whose auth_request asks the portal about a signed-in visitor and
  whose protected app is nginx itself (a `return 200` naming the Remote-User, so the app costs
  next to nothing and the figures are nginx + portal). Three set-ups, one after another:
  (a) one replica, storage.local (SQLite, sessions in it), (b) one replica, storage.postgres and
  session.redis, (c) two replicas on the same PostgreSQL and Redis behind nginx's upstream (round
  robin). Throughput and p99 of each, and the ratios between them, measured in the same run.
- reset step 1: POST /reset-password/step1 for existing and unknown users against one replica on
  PostgreSQL + Redis, timed with bench/reset_step1.py's method (interleaved primers in a seeded
  order, each followed by a probe; its bare aiohttp handler timed the same way right after, as
  the noise floor). Goal: the medians differ by less than 2 ms.

    python bench/replicas.py [--duration 5] [--connections 64] [--threads 2] [--requests 300]

PostgreSQL (initdb as `nobody` when run as root), Redis and nginx are throwaway servers on free
loopback ports, started with the test fixtures (tests/integration/postgres.py, redis_server.py,
nginx.py). Needs wrk (Debian: `apt-get install wrk`), nginx, postgresql and redis-server (`make
system-deps`); without one of them, says which and exits 2. wrk connects to 127.0.0.1 while
sending app.example.com as its TLS server name and Host (a small Lua script replaces its name
lookup), as nginx refuses a handshake for a name it does not serve. The portal runs with
`log.level: warn` (no access log line per request). Prints figures and PASS/FAIL lines; exits 0
whatever the verdicts, 1 if a server failed to start or wrk failed. Not a test: timings depend
on the machine, so pytest never runs this. A run takes about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import auth_request as authz
import reset_step1 as step1
import trustme
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
from ruamel.yaml import YAML

sys.path.insert(0, str(REPO))

# The fixtures the integration tests use; importable once the repository is on the path.
from portal.notify.filesystem import split_messages  # noqa: E402
from tests.integration.nginx import (  # noqa: E402
    APP_HOST,
    DOMAIN,
    NGINX,
    PORTAL_HOST,
    Nginx,
    configure_nginx,
)
from tests.integration.postgres import PostgresServer, pg_bin, start_server  # noqa: E402
from tests.integration.redis_server import REDIS_SERVER, RedisServer  # noqa: E402

HOST = "127.0.0.1"
PATH = "/hello"
COOKIE_NAME = "portal_session"
WARMUP_SECONDS = 2
GOAL_DIFF_MS = step1.GOAL_DIFF_MS
GOAL_AFTER_DIFF_MS = step1.GOAL_AFTER_DIFF_MS

# wrk looks up the URL's host before anything else; this connects to loopback instead, keeping
# the name for SNI and Host (nginx's default server rejects a handshake for any other name).
WRK_RESOLVE = """\
function wrk.resolve(host, service)
   wrk.addrs = wrk.lookup("127.0.0.1", service)
end
"""

# The protected app, served by nginx itself: it answers who auth_request said the visitor is.
APP_SERVER = """\
server {{
    listen {address};
    access_log off;
    location / {{
        default_type text/plain;
        return 200 "$http_remote_user\\n";
    }}
}}
"""


# --- the servers ------------------------------------------------------------------------------


@dataclass
class Engines:
    """The PostgreSQL and Redis servers the replicas share."""

    postgres: PostgresServer
    redis: RedisServer

    def storage(self) -> dict[str, Any]:
        """Return a storage.postgres block on a fresh, empty database."""
        return {
            "postgres": {
                "address": f"tcp://{self.postgres.host}:{self.postgres.port}",
                "database": self.postgres.create_database(),
                "username": "portal",
                "password": self.postgres.password,
            }
        }

    def session_redis(self) -> dict[str, Any]:
        """Return a session.redis block logging in as the fixture's ACL user."""
        return {
            "host": self.redis.host,
            "port": self.redis.port,
            "username": self.redis.username,
            "password": self.redis.user_password,
        }


@contextmanager
def running_engines(directory: Path) -> Iterator[Engines]:
    """Start a throwaway PostgreSQL and Redis for the block; remove them afterwards."""
    postgres = start_server()
    try:
        redis = RedisServer(directory / "redis")
        redis.start()
        try:
            yield Engines(postgres, redis)
        finally:
            redis.stop()
    finally:
        postgres.remove()


def replica_config(
    directory: Path, name: str, port: int, storage: dict[str, Any], redis: dict[str, Any] | None
) -> Path:
    """Write one replica's configuration (behind nginx; secrets come from the environment).

    storage is a `storage` block; redis a `session.redis` block, or None for sessions in the
    storage. authelia_url names no port: only signed-in requests are measured, never redirected.
    """
    session: dict[str, Any] = {
        "cookies": [{"domain": DOMAIN, "authelia_url": f"https://{PORTAL_HOST}"}]
    }
    if redis is not None:
        session["redis"] = redis
    raw = {
        "server": {"address": f"tcp://{HOST}:{port}", "trusted_proxies": [f"{HOST}/32"]},
        "log": {"level": "warn", "file_path": str(directory / f"{name}-log.txt")},
        "authentication_backend": {"file": {"path": str(directory / "users.yml")}},
        "notifier": {"filesystem": {"filename": str(directory / f"{name}-notification.txt")}},
        "session": session,
        "storage": storage,
        "access_control": {
            "default_policy": "deny",
            "rules": [{"domain": APP_HOST, "policy": "one_factor"}],
        },
    }
    return write_yaml(directory / f"{name}.yml", raw)


def start_nginx(directory: Path, ca: trustme.CA, ports: list[int], app_port: int) -> Nginx:
    """Start nginx with the shipped files, the replicas in its "portal" upstream, and the app.

    The fixture writes one address in place of the shipped `server 127.0.0.1:9091;`: for two
    replicas the address is followed by a second `server` line of the same upstream.
    """
    upstream = ";\n    server ".join(f"{HOST}:{port}" for port in ports)
    nginx = configure_nginx(directory, ca, portal=upstream, app=f"{HOST}:{app_port}")
    (directory / "conf.d" / "bench-app.conf").write_text(
        APP_SERVER.format(address=f"{HOST}:{app_port}")
    )
    nginx.start()
    return nginx


async def sign_in(nginx: Nginx) -> str:
    """Sign john in through nginx; check that the app then sees him; return the cookie value."""
    async with nginx.client(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.post(
            nginx.url(PORTAL_HOST, "/api/firstfactor"),
            json={"username": authz.USERNAME, "password": authz.PASSWORD},
        ) as response:
            body = await response.text()
            morsel = response.cookies.get(COOKIE_NAME)
            if response.status != 200 or morsel is None:
                raise RuntimeError(f"sign-in through nginx answered {response.status}: {body}")
        async with http.get(
            nginx.url(APP_HOST, PATH), headers={"Cookie": f"{COOKIE_NAME}={morsel.value}"}
        ) as response:
            seen = await response.text()
            if response.status != 200 or seen.strip() != authz.USERNAME:
                raise RuntimeError(f"the app behind nginx answered {response.status}: {seen!r}")
    return morsel.value


# --- wrk ------------------------------------------------------------------------------------


def run_wrk(nginx: Nginx, cookie: str, script: Path, args: argparse.Namespace, seconds: int) -> str:
    """Run wrk --latency against the protected page through nginx; return what it printed."""
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        "-H",
        f"Cookie: {COOKIE_NAME}={cookie}",
        nginx.url(APP_HOST, PATH),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk exited with {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system, seconds) a process has used, from /proc; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3 of stat(5), utime and stime fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_setup(
    name: str,
    directory: Path,
    configs: list[tuple[Path, int]],
    args: argparse.Namespace,
    redis_pid: int,
) -> tuple[authz.Load, dict[str, list[float]]]:
    """Start the replicas and nginx, sign in, warm up, measure; stop everything afterwards.

    Returns wrk's figures and the CPU seconds used during the measured run by each replica (each
    one busy shows nginx spread the load), by nginx's worker and by Redis, in a dict keyed
    "replicas", "nginx" and "redis".
    """
    directory.mkdir()
    env = portal_environment()
    script = directory / "resolve.lua"
    script.write_text(WRK_RESOLVE)
    pids = []
    with ExitStack() as stack:
        for index, (config, port) in enumerate(configs):
            log = directory / f"replica{index}.out"
            process = start(portal_command(config), directory, log, env)
            stack.callback(stop, process)
            pids.append(process.pid)
            if not await wait_until_up(f"http://{HOST}:{port}", process):
                tail = log.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{name}: replica {index} did not start; its output:\n{tail}")
        app_port = free_port()
        nginx = start_nginx(directory / "nginx", trustme.CA(), [p for _, p in configs], app_port)
        stack.callback(nginx.stop)
        cookie = await sign_in(nginx)
        # Each replica, asked directly, knows the session (it lives in what they share).
        for _, port in configs:
            problem = await authz.check_answer(
                f"http://{HOST}:{port}", authz.nginx_headers(f"{COOKIE_NAME}={cookie}")
            )
            if problem is not None:
                raise RuntimeError(f"{name}: replica on port {port} refuses john: {problem}")
        await asyncio.to_thread(run_wrk, nginx, cookie, script, args, WARMUP_SECONDS)
        watched = {"replicas": pids, "nginx": nginx.worker_pids(), "redis": [redis_pid]}
        before = {role: [cpu_seconds(pid) for pid in group] for role, group in watched.items()}
        output = await asyncio.to_thread(run_wrk, nginx, cookie, script, args, args.duration)
        used = {
            role: [cpu_seconds(pid) - spent for pid, spent in zip(group, before[role], strict=True)]
            for role, group in watched.items()
        }
    return authz.parse(name, output), used


# --- reset step 1 on PostgreSQL ------------------------------------------------------------


@dataclass
class StepRun:
    """What the step-1 run measured on the portal and on reset_step1.py's bare handler."""

    portal: dict[str, step1.Series]
    baseline: dict[str, step1.Series]
    mails: int
    existing: list[str]
    strangers: set[str]  # the addresses of every unknown and probe identifier
    directory: Path


async def reset_step1_on_postgres(
    engines: Engines, directory: Path, args: argparse.Namespace
) -> StepRun:
    """Time step 1 on one replica on PostgreSQL + Redis as bench/reset_step1.py does on SQLite:
    the same users, pairs, configuration (its lifted rate limits included) and bare handler,
    timed right after the portal with the same pairs (its "after" difference is the noise floor).
    """
    directory.mkdir()
    half = args.warmup // 2
    count = args.requests + half
    names = step1.write_users(directory / "users.yml", max(250, count))
    existing = names[:count]
    unknown = [f"nobo{i:04d}" for i in range(count)]
    probes = [f"prob{i:04d}" for i in range(2 * count)]
    pairs = step1.plan(existing[:half], unknown[:half], probes[: 2 * half])
    pairs += step1.plan(existing[half:], unknown[half:], probes[2 * half :])
    port, baseline_port = free_port(), free_port()
    config = step1.write_config(directory, port)
    raw = YAML(typ="safe", pure=True).load(config.read_text())
    raw["storage"] = engines.storage()
    raw["session"]["redis"] = engines.session_redis()
    write_yaml(config, raw)
    env = portal_environment()
    baseline_script = str(Path(step1.__file__).resolve())
    servers = {
        "step-1 replica": (portal_command(config), port),
        "baseline": (
            [sys.executable, baseline_script, "--serve-baseline", str(baseline_port)],
            baseline_port,
        ),
    }
    measured, mails = {}, 0
    with ExitStack() as stack:
        for name, (command, server_port) in servers.items():
            log = directory / f"{name}.out"
            process = start(command, directory, log, env)
            stack.callback(stop, process)
            url = f"http://{HOST}:{server_port}"
            if not await wait_until_up(url, process):
                tail = log.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"the {name} did not start; its output:\n{tail}")
            measured[name] = await step1.measure(url, pairs, 2 * half, args.pause_ms / 1000)
            if name == "step-1 replica":
                notifications = directory / "notification.txt"
                mails = await step1.drained_mail_count(notifications, len(existing))
    return StepRun(
        portal=measured["step-1 replica"],
        baseline=measured["baseline"],
        mails=mails,
        existing=existing,
        strangers={f"{n}@example.com" for n in unknown + probes},
        directory=directory,
    )


# --- report ---------------------------------------------------------------------------------


def verdict(ok: bool, text: str) -> None:
    """Print one PASS/FAIL line."""
    print(f"  {'PASS' if ok else 'FAIL'}  {text}")


def row(result: authz.Load) -> str:
    """Format one set-up's figures."""
    p = result.percentiles_ms
    nan = float("nan")
    return (
        f"  {result.name:<28} {result.requests_per_second:>8,.0f} {result.requests:>9,} "
        f"{p.get(50, nan):>7.2f} {p.get(90, nan):>7.2f} {p.get(99, nan):>7.2f} "
        f"{result.non_2xx:>7} {result.socket_errors:>6}"
    )


def report_loads(loads: list[authz.Load], cpu: list[dict[str, list[float]]], seconds: int) -> None:
    """Print the auth_request table, the ratios between set-ups, and whether all were 200s."""
    print(
        f"\n  {'set-up':<28} {'req/s':>8} {'requests':>9} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'non-2xx':>7} {'errors':>6}"
    )
    for result in loads:
        print(row(result))
    print(
        f"\n  CPU during the {seconds} s run (user + system, s)  replicas   ms/request   "
        "nginx   redis"
    )
    for result, used in zip(loads, cpu, strict=True):
        replicas = ", ".join(f"{spent:.1f}" for spent in used["replicas"])
        per_request = sum(used["replicas"]) * 1000 / max(result.requests, 1)
        print(
            f"  {result.name:<44} {replicas:>11} {per_request:>12.2f} "
            f"{sum(used['nginx']):>7.1f} {sum(used['redis']):>7.1f}"
        )
    print(
        "\n  ratios (same run)                req/s    p99   "
        "(req/s above 1: more; p99 below 1: shorter)"
    )
    for later, earlier in ((1, 0), (2, 0), (2, 1)):
        a, b = loads[later], loads[earlier]
        rps = a.requests_per_second / b.requests_per_second
        p99 = a.percentiles_ms.get(99, float("nan")) / b.percentiles_ms.get(99, float("nan"))
        print(f"  ({'abc'[later]}) / ({'abc'[earlier]}){'':<24} {rps:>6.2f} {p99:>6.2f}")
    print("\ngoals")
    for result in loads:
        verdict(
            result.non_2xx == 0 and result.socket_errors == 0,
            f"{result.name}: every answer a 200 ({result.non_2xx} non-2xx, "
            f"{result.socket_errors} socket errors)",
        )


def report_step1(run: StepRun) -> None:
    """Print reset_step1's tables and figures for the PostgreSQL run, with PASS/FAIL lines."""
    series = run.portal
    step1.table(
        "portal: one replica on PostgreSQL + Redis (file backend, filesystem notifier)", series
    )
    step1.table("baseline (reset_step1.py's bare aiohttp handler, fixed HTML body)", run.baseline)
    known, stranger = series["existing"], series["unknown"]
    diff = stranger.median - known.median
    low, high = step1.difference_interval(known.times, stranger.times)
    after, after_low, after_high = step1.after_difference(series)
    floor, floor_low, floor_high = step1.after_difference(run.baseline)
    notifications = run.directory / "notification.txt"
    recipients = (
        {str(m["To"]) for m in split_messages(notifications.read_bytes())} if run.mails else set()
    )
    unknown_mailed = run.strangers & recipients
    print(
        f"\n  median difference (unknown - existing): {diff:+.2f} ms "
        f"(95% interval {low:+.2f} .. {high:+.2f} ms)"
    )
    print(
        f"  after an existing - after an unknown:   {after:+.2f} ms "
        f"(95% interval {after_low:+.2f} .. {after_high:+.2f} ms)"
    )
    print(
        f"  the same on the baseline (noise floor): {floor:+.2f} ms "
        f"(95% interval {floor_low:+.2f} .. {floor_high:+.2f} ms)"
    )
    print(
        f"  mails written: {run.mails} for {len(run.existing)} existing users (warm-up included), "
        f"{len(unknown_mailed)} to unknown users"
    )
    print("\ngoals")
    verdict(abs(diff) < GOAL_DIFF_MS, f"medians differ by {abs(diff):.2f} ms (< {GOAL_DIFF_MS} ms)")
    verdict(
        abs(after) < GOAL_AFTER_DIFF_MS,
        f"the request after an existing user's and after an unknown one's differ by "
        f"{abs(after):.2f} ms (< {GOAL_AFTER_DIFF_MS} ms, reset_step1.py's goal)",
    )
    statuses = [s.statuses for s in series.values()]
    verdict(
        all(s == {303: len(known.times)} for s in statuses), "every measured request answered 303"
    )
    verdict(
        run.mails == len(run.existing) and not unknown_mailed,
        "one mail per existing user and none for unknown ones",
    )
    if not after_low < 0 < after_high and floor_low < 0 < floor_high:
        print("  note: the portal's interval excludes zero while the baseline's does not")


def versions() -> str:
    """Return the engines' and tools' versions, e.g. "PostgreSQL 15, Redis 7.0.15, ..."."""

    def first_line(command: list[str]) -> str:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0]

    redis = first_line([REDIS_SERVER, "--version"]).split()[2].removeprefix("v=")
    nginx = first_line([NGINX, "-v"]).split("/")[-1]
    return (
        f"PostgreSQL {pg_bin().parent.name}, Redis {redis}, nginx {nginx}, {authz.wrk_version()}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)"
    )


# --- the run --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, directory: Path) -> int:
    """Run the whole benchmark in directory; return the exit status."""
    authz.write_users(directory / "users.yml")
    print(
        f"GET https://{APP_HOST}{PATH} through nginx (auth_request to the portal, then a "
        f"`return 200` app), signed in: wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s --latency after a {WARMUP_SECONDS} s warm-up, per set-up; "
        f"{versions()}; load average {step1.load_average()}"
    )
    try:
        with running_engines(directory) as engines:
            ports = [free_port(), free_port()]
            sqlite = {"local": {"path": str(directory / "db.sqlite3")}}
            one_sqlite = [(replica_config(directory, "sqlite", ports[0], sqlite, None), ports[0])]
            shared = engines.storage(), engines.session_redis()
            one_pg = [(replica_config(directory, "pg", ports[0], *shared), ports[0])]
            shared = engines.storage(), engines.session_redis()
            two_pg = [
                (replica_config(directory, f"pg{i}", port, *shared), port)
                for i, port in enumerate(ports)
            ]
            setups = [
                ("(a) 1 replica, SQLite", directory / "a", one_sqlite),
                ("(b) 1 replica, PG + Redis", directory / "b", one_pg),
                ("(c) 2 replicas, PG + Redis", directory / "c", two_pg),
            ]
            redis_pid = engines.redis.process.pid if engines.redis.process else 0
            measured = [await load_setup(*setup, args, redis_pid) for setup in setups]
            loads = [load for load, _ in measured]
            report_loads(loads, [cpu for _, cpu in measured], args.duration)
            if args.show_wrk:
                for result in loads:
                    print(f"\nwrk, {result.name}:\n{result.output}")
            print(
                f"\nPOST /reset-password/step1 on PostgreSQL + Redis: {args.requests} existing + "
                f"{args.requests} unknown users, each followed by a probe, after "
                f"{2 * (args.warmup // 2)} warm-up pairs, {args.pause_ms:g} ms pause between "
                f"pairs; load average {step1.load_average()}"
            )
            report_step1(await reset_step1_on_postgres(engines, directory / "step1", args))
    except (RuntimeError, OSError, subprocess.SubprocessError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def missing_tools() -> list[str]:
    """Return what this benchmark needs and does not find, with how to install each."""
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk (Debian: apt-get install wrk)")
    if not Path(NGINX).exists():
        missing.append(f"{NGINX} (Debian: apt-get install nginx)")
    if not Path(REDIS_SERVER).exists():
        missing.append(f"{REDIS_SERVER} (make system-deps)")
    try:
        pg_bin()
    except RuntimeError:
        missing.append("PostgreSQL's initdb (make system-deps)")
    return missing


def main() -> int:
    """Parse the arguments, check the tools and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per set-up")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--requests", type=int, default=300, help="step 1: primers per kind")
    parser.add_argument("--warmup", type=int, default=20, help="step 1: warm-up pairs")
    parser.add_argument("--pause-ms", type=float, default=30.0, help="step 1: pause per pair")
    parser.add_argument("--show-wrk", action="store_true", help="print wrk's own output too")
    args = parser.parse_args()
    if args.requests < 2:
        parser.error("--requests must be at least 2")
    missing = missing_tools()
    if missing:
        print(f"error: this benchmark needs {', '.join(missing)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as directory:
        return asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    sys.exit(main())
