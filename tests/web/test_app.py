"""The application shell: health, security headers, error pages, body size, start-up checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from portal.app import create_app
from portal.errors import StartupCheckError
from portal.keys import STORAGE
from tests.conftest import ConfigFactory

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, make_config: ConfigFactory, users_file: Path
) -> Client:
    return await aiohttp_client(create_app(make_config()))


async def test_health_answers_ok(client: Client) -> None:
    response = await client.get("/api/health")
    assert response.status == 200
    assert await response.json() == {"status": "OK"}


async def test_every_response_carries_the_security_headers(client: Client) -> None:
    for path in ("/api/health", "/no-such-page", "/static/portal.css"):
        response = await client.get(path)
        headers = response.headers
        assert headers["Content-Security-Policy"].startswith("default-src 'self'; frame-ancestors")
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Strict-Transport-Security"].startswith("max-age=")


async def test_no_hsts_for_a_plain_http_loopback_portal(
    aiohttp_client: AiohttpClient, make_config: ConfigFactory, users_file: Path
) -> None:
    cookies = [{"domain": "127.0.0.1", "authelia_url": "http://127.0.0.1:9091"}]
    client = await aiohttp_client(create_app(make_config(session={"cookies": cookies})))
    response = await client.get("/api/health")
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_an_unknown_page_gets_the_html_error_page(client: Client) -> None:
    response = await client.get("/no-such-page")
    assert response.status == 404
    assert response.content_type == "text/html"
    body = await response.text()
    assert "Page not found" in body
    assert 'id="error-message"' in body
    assert "Traceback" not in body


async def test_an_unknown_api_route_gets_json(client: Client) -> None:
    response = await client.get("/api/nothing-here")
    assert response.status == 404
    assert await response.json() == {
        "status": "KO",
        "message": "There is no page at this address.",
    }
    assert response.headers["Cache-Control"] == "no-store"


async def test_a_wrong_method_keeps_its_status_and_allow_header(client: Client) -> None:
    response = await client.post("/api/health")
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    assert (await response.json())["status"] == "KO"


async def test_a_body_over_64_kib_is_refused_with_413(client: Client) -> None:
    response = await client.post("/api/health", data=b"x" * (64 * 1024 + 1))
    assert response.status == 413
    assert await response.json() == {"status": "KO", "message": "The request is too large."}


async def test_a_failing_start_up_check_stops_the_app_before_it_serves(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    (tmp_path / "users.yml").write_text("just a string\n")
    server = TestServer(create_app(make_config()))
    try:
        with pytest.raises(StartupCheckError, match="users.yml"):
            await server.start_server()
        assert server.runner is None or not server.runner.sites
    finally:
        await server.close()


async def test_health_names_a_failing_backend(client: Client) -> None:
    await client.app[STORAGE].close()  # the database goes away under the running portal
    response = await client.get("/api/health")
    assert response.status == 503
    assert await response.json() == {
        "status": "KO",
        "message": "failing: storage",
        "backends": {"users": "ok", "storage": "failing"},
    }
