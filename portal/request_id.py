"""Request ids: one per request, in every log line written while it is handled, and sent back.

Each request gets an id: the `X-Request-Id` a trusted proxy sent (nginx's `$request_id`, so its
log and the portal's name the same request) when it looks like one, else 32 random hex digits.
The id is kept on the request (`request[REQUEST_ID]`) and in a context variable for the log
lines and audit events written while the request is handled (portal.logs.RequestIdFilter puts
it on each record), and every answer carries it back in `X-Request-Id`. It identifies a request
in the logs; it is not a secret and grants nothing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from portal.forwarded import ClientAddresses, RequestView
from portal.keys import ADDRESSES
from portal.logs import CLIENT_IP, REQUEST_ID, current_request_id

HEADER = "X-Request-Id"
# What an id from a proxy may look like (nginx's $request_id is 32 hex digits; other proxies use
# UUIDs): short, and nothing that could forge a log line.
_VALID = re.compile(r"[A-Za-z0-9._-]{1,64}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_request_id() -> str:
    """Return a fresh id: 32 hex digits (128 random bits)."""
    return secrets.token_hex(16)


def request_id_for(request: RequestView, addresses: ClientAddresses) -> str:
    """Return the request's id: the X-Request-Id a trusted proxy sent when well formed (at most
    64 of A-Z a-z 0-9 . _ -), else a new one (new_request_id)."""
    sent = request.headers.get(HEADER)
    if sent is not None and _VALID.fullmatch(sent) and addresses.from_proxy(request):
        return sent
    # SECURITY: a visitor's own id is not believed: it could pose as another request's.
    return new_request_id()


def assign_request_id(request: web.BaseRequest, addresses: ClientAddresses) -> str:
    """Give the request its id (a trusted proxy's, when well formed, else a new one) and note
    the client's address (request[CLIENT_IP], unless it cannot be read) for the access log;
    return the id, also kept as request[REQUEST_ID]."""
    client = addresses.parsed(request)
    # For the access log: the client's address as the rest of the portal reads it.
    if client is not None:
        request[CLIENT_IP] = client
    request_id = request_id_for(request, addresses)
    request[REQUEST_ID] = request_id
    return request_id


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id (assign_request_id) for the logs of its handling; the answer
    carries the id (request_id_header)."""
    token = current_request_id.set(assign_request_id(request, request.app[ADDRESSES]))
    try:
        return await handler(request)
    finally:
        current_request_id.reset(token)


async def request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """The on_response_prepare hook: send the request's id back in X-Request-Id."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[HEADER] = request_id
