"""The stylesheet's colours meet WCAG 2.2 contrast in light and dark mode (issue 12).

Dark mode put white text on light blue on every main button (2.1:1), and the focus ring was
2.0:1 on white. Read from static/portal.css, checked with WCAG's relative-luminance formula.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

CSS = (REPO / "static" / "portal.css").read_text()
CANVAS = {"light": "#ffffff", "dark": "#121212"}  # Chromium's Canvas in each scheme


def variables(scheme: str) -> dict[str, str]:
    """Return the custom properties in force for the scheme (dark overrides light)."""
    root = re.search(r":root \{([^}]*)\}", CSS)
    assert root
    found = dict(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{6})", root.group(1)))
    if scheme == "dark":
        dark = re.search(r"prefers-color-scheme: dark\)\s*\{\s*:root \{([^}]*)\}", CSS)
        assert dark
        found.update(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{6})", dark.group(1)))
    return found


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_button_text_on_the_accent_is_readable(scheme: str) -> None:
    found = variables(scheme)
    assert contrast(found["--on-accent"], found["--accent"]) >= 4.5  # WCAG 1.4.3


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_links_and_the_focus_ring_stand_out_from_the_page(scheme: str) -> None:
    found = variables(scheme)
    assert contrast(found["--accent"], CANVAS[scheme]) >= 4.5  # links are accent text
    assert contrast(found["--focus"], CANVAS[scheme]) >= 3  # WCAG 1.4.11 non-text contrast
