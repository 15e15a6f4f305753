"""The authz listener (server.authz_address): nginx's auth_request endpoints on a port of their own,
answering exactly what the portal's listener answers (verdict, Remote-* headers, where to sign in,
no-store, empty body, the request id, the client's address through trusted_proxies, the access
line, the metrics), and nothing else (404/405 with the page headers)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from portal import authz_listener
from portal.app import create_app
from portal.authz import Authorizer, Outcome, Verdict
from portal.deps import Dependencies, notifier_from_config, storage_from_config, users_from_config
from portal.errors import BackendUnavailableError, ConfigError, StartupCheckError
from tests.conftest import ConfigFactory, deep_merge
from tests.integration.process import HOST, free_port
from tests.integration.smtp_server import SmtpServer
from tests.web.conftest import DEMO_PASSWORD, Portal, StartPortal, portal_settings, sign_in
from tests.web.test_authz_answers import HEX32, PAGE_HEADERS
from tests.web.test_metrics import metrics_settings, scrape, value
from tests.web.test_signin import RULES

AUTHZ = "/api/authz/auth-request"
# What nginx's snippet sends (deploy/nginx/portal-location.conf), but the cookie.
NGINX = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "127.0.0.1", "X-Real-IP": "127.0.0.1"}

Answer = tuple[int, CIMultiDict[str], bytes]


class TwoListeners:
    """A portal with server.authz_address, asked on both of its listeners the same way."""

    def __init__(self, portal: Portal, port: int, session: aiohttp.ClientSession) -> None:
        self.portal, self.port, self.session = portal, port, session

    def cookie(self) -> str:
        """The session cookie the portal's test client holds ('' before a sign-in)."""
        jar = self.portal.client.session.cookie_jar
        return "; ".join(f"{c.key}={c.value}" for c in jar)

    async def on_main(self, method: str, path: str, **headers: str) -> Answer:
        """Ask the portal's own listener."""
        response = await self.portal.client.request(
            method, path, headers=headers, allow_redirects=False
        )
        return response.status, CIMultiDict(response.headers), await response.read()

    async def on_authz(self, method: str, path: str, **headers: str) -> Answer:
        """Ask the authz listener, with the cookie the portal's client holds."""
        if cookie := self.cookie():
            headers = {"Cookie": cookie, **headers}
        url = f"http://{HOST}:{self.port}{path}"
        async with self.session.request(
            method, url, headers=headers, allow_redirects=False
        ) as response:
            return response.status, CIMultiDict(response.headers), await response.read()

    async def both(self, url: str, method: str = "GET", path: str = AUTHZ, **extra: str) -> Any:
        """Ask both listeners what nginx asks about `url`; return (main, authz) answers."""
        headers = {"X-Original-URL": url, "X-Original-Method": method, **NGINX, **extra}
        return await self.on_main("GET", path, **headers), await self.on_authz(
            "GET", path, **headers
        )


def fail_verdicts(monkeypatch: pytest.MonkeyPatch, fail: Callable[..., None]) -> None:
    """Make every verdict raise what `fail` raises, from memory or not."""

    async def verdict(*args: object, **kwargs: object) -> None:
        fail()

    monkeypatch.setattr(Authorizer, "verdict", verdict)
    monkeypatch.setattr(Authorizer, "verdict_now", fail)


@pytest.fixture
async def listeners(start_portal: StartPortal) -> AsyncIterator[TwoListeners]:
    port = free_port()
    portal = await start_portal(
        access_control=RULES, server={"authz_address": f"tcp://{HOST}:{port}"}
    )
    async with aiohttp.ClientSession() as session:
        yield TwoListeners(portal, port, session)


