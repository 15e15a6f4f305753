"""The OpenAPI document (portal/openapi.yml + the body models) against the routes the app really
registers: every JSON route is described, nothing else, with the same methods; and it is a
valid OpenAPI 3.1 document (openapi-spec-validator)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate
from pydantic import BaseModel
from ruamel.yaml import YAML

import portal.handlers
from portal import openapi
from portal.app import create_app
from portal.config import Config, read_config
from tests.conftest import ENCRYPTION_KEY, JWT_SECRET, ConfigFactory
from tests.fuzz.server import portal_config


def everything_on(tmp_path: Path) -> Config:
    """The fuzz server's guarded profile: every optional route exists."""
    raw = portal_config(tmp_path, 9091, "guarded")
    path = tmp_path / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    environ = {
        "PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET,
        "PORTAL_STORAGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
    }
    config, _ = read_config([path], environ)
    return config


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    """Return the document's (method, path) pairs."""
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in openapi.METHODS
    }


def served(app: web.Application) -> dict[str, Any]:
    """Return the document GET /api/openapi.yml answers with, parsed."""
    route = next(r for r in app.router.routes() if r.name == "openapi")
    assert route.resource is not None and route.resource.canonical == openapi.OPENAPI_PATH
    # The document is built once, when the routes are; the handler holds its bytes.
    text = inspect.getclosurevars(route.handler).nonlocals["document"].decode()
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return data


def test_every_json_route_is_documented_with_every_feature_on(tmp_path: Path) -> None:
    """No route missing, none extra, the same methods: the file against the real router."""
    app = create_app(everything_on(tmp_path))
    registered = openapi.registered_operations(app)
    full = documented(openapi.full_document())
    assert full - registered == set(), "documented, not registered"
    assert registered - full == set(), "registered, not documented"
    assert ("get", "/.well-known/jwks.json") in registered
    assert ("post", "/api/sso/jwt") in registered
    assert documented(served(app)) == full


def test_a_smaller_configuration_serves_only_its_routes(make_config: ConfigFactory) -> None:
    """Without passkey sign-in, TOTP or the reset, their operations are not in the document."""
    config = make_config(
        totp={"disable": True},
        authentication_backend={"password_reset": {"disable": True}},
        session={
            "cookies": [
                {
                    "name": "my_session",
                    "domain": "example.com",
                    "authelia_url": "https://auth.example.com",
                }
            ]
        },
    )
    app = create_app(config)
    document = served(app)
    assert documented(document) == openapi.registered_operations(app)
    paths = set(document["paths"])
    assert "/api/reset-password" not in paths
    assert "/api/firstfactor/passkey" not in paths
    assert "/api/secondfactor/totp/register" not in paths
    assert set(document["paths"]["/api/secondfactor/totp"]) == {"post"}
    assert document["components"]["securitySchemes"]["authelia_auth"]["name"] == "my_session"
    assert document["servers"][0]["url"] == "https://auth.example.com"
    validate(document)


def test_the_documents_are_valid_openapi_3_1(tmp_path: Path) -> None:
    """The full document and the one served with everything on pass the 3.1 validator."""
    full = openapi.full_document()
    assert full["openapi"].startswith("3.1.")
    validate(full)
    validate(served(create_app(everything_on(tmp_path))))


def test_optional_operations_name_the_key_that_enables_them(make_config: ConfigFactory) -> None:
    """An operation the minimal configuration lacks says which key brings it."""
    app = create_app(make_config(webauthn={"disable": True}, totp={"disable": True}))
    always = openapi.registered_operations(app) | {("get", openapi.OPENAPI_PATH)}
    for path, item in openapi.full_document()["paths"].items():
        for method, operation in item.items():
            if method in openapi.METHODS and (method, path) not in always:
                assert operation.get("x-portal-enabled-by"), f"{method} {path}"


def test_elevated_operations_ask_for_the_elevated_scope() -> None:
    """x-portal-elevated and the security scope agree, on the operations that need it."""
    elevated = set()
    for path, item in openapi.full_document()["paths"].items():
        for method, operation in item.items():
            if method not in openapi.METHODS:
                continue
            scoped = {"authelia_auth": ["elevated"]} in operation.get("security", [])
            assert scoped == bool(operation.get("x-portal-elevated")), f"{method} {path}"
            if scoped:
                elevated.add((method, path))
    assert ("post", "/api/change-password") in elevated
    assert ("delete", "/api/secondfactor/webauthn/credential/{credential_id}") in elevated
    assert ("get", "/api/user/sessions") not in elevated


def _body_models() -> set[type[BaseModel]]:
    found = set()
    for info in __import__("pkgutil").iter_modules(portal.handlers.__path__):
        module = __import__(f"portal.handlers.{info.name}", fromlist=["_"])
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
                and not value.__name__.startswith("_")
            ):
                found.add(value)
    return found


def test_every_body_model_is_in_the_document() -> None:
    """Each pydantic model a handler validates a JSON body with has its schema in the document,
    derived from the model itself (Authelia's names, the aliases)."""
    assert _body_models() == set(openapi.BODIES.values())
    schemas = openapi.full_document()["components"]["schemas"]
    first = schemas["FirstFactorBody"]
    assert set(first["required"]) == {"username", "password"}
    assert {"keepMeLoggedIn", "targetURL"} <= set(first["properties"])
    assert first["properties"]["username"]["maxLength"] == 4096


@pytest.mark.parametrize("name", sorted(openapi.BODIES))
def test_every_body_schema_is_used(name: str) -> None:
    """No body schema is left unreferenced (a renamed route would leave one behind)."""
    text = repr(openapi.full_document()["paths"])
    assert f"#/components/schemas/{name}'" in text
