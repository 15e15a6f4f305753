"""identity_validation.elevated_session and the elevation rate limits: Authelia's defaults and
refusals (Authelia 4.39: schema/identity_validation.go, validator/identity_validation.go,
schema/server.go)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from portal.config import RateLimit, read_config
from portal.errors import ConfigError
from tests.conftest import deep_merge, minimal_raw
from tests.unit.test_config import write_yaml


def load(tmp_path: Path, **changes: Any) -> Any:
    path = write_yaml(tmp_path / "configuration.yml", deep_merge(minimal_raw(tmp_path), changes))
    return read_config([path], {})


def pairs(limit: RateLimit) -> list[tuple[float, int]]:
    return [(b.period.total_seconds(), b.requests) for b in limit.buckets]


def test_elevated_session_has_authelias_defaults(tmp_path: Path) -> None:
    config, warnings = load(tmp_path)

    elevated = config.identity_validation.elevated_session
    assert warnings == []
    assert elevated.code_lifespan == timedelta(minutes=5)
    assert elevated.elevation_lifespan == timedelta(minutes=10)
    assert elevated.characters == 8
    assert (elevated.require_second_factor, elevated.skip_second_factor) == (False, False)


def test_elevation_rate_limits_default_to_authelias_buckets_weighted_by_the_lifespans(
    tmp_path: Path,
) -> None:
    config, _ = load(tmp_path)
    start, finish = config.session_elevation_limits()
    assert pairs(start) == [(300, 3), (600, 5), (3600, 15)]
    assert pairs(finish) == [(600, 3), (1200, 5), (3600, 15)]

    longer = {"code_lifespan": "10m", "elevation_lifespan": "1h"}
    config, _ = load(tmp_path, identity_validation={"elevated_session": longer})
    start, finish = config.session_elevation_limits()
    assert pairs(start) == [(600, 3), (1200, 5), (7200, 15)]
    assert pairs(finish) == [(3600, 3), (7200, 5), (21600, 15)]


def test_configured_elevation_rate_limits_are_used_as_given_without_a_warning(
    tmp_path: Path,
) -> None:
    limits = {
        "session_elevation_start": {"buckets": [{"period": "1m", "requests": 2}]},
        "session_elevation_finish": {"enable": False, "buckets": [{"period": "1m", "requests": 9}]},
    }
    config, warnings = load(tmp_path, server={"endpoints": {"rate_limits": limits}})

    start, finish = config.session_elevation_limits()
    assert pairs(start) == [(60, 2)]
    assert not finish.enable
    assert warnings == []


def test_a_whole_authelia_elevated_session_block_loads_unchanged(tmp_path: Path) -> None:
    block = {
        "code_lifespan": "2 minutes",
        "elevation_lifespan": "30 minutes",
        "characters": 12,
        "require_second_factor": True,
        "skip_second_factor": True,
    }
    config, warnings = load(tmp_path, identity_validation={"elevated_session": block})

    elevated = config.identity_validation.elevated_session
    assert warnings == []
    assert (elevated.code_lifespan, elevated.elevation_lifespan) == (
        timedelta(minutes=2),
        timedelta(minutes=30),
    )
    assert (elevated.characters, elevated.require_second_factor, elevated.skip_second_factor) == (
        12,
        True,
        True,
    )


def test_zero_means_the_default_as_in_authelia(tmp_path: Path) -> None:
    block = {"code_lifespan": 0, "elevation_lifespan": "0s", "characters": 0}
    config, _ = load(tmp_path, identity_validation={"elevated_session": block})

    elevated = config.identity_validation.elevated_session
    assert elevated.code_lifespan == timedelta(minutes=5)
    assert elevated.elevation_lifespan == timedelta(minutes=10)
    assert elevated.characters == 8


@pytest.mark.parametrize(
    ("characters", "message"),
    [(21, "must be 20 or less"), (5, "must be at least 6"), ("many", "integer")],
)
def test_a_code_length_out_of_bounds_is_refused_naming_the_key(
    tmp_path: Path, characters: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, identity_validation={"elevated_session": {"characters": characters}})

    problems = "\n".join(caught.value.problems)
    assert "identity_validation.elevated_session.characters" in problems
    assert message in problems


def test_an_unknown_elevated_session_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, identity_validation={"elevated_session": {"code_length": 8}})

    assert "identity_validation.elevated_session.code_length" in "\n".join(caught.value.problems)


def test_the_elevated_session_keys_are_read_from_the_environment(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "configuration.yml", minimal_raw(tmp_path))
    environ = {
        "PORTAL_IDENTITY_VALIDATION_ELEVATED_SESSION_CHARACTERS": "10",
        "AUTHELIA_IDENTITY_VALIDATION_ELEVATED_SESSION_SKIP_SECOND_FACTOR": "true",
    }
    config, warnings = read_config([path], environ)

    assert config.identity_validation.elevated_session.characters == 10
    assert config.identity_validation.elevated_session.skip_second_factor
    assert warnings == []
