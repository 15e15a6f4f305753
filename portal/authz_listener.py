"""The authz listener (`server.authz_address`): nginx's auth_request endpoints on a port of its own.

nginx asks /api/authz/auth-request before every request to every protected site. On the portal's
own listener each of those asks goes through aiohttp's request machinery (protocol, request and
response objects, router, middleware chain, response signals), which costs several times the
verdict itself. Here the same two endpoints are served by an asyncio protocol of their own:
httptools (llhttp, Node.js's HTTP/1.1 parser) reads the requests, and the answers are written
in one piece. They are exactly what the portal's listener answers (handlers/authz.py `decide`):
the verdict, the Remote-* headers, where to sign in, `Cache-Control: no-store`, an empty body,
the request id (a trusted proxy's X-Request-Id, else a new one) in X-Request-Id and in the log
lines, the client's address read through server.trusted_proxies, the access line at debug, the
metrics' request counts. A backend that is down is the same 503 for everyone.

Only GET and HEAD on /api/authz/auth-request and /api/verify are served: another method is a 405,
another path a 404 (an encoded slash is no slash, as in the portal's router), each with the JSON
body and the page headers the portal's listener gives them. A request with a body (nginx's
auth_request sends none) is answered as the portal's listener answers it: 413 over 64 KiB, 415
in a content coding (each closing the connection, as the body is not read), else the verdict
with the page headers, logged at info. A request the parser cannot read is a 400, a request
line and header fields over 64 KiB a 431, and either closes the connection. Requests sent
before the answer to the previous one (HTTP/1.1 pipelining) are answered in order, one at a
time; a connection idle for 75 s (aiohttp's keepalive_timeout), or stuck inside one request's
head for as long, is closed. The portal's listener keeps serving both endpoints too, so the nginx
snippets may point at either (deploy/nginx/portal-authrequest.conf). Not in Authelia, which has
one listener.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import cast

import httptools
import yarl
from aiohttp import web
from multidict import CIMultiDict

from portal.authz import Authorizer, Outcome, Verdict
from portal.config.types import Address
from portal.errors import (
    PayloadTooLargeError,
    PortalError,
    StartupCheckError,
    UnsupportedMediaTypeError,
)
from portal.forwarded import ClientAddresses
from portal.handlers.common import cookie_values
from portal.headers import page_headers
from portal.keys import ADDRESSES, AUTHZ, CONFIG, METRICS
from portal.logs import access_line, current_request_id, quoted
from portal.metrics.core import Metrics
from portal.middlewares import MAX_BODY, REASONS
from portal.request_id import HEADER, request_id_for

AUTHZ_PATHS = frozenset({"/api/authz/auth-request", "/api/verify"})
_RAW_PATHS = frozenset(path.encode() for path in AUTHZ_PATHS)
METHODS = frozenset({"GET", "HEAD"})
# A request's target and header fields together, in bytes: nginx's own default limits (four
# 8 KiB buffers) fit several times over.
HEAD_LIMIT = 64 * 1024
# Seconds a kept-alive connection may stay idle, or a request's head take to arrive (aiohttp's
# keepalive_timeout), and how often connections are looked at.
IDLE_TIMEOUT = 75.0
_SWEEP_EVERY = 10.0
# Requests read ahead of their answers (pipelining) before the connection stops being read.
_PIPELINE = 16
# The header fields anything here reads (the verdict, portal.forwarded, the request id, the body
# checks); the others are counted against HEAD_LIMIT and dropped unread.
_KEPT = frozenset(
    name.encode()
    for name in (
        "cookie",
        "x-original-url",
        "x-original-method",
        "x-forwarded-for",
        "x-request-id",
        "content-length",
        "transfer-encoding",
        "content-encoding",
    )
)
_NO_STORE = b"Cache-Control: no-store\r\n"
# How many sessions' Remote-* lines _Answers keeps ready.
_ALLOWED_MEMO = 4096
# aiohttp's rule for what a header may not carry (a CR or LF would inject header lines).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

log = logging.getLogger("portal.http")
access_log = logging.getLogger("aiohttp.access")


class _Request:
    """One request as read off the connection: what portal.forwarded and the request id read
    (the peer, the headers: forwarded.RequestView) and what the answer and its log line need."""

    __slots__ = (
        "remote",
        "headers",
        "method",
        "path",
        "known",
        "keep_alive",
        "body",
        "refusal",
        "started",
        "ready",
        "request_id",
        "verdict",
    )

    def __init__(self, remote: str | None, method: str, target: bytes) -> None:
        self.remote = remote
        self.method = method
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.path, self.known = _path(target)
        self.keep_alive = True
        self.body = False  # whether the request carries a body (aiohttp's body_exists)
        self.refusal: PortalError | None = None  # decided from the head (413, 415)
        self.started = 0.0  # time.perf_counter() when it was read whole
        self.ready: _Answer | None = None  # an answer decided by the parser (400, 431)
        self.request_id = ""  # given when its answer starts (request_id_for)
        self.verdict = False  # a GET or HEAD on AUTHZ_PATHS: counted as a verdict in metrics


def _path(target: bytes) -> tuple[str, bool]:
    """Return the target's path as the portal's router reads it (percent-decoded but for %2F:
    yarl's path_safe) and whether it is one of AUTHZ_PATHS."""
    path = target.partition(b"?")[0]
    if path in _RAW_PATHS:
        return path.decode(), True
    text = target.decode("utf-8", "surrogateescape")
    try:
        url = yarl.URL(text) if path.startswith(b"/") else yarl.URL(text).relative()
        decoded = url.path_safe
    except ValueError:
        decoded = text.partition("?")[0]
    return decoded, decoded in AUTHZ_PATHS


class _Answer:
    """An answer to write: status, its header lines (`Name: value\r\n` each, checked: _lines),
    body; `close` ends the connection after it."""

    __slots__ = ("status", "lines", "body", "close")

    def __init__(self, status: int, lines: bytes, body: bytes = b"", close: bool = False) -> None:
        self.status, self.lines, self.body, self.close = status, lines, body, close


def _lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """Return the header fields as lines, UTF-8 as aiohttp writes them.

    Raises ValueError when a name or value carries a control character (aiohttp's rule): a value
    such as a display name must never add header lines of its own."""
    pairs = list(headers)
    if _FORBIDDEN.search("".join(name + value for name, value in pairs)) is not None:
        raise ValueError("a control character in a header")
    return "".join(f"{name}: {value}\r\n" for name, value in pairs).encode("utf-8")


_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}
_date: tuple[int, bytes] = (0, b"")


