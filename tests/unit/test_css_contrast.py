"""The stylesheet's colours meet WCAG 2.2 contrast in every theme (issue 12).

Dark mode put white text on light blue on every main button (2.1:1), and the focus ring was
2.0:1 on white. Read from static/portal.css, checked with WCAG's relative-luminance formula.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

CSS = (REPO / "static" / "portal.css").read_text()
THEMES = ("light", "dark", "grey", "auto-light", "auto-dark")
_BLOCKS = {
    "light": r":root \{([^}]*)\}",
    "dark": r":root\[data-theme=dark\] \{([^}]*)\}",
    "grey": r":root\[data-theme=grey\] \{([^}]*)\}",
    "auto-dark": r"prefers-color-scheme: dark\)\s*\{\s*:root\[data-theme=auto\] \{([^}]*)\}",
}


def variables(theme: str) -> dict[str, str]:
    """Return the custom properties in force for a theme (each overrides the light defaults)."""
    found: dict[str, str] = {}
    for block in ("light", theme):
        if block not in _BLOCKS:
            continue  # auto in a light browser is the light theme
        match = re.search(_BLOCKS[block], CSS)
        assert match, block
        found.update(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{6})", match.group(1)))
    return found


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("theme", THEMES)
def test_button_text_on_the_accent_is_readable(theme: str) -> None:
    found = variables(theme)
    assert contrast(found["--on-accent"], found["--accent"]) >= 4.5  # WCAG 1.4.3


@pytest.mark.parametrize("theme", THEMES)
def test_links_and_the_focus_ring_stand_out_from_the_page(theme: str) -> None:
    found = variables(theme)
    assert contrast(found["--accent"], found["--canvas"]) >= 4.5  # links are accent text
    assert contrast(found["--focus"], found["--canvas"]) >= 3  # WCAG 1.4.11 non-text contrast


@pytest.mark.parametrize("theme", THEMES)
def test_text_and_errors_are_readable_on_the_page(theme: str) -> None:
    found = variables(theme)
    assert contrast(found["--text"], found["--canvas"]) >= 7
    assert contrast(found["--error"], found["--canvas"]) >= 4.5


def test_the_page_is_painted_from_the_theme() -> None:
    assert "background: var(--canvas); color: var(--text);" in CSS
    assert ".error { color: var(--error); }" in CSS