def same_parts(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    """An answer without what differs per request or per server (id, date, server name, and
    whether the connection stays open: the authz listener closes it after a body it refuses)."""
    status, headers, body = answer
    kept = {
        k.lower(): v
        for k, v in headers.items()
        if k.lower() not in ("x-request-id", "date", "server", "connection")
    }
    return status, kept, body


async def test_every_verdict_is_the_same_on_both_listeners(listeners: TwoListeners) -> None:
    urls = ["http://127.0.0.1/private?x=1", "http://127.0.0.1/deny", "http://127.0.0.1/public"]
    before = [await listeners.both(url) for url in urls]
    assert (await sign_in(listeners.portal.client, "john", DEMO_PASSWORD)).status == 302
    after = [await listeners.both(url) for url in [*urls, "http://127.0.0.1/admin"]]
    legacy = await listeners.both("http://127.0.0.1/private", path="/api/verify")
    unreadable = await listeners.both("not a url")

    pairs = [*before, *after, legacy, unreadable]
    assert [main[0] for main, _ in pairs] == [401, 403, 200, 200, 403, 200, 200, 200, 401]
    for main, authz in pairs:
        assert same_parts(authz) == same_parts(main)
        assert authz[2] == b"" and authz[1]["Cache-Control"] == "no-store"
        assert not [name for name in PAGE_HEADERS if name in authz[1]]
    allowed = after[0][1][1]
    assert (allowed["Remote-User"], allowed["Remote-Groups"]) == ("john", "admins,dev")
    assert before[0][1][1]["Location"].startswith("http://127.0.0.1/?rd=")


async def test_head_is_answered_and_a_sign_out_is_seen_at_once(listeners: TwoListeners) -> None:
    await sign_in(listeners.portal.client, "john", DEMO_PASSWORD)
    headers = {"X-Original-URL": "http://127.0.0.1/private", **NGINX}
    status, head, body = await listeners.on_authz("HEAD", AUTHZ, **headers)
    assert (status, head["Remote-User"], body) == (200, "john", b"")
    cookie = listeners.cookie()
    await listeners.portal.client.post("/api/logout", json={})
    status, _, _ = await listeners.on_authz("GET", AUTHZ, Cookie=cookie, **headers)
    assert status == 401


async def test_the_request_id_of_a_trusted_proxy_is_kept_and_logged(
    listeners: TwoListeners, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"X-Original-URL": "http://127.0.0.1/private", **NGINX}
    _, sent, _ = await listeners.on_authz("GET", AUTHZ, **headers, **{"X-Request-Id": "ab" * 16})
    _, fresh, _ = await listeners.on_authz("GET", AUTHZ, **headers, **{"X-Request-Id": "bad id!"})
    _, other, _ = await listeners.on_authz("GET", AUTHZ, **headers)
    assert sent["X-Request-Id"] == "ab" * 16
    assert HEX32.fullmatch(fresh["X-Request-Id"]) and fresh["X-Request-Id"] != "bad id!"
    assert HEX32.fullmatch(other["X-Request-Id"]) and other["X-Request-Id"] != fresh["X-Request-Id"]
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "request"]
    ours = [r for r in lines if getattr(r, "request_id", None) == "ab" * 16]
    assert len(ours) == 1 and ours[0].levelno == logging.DEBUG
    assert ours[0].fields["path"] == AUTHZ and ours[0].fields["status"] == 401  # type: ignore[attr-defined]


async def test_the_client_address_is_read_through_the_trusted_proxies(
    start_portal: StartPortal,
) -> None:
    # Only 10.1.0.0/16 may pass; the portal's peer (127.0.0.1, a trusted proxy) forwards for the
    # visitor, so his X-Forwarded-For decides; a bad hop makes the address unknown: refused.
    port = free_port()
    rules = {
        "default_policy": "deny",
        "rules": [{"domain": "127.0.0.1", "networks": ["10.1.0.0/16"], "policy": "bypass"}],
    }
    portal = await start_portal(
        access_control=rules, server={"authz_address": f"tcp://{HOST}:{port}"}
    )
    async with aiohttp.ClientSession() as session:
        statuses = []
        for forwarded in ("10.1.2.3", "10.2.0.1", "10.1.2.3, not-an-ip"):
            headers = {"X-Original-URL": "http://127.0.0.1/x", "X-Forwarded-For": forwarded}
            async with session.get(f"http://{HOST}:{port}{AUTHZ}", headers=headers) as answer:
                statuses.append(answer.status)
            main = await portal.client.get(AUTHZ, headers=headers, allow_redirects=False)
            assert main.status == statuses[-1]
    assert statuses[0] == 200 and statuses[1] != 200 and statuses[2] != 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/api/health", 404),
        ("GET", "/api/authz/auth-request/", 404),
        ("POST", "/api/firstfactor", 404),
        ("POST", AUTHZ, 405),
        ("DELETE", "/api/verify", 405),
    ],
)
async def test_the_authz_listener_serves_nothing_else(
    listeners: TwoListeners, method: str, path: str, status: int
) -> None:
    got, headers, body = await listeners.on_authz(method, path)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")  # as the API's errors
    assert b'"status": "KO"' in body
    assert not [name for name in PAGE_HEADERS if name not in headers]
    assert headers["Cache-Control"] == "no-store"
    if status == 405:
        assert headers["Allow"] == "GET, HEAD"