def _date_line() -> bytes:
    """Return the Date header line (RFC 9110 section 6.6.1), made once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, f"Date: {formatdate(now, usegmt=True)}\r\n".encode())
    return _date[1]


def _serialize(answer: _Answer, request: _Request | None) -> bytes:
    """Return the answer's bytes: status line, header lines, Content-Length, Date, the request
    id, Connection: close when the connection ends after it, the body (none for HEAD)."""
    parts = [
        _STATUS_LINES[answer.status],
        answer.lines,
        b"Content-Length: %d\r\n" % len(answer.body),
        _date_line(),
    ]
    if request is not None and request.request_id:
        # ASCII by construction: a proxy's id matching [A-Za-z0-9._-]{1,64}, or hex digits.
        parts.append(f"{HEADER}: {request.request_id}\r\n".encode())
    if answer.close or request is None or not request.keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if request is None or request.method != "HEAD":
        parts.append(answer.body)
    return b"".join(parts)


def _json_error(
    status: int, message: str, page: bytes, extra: dict[str, str] | None = None
) -> _Answer:
    """The JSON API's error answer (middlewares.api_error) with the page headers (`page`:
    lines)."""
    body = json.dumps({"status": "KO", "message": message}).encode()
    headers = [("Content-Type", "application/json; charset=utf-8"), *(extra or {}).items()]
    return _Answer(status, _lines(headers) + page, body)


class _Answers:
    """What every connection of one listener shares: the Authorizer, client addresses, metrics,
    page headers, the connections themselves (for the idle sweep and the close)."""

    def __init__(self, app: web.Application) -> None:
        self.authz: Authorizer = app[AUTHZ]
        self.addresses: ClientAddresses = app[ADDRESSES]
        self.metrics: Metrics | None = app[METRICS]
        # As security_headers sets them on an API answer: the page headers and no-store.
        self.page = _lines([*page_headers(app[CONFIG]), ("Cache-Control", "no-store")])
        self.connections: set[_Connection] = set()
        # The Remote-* lines of the sessions nginx asks about, by their headers mapping (kept,
        # so its id is not reused while here): Session.remote_headers is made once per read.
        self._allowed: dict[int, tuple[Mapping[str, str], bytes]] = {}

    def verdict_answer(self, verdict: Verdict, page: bool) -> _Answer:
        """Map a verdict to nginx's answer, as handlers/authz.py decide does. Raises ValueError
        for a header value with a control character (_lines)."""
        # SECURITY: no cache on the way may keep an answer: a 200's Remote-* headers belong to
        # one visitor, at a URL that is the same for every visitor.
        tail = self.page if page else _NO_STORE
        if verdict.outcome is Outcome.ALLOW:
            return _Answer(200, self._allowed_lines(verdict.headers) + tail)
        if verdict.outcome is Outcome.FORBIDDEN:
            return _Answer(403, tail)
        if verdict.outcome is Outcome.SIGN_IN:
            return _Answer(401, _lines([("Location", verdict.location)]) + tail)
        return _Answer(401, tail)  # a request the portal cannot read

    def _allowed_lines(self, headers: Mapping[str, str]) -> bytes:
        """Return _lines(headers), remembered per mapping object (at most _ALLOWED_MEMO)."""
        found = self._allowed.get(id(headers))
        if found is not None and found[0] is headers:
            return found[1]
        lines = _lines(headers.items())
        if len(self._allowed) >= _ALLOWED_MEMO:
            self._allowed.clear()
        self._allowed[id(headers)] = (headers, lines)
        return lines

    def answer_now(self, request: _Request) -> _Answer | None:
        """Return nginx's answer when the verdict needs no coroutine (Authorizer.verdict_now),
        else None (then await answer): for a GET or HEAD on AUTHZ_PATHS without a body."""
        token = current_request_id.set(request.request_id)
        try:
            found = self.authz.verdict_now(
                request.headers.get("X-Original-URL", ""),
                request.headers.get("X-Original-Method", "GET"),
                self.addresses.parsed(request),
                partial(cookie_values, request),
            )
            return None if found is None else self.verdict_answer(found, page=False)
        except Exception:  # noqa: BLE001 - answer() meets it again, and answers it
            return None
        finally:
            current_request_id.reset(token)

    async def answer(self, request: _Request) -> _Answer:
        """Return the answer to one request; never raises (an unexpected error is a bare 500,
        its traceback logged)."""
        nginx = not request.body
        verdict = request.verdict
        token = current_request_id.set(request.request_id)
        try:
            if request.refusal is not None:
                raise request.refusal
            if not request.known:
                return _json_error(404, REASONS[404], self.page)
            if not verdict:
                return _json_error(405, REASONS[405], self.page, {"Allow": "GET, HEAD"})
            found = await self.authz.verdict(
                request.headers.get("X-Original-URL", ""),
                request.headers.get("X-Original-Method", "GET"),
                self.addresses.parsed(request),
                partial(cookie_values, request),
            )
            try:
                return self.verdict_answer(found, page=not nginx)
            except ValueError:
                log.error(
                    "unsafe header in the answer to %s %s", request.method, quoted(request.path)
                )
                return _json_error(500, REASONS[500], self.page)
        except PortalError as exc:
            if exc.status >= 500:
                log.error("request failed: %s %s: %s", request.method, quoted(request.path), exc)
            page = self.page if not nginx else _NO_STORE
            failed = _json_error(exc.status, exc.public_message, page, exc.response_headers())
            failed.close = exc.status in (413, 415)  # the body is left unread
            return failed
        except Exception:
            # SECURITY: the traceback goes to the log only; nginx gets a bare 500.
            log.exception(
                "unhandled error: %s %s", quoted(request.method, 16), quoted(request.path)
            )
            return _json_error(500, REASONS[500], self.page)
        finally:
            current_request_id.reset(token)

    def sweep(self, now: float) -> None:
        """Close the connections idle, or inside one request's head, for IDLE_TIMEOUT."""
        for connection in list(self.connections):
            connection.close_if_idle(now)


