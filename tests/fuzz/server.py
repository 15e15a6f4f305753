"""The portal under fuzz: `python -m portal serve` on a free loopback port with a configuration in
a scratch directory, the state a generator needs (live sessions, real reset tokens), and what
its log says (bytes written, tracebacks and the lines that carried them).

Two profiles cover every route and both paths through the reset: `plain` (no CAPTCHA, no
security questions: the link is mailed at step 1) and `guarded` (security questions on, the
self-hosted CAPTCHA on sign-in after two failures, so /api/captcha/challenge exists).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from portal.config import Argon2Config, PasswordConfig
from portal.users.hashing import hash_password
from tests.conftest import ENCRYPTION_KEY, JWT_SECRET
from tests.fuzz.strategies import ROUTES, SESSION_COOKIE, Target
from tests.fuzz.wire import LOOPBACK, exchange
from tests.integration.process import free_port, spawn, stop_process

PROFILES = ("plain", "guarded")
USERS = ("john", "harry", "bob", "james")
# Sign-in checks a password on every try (a dummy hash for unknown users): keep it cheap here.
CHEAP_ARGON2 = {"iterations": 1, "memory": 8, "parallelism": 1}
SESSION_USERS = ("harry", "bob")
# The routes only the guarded profile has (security questions, the self-hosted CAPTCHA).
GUARDED = frozenset(
    {
        "/reset-password/step1/answers",
        "/api/reset-password/identity/questions",
        "/settings/security-questions",
        "/api/captcha/challenge",
    }
)
TOKEN_USER = "james"
# The harness's own requests come from addresses the generator never draws (TEST-NET-1's top),
# so its sign-ins and reset requests are not throttled by the fuzz traffic.
HARNESS_ADDRESS = "192.0.2.{}"
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
_TOKEN_IN_LINK = re.compile(r"token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")
_SESSION_IN_HEAD = re.compile(rb"Set-Cookie: " + SESSION_COOKIE.encode() + rb"=([^;\r\n]+)", re.I)


def _users_file(path: Path) -> Path:
    config = PasswordConfig(algorithm="argon2", argon2=Argon2Config(**CHEAP_ARGON2))
    digest = hash_password("password", config)
    users = {
        name: {
            "displayname": name.title(),
            "password": digest,
            "email": f"{name}@example.com",
            "groups": ["admins"] if name == "john" else [],
        }
        for name in USERS
    }
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump({"users": users}, handle)
    return path


def portal_config(directory: Path, port: int, profile: str) -> dict[str, Any]:
    """Return the configuration the fuzzed portal runs with (secrets come from the environment)."""
    config: dict[str, Any] = {
        "server": {"address": f"tcp://{LOOPBACK}:{port}"},
        "log": {"level": "info"},
        "authentication_backend": {
            "file": {
                "path": str(_users_file(directory / "users.yml")),
                "password": {"algorithm": "argon2", "argon2": CHEAP_ARGON2},
            },
        },
        "notifier": {"filesystem": {"filename": str(directory / "mail" / "notification.txt")}},
        "session": {
            "cookies": [
                {"domain": LOOPBACK, "authelia_url": f"http://{LOOPBACK}:{port}"},
                {
                    "domain": "example.com",
                    "authelia_url": "https://auth.example.com",
                    "default_redirection_url": "https://home.example.com/",
                },
            ]
        },
        "storage": {"local": {"path": str(directory / "db.sqlite3")}},
        # Schemathesis works as an elevated user (tests/fuzz/openapi_fuzz.py) for a long run.
        "identity_validation": {"elevated_session": {"elevation_lifespan": "1h"}},
        "access_control": {
            "default_policy": "deny",
            "rules": [
                {"domain": "public.example.com", "policy": "bypass"},
                {
                    "domain": "*.example.com",
                    "resources": ["^/admin"],
                    "subject": "group:admins",
                    "policy": "one_factor",
                },
                {
                    "domain": "app.example.com",
                    "networks": ["10.0.0.0/8", "2001:db8::/32"],
                    "methods": ["GET", "HEAD"],
                    "policy": "one_factor",
                },
                {"domain_regex": "^[a-z]+\\.example\\.com$", "policy": "one_factor"},
            ],
        },
    }
    if profile == "guarded":
        config["identity_validation"]["reset_password"] = {"security_questions": {"enabled": True}}
        config["captcha"] = {
            "enabled_on": ["login"],
            "login_after_failures": 2,
            "altcha": {"cost": 1, "max_number": 10},
        }
        config["webauthn"] = {"enable_passkey_login": True}
        config["identity_token"] = {"enabled": True}
        config["trusted_issuers"] = [
            {
                "name": "Shop",
                "issuer": "https://shop.example.com",
                "algorithms": ["HS256"],
                "secret": "fuzz-partner-secret-" + "s" * 20,
            }
        ]
    return config


@dataclass
class FuzzPortal:
    """One portal process under fuzz, its files, and what the generator may use against it."""

    profile: str
    directory: Path
    process: subprocess.Popen[bytes]
    log_file: Path
    target: Target

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        return self.target.port

    @property
    def mail_file(self) -> Path:
        """Where the filesystem notifier writes the mails."""
        return self.directory / "mail" / "notification.txt"

    def log_size(self) -> int:
        """Return how many bytes the process has logged so far."""
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def read_log(self, offset: int = 0) -> str:
        """Return what the process logged from offset on."""
        with self.log_file.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")


def start_portal(directory: Path, profile: str) -> FuzzPortal:
    """Start `python -m portal serve` for the profile in directory (not waiting for it)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "configuration.yml"
    with config.open("w") as handle:
        YAML(typ="safe", pure=True).dump(portal_config(directory, port, profile), handle)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "AUTHELIA_"))}
    env["PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET"] = JWT_SECRET
    env["PORTAL_STORAGE_ENCRYPTION_KEY"] = ENCRYPTION_KEY
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    log_file = directory / "portal.log"
    with log_file.open("wb") as log:
        command = [sys.executable, "-m", "portal", "serve", "--config", str(config)]
        process = spawn(command, directory, log, env=env)
    routes = ROUTES if profile == "guarded" else tuple(r for r in ROUTES if r.path not in GUARDED)
    target = Target(
        port=port, jwt_secret=JWT_SECRET, issuer=f"http://{LOOPBACK}:{port}", routes=routes
    )
    return FuzzPortal(profile, directory, process, log_file, target)