async def test_a_backend_that_is_down_is_the_same_503_for_everyone(
    listeners: TwoListeners, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise BackendUnavailableError("the session store is down")

    fail_verdicts(monkeypatch, down)
    main, authz = await listeners.both("http://127.0.0.1/private")
    assert authz[0] == main[0] == 503
    assert authz[2] == main[2] and b"session store" not in authz[2]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the verdict broke")

    fail_verdicts(monkeypatch, broken)
    caplog.clear()
    _, authz = await listeners.both("http://127.0.0.1/private")
    assert authz[0] == 500 and b"verdict broke" not in authz[2] and b"Traceback" not in authz[2]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all(r.exc_info is not None for r in errors)  # one per listener


async def test_verdicts_on_the_authz_listener_are_counted(start_portal: StartPortal) -> None:
    metrics_port, port = free_port(), free_port()
    await start_portal(
        access_control=RULES,
        server={"authz_address": f"tcp://{HOST}:{port}"},
        **metrics_settings(metrics_port),
    )
    async with aiohttp.ClientSession() as session:
        headers = {"X-Original-URL": "http://127.0.0.1/private"}
        for path in (AUTHZ, AUTHZ, "/nothing"):
            async with session.get(f"http://{HOST}:{port}{path}", headers=headers) as answer:
                await answer.read()
    text = await scrape(metrics_port)
    assert value(text, "authelia_authz", code="401") == 2
    assert value(text, "authelia_request", code="404", method="GET") == 1


async def test_a_unix_socket_serves_the_authz_endpoint(
    start_portal: StartPortal, tmp_path: Path
) -> None:
    path = tmp_path / "authz.sock"
    await start_portal(access_control=RULES, server={"authz_address": f"unix://{path}"})
    connector = aiohttp.UnixConnector(path=str(path))
    async with aiohttp.ClientSession(connector=connector) as session:
        # nginx names the visitor (X-Forwarded-For); over a unix socket there is no peer address.
        headers = {"X-Original-URL": "http://127.0.0.1/public", "X-Forwarded-For": "192.0.2.1"}
        async with session.get(f"http://portal{AUTHZ}", headers=headers) as answer:
            assert answer.status == 200


async def test_a_busy_address_is_a_clear_start_up_error(
    make_config: ConfigFactory, users_file: Path, smtp: SmtpServer
) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = portal_settings(smtp.port, users_file)
        config = make_config(
            **deep_merge(settings, {"server": {"authz_address": f"{HOST}:{port}"}})
        )
        deps = Dependencies(
            users=users_from_config(config),
            storage=storage_from_config(config),
            notifier=notifier_from_config(config),
        )
        server = TestServer(create_app(config, deps))
        with pytest.raises(StartupCheckError) as raised:
            await server.start_server()
        await server.close()
    assert str(raised.value).startswith(
        f"server.authz_address: cannot listen on tcp://{HOST}:{port}"
    )


def test_the_authz_address_must_be_a_listener_of_its_own(make_config: ConfigFactory) -> None:
    for address, authz in [
        ("tcp://127.0.0.1:9091", "127.0.0.1:9091"),
        ("tcp://:9091", "tcp://0.0.0.0:9091"),
        ("tcp://127.0.0.1:9091", "tcp://:9091"),
        ("unix:///run/portal.sock", "unix:///run/portal.sock"),
    ]:
        with pytest.raises(ConfigError) as raised:
            make_config(server={"address": address, "authz_address": authz})
        assert "authz_address must differ from address" in str(raised.value)
    for address, authz in [
        ("tcp://127.0.0.1:9091", "tcp://127.0.0.1:9092"),
        ("tcp://127.0.0.1:9091", "tcp://127.0.0.2:9091"),
        ("tcp://127.0.0.1:9091", "unix:///run/authz.sock"),
    ]:
        config = make_config(server={"address": address, "authz_address": authz})
        assert config.server.authz_address is not None
    with pytest.raises(ConfigError) as raised:
        make_config(server={"authz_address": "http://127.0.0.1:9092"})
    assert "server.authz_address" in str(raised.value)


async def read_answers(reader: asyncio.StreamReader, count: int) -> list[Answer]:
    """Read `count` answers off one connection."""
    answers: list[Answer] = []
    for _ in range(count):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in head[1:]:
            if line:
                name, _, text = line.partition(":")
                headers.add(name, text.strip())
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        answers.append((int(head[0].split()[1]), headers, body))
    return answers


async def raw_answer(port: int, request: bytes) -> Answer:
    """Send `request` as it is (no client re-encodes its path) and read one answer."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        [answer] = await read_answers(reader, 1)
        return answer
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        # An encoded slash is no slash to the portal's router: no such page there.
        ("/api%2Fverify", ""),
        ("/api%2Fauthz%2Fauth-request", ""),
        # A body nginx's auth_request never sends: the portal's listener checks it first.
        (AUTHZ, "Content-Length: 70000\r\n\r\n" + "a" * 70000),
        (AUTHZ, "Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"),
        # ... and answers one it takes the usual way, with the page headers.
        (AUTHZ, "Content-Length: 5\r\n\r\nhello"),
        ("/api/nothing", "Content-Length: 70000\r\n\r\n" + "a" * 70000),
    ],
)
async def test_odd_requests_are_answered_as_on_the_portals_listener(
    listeners: TwoListeners, path: str, extra: str
) -> None:
    await sign_in(listeners.portal.client, "john", DEMO_PASSWORD)
    headers = "".join(
        f"{k}: {v}\r\n" for k, v in {"X-Original-URL": "http://127.0.0.1/private", **NGINX}.items()
    )
    request = (
        f"GET {path} HTTP/1.1\r\nHost: portal\r\nCookie: {listeners.cookie()}\r\n{headers}"
        + (extra or "\r\n")
    ).encode()
    assert listeners.portal.client.port is not None
    main = await raw_answer(listeners.portal.client.port, request)
    authz = await raw_answer(listeners.port, request)
    assert main[0] != 200 or extra  # the cases above are refusals, or a body
    assert same_parts(authz) == same_parts(main)
    # A body refused unread ends the connection, and the answer says so.
    assert (authz[1].get("Connection") == "close") == (authz[0] in (413, 415))


async def test_a_backend_that_is_down_gives_the_same_headers_on_both_listeners(
    listeners: TwoListeners, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise BackendUnavailableError("the session store is down")

    fail_verdicts(monkeypatch, down)
    main, authz = await listeners.both("http://127.0.0.1/private")
    assert main[0] == 503
    assert same_parts(authz) == same_parts(main)


async def test_a_body_in_a_content_coding_it_does_not_match_logs_no_error(
    listeners: TwoListeners, caplog: pytest.LogCaptureFixture
) -> None:
    # The portal's listener never decompresses a body (portal.app: auto_decompress off): one
    # that is not what its Content-Encoding says failed inside aiohttp's parser, a traceback each.
    request = (
        f"GET {AUTHZ} HTTP/1.1\r\nHost: portal\r\nX-Original-URL: http://127.0.0.1/public\r\n"
        "Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"
    ).encode()
    for _ in range(2):
        status, _, _ = await raw_answer(listeners.port, request)
        assert status == 415
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def nginx_request(url: str, cookie: str = "", *, version: str = "1.1", extra: str = "") -> bytes:
    """The request nginx's auth_request sends about `url`, as bytes."""
    lines = [f"GET {AUTHZ} HTTP/{version}", "Host: portal", f"X-Original-URL: {url}"]
    lines += [f"{k}: {v}" for k, v in NGINX.items()]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


@pytest.mark.parametrize("from_memory", [True, False])
async def test_pipelined_requests_are_answered_in_order(
    listeners: TwoListeners, monkeypatch: pytest.MonkeyPatch, from_memory: bool
) -> None:
    await sign_in(listeners.portal.client, "john", DEMO_PASSWORD)
    if not from_memory:  # every verdict awaits: each answer waits for the one before
        monkeypatch.setattr(Authorizer, "verdict_now", lambda *args: None)
    cookie = listeners.cookie()
    urls = ["/private", "/deny", "/public", "/private"]
    sent = [nginx_request(f"http://127.0.0.1{url}", cookie) for url in urls]
    sent[-1] = nginx_request("http://127.0.0.1/private")  # no cookie: sign in
    reader, writer = await asyncio.open_connection(HOST, listeners.port)
    try:
        writer.write(b"".join(sent))  # all at once, before any answer
        answers = await read_answers(reader, len(sent))
    finally:
        writer.close()
    assert [status for status, _, _ in answers] == [200, 403, 200, 401]
    assert answers[0][1]["Remote-User"] == "john" and "Remote-User" not in answers[2][1]
    assert answers[3][1]["Location"].startswith("http://127.0.0.1/?rd=")
    assert not [h for _, h, _ in answers if "Connection" in h]  # kept alive


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # A head over 64 KiB (nginx's own limits are four 8 KiB buffers).
        (nginx_request("http://127.0.0.1/public", extra="X-Big: " + "a" * 70000 + "\r\n"), 431),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        # Content-Length and chunked together: a smuggling attempt (RFC 9112 section 6.1).
        (
            nginx_request(
                "http://127.0.0.1/public",
                extra="Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            )
            + b"0\r\n\r\n",
            400,
        ),
    ],
)
async def test_a_request_it_cannot_take_is_refused_and_the_connection_closed(
    listeners: TwoListeners, request_bytes: bytes, status: int
) -> None:
    reader, writer = await asyncio.open_connection(HOST, listeners.port)
    try:
        # A good request first: answered before the refusal.
        writer.write(nginx_request("http://127.0.0.1/public") + request_bytes)
        (first, refused) = await read_answers(reader, 2)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
    finally:
        writer.close()
    assert first[0] == 200
    assert refused[0] == status and refused[1]["Connection"] == "close"
    assert refused[1]["Content-Type"].startswith("application/json") and b'"KO"' in refused[2]
    assert not [name for name in PAGE_HEADERS if name not in refused[1]]


