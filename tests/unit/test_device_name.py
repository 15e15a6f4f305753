"""The device name the security settings page shows for a session's User-Agent."""

from __future__ import annotations

import pytest

from portal.handlers.security import device_name


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox on Linux",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "Safari on iOS",
        ),
        ("curl/8.5.0", "curl"),
        ("python-requests/2.32", "python-requests/2.32"),
        ("x" * 80, "x" * 59 + "…"),
        ("bot\x00\x1b[31m", "bot[31m"),
        ("", "Unknown device"),
    ],
)
def test_a_user_agent_reads_as_browser_and_system_or_itself(user_agent: str, name: str) -> None:
    assert device_name(user_agent) == name
