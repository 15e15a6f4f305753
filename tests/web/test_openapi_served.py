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


async def test_the_register_address_is_not_read_as_a_credential_id(portal: Portal) -> None:
    """DELETE .../credential/register is a 405 whose Allow lists the register route's methods,
    as the document has them (schemathesis's Allow check found it routed as credential
    "register": a 404, with DELETE in Allow); a numeric id still reaches the credential route."""
    register = "/api/secondfactor/webauthn/credential/register"
    response = await portal.client.delete(register)
    assert response.status == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"PUT", "POST"}
    assert (await response.json())["status"] == "KO"
    numbered = await portal.client.delete("/api/secondfactor/webauthn/credential/7")
    assert numbered.status == 401  # the credential route: no session
    assert await numbered.json() == {"status": "KO", "message": "You need to sign in first."}


async def test_a_weak_copy_of_the_etag_revalidates_too(portal: Portal) -> None:
    """If-None-Match compares weakly (RFC 9110 section 13.1.2): nginx's gzip turns the ETag
    into W/"..." on the way out, and clients send that back."""
    etag = (await portal.client.get("/api/openapi.yml")).headers["ETag"]

    weak = await portal.client.get("/api/openapi.yml", headers={"If-None-Match": f"W/{etag}"})
    listed = await portal.client.get(
        "/api/openapi.yml", headers={"If-None-Match": f'"stale", W/{etag}'}
    )

    assert (weak.status, listed.status) == (304, 304)
