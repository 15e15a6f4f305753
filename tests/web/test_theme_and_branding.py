"""Authelia's `theme` and `server.asset_path` (logo.png, favicon.ico), and the organisation's
name, so the pages say whose they are (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal.errors import ConfigError
from tests.conftest import ConfigFactory
from tests.web.conftest import StartPortal, sign_in

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # enough to be served as it is
ICO = b"\x00\x00\x01\x00" + b"\x00" * 32


@pytest.mark.parametrize("theme", ["light", "dark", "grey", "auto"])
async def test_every_page_carries_the_configured_theme(
    start_portal: StartPortal, theme: str
) -> None:
    portal = await start_portal(theme=theme)
    assert portal.config.theme == theme
    for path in ("/", "/reset-password/step1", "/nowhere"):
        page = await (await portal.client.get(path)).text()
        assert f'<html lang="en" data-theme="{theme}">' in page, path


async def test_the_theme_is_light_by_default_as_in_authelia(start_portal: StartPortal) -> None:
    portal = await start_portal()
    assert portal.config.theme == "light"
    assert 'data-theme="light"' in await (await portal.client.get("/")).text()


def test_an_unknown_theme_is_refused_naming_the_key(make_config: ConfigFactory) -> None:
    with pytest.raises(ConfigError, match="theme"):
        make_config(theme="purple")


async def test_the_logo_and_favicon_come_from_the_asset_path(
    start_portal: StartPortal, tmp_path: Path
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "logo.png").write_bytes(PNG)
    (assets / "favicon.ico").write_bytes(ICO)
    portal = await start_portal(
        server={"asset_path": str(assets)}, organization_name="Example & Co"
    )
    for path in ("/", "/reset-password/step1", "/nowhere"):
        page = await (await portal.client.get(path)).text()
        assert '<img id="logo" src="/static/media/logo.png" alt="Example &amp; Co"' in page
        assert '<p id="organization">Example &amp; Co</p>' in page
        assert '<link rel="icon" href="/favicon.ico">' in page
        assert "· Example &amp; Co</title>" in page
    logo = await portal.client.get("/static/media/logo.png")
    assert (logo.status, await logo.read()) == (200, PNG)
    assert logo.content_type == "image/png"
    icon = await portal.client.get("/favicon.ico")
    assert (icon.status, await icon.read()) == (200, ICO)
    assert (await sign_in(portal.client)).status == 302
    assert 'id="logo"' in await (await portal.client.get("/")).text()


async def test_without_an_asset_path_the_portal_shows_its_own(start_portal: StartPortal) -> None:
    portal = await start_portal()
    page = await (await portal.client.get("/")).text()
    assert 'id="logo"' not in page and 'id="organization"' not in page
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    assert "<title>Sign in · Portal</title>" in page
    assert (await portal.client.get("/static/media/logo.png")).status == 404


async def test_an_asset_path_with_only_a_logo_keeps_the_portals_favicon(
    start_portal: StartPortal, tmp_path: Path
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "logo.png").write_bytes(PNG)
    portal = await start_portal(server={"asset_path": str(assets)})
    page = await (await portal.client.get("/")).text()
    assert '<img id="logo" src="/static/media/logo.png" alt="Logo"' in page
    assert 'href="/static/favicon.svg"' in page
    assert (await portal.client.get("/favicon.ico")).status == 404
    # Nothing else in the directory is served.
    (assets / "secret.txt").write_text("no")
    assert (await portal.client.get("/static/media/secret.txt")).status == 404


def test_an_asset_path_that_is_not_a_directory_is_refused(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="server.asset_path"):
        make_config(server={"asset_path": str(tmp_path / "missing")})
