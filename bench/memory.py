"""Memory of the portal while sessions pass through nginx's auth_request (issue 19, goal 4).

Prints the portal's resident memory (RSS, from /proc) idle, after 10,000 distinct sessions have
each been asked about once through GET /api/authz/auth-request, and after a second 10,000: the
session cache is bounded (session cache_size) and drops lapsed entries as it goes, so the second
round must add next to nothing (goal: under 5 MiB). The peak (VmHWM) is printed too.

    python bench/memory.py [--sessions 10000] [--concurrency 32]

The portal runs as an admin runs it (`python -m portal serve`: file backend, sqlite, log.level
info). Sign-ins hash passwords and are not what is measured, so the sessions are made the way a
sign-in makes them (portal.sessions.SessionStore.create on the portal's own storage, from this
process, before the portal is asked); each is then asked about once with nginx's headers, and
every answer must be john's 200.

Linux only (/proc). Prints figures and PASS/FAIL lines; exits 0 whatever the verdicts, 1 if the
portal failed to start or an answer was not a 200. Not a test: pytest never runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp
from _portal import free_port, portal_command, portal_environment, start, stop, wait_until_up
from auth_request import AUTHZ, DOMAIN, HOST, JOHN, nginx_headers, write_config, write_users

from portal.checks import check_config
from portal.clock import SystemClock
from portal.deps import storage_from_config
from portal.sessions import SessionStore
from portal.users.base import User

GOAL_SECOND_ROUND_MIB = 5.0
USER = User(
    JOHN["Remote-User"],
    JOHN["Remote-Name"],
    (JOHN["Remote-Email"],),
    tuple(JOHN["Remote-Groups"].split(",")),
)


def memory_kib(pid: int) -> dict[str, int]:
    """Return VmRSS and VmHWM (peak RSS) of process pid, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


async def make_sessions(config_path: Path, env: dict[str, str], count: int) -> list[str]:
    """Open count sessions for john in the portal's storage, as a sign-in does; return the
    cookie values."""
    config, _ = check_config([config_path], env)
    storage = storage_from_config(config)
    await storage.startup_check()
    try:
        sessions = SessionStore(storage, SystemClock())
        cookie = config.session.cookies[0]
        return [await sessions.create(USER, cookie, remember_me=False) for _ in range(count)]
    finally:
        await storage.close()


async def ask_each(url: str, values: list[str], concurrency: int) -> int:
    """Ask auth_request once per session value; return how many answers were not a 200."""
    queue = list(reversed(values))
    failures = 0

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal failures
        while queue:
            headers = nginx_headers(f"portal_session={queue.pop()}")
            async with client.get(url + AUTHZ, headers=headers) as response:
                await response.read()
                if response.status != 200 or response.headers.get("Remote-User") != USER.username:
                    failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return failures


def mib(kib: int) -> float:
    """KiB to MiB."""
    return kib / 1024


async def run(args: argparse.Namespace, directory: Path) -> int:
    """Start the portal, measure it idle and after each round; return the exit status."""
    write_users(directory / "users.yml")
    port = free_port()
    config = write_config(directory, port, "info")
    env = portal_environment()
    rounds = [await make_sessions(config, env, args.sessions) for _ in range(2)]
    url = f"http://{HOST}:{port}"
    process = start(portal_command(config), directory, directory / "portal.out", env)
    try:
        if not await wait_until_up(url, process):
            print("error: the portal did not start; its output:", file=sys.stderr)
            print((directory / "portal.out").read_text(errors="replace")[-4000:], file=sys.stderr)
            return 1
        await asyncio.sleep(1)
        idle = memory_kib(process.pid)
        after = []
        for values in rounds:
            failures = await ask_each(url, values, args.concurrency)
            if failures:
                print(f"error: {failures} answers were not john's 200", file=sys.stderr)
                return 1
            after.append(memory_kib(process.pid))
    finally:
        stop(process)

    print(
        f"portal RSS while {args.sessions:,} distinct sessions (cookie domain {DOMAIN}) each ask "
        f"{AUTHZ} once, {args.concurrency} at a time; log.level info"
    )
    print(f"  idle:                        {mib(idle['VmRSS']):7.1f} MiB")
    print(f"  after {args.sessions:>6,} sessions:        {mib(after[0]['VmRSS']):7.1f} MiB")
    print(f"  after {args.sessions:>6,} more sessions:   {mib(after[1]['VmRSS']):7.1f} MiB")
    print(f"  peak (VmHWM):                {mib(after[1]['VmHWM']):7.1f} MiB")
    growth = mib(after[1]["VmRSS"] - after[0]["VmRSS"])
    print("\ngoals")
    ok = growth < GOAL_SECOND_ROUND_MIB
    print(
        f"  {'PASS' if ok else 'FAIL'}  the second {args.sessions:,} sessions add "
        f"{growth:.1f} MiB (< {GOAL_SECOND_ROUND_MIB:g} MiB: the session cache is bounded)"
    )
    return 0


def main() -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions per round")
    parser.add_argument("--concurrency", type=int, default=32, help="requests at a time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as directory:
        return asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    sys.exit(main())
