"""GET /api/openapi.yml as a client sees it: YAML, cacheable, revalidated with its ETag."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate
from ruamel.yaml import YAML

from tests.web.conftest import Portal


async def test_the_document_is_served_as_cacheable_yaml(portal: Portal) -> None:
    """A 200 in application/yaml with a strong ETag and a public max-age; the same ETag gets
    a 304 with no body; the YAML is this portal's valid OpenAPI 3.1 document."""
    response = await portal.client.get("/api/openapi.yml")
    assert response.status == 200
    assert response.content_type == "application/yaml"
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    document: dict[str, Any] = YAML(typ="safe", pure=True).load(await response.text())
    validate(document)
    assert document["servers"][0]["url"] == portal.config.portal_url
    assert "/api/firstfactor" in document["paths"]
    assert "/api/sso/jwt" not in document["paths"]  # no trusted_issuers here

    again = await portal.client.get("/api/openapi.yml", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    other = await portal.client.get("/api/openapi.yml", headers={"If-None-Match": '"stale"'})
    assert other.status == 200
