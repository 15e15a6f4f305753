"""Request bodies and headers read once, in one place: what cannot be read is the client's fault.

Everything a visitor sends that aiohttp parses on demand (form bodies, JSON bodies, the Host
header) is read through here, so an unreadable one becomes a BadRequestError (400, the portal's
usual page or JSON error) instead of an exception escaping a handler as a 500. OWASP ASVS 5.1.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from portal.errors import BadRequestError
from portal.i18n import N_

_FORM = web.RequestKey("portal_form", dict[str, str])
UNREADABLE_FORM = "The form could not be read. Please reload the page and try again."
# A DNS name (RFC 1035: 253) or an IP literal, then an optional port: what a Host header is.
_HOST = re.compile(
    r"(?P<host>[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?"
)

# What aiohttp and the codecs raise on bytes they cannot parse: an unknown or non-text charset
# (LookupError), bytes that are not in it (UnicodeError, a ValueError), broken multipart
# (ValueError, AssertionError, RuntimeError for an unknown transfer encoding), a body that does not
# match its Content-Encoding (RequestPayloadError, HttpProcessingError).
_UNREADABLE = (
    ValueError,
    LookupError,
    RuntimeError,
    AssertionError,
    HttpProcessingError,
    RequestPayloadError,
)


async def read_form(request: web.Request) -> dict[str, str]:
    """Return the request's form fields as text (files and repeated names: first text value).

    Raises BadRequestError (400) for a body that cannot be read; aiohttp's 413 for one over the
    app's client_max_size passes through unchanged.
    """
    if _FORM in request:
        return request[_FORM].copy()  # a copy: callers may change theirs
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise
    except _UNREADABLE:
        raise BadRequestError(UNREADABLE_FORM) from None
    fields: dict[str, str] = {}
    for name, value in form.items():
        if isinstance(value, str) and name not in fields:
            fields[name] = value
    # SECURITY: some codecs (utf-7, unicode_escape) decode to lone surrogates, which are no text
    # and fail wherever a field is encoded later (the CSRF check, regulation keys): a 400 here.
    if not all(_is_text(name) and _is_text(value) for name, value in fields.items()):
        raise BadRequestError(UNREADABLE_FORM)
    request[_FORM] = fields
    return fields.copy()


def _is_text(value: str) -> bool:
    """Tell whether a string is text UTF-8 can hold (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_json(request: web.Request) -> dict[str, Any]:
    """Return the request's JSON body, which must be an object; raise BadRequestError if not."""
    try:
        text = await request.text()
    except web.HTTPRequestEntityTooLarge:
        raise
    except _UNREADABLE:
        raise BadRequestError("The request body must be JSON in UTF-8.") from None
    try:
        data = json.loads(text)
    # SECURITY: deep nesting exhausts the C parser's recursion limit, which it reports cleanly
    # as RecursionError (the body is at most 64 KiB, so the work before that is bounded).
    except (ValueError, RecursionError):
        raise BadRequestError("The request body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return data


def request_host(request: web.Request) -> str:
    """Return the Host header's host, lower-cased, without port or trailing dot.

    Raises BadRequestError (400) for a Host header that is not a name or an IP literal with an
    optional port (RFC 9110 section 7.2): `\\xff`, `a:b`, `h, evil`, two hosts, a port over 65535.
    Without a Host header (HTTP/1.0), returns "".
    """
    raw = request.headers.get("Host")
    if raw is None:
        return ""
    match = _HOST.fullmatch(raw)
    if match is None or (match["port"] is not None and int(match["port"]) > 65535):
        raise BadRequestError(N_("The request's Host header could not be read."))
    return match["host"].lower().rstrip(".")
