"""The running portal's log in both of Authelia's `log.format`s: one schema for the access log
and the audit events (time, level, event, ip, request_id and the event's fields), each line of a
request carrying the id its answer names, and no password, token or link in either format.

No browser: a client speaks HTTP to the portal process, which writes its log as an admin runs it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import RunningPortal, reset_link_from, run_portal, wait_for_health

NEW_PASSWORD = "Correct-Horse-Battery-42!"
WRONG_PASSWORD = "not-johns-password-xyz"
TEXT_LINE = re.compile(r"^\S+ \S+ (INFO|WARNING|ERROR|DEBUG) (\S+): (\S+)(.*)$")


@pytest.fixture(params=["json", "text"])
def log_format(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def running(tmp_path: Path, users_file: Path, log_format: str) -> Iterator[RunningPortal]:
    with run_portal(tmp_path, users_file, {"log": {"format": log_format}}) as portal:
        yield portal


def parsed(line: str, log_format: str) -> dict[str, Any]:
    """Read one log line back into its fields (JSON as is; text: logger, event, key=value)."""
    if log_format == "json":
        entry: dict[str, Any] = json.loads(line)
        return entry
    match = TEXT_LINE.match(line)
    assert match, f"not a log line: {line!r}"
    entry = {"level": match[1].lower(), "logger": match[2], "event": match[3]}
    for key, value in re.findall(r' (\w+)=("(?:[^"\\]|\\.)*"|\S+)', match[4]):
        entry[key] = json.loads(value)
    return entry


async def test_one_schema_a_request_id_per_request_and_no_secret_in_either_format(
    running: RunningPortal, log_format: str
) -> None:
    await wait_for_health(running.url, running.process, running.log_file)
    async with aiohttp.ClientSession() as client:
        failed = await client.post(
            f"{running.url}/api/firstfactor",
            json={"username": "john", "password": WRONG_PASSWORD},
        )
        assert failed.status == 401
        failed_id = failed.headers["X-Request-Id"]
        started = await client.post(
            f"{running.url}/api/reset-password/identity/start", json={"username": "john"}
        )
        assert started.status == 200
        link = reset_link_from((await running.wait_for_mails(1))[0])
        token = link.split("token=", 1)[1]
        done = await client.post(
            f"{running.url}/api/reset-password", json={"token": token, "password": NEW_PASSWORD}
        )
        assert done.status == 200, await done.text()
        done_id = done.headers["X-Request-Id"]
        await running.wait_for_mails(2)

    text = running.log_file.read_text()
    for secret in (WRONG_PASSWORD, NEW_PASSWORD, token, token.split(".")[2], link):
        assert secret not in text
    entries = [
        parsed(line, log_format)
        for line in text.splitlines()
        if line.strip() and (log_format == "json" or TEXT_LINE.match(line))
    ]
    assert all({"level", "logger", "event"} <= entry.keys() for entry in entries)
    if log_format == "json":
        assert all("time" in entry for entry in entries)

    # The failed sign-in: its audit event and its access line, both under the answer's id.
    audit = [e for e in entries if e.get("event") == "signin_failed"]
    access = [
        e for e in entries if e.get("event") == "request" and e.get("request_id") == failed_id
    ]
    assert [e["request_id"] for e in audit] == [failed_id]
    assert audit[0]["username"] == "john" and audit[0]["ip"] == "127.0.0.1"
    assert len(access) == 1
    assert {k: access[0][k] for k in ("method", "path", "status", "ip")} == {
        "method": "POST",
        "path": "/api/firstfactor",
        "status": 401,
        "ip": "127.0.0.1",
    }
    assert isinstance(access[0]["duration_ms"], float | int)
    completed = [e for e in entries if e.get("event") == "reset_completed"]
    assert [e["request_id"] for e in completed] == [done_id]


async def test_a_log_file_moved_away_by_logrotate_is_opened_again(
    tmp_path: Path, users_file: Path
) -> None:
    # logrotate's default (`create`) renames the file and expects the next line in a new one at
    # log.file_path; a handler that keeps its descriptor writes into the renamed file for ever.
    path = tmp_path / "logs" / "portal.log"
    path.parent.mkdir()
    extra = {"log": {"file_path": str(path), "format": "json"}}
    with run_portal(tmp_path, users_file, extra) as running:
        await wait_for_health(running.url, running.process, running.log_file)
        rotated = path.rename(path.with_name("portal.log.1"))
        async with aiohttp.ClientSession() as client:
            answer = await client.get(f"{running.url}/api/health")
            request_id = answer.headers["X-Request-Id"]
        deadline = asyncio.get_running_loop().time() + 5
        while request_id not in (path.read_text() if path.exists() else ""):
            assert asyncio.get_running_loop().time() < deadline, (
                f"no line at {path} after the rotation; the old file got: "
                f"{request_id in rotated.read_text()}"
            )
            await asyncio.sleep(0.1)
        assert request_id not in rotated.read_text()