def stop_portal(portal: FuzzPortal) -> None:
    """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
    stop_process(portal.process, 10)


async def wait_until_healthy(portal: FuzzPortal, timeout: float = 30.0) -> None:
    """Poll /api/health until it answers 200; raise with the log if the process dies or stalls."""
    request = f"GET /api/health HTTP/1.1\r\nHost: {LOOPBACK}:{portal.port}\r\n\r\n".encode()
    deadline = time.monotonic() + timeout
    while True:
        if portal.process.poll() is not None:
            raise RuntimeError(
                f"the portal exited with {portal.process.returncode}\n{portal.read_log()[-3000:]}"
            )
        answer = await exchange(request, portal.port, timeout=2)
        if answer.status == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the portal did not start\n{portal.read_log()[-3000:]}")
        await asyncio.sleep(0.1)


def _json_post(port: int, path: str, body: dict[str, Any], address: str) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nX-Forwarded-For: {address}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + data


async def sign_in_sessions(portal: FuzzPortal) -> tuple[str, ...]:
    """Sign the session users in; return the session cookie values that worked."""
    values = []
    for number, user in enumerate(SESSION_USERS, start=200):
        request = _json_post(
            portal.port,
            "/api/firstfactor",
            {"username": user, "password": "password"},
            HARNESS_ADDRESS.format(number),
        )
        answer = await exchange(request, portal.port, timeout=10)
        if match := _SESSION_IN_HEAD.search(answer.head):
            values.append(match.group(1).decode())
    return tuple(values)


async def real_reset_tokens(portal: FuzzPortal, timeout: float = 10.0) -> tuple[str, ...]:
    """Ask for a reset link for the token user; return the tokens its mail carries."""
    body: dict[str, Any] = {"username": TOKEN_USER}
    if portal.profile == "guarded":
        body["answers"] = ["first answer", "second answer"]  # no questions: mailed anyway
    request = _json_post(
        portal.port, "/api/reset-password/identity/start", body, HARNESS_ADDRESS.format(250)
    )
    await exchange(request, portal.port, timeout=10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if portal.mail_file.exists():
            found = _TOKEN_IN_LINK.findall(portal.mail_file.read_text(errors="replace"))
            if found:
                return tuple(dict.fromkeys(found))
        await asyncio.sleep(0.1)
    return ()


async def refresh_target(portal: FuzzPortal, *, tokens: bool = False) -> None:
    """Give the generator live sessions again (fuzzed sign-outs end them), and tokens if asked."""
    sessions = await sign_in_sessions(portal)
    reset_tokens = await real_reset_tokens(portal) if tokens else portal.target.reset_tokens
    portal.target = replace(portal.target, sessions=sessions, reset_tokens=reset_tokens)


# -- the log -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedTraceback:
    """A traceback in the log: the line that carried it, its frames and how it ended."""

    message: str
    exception: str
    last_lines: tuple[str, ...]
    frames: tuple[str, ...] = ()

    @property
    def exception_type(self) -> str:
        """The exception's class as the traceback names it."""
        return self.exception.split(":", 1)[0].strip()[:120]

    @property
    def client_fault(self) -> bool:
        """Tell whether aiohttp's HTTP layer logged it for a request it could not read (a 400)."""
        return self.message.split(":", 1)[0].endswith("aiohttp.server") and (
            self.exception_type.startswith("aiohttp.http_exceptions.")
            or self.exception_type == "aiohttp.web_protocol.RequestPayloadError"
        )

    @property
    def place(self) -> str:
        """Where it was raised: the deepest frame in the portal's code, then the last frame."""
        ours = [f for f in self.frames if f.startswith("portal/")]
        last = self.frames[-1] if self.frames else "?"
        return f"{ours[-1]} > {last}" if ours and ours[-1] != last else last


