"""Time the security-questions steps of a reset for real users and unknown ones.

Runs the portal as an admin does (`python -m portal serve`), with the questions on and the
default argon2id parameters for answers. Real users have answers stored; unknown ones get decoys.
For each kind, interleaved in a seeded random order, it times POST /reset-password/step1 (the
questions page) and POST /reset-password/step1/answers (wrong answers: they cost the same argon2
work as right ones and send no mail), and prints the medians and their ratio.

    python bench/reset_questions.py [--requests 60] [--warmup 6]

Not a test: timings depend on the machine, so pytest never runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
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
from argon2 import PasswordHasher

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from portal.config import DEFAULT_QUESTIONS  # noqa: E402 - after the path is set
from portal.security_questions import Argon2AnswerHasher, normalize_answer  # noqa: E402
from portal.storage.base import SecurityAnswer  # noqa: E402
from portal.storage.sqlite import SqliteStorage  # noqa: E402

STEP1 = "/reset-password/step1"
ANSWERS = "/reset-password/step1/answers"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TICKET = re.compile(r'name="ticket" value="([^"]+)"')
SEED = 20261122


def write_users(path: Path, count: int) -> list[str]:
    """Write `count` users sharing one cheap password hash; return their names."""
    digest = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("bench-password")
    names = [f"user{i:04d}" for i in range(count)]
    users = {n: {"displayname": n, "password": digest, "email": f"{n}@example.com"} for n in names}
    write_yaml(path, {"users": users})
    return names


async def store_answers(db: Path, names: list[str]) -> None:
    """Give every real user three answered questions (one set of hashes, shared)."""
    hasher = Argon2AnswerHasher()
    hashes = [hasher.hash(normalize_answer(f"answer {i}")) for i in range(3)]
    storage = SqliteStorage(db)
    await storage.startup_check()
    try:
        for name in names:
            rows = [SecurityAnswer(i, DEFAULT_QUESTIONS[i], hashes[i], 0.0) for i in range(3)]
            await storage.set_security_answers(name, rows)
    finally:
        await storage.close()


def write_config(directory: Path, port: int) -> Path:
    """Write the portal's configuration with the questions on; secrets come from the env."""
    roomy = {"buckets": [{"period": "1 minute", "requests": 100000}]}
    raw = {
        "server": {
            "address": f"tcp://127.0.0.1:{port}",
            "endpoints": {"rate_limits": {"reset_password_start": roomy}},
        },
        "identity_validation": {
            "reset_password": {"security_questions": {"enabled": True, "max_failures": 100000}}
        },
        "authentication_backend": {"file": {"path": str(directory / "users.yml")}},
        "notifier": {"filesystem": {"filename": str(directory / "notification.txt")}},
        "session": {
            "cookies": [{"domain": "127.0.0.1", "authelia_url": f"http://127.0.0.1:{port}"}]
        },
        "storage": {"local": {"path": str(directory / "db.sqlite3")}},
    }
    return write_yaml(directory / "configuration.yml", raw)


async def one_reset(
    session: aiohttp.ClientSession, url: str, csrf: str, username: str
) -> tuple[float, float, int]:
    """Time the questions page and the answers for one identifier (ms, ms, body size)."""
    began = time.perf_counter()
    async with session.post(url + STEP1, data={"csrf_token": csrf, "username": username}) as r:
        page = await r.text()
    asked = (time.perf_counter() - began) * 1000
    ticket = TICKET.search(page)
    assert ticket, f"no questions page for {username}"
    fields = {
        "csrf_token": csrf,
        "username": username,
        "ticket": ticket.group(1),
        "answer_0": "wrong",
        "answer_1": "wrong",
    }
    began = time.perf_counter()
    async with session.post(url + ANSWERS, data=fields) as r:
        await r.read()
    answered = (time.perf_counter() - began) * 1000
    texts = sum(len(q) for q in DEFAULT_QUESTIONS if q in page)
    return asked, answered, len(page) - texts - len(username)


async def measure(url: str, real: list[str], unknown: list[str], warmup: int) -> None:
    """Run the interleaved resets and print the figures."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(url + STEP1) as response:
            match = CSRF.search(await response.text())
        assert match
        csrf = match.group(1)
        order = [("real", n) for n in real] + [("unknown", n) for n in unknown]
        random.Random(SEED).shuffle(order)
        figures: dict[str, tuple[list[float], list[float], set[int]]] = {
            "real": ([], [], set()),
            "unknown": ([], [], set()),
        }
        for i, (kind, name) in enumerate(order):
            asked, answered, size = await one_reset(session, url, csrf, name)
            if i >= warmup:
                figures[kind][0].append(asked)
                figures[kind][1].append(answered)
                figures[kind][2].add(size)
    for step, index in (("questions page", 0), ("answers", 1)):
        real_median = statistics.median(figures["real"][index])
        unknown_median = statistics.median(figures["unknown"][index])
        print(
            f"{step:15} real {real_median:8.2f} ms   unknown {unknown_median:8.2f} ms   "
            f"ratio {unknown_median / real_median:.3f}"
        )
    print(
        f"page sizes without question texts and identifier: real {sorted(figures['real'][2])}, "
        f"unknown {sorted(figures['unknown'][2])}"
    )


async def main() -> int:
    """Start the portal on a temporary directory, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="resets of each kind")
    parser.add_argument("--warmup", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        real = write_users(directory / "users.yml", args.requests)
        await store_answers(directory / "db.sqlite3", real)
        unknown = [f"nobody{i:04d}" for i in range(args.requests)]
        port = free_port()
        config = write_config(directory, port)
        log = directory / "portal.log"
        process = start(portal_command(config), REPO, log, portal_environment())
        try:
            url = f"http://127.0.0.1:{port}"
            if not await wait_until_up(url, process):
                print(log.read_text(), file=sys.stderr)
                return 1
            await measure(url, real, unknown, args.warmup)
        finally:
            stop(process)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
