"""Metrics (telemetry.metrics), told as stories: a real portal, its metrics listener scraped over
HTTP as Prometheus scrapes it, promtool on the text, and a real Prometheus server."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest
from aiohttp.test_utils import TestServer

from portal.app import create_app
from portal.deps import (
    Dependencies,
    notifier_from_config,
    storage_from_config,
    users_from_config,
)
from portal.errors import ConfigError, StartupCheckError
from portal.keys import METRICS
from tests.conftest import ConfigFactory, deep_merge
from tests.integration.process import HOST, accepts, free_port
from tests.integration.prometheus import promtool_check_metrics, running_prometheus
from tests.integration.smtp_server import SmtpServer
from tests.web.conftest import (
    DEMO_PASSWORD,
    Portal,
    StartPortal,
    choose_password,
    open_link,
    portal_settings,
    request_reset,
    reset_link_from,
    sign_in,
    signed_in,
)
from tests.web.test_second_factor_signin import code_now, register_totp

NEW_PASSWORD = "Correct-Horse-Battery-Staple-42"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Authelia's counters are named as its Go client names them (no `_total`): promtool's one lint
# about them, and the only problem it may report.
AUTHELIA_COUNTERS = {
    "authelia_request",
    "authelia_authz",
    "authelia_authn",
    "authelia_authn_passkey",
    "authelia_authn_second_factor",
}


def metrics_settings(port: int, path: str = "/metrics") -> dict[str, Any]:
    """The telemetry section that turns the metrics on at 127.0.0.1:port/path."""
    return {"telemetry": {"metrics": {"enabled": True, "address": f"tcp://{HOST}:{port}{path}"}}}


async def scrape(port: int, path: str = "/metrics") -> str:
    """GET the metrics as Prometheus does; assert the text format's content type."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{HOST}:{port}{path}") as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return await answer.text()


