"""The access log: one `request` line per answer at info, except for nginx's auth_request
endpoints (/api/authz/*, /api/verify), logged at debug only, as Authelia logs its authz requests:
at info they cost no log record at all (nginx asks them before every request to every site)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.web.conftest import Portal, fields_of

AUTHZ_HEADERS = {"X-Original-URL": "http://127.0.0.1/private", "X-Original-Method": "GET"}
ACCESS = "aiohttp.access"


@pytest.fixture
def built_access_records() -> Iterator[list[logging.LogRecord]]:
    """Every record built for the access logger, whether or not a handler ever sees it."""
    built: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.name == ACCESS:
            built.append(record)
        return record

    logging.setLogRecordFactory(counting)
    yield built
    logging.setLogRecordFactory(factory)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, dict[str, object]]]:
    return [(r.levelno, fields_of(r)) for r in caplog.records if r.name == ACCESS]


async def test_at_info_authz_requests_write_no_access_line_and_build_no_record(
    portal: Portal,
    caplog: pytest.LogCaptureFixture,
    built_access_records: list[logging.LogRecord],
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    for path in ("/api/authz/auth-request", "/api/verify"):
        answer = await portal.client.get(path, headers=AUTHZ_HEADERS)
        assert answer.status == 403
    assert access_lines(caplog) == []
    assert built_access_records == []
    # Every other route keeps its line at info.
    health = await portal.client.get("/api/health")
    lines = access_lines(caplog)
    assert [(level, fields["path"], fields["status"]) for level, fields in lines] == [
        (logging.INFO, "/api/health", 200)
    ]
    assert caplog.records[-1].request_id == health.headers["X-Request-Id"]  # type: ignore[attr-defined]


async def test_at_debug_authz_requests_write_a_debug_access_line(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ACCESS)
    answer = await portal.client.get("/api/authz/auth-request", headers=AUTHZ_HEADERS)
    assert answer.status == 403
    verify = await portal.client.get("/api/verify", headers=AUTHZ_HEADERS)
    lines = access_lines(caplog)
    assert [(level, fields["path"], fields["status"]) for level, fields in lines] == [
        (logging.DEBUG, "/api/authz/auth-request", 403),
        (logging.DEBUG, "/api/verify", 403),
    ]
    assert lines[0][1]["method"] == "GET"
    ids = [r.request_id for r in caplog.records if r.name == ACCESS]  # type: ignore[attr-defined]
    assert ids == [answer.headers["X-Request-Id"], verify.headers["X-Request-Id"]]


async def test_requests_outside_the_authz_routes_keep_their_line_at_info(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    # A probe of other paths under them, or another method, is no auth_request: an admin at
    # the default level sees it like any other request.
    caplog.set_level(logging.INFO, logger=ACCESS)
    probes = [
        ("GET", "/api/authz/nothing-here", 404),
        ("GET", "/api/verifyx", 404),
        ("POST", "/api/verify", 405),
        ("POST", "/api/authz/auth-request", 405),
    ]
    for method, path, status in probes:
        assert (await portal.client.request(method, path, data=b"x")).status == status
    lines = access_lines(caplog)
    assert [(level, f["method"], f["path"], f["status"]) for level, f in lines] == [
        (logging.INFO, method, path, status) for method, path, status in probes
    ]
