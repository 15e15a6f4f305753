"""Schemathesis over the portal's own OpenAPI document (GET /api/openapi.yml), against the real
portal process of tests/fuzz/server.py: every answer must match the document (status code,
content type, headers, body schema) and none may be a 5xx.

Two runs per portal: one as a signed-in user whose session is elevated (so the elevated
operations get past their 403), every operation but sign-out (which would end that session for
the rest of the run); and one anonymous, every operation. The schemathesis CLI runs in its own
process (its figures come from its JSON report); `--max-examples` bounds the cases per
operation, `max_time` (if given) lets its fuzzing go on until the time is spent.

Why schemathesis: it reads the document itself, draws valid and invalid bodies, parameters and
headers from the schemas with hypothesis (the library the raw fuzzer already uses), adds
boundary cases, and checks every answer against the document: no test to keep in step by hand.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.server import HARNESS_ADDRESS, FuzzPortal, sign_in_sessions
from tests.fuzz.strategies import SESSION_COOKIE
from tests.fuzz.wire import LOOPBACK, exchange

# What "matches the document" means (schemathesis check names). Not negative_data_rejection:
# it wants its own list of statuses (not 413) and cannot drop a cookie given as a header.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    # Another method on a documented path: 405, with Allow naming exactly the documented ones.
    "unsupported_method",
    "allow_header_conformance",
)
PHASES = "examples,coverage,fuzzing"
SIGN_OUT = "/api/logout"
# Schemathesis's requests, and the elevation they use, come from this address: an elevation
# holds for the address it was made from. The raw fuzzer never draws TEST-NET-1's top.
CLIENT_ADDRESS = HARNESS_ADDRESS.format(240)
_CODE_IN_MAIL = re.compile(r'id="one-time-code"[^>]*>([A-Za-z0-9]+)<')


@dataclass
class FuzzFigures:
    """What schemathesis did and found, summed over its runs."""

    operations: int = 0
    cases: int = 0
    failures: int = 0
    errors: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Tell whether every run finished clean (no failure, no error, exit code 0)."""
        return not self.failures and not self.errors and not any(self.exit_codes)

    def summary(self) -> str:
        """One line of figures."""
        return (
            f"schemathesis: {len(self.exit_codes)} runs, {self.operations} operations, "
            f"{self.cases} cases, {self.failures} failures, {self.errors} errors "
            f"in {self.seconds:.0f} s"
        )


def _request(port: int, method: str, path: str, cookie: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
        f"X-Forwarded-For: {CLIENT_ADDRESS}\r\n"
        f"Cookie: {SESSION_COOKIE}={cookie}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data


async def elevated_session(portal: FuzzPortal, timeout: float = 10.0) -> str | None:
    """Sign a user in and elevate the session from CLIENT_ADDRESS with the mailed one-time code
    (the API a user's page uses); return the session cookie's value, or None if a step failed.
    The elevation lasts identity_validation.elevated_session.elevation_lifespan (an hour in
    the fuzz server's configuration)."""
    sessions = await sign_in_sessions(portal)
    if not sessions:
        return None
    cookie = sessions[0]
    mail = portal.mail_file
    seen = len(_CODE_IN_MAIL.findall(mail.read_text(errors="replace"))) if mail.exists() else 0
    ask = _request(portal.port, "POST", "/api/user/session/elevation", cookie, {})
    if (await exchange(ask, portal.port, timeout=10)).status != 200:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = _CODE_IN_MAIL.findall(mail.read_text(errors="replace")) if mail.exists() else []
        if len(codes) > seen:
            put = _request(
                portal.port, "PUT", "/api/user/session/elevation", cookie, {"otc": codes[-1]}
            )
            answer = await exchange(put, portal.port, timeout=10)
            return cookie if answer.status == 200 else None
        await asyncio.sleep(0.1)
    return None


def schemathesis_command(
    portal: FuzzPortal,
    report: Path,
    *,
    max_examples: int,
    seed: int,
    cookie: str | None,
    max_time: float | None = None,
    workers: int = 1,
) -> list[str]:
    """Return the `schemathesis run` command line for one run against the portal."""
    base = f"http://{LOOPBACK}:{portal.port}"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base}/api/openapi.yml",
        "--url",
        base,
        "--checks",
        ",".join(CHECKS),
        "--phases",
        PHASES,
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "all",
        "--output-truncate",
        "false",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--generation-database",
        "none",
        "--header",
        f"X-Forwarded-For: {CLIENT_ADDRESS}",
    ]
    if cookie is not None:
        command += ["--header", f"Cookie: {SESSION_COOKIE}={cookie}", "--exclude-path", SIGN_OUT]
    if max_time is not None:
        command += ["--max-time", str(int(max_time))]
    return command


def run_schemathesis(
    portal: FuzzPortal,
    directory: Path,
    *,
    max_examples: int,
    seed: int,
    max_time: float | None = None,
    workers: int = 1,
) -> FuzzFigures:
    """Run schemathesis signed in (elevated) and then anonymously; return the summed figures.

    Raises RuntimeError when the session cannot be elevated (the run would test nothing behind
    the elevation). Each run is killed after its time budget plus ten minutes.
    """
    cookie = asyncio.run(elevated_session(portal))
    if cookie is None:
        raise RuntimeError(f"could not elevate a session\n{portal.read_log()[-3000:]}")
    figures = FuzzFigures()
    directory.mkdir(parents=True, exist_ok=True)
    for name, session in (("signed-in", cookie), ("anonymous", None)):
        report = directory / f"schemathesis-{portal.profile}-{name}.json"
        command = schemathesis_command(
            portal,
            report,
            max_examples=max_examples,
            seed=seed,
            cookie=session,
            max_time=max_time,
            workers=workers,
        )
        started = time.monotonic()
        done = subprocess.run(  # noqa: S603 - our own venv's schemathesis, fixed arguments
            command,
            capture_output=True,
            text=True,
            timeout=(max_time or 0) + 600,
            check=False,
            cwd=directory,
        )
        figures.seconds += time.monotonic() - started
        figures.exit_codes.append(done.returncode)
        figures.outputs.append(f"== {portal.profile}, {name}\n{done.stdout}{done.stderr}")
        if report.exists():
            data = json.loads(report.read_text())
            figures.operations += data["operations"]["tested"]
            figures.cases += data["test_cases"]["generated"]
            figures.failures += data["test_cases"]["unique_failures"]
            figures.errors += len(data["errors"]) + data["operations"]["errored"]
    return figures