def value(text: str, name: str, **labels: str) -> float | None:
    """Return the sample's value with exactly these labels, None when there is none."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        if dict(_LABEL.findall(match.group(2) or "")) == labels:
            return float(match.group(3))
    return None


TWO_FACTOR = {
    "default_policy": "deny",
    "rules": [{"domain": "127.0.0.1", "policy": "two_factor"}],
}
ONE_FACTOR = {
    "default_policy": "deny",
    "rules": [{"domain": "127.0.0.1", "policy": "one_factor"}],
}


@pytest.fixture
async def metered(start_portal: StartPortal) -> tuple[Portal, int]:
    """A portal whose metrics are on, and the port they are served on."""
    port = free_port()
    return await start_portal(**metrics_settings(port), access_control=ONE_FACTOR), port


# --- sign-in and authz ---------------------------------------------------------------------------


async def test_a_failed_sign_in_counts_as_authelia_counts_it(metered: tuple[Portal, int]) -> None:
    portal, port = metered
    assert (await sign_in(portal.client, "john", "wrong")).status == 401
    assert (await sign_in(portal.client, "nobody", "wrong")).status == 401
    assert (await sign_in(portal.client, "john", DEMO_PASSWORD)).status == 302

    text = await scrape(port)

    assert value(text, "authelia_authn", success="false", banned="false") == 2
    assert value(text, "authelia_authn", success="true", banned="false") == 1
    assert value(text, "authelia_authn_duration_count", success="false") == 2
    assert value(text, "authelia_authn_duration_count", success="true") == 1
    assert "# TYPE authelia_authn counter" in text
    assert "# TYPE authelia_authn_duration histogram" in text
    # SECURITY: neither the names typed nor the client's address become labels.
    assert "john" not in text and "nobody" not in text and HOST not in text


async def test_a_banned_account_counts_as_banned(metered: tuple[Portal, int]) -> None:
    portal, port = metered
    for _ in range(3):
        await sign_in(portal.client, "bob", "wrong")
    assert (await sign_in(portal.client, "bob", DEMO_PASSWORD)).status == 401

    text = await scrape(port)

    assert value(text, "authelia_authn", success="false", banned="false") == 3
    assert value(text, "authelia_authn", success="false", banned="true") == 1


async def test_authz_verdicts_are_counted_by_code(metered: tuple[Portal, int]) -> None:
    portal, port = metered
    assert await signed_in(portal.client) == 401
    await sign_in(portal.client, "john", DEMO_PASSWORD)
    assert await signed_in(portal.client) == 200
    assert await signed_in(portal.client) == 200

    text = await scrape(port)

    assert value(text, "authelia_authz", code="401") == 1
    assert value(text, "authelia_authz", code="200") == 2
    assert value(text, "authelia_request", code="200", method="GET") is not None
    assert value(text, "authelia_request", code="302", method="POST") == 1
    assert value(text, "authelia_request_duration_count", code="401") == 1
    assert value(text, "authelia_request_duration_bucket", code="401", le="60.0") == 1


async def test_with_metrics_on_nginx_questions_still_read_the_loaded_users_file(
    metered: tuple[Portal, int],
) -> None:
    # refresh_interval `always` (the users file's default): a cached session is checked against
    # the file already in memory, not through a backend call per question, metrics or not.
    portal, port = metered
    await sign_in(portal.client, "john", DEMO_PASSWORD)
    assert await signed_in(portal.client) == 200
    before = value(await scrape(port), "portal_user_backend_calls_total", operation="get_user")
    for _ in range(10):
        assert await signed_in(portal.client) == 200
    after = value(await scrape(port), "portal_user_backend_calls_total", operation="get_user")
    assert before is not None and after is not None
    assert after - before <= 1


async def test_a_method_nobody_uses_is_one_bounded_label(metered: tuple[Portal, int]) -> None:
    portal, port = metered
    # Methods the HTTP parser takes but the portal does not: a client chooses them freely.
    for method in ("PROPFIND", "TRACE", "MKCOL", "PURGE"):
        assert (await portal.client.request(method, "/")).status == 405

    text = await scrape(port)

    assert value(text, "authelia_request", code="405", method="other") == 4
    assert "PROPFIND" not in text and "PURGE" not in text


async def test_second_factor_codes_are_counted_by_result_and_type(
    start_portal: StartPortal,
) -> None:
    port = free_port()
    portal = await start_portal(**metrics_settings(port), access_control=TWO_FACTOR)
    await register_totp(portal)
    await sign_in(portal.client, "john", DEMO_PASSWORD)
    wrong = await portal.client.post("/api/secondfactor/totp", json={"token": "000000"})
    right = await portal.client.post("/api/secondfactor/totp", json={"token": code_now(portal)})

    text = await scrape(port)

    assert (wrong.status, right.status) == (401, 200)
    second = "authelia_authn_second_factor"
    assert value(text, second, success="false", banned="false", type="totp") == 1
    assert value(text, second, success="true", banned="false", type="totp") == 1


# --- resets, mail, backend ----------------------------------------------------------------------


async def test_a_reset_is_counted_requested_mailed_and_completed(
    metered: tuple[Portal, int],
) -> None:
    portal, port = metered
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    await request_reset(portal.client, "nobody@example.com")
    await open_link(portal.client, link)
    assert (await choose_password(portal.client, NEW_PASSWORD)).status == 200
    await portal.drain_outbox()

    text = await scrape(port)

    # SECURITY: an unknown identifier counts as a request like any other (one series).
    assert value(text, "portal_reset_requested_total") == 2
    assert value(text, "portal_reset_mailed_total") == 1
    assert value(text, "portal_reset_completed_total") == 1
    # The reset link, then the "your password was changed" notice.
    assert value(text, "portal_mail_deliveries_total", result="sent") == 2
    assert value(text, "portal_user_backend_calls_total", operation="set_password") == 1
    assert value(text, "portal_outbox_pending") == 0
    assert value(text, "portal_outbox_oldest_age_seconds") == 0
    assert "nobody" not in text and "john" not in text


async def test_a_refused_password_and_a_used_link_are_counted_by_reason(
    metered: tuple[Portal, int],
) -> None:
    portal, port = metered
    await request_reset(portal.client, "john")
    link = reset_link_from(await portal.next_mail())
    await open_link(portal.client, link)
    await choose_password(portal.client, DEMO_PASSWORD)  # refused: the current one
    await choose_password(portal.client, NEW_PASSWORD)
    await open_link(portal.client, link)  # refused: used

    text = await scrape(port)

    assert value(text, "portal_reset_rejected_total", reason="policy") == 1
    assert value(text, "portal_reset_rejected_total", reason="used") == 1
    assert value(text, "portal_reset_completed_total") == 1


async def test_the_outbox_age_is_read_at_scrape_time(start_portal: StartPortal) -> None:
    port = free_port()
    # The worker looks once an hour: what is queued stays queued while the test looks.
    portal = await start_portal(
        **metrics_settings(port), notifier={"outbox": {"poll_interval": "1h"}}
    )
    await portal.storage.outbox_enqueue("reset_mail", {}, at=portal.clock.now() - 90)

    text = await scrape(port)

    assert value(text, "portal_outbox_pending") == 1
    assert value(text, "portal_outbox_oldest_age_seconds") == 90


# --- the registry and the listener ----------------------------------------------------------


async def test_two_portals_in_one_process_count_apart(start_portal: StartPortal) -> None:
    first_port, second_port = free_port(), free_port()
    first = await start_portal(**metrics_settings(first_port))
    await start_portal(**metrics_settings(second_port))

    await sign_in(first.client, "john", "wrong")

    assert value(await scrape(first_port), "authelia_authn", success="false", banned="false") == 1
    assert (
        value(await scrape(second_port), "authelia_authn", success="false", banned="false") is None
    )
    # Nothing went to prometheus_client's global registry.
    assert prometheus_client.REGISTRY.get_sample_value("authelia_request_duration_count") is None
    assert prometheus_client.REGISTRY.get_sample_value("portal_reset_requested_total") is None


async def test_the_path_comes_from_the_address(start_portal: StartPortal) -> None:
    port = free_port()
    await start_portal(**metrics_settings(port, "/internal/prom"))

    assert "authelia_request" in await scrape(port, "/internal/prom")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{HOST}:{port}/metrics") as answer:
            assert answer.status == 404


async def test_a_unix_socket_serves_the_metrics_at_slash_metrics(
    start_portal: StartPortal, tmp_path: Path
) -> None:
    socket_path = tmp_path / "metrics.sock"
    await start_portal(telemetry={"metrics": {"enabled": True, "address": f"unix://{socket_path}"}})

    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get("http://portal/metrics") as answer:
            text = await answer.text()

    assert answer.status == 200
    assert "# TYPE authelia_request counter" in text


async def test_metrics_off_by_default_open_no_listener(start_portal: StartPortal) -> None:
    port = free_port()
    settings = metrics_settings(port)
    settings["telemetry"]["metrics"]["enabled"] = False
    portal = await start_portal(**settings)

    assert portal.config.telemetry.metrics.enabled is False
    assert portal.client.app is not None and portal.client.app[METRICS] is None
    assert not accepts(HOST, port)


async def test_a_busy_address_is_a_clear_start_up_error(
    make_config: ConfigFactory, users_file: Path, smtp: SmtpServer
) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = deep_merge(portal_settings(smtp.port, users_file), metrics_settings(port))
        config = make_config(**settings)
        deps = Dependencies(
            users=users_from_config(config),
            storage=storage_from_config(config),
            notifier=notifier_from_config(config),
        )
        server = TestServer(create_app(config, deps))
        with pytest.raises(StartupCheckError) as raised:
            await server.start_server()
        await server.close()

    message = str(raised.value)
    assert message.startswith(f"telemetry.metrics.address: cannot listen on tcp://{HOST}:{port}")
    assert "Traceback" not in message


def test_a_bad_address_is_a_configuration_error(make_config: ConfigFactory) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(telemetry={"metrics": {"enabled": True, "address": "http://:9959/metrics"}})

    assert any(
        p.startswith("telemetry.metrics.address:") and "scheme 'http' is not supported" in p
        for p in raised.value.problems
    ), raised.value.problems


# --- what the tools say --------------------------------------------------------------------------


async def test_promtool_finds_nothing_wrong_but_authelias_own_counter_names(
    metered: tuple[Portal, int],
) -> None:
    portal, port = metered
    await sign_in(portal.client, "john", "wrong")
    await signed_in(portal.client)
    await request_reset(portal.client, "john")
    await portal.drain_outbox()

    status, problems = await asyncio.to_thread(promtool_check_metrics, await scrape(port))

    accepted = {f'{name} counter metrics should have "_total" suffix' for name in AUTHELIA_COUNTERS}
    assert status in (0, 3), problems  # 3: lint problems only; 1 would be a parse error
    assert set(problems) <= accepted, problems
    assert 'authelia_authn counter metrics should have "_total" suffix' in problems


async def test_a_real_prometheus_scrapes_the_sign_in_count(
    metered: tuple[Portal, int], tmp_path: Path
) -> None:
    portal, port = metered
    for _ in range(2):
        await sign_in(portal.client, "john", "wrong")
    await sign_in(portal.client, "john", DEMO_PASSWORD)
    query = 'authelia_authn{success="false",banned="false"}'

    with running_prometheus(tmp_path / "prometheus", f"{HOST}:{port}", "/metrics") as prometheus:
        seen = None
        for _ in range(100):
            seen = await asyncio.to_thread(prometheus.value, query)
            if seen is not None:
                break
            await asyncio.sleep(0.2)
        up = await asyncio.to_thread(prometheus.value, 'up{job="portal"}')

    assert seen == 2
    assert up == 1