class _Connection(asyncio.Protocol):
    """One connection from nginx: requests parsed by httptools, answered in order."""

    def __init__(self, shared: _Answers) -> None:
        self._shared = shared
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._remote: str | None = None
        self._target = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._size = 0
        self._request: _Request | None = None
        self._waiting: deque[_Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._reading_head = False
        self._head_started = 0.0
        self._closing = False
        self._paused = False
        self._since = self._loop.time()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Note the peer (an address; '' for a unix socket, as aiohttp's request.remote)."""
        # A stream server's transports are asyncio.Transport (create_server, create_unix_server).
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._remote = None if peer is None else str(peer[0] if isinstance(peer, tuple) else peer)
        self._shared.connections.add(self)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a request it cannot read is a 400, a head too large a 431."""
        if self._closing:
            return
        self._since = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._closing = True  # no protocol switch here: answer what was asked, then close
            self._maybe_close()
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(431, "The request's header fields are too large.")
            elif not isinstance(exc.__context__, _Stop):
                raise
        except httptools.HttpParserError:
            self._refuse(400, REASONS[400])

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and drop what it still waited for."""
        self._shared.connections.discard(self)
        self._waiting.clear()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        """Stop reading while nginx does not read its answers (backpressure)."""
        self._paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        """Read again once the answers drained."""
        self._paused = False
        self._update_reading()

    # --- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A request starts: its head is read from here."""
        self._target, self._fields, self._size = b"", [], 0
        self._reading_head = True
        self._head_started = self._loop.time()

    def on_url(self, url: bytes) -> None:
        """A piece of the request target."""
        self._target += url
        self._size += len(url)
        if self._size > HEAD_LIMIT:
            raise _HeadTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header field, whole: kept when something here reads it (_KEPT)."""
        self._size += len(name) + len(value) + 4
        if self._size > HEAD_LIMIT:
            raise _HeadTooLarge()
        if name.lower() in _KEPT:
            self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        """The head is read: make the request, and refuse a body the portal would refuse."""
        self._reading_head = False
        method = self._parser.get_method().decode("ascii", "replace")
        request = _Request(self._remote, method, self._target)
        for name, value in self._fields:
            request.headers.add(
                name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")
            )
        request.keep_alive = self._parser.should_keep_alive()
        length = request.headers.get("Content-Length")
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        request.body = chunked or (length is not None and length.strip() not in ("", "0"))
        try:
            if request.body:
                _check_body(request, length)
        except PortalError as exc:
            # Answered at once, its body unread: nothing after it is read.
            request.refusal = exc
            self._queue(request)
            self._closing = True
            raise _Stop() from None
        self._request = request

    def on_body(self, body: bytes) -> None:
        """Body bytes are not read by anyone: dropped (their size was checked)."""

    def on_message_complete(self) -> None:
        """The request is whole: queue it for its answer."""
        request, self._request = self._request, None
        if request is not None:
            self._queue(request)

    def _queue(self, request: _Request) -> None:
        request.started = time.perf_counter()
        self._waiting.append(request)
        self._update_reading()
        self._next()

    # --- answering ----------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer the requests read before, then this error, then close."""
        self._closing = True
        request = _Request(self._remote, "GET", b"/")
        request.ready = _json_error(status, message, self._shared.page)
        request.ready.close = True
        self._waiting.append(request)
        self._next()

    def _next(self) -> None:
        """Start answering the first waiting request, unless one is being answered."""
        if self._task is not None:
            return
        while self._waiting and not self._closing_now():
            request = self._waiting[0]
            if request.ready is not None:
                if self._shared.metrics is not None:
                    self._shared.metrics.record_request(
                        request.ready.status, "GET", 0.0, authz=False
                    )
                self._write(request.ready, None)
                self._waiting.clear()
                break
            request.request_id = request_id_for(request, self._shared.addresses)
            request.verdict = request.known and request.method in METHODS
            now = None
            if request.verdict and not request.body and request.refusal is None:
                now = self._shared.answer_now(request)
            if now is None:
                self._task = self._loop.create_task(self._answer(request))
                return
            self._answered(request, now)
        self._update_reading()
        self._maybe_close()

    async def _answer(self, request: _Request) -> None:
        answer = await self._shared.answer(request)
        self._task = None
        self._answered(request, answer)
        self._next()

    def _answered(self, request: _Request, answer: _Answer) -> None:
        """Write the answer to the first waiting request, count it, log it, drop it."""
        self._waiting.popleft()
        self._write(answer, request)
        elapsed = time.perf_counter() - request.started
        metrics = self._shared.metrics
        if metrics is not None:
            metrics.record_request(answer.status, request.method, elapsed, authz=request.verdict)
        level = logging.DEBUG if request.verdict and not request.body else logging.INFO
        if access_log.isEnabledFor(level):
            client = self._shared.addresses.parsed(request)
            ip = str(client) if client is not None else request.remote
            access_line(
                access_log,
                level,
                ip,
                request.method,
                request.path,
                answer.status,
                elapsed,
                request.request_id,
            )
        if answer.close or not request.keep_alive:
            self._closing = True
            self._waiting.clear()

    def _closing_now(self) -> bool:
        transport = self._transport
        return transport is None or transport.is_closing()

    def _write(self, answer: _Answer, request: _Request | None) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_serialize(answer, request))
            self._since = self._loop.time()
        if answer.close or request is None or not request.keep_alive:
            self._closing = True

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._paused or len(self._waiting) >= _PIPELINE:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _maybe_close(self) -> None:
        if self._closing and self._task is None and self._transport is not None:
            self._transport.close()

    def close_if_idle(self, now: float) -> None:
        """Close when nothing is being answered and the last byte came IDLE_TIMEOUT ago, or
        when one request's head has been arriving for that long (however slowly)."""
        idle = self._task is None and now - self._since > IDLE_TIMEOUT
        slow = self._reading_head and now - self._head_started > IDLE_TIMEOUT
        if (idle or slow) and self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        """Close at once (the portal stops)."""
        if self._transport is not None:
            self._transport.close()


class _Stop(Exception):
    """Raised inside the parser's callbacks: nothing more is read on this connection."""


class _HeadTooLarge(Exception):
    """Raised inside the parser's callbacks: the request's head is over HEAD_LIMIT."""


def _check_body(request: _Request, length: str | None) -> None:
    """Refuse a body as middlewares.check_body does: over MAX_BODY (413), in a content coding
    (415)."""
    if length is not None and length.strip().isdigit() and int(length) > MAX_BODY:
        raise PayloadTooLargeError()
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("identity", ""):
        raise UnsupportedMediaTypeError("Send the request body without a Content-Encoding.")


class AuthzListener:
    """The running listener: close() stops it and closes its connections."""

    def __init__(self, server: asyncio.AbstractServer, shared: _Answers) -> None:
        self._server, self._shared = server, shared
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_EVERY, self._sweep)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._shared.sweep(loop.time())
        self._sweeper = loop.call_later(_SWEEP_EVERY, self._sweep)

    async def close(self) -> None:
        """Stop listening, close every connection, wait for the server to be closed."""
        self._sweeper.cancel()
        self._server.close()
        for connection in list(self._shared.connections):
            connection.close()
        await self._server.wait_closed()


async def start_authz_listener(app: web.Application, address: Address) -> AuthzListener:
    """Listen on `address` (server.authz_address: tcp://host:port or unix:///path) with this
    module's protocol for `app` (its Authorizer, client addresses, metrics and configuration).
    Raises StartupCheckError naming server.authz_address when it cannot listen there."""
    shared = _Answers(app)
    loop = asyncio.get_running_loop()
    try:
        if address.scheme == "unix":
            server = await loop.create_unix_server(lambda: _Connection(shared), address.path)
        else:
            server = await loop.create_server(
                lambda: _Connection(shared), address.host or None, address.port
            )
    except OSError as exc:
        raise StartupCheckError(
            f"server.authz_address: cannot listen on {address}: {exc.strerror or exc}"
        ) from None
    log.info("nginx's auth_request endpoints also served on %s (server.authz_address)", address)
    return AuthzListener(server, shared)
