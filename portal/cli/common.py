"""What every `portal` command shares: the one-line error, and the configuration it loads."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from portal.checks import check_config
from portal.config import Config

DEFAULT_CONFIG = Path("config/configuration.yml")


class CliError(Exception):
    """A problem reported to the user as one line on stderr."""


def config_paths(given: list[Path] | None) -> list[Path]:
    """Return the configuration files to read: --config's, else $PORTAL_CONFIG's (or
    $AUTHELIA_CONFIG's, comma-separated), else config/configuration.yml."""
    if given:
        return given
    from_env = os.environ.get("PORTAL_CONFIG") or os.environ.get("AUTHELIA_CONFIG")
    if from_env:
        return [Path(p) for p in from_env.split(",") if p]
    return [DEFAULT_CONFIG]


def load(given: list[Path] | None) -> tuple[Config, list[str]]:
    """Return the checked configuration and its warnings; ConfigError lists every problem."""
    # validate-config and serve check the same things: everything but the servers themselves.
    return check_config(config_paths(given), os.environ)


def with_config(sub: argparse.ArgumentParser) -> None:
    """Give a command the repeatable --config/-c option."""
    sub.add_argument(
        "--config",
        "-c",
        type=Path,
        action="append",
        help="configuration file (repeat to merge several; default config/configuration.yml "
        "or $PORTAL_CONFIG)",
    )
