"""The OpenAPI 3.1 document of the JSON API, built once per app from portal/openapi.yml.

The file holds the paths, the answers and their schemas; the request bodies' schemas come from
the handlers' pydantic models (one source for what a handler accepts and what the document
says). The document served is the file with, for this configuration: only the operations the
app registers, the session cookie's name, the portal's URL as the server, and the models'
schemas in components/schemas. Authelia serves its own at GET /api/openapi.yml, templated per
configuration the same way (api/openapi.yml in its repository).
"""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from ruamel.yaml import YAML

from portal.config import Config
from portal.handlers import (
    elevation,
    partner,
    password,
    reset,
    second_factor,
    signin,
    totp,
    webauthn,
)

OPENAPI_PATH = "/api/openapi.yml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Browsers and tools may keep the document this long; the ETag makes a refresh cheap.
MAX_AGE = 3600

# components/schemas name -> the model the handler validates that body with.
BODIES: dict[str, type[BaseModel]] = {
    "FirstFactorBody": signin.FirstFactorBody,
    "ReauthenticateBody": second_factor.ReauthenticateBody,
    "SsoJwtBody": partner.SsoJwtBody,
    "TotpBody": second_factor.TotpBody,
    "TotpRegisterBody": totp.TokenBody,
    "DescriptionBody": webauthn.DescriptionBody,
    "ElevationBody": elevation.ElevationBody,
    "ChangePasswordBody": password.ChangePasswordBody,
    "StartBody": reset.StartBody,
    "QuestionsBody": reset.QuestionsBody,
    "TokenBody": reset.TokenBody,
    "ResetBody": reset.ResetBody,
}


@cache
def _source() -> dict[str, Any]:
    """Return portal/openapi.yml as read (parsed once per process; callers copy it)."""
    text = resources.files("portal").joinpath("openapi.yml").read_text("utf-8")
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return data


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return the JSON Schema (2020-12, as OpenAPI 3.1 uses) of a request body model, with
    Authelia's names (the aliases) and without pydantic's generated titles."""
    schema: dict[str, Any] = _untitled(model.model_json_schema(by_alias=True, mode="validation"))
    return schema


def _untitled(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _untitled(v) for k, v in value.items() if k != "title"}
    if isinstance(value, list):
        return [_untitled(v) for v in value]
    return value


def full_document() -> dict[str, Any]:
    """Return the document of every operation, whatever the configuration (a fresh copy)."""
    document = copy.deepcopy(_source())
    schemas = document["components"]["schemas"]
    for name, model in BODIES.items():
        schemas[name] = body_schema(model)
    return document


def registered_operations(app: web.Application) -> set[tuple[str, str]]:
    """Return the (method, path) pairs the app routes by name (aiohttp's implicit HEADs, the
    404/405 fallback and the static files left out), methods in lower case."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*"):
            continue
        path = resource.canonical
        if path.startswith("/api/") or path.startswith("/.well-known/"):
            found.add((route.method.lower(), path))
    return found


def document_for(app: web.Application, config: Config) -> dict[str, Any]:
    """Return the document for this app: only the operations it registers (and this one)."""
    document = full_document()
    keep = registered_operations(app) | {("get", OPENAPI_PATH)}
    paths: dict[str, Any] = {}
    for path, item in document["paths"].items():
        operations = {k: v for k, v in item.items() if k not in METHODS or (k, path) in keep}
        if any(k in METHODS for k in operations):
            paths[path] = operations
    document["paths"] = paths
    document["servers"] = [{"url": config.portal_url, "description": "This portal"}]
    cookie = config.session.cookies[0].name if config.session.cookies else None
    if cookie:
        document["components"]["securitySchemes"]["authelia_auth"]["name"] = cookie
    return document


def dump(document: dict[str, Any]) -> bytes:
    """Return the document as YAML (no anchors: each part written out where it is used)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 100
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.representer.ignore_aliases = lambda *args: True
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue().encode("utf-8")


def handler(document: bytes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Return the handler of GET /api/openapi.yml: the document as application/yaml,
    cacheable with a strong ETag (304 for a matching If-None-Match, compared weakly as RFC 9110
    section 13.1.2 asks: W/"..." matches too, as nginx's gzip rewrites the tag)."""
    etag = '"' + hashlib.sha256(document).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={MAX_AGE}"}

    async def openapi_get(request: web.Request) -> web.StreamResponse:
        sent = request.headers.get("If-None-Match", "")
        if etag in (tag.strip().removeprefix("W/") for tag in sent.split(",")) or (
            sent.strip() == "*"
        ):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=document, content_type="application/yaml", charset="utf-8", headers=headers
        )

    return openapi_get