@pytest.mark.parametrize(("version", "extra"), [("1.0", ""), ("1.1", "Connection: close\r\n")])
async def test_a_request_that_ends_its_connection_is_answered_then_closed(
    listeners: TwoListeners, version: str, extra: str
) -> None:
    reader, writer = await asyncio.open_connection(HOST, listeners.port)
    try:
        writer.write(nginx_request("http://127.0.0.1/public", version=version, extra=extra))
        [(status, headers, _)] = await read_answers(reader, 1)
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    assert (status, headers["Connection"]) == (200, "close")


async def test_a_header_value_with_a_line_break_is_never_written(
    listeners: TwoListeners, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A display name is the directory's: one with CR LF must not add header lines of its own.
    forged = Verdict(Outcome.ALLOW, headers={"Remote-Name": "John\r\nRemote-Groups: admins"})
    monkeypatch.setattr(Authorizer, "verdict_now", lambda *args: forged)
    status, headers, _ = await listeners.on_authz(
        "GET", AUTHZ, **{"X-Original-URL": "http://127.0.0.1/private", **NGINX}
    )
    assert status == 500 and "Remote-Groups" not in headers and "Remote-Name" not in headers
    assert [r for r in caplog.records if "unsafe header" in r.getMessage()]


async def test_an_idle_connection_is_closed(
    start_portal: StartPortal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authz_listener, "IDLE_TIMEOUT", 0.3)
    monkeypatch.setattr(authz_listener, "_SWEEP_EVERY", 0.1)
    port = free_port()
    await start_portal(access_control=RULES, server={"authz_address": f"tcp://{HOST}:{port}"})
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(nginx_request("http://127.0.0.1/public"))
        [(status, _, _)] = await read_answers(reader, 1)
        assert status == 200
        # Kept alive at first, closed once idle; a request's head half sent counts as idle too.
        writer.write(b"GET /api/verify HTTP/1.1\r\nHost: por")
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    # A head sent a byte at a time (slowloris) is closed too, however often bytes come.
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        head = nginx_request("http://127.0.0.1/public")
        sent = 0
        while sent < 100 and not reader.at_eof():  # at most 5 s of drip
            writer.write(head[sent : sent + 1])
            sent += 1
            await asyncio.sleep(0.05)
        assert reader.at_eof() and sent < 100
    finally:
        writer.close()