_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


def _frame(line: str) -> str | None:
    match = _FRAME.match(line)
    if match is None:
        return None
    path = match["path"]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/portal/" in path:
        path = "portal/" + path.rsplit("/portal/", 1)[1]
    return f"{path}:{match['line']} {match['func']}"


def _strip_time(line: str) -> str:
    return _LOG_LINE.sub("", line)[:300]


def tracebacks(text: str) -> list[LoggedTraceback]:
    """Find every traceback in a stretch of log, with its log line and its exception line."""
    return list(scan_log(text.splitlines()))


def scan_log(lines: Iterable[str]) -> Iterator[LoggedTraceback]:
    """Yield each traceback of a log read line by line (a large log need not fit in memory)."""
    message = ""
    block: list[str] | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if _LOG_LINE.match(line):
            if block is not None:
                yield _traceback(message, block)
                block = None
            message = _strip_time(line)
        elif line == "Traceback (most recent call last):" and block is None:
            block = [line]
        elif block is not None and len(block) < 400:
            block.append(line)
    if block is not None:
        yield _traceback(message, block)


def _traceback(message: str, block: list[str]) -> LoggedTraceback:
    last = max(i for i, line in enumerate(block) if line.startswith("Traceback"))
    exception = next(
        (line for line in block[last + 1 :] if line and not line.startswith(" ")),
        "(no exception line)",
    )
    frames = tuple(f for line in block[last + 1 :] if (f := _frame(line)) is not None)
    return LoggedTraceback(
        message, exception[:300], tuple(line[:300] for line in block[-6:]), frames
    )


def wait_for_quiet_log(portal: FuzzPortal, last_size: int, limit: float = 0.1) -> int:
    """Wait until the log has not grown for a few milliseconds (a request's lines are written,
    the access line comes just after the answer); return its size."""
    deadline = time.monotonic() + limit
    size, quiet = portal.log_size(), 0
    while quiet < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
        now = portal.log_size()
        quiet = quiet + 1 if now == size and now >= last_size else 0
        size = now
    return size
