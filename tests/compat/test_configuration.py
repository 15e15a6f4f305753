"""Authelia's reference configuration and the configurations of its Standalone and LDAP suites
load in the portal, warn about what the portal ignores, and mean what they mean to Authelia."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from portal.access_control import AccessControl, Decision
from portal.config import read_config
from portal.errors import ConfigError
from portal.users.base import User
from tests.conftest import ENCRYPTION_KEY, JWT_SECRET
from tests.integration.test_cli import portal as run_portal
from tests.unit.test_authz import STANDALONE_DECISIONS, target

ENVIRON = {"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET}


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, str]:
    """The suites' certificates_directory ('/certs/', in their containers) here: a folder."""
    folder = tmp_path / "certs"
    folder.mkdir()
    return {"PORTAL_CERTIFICATES_DIRECTORY": str(folder)}


@pytest.fixture
def standalone_suite(authelia: Path) -> Path:
    return authelia / "suites" / "Standalone" / "configuration.yml"


@pytest.fixture
def ldap_suite(authelia: Path) -> Path:
    return authelia / "suites" / "LDAP" / "configuration.yml"


def test_authelias_reference_configuration_loads_with_the_rest_from_the_environment(
    tmp_path: Path, authelia: Path
) -> None:
    environ = {
        "AUTHELIA_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET,
        "AUTHELIA_STORAGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "PORTAL_AUTHENTICATION_BACKEND_FILE_PATH": str(tmp_path / "users.yml"),
        "PORTAL_NOTIFIER_FILESYSTEM_FILENAME": str(tmp_path / "notification.txt"),
        "PORTAL_STORAGE_LOCAL_PATH": str(tmp_path / "db.sqlite3"),
        "PORTAL_SESSION_COOKIES_0_DOMAIN": "example.com",
        "PORTAL_SESSION_COOKIES_0_AUTHELIA_URL": "https://auth.example.com",
    }
    config, warnings = read_config([authelia / "config.template.yml"], environ)

    assert config.identity_validation.reset_password.jwt_secret.get_secret_value() == JWT_SECRET
    assert config.session.secret is not None
    assert config.session.secret.get_secret_value() == "insecure_session_secret"
    assert warnings == []


def test_authelias_standalone_suite_loads_and_warns_once_per_unsupported_key(
    standalone_suite: Path, certs: dict[str, str]
) -> None:
    config, warnings = read_config([standalone_suite], ENVIRON | certs)

    assert config.authentication_backend.file is not None
    assert config.authentication_backend.file.path == Path("/config/users.yml")
    assert config.notifier.smtp is not None
    assert str(config.notifier.smtp.address) == "smtp://mail.example.com:1025"
    assert config.regulation.find_time == timedelta(minutes=5)
    assert config.session.cookies[0].remember_me == timedelta(days=365)
    assert config.password_policy.standard.require_special is True
    start = config.server.endpoints.rate_limits.reset_password_start.buckets
    assert [(b.period.total_seconds(), b.requests) for b in start] == [(120, 20)]
    for key in ("ntp", "server.tls"):
        assert sum(w.startswith(f"{key}:") for w in warnings) == 1, key
    # Issue 18: `telemetry` is read now, not warned about.
    assert not any(w.startswith("telemetry") for w in warnings)
    assert config.telemetry.metrics.enabled is True
    # Issue 16: `webauthn` is read now; only its metadata service is warned about.
    assert not any(w.startswith("webauthn:") for w in warnings)
    # Issue 15: `totp` is read now, not warned about.
    assert not any(w.startswith("totp") for w in warnings)
    assert config.totp.issuer == "example.com"
    assert config.totp.disable_reuse_security_policy is True
    assert config.theme == "auto"  # Authelia's key, read (issue 12)
    # Authelia's key, read (issue 12): the suite names /certs/, overridden by the variable.
    assert str(config.certificates_directory) == certs["PORTAL_CERTIFICATES_DIRECTORY"]
    assert not any(w.startswith("certificates_directory") for w in warnings)
    assert not any(w.startswith("theme:") for w in warnings)
    # Authelia's key, read (issue 15): no longer warned about.
    assert not any(w.startswith("server.endpoints.rate_limits.session_") for w in warnings)


def test_authelias_ldap_suite_loads_with_its_ldap_block(
    ldap_suite: Path, certs: dict[str, str]
) -> None:
    config, warnings = read_config([ldap_suite], ENVIRON | certs)

    ldap = config.authentication_backend.ldap
    assert ldap is not None
    assert str(ldap.address) == "ldaps://openldap:636"
    assert ldap.pooling.enable and ldap.pooling.count == 4
    assert ldap.tls.skip_verify is True
    assert ldap.attributes.username == "uid"
    assert ldap.users_filter is not None and "{mail_attribute}={input}" in ldap.users_filter
    assert config.session.cookies[0].default_redirection_url == "https://home.example.com:8080/"
    # Issue 15: the suite's `totp` block is read now, not warned about.
    assert not any(w.startswith("totp") for w in warnings)
    assert config.totp.issuer == "example.com"


def test_authelias_short_ldap_suite_secret_is_refused_without_an_override(
    ldap_suite: Path, certs: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        read_config([ldap_suite], certs)
    assert caught.value.problems == [
        "identity_validation.reset_password.jwt_secret: must be at least 32 characters "
        "(generate one: portal crypto rand)"
    ]


def test_authelias_access_control_rules_load_with_two_factor_honoured_and_no_warning(
    standalone_suite: Path, certs: dict[str, str]
) -> None:
    config, warnings = read_config([standalone_suite], ENVIRON | certs)
    rules = config.access_control.rules
    assert config.access_control.default_policy == "deny"
    assert rules[0].domain == ("home.example.com", "public.example.com")
    assert (rules[1].policy, rules[1].methods) == ("bypass", ("OPTIONS",))
    assert (rules[3].policy, rules[4].policy) == ("two_factor", "two_factor")
    assert [w for w in warnings if "two_factor" in w or w.startswith("access_control")] == []


@pytest.mark.parametrize(("url", "method", "user", "expected"), STANDALONE_DECISIONS)
def test_authelias_standalone_rules_give_the_suites_decisions(
    standalone_suite: Path,
    url: str,
    method: str,
    user: User | None,
    expected: Decision,
    certs: dict[str, str],
) -> None:
    config, _ = read_config([standalone_suite], ENVIRON | certs)
    decision = AccessControl(config.access_control).decide(target(url, method=method), user)
    assert decision == expected


def test_validate_config_accepts_authelias_standalone_suite_and_lists_what_it_ignores(
    standalone_suite: Path, tmp_path: Path, users_file: Path, certs: dict[str, str]
) -> None:
    result = run_portal(
        "validate-config",
        "--config",
        str(standalone_suite),
        env={
            "AUTHELIA_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET,
            # The suite's files live in its containers; validate-config checks they exist.
            "PORTAL_AUTHENTICATION_BACKEND_FILE_PATH": str(users_file),
            "PORTAL_STORAGE_LOCAL_PATH": str(tmp_path / "db.sqlite3"),
            **certs,
        },
    )
    assert result.returncode == 0, result.stderr
    assert not any(line.startswith("warning: webauthn:") for line in result.stderr.splitlines())
    assert not any("totp" in line for line in result.stderr.splitlines())
