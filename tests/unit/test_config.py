"""The configuration: Authelia's shape, environment overrides, and errors that name their path."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from portal.config import ExactlyOneOf, load_config, parse_duration, read_config
from portal.errors import ConfigError
from tests.conftest import ENCRYPTION_KEY, FIXTURES, JWT_SECRET, REPO, deep_merge, minimal_raw


def write_yaml(path: Path, data: Any) -> Path:
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(data, handle)
    return path


def problems_of(paths: list[Path], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        read_config(paths, environ or {})
    return caught.value.problems


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "configuration.yml", minimal_raw(tmp_path))


def with_changes(tmp_path: Path, **changes: Any) -> Path:
    return write_yaml(tmp_path / "configuration.yml", deep_merge(minimal_raw(tmp_path), changes))


# --- good configurations ----------------------------------------------------------------------


def test_minimal_configuration_gets_authelias_defaults(config_file: Path) -> None:
    config, warnings = read_config([config_file], {})

    assert warnings == []
    reset = config.identity_validation.reset_password
    assert reset.jwt_lifespan == timedelta(minutes=5)
    assert reset.jwt_algorithm == "HS256"
    start = config.server.endpoints.rate_limits.reset_password_start.buckets
    assert [(b.period.total_seconds(), b.requests) for b in start] == [
        (600, 5),
        (900, 10),
        (1800, 15),
    ]
    finish = config.server.endpoints.rate_limits.reset_password_finish.buckets
    assert [(b.period.total_seconds(), b.requests) for b in finish] == [(60, 10), (120, 15)]
    assert config.authentication_backend.file is not None
    argon2 = config.authentication_backend.file.password.argon2
    assert (argon2.variant, argon2.memory, argon2.iterations, argon2.parallelism) == (
        "argon2id",
        65536,
        3,
        4,
    )
    assert config.regulation.max_retries == 3
    assert config.regulation.find_time == timedelta(minutes=2)
    assert config.regulation.ban_time == timedelta(minutes=5)
    assert config.portal_url == "https://auth.example.com"


def test_the_configuration_is_frozen(config_file: Path) -> None:
    config, _ = read_config([config_file], {})
    with pytest.raises(ValueError, match="frozen"):
        config.log.level = "debug"  # type: ignore[misc]  # the write the frozen model refuses


def test_the_embedded_default_configuration_loads_with_secrets_from_the_environment() -> None:
    environ = {
        "PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET,
        "PORTAL_STORAGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
    }
    config, warnings = read_config([REPO / "config" / "configuration.yml"], environ)

    assert warnings == []
    assert config.portal_url == "http://127.0.0.1:9091"
    assert str(config.server.address) == "tcp://127.0.0.1:9091"
    assert config.notifier.filesystem is not None
    assert config.notifier.filesystem.filename == Path("var/notification.txt")
    assert config.storage.local is not None
    assert config.storage.local.path == Path("var/db.sqlite3")


def test_cookie_values_not_set_are_inherited_from_the_session_section(tmp_path: Path) -> None:
    path = with_changes(
        tmp_path,
        session={
            "name": "shared",
            "expiration": "2h",
            "cookies": [
                {"domain": "example.com", "authelia_url": "https://auth.example.com"},
                {
                    "domain": "example.org",
                    "authelia_url": "https://login.example.org",
                    "name": "own",
                    "same_site": "strict",
                },
            ],
        },
    )
    config, _ = read_config([path], {})

    first, second = config.session.cookies
    assert (first.name, first.expiration, first.same_site) == ("shared", timedelta(hours=2), "lax")
    assert (second.name, second.same_site) == ("own", "strict")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30),
        ("45", 45),
        ("90s", 90),
        ("5 minutes", 300),
        ("1h30m", 5400),
        ("2 days", 172800),
        ("1 week", 604800),
        ("1M", 2592000),
        ("1y", 31536000),
        ("1 hour 5 minutes", 3900),
        ("250ms", 0.25),
    ],
)
def test_durations_are_read_as_authelia_writes_them(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


# Authelia's duration notation (docs: configuration/prologue/common, "Duration"; grammar:
# internal/utils/time.go ParseDurationString, examples: internal/utils/time_test.go): blocks of a
# whole quantity and a unit; spaces, leading zeros and the word 'and' are ignored; an integer is
# seconds; the empty string is zero; Go's own units (ns, us, µs, μs, ms, s, m, h) pass through.
S, MIN, H, D = 1, 60, 3600, 86400
AUTHELIA_UNITS = [  # the documentation's unit legend: short unit, long unit, its plural
    (["ms", "millisecond", "milliseconds"], 0.001),
    (["s", "second", "seconds"], S),
    (["m", "minute", "minutes"], MIN),
    (["h", "hour", "hours"], H),
    (["d", "day", "days"], D),
    (["w", "week", "weeks"], 7 * D),
    (["M", "month", "months"], 30 * D),
    (["y", "year", "years"], 365 * D),
]
AUTHELIA_UNIT_FORMS = [
    (f"{written}{space}{unit}", quantity * size)
    for units, size in AUTHELIA_UNITS
    for unit in units
    for quantity in (1, 5, 20)
    for written in (str(quantity), f"000{quantity}")  # leading zeros are ignored
    for space in (" ", "")
]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # The documentation's examples table: 1 hour and 30 minutes, 1 day, 10 hours.
        ("90m", 5400),
        ("1h30m", 5400),
        ("5400", 5400),
        ("5400s", 5400),
        ("1 hour and 30 minutes", 5400),
        ("1d", D),
        ("24h", D),
        ("86400", D),
        ("86400s", D),
        ("1 day", D),
        ("10h", 10 * H),
        ("600m", 10 * H),
        ("9h60m", 10 * H),
        ("36000", 10 * H),
        ("10 hours", 10 * H),
        # Authelia's own tests of the grammar.
        ("1d3w10ms", D + 21 * D + 0.01),
        ("1d4d2d", 7 * D),
        ("1d 1h 20m", D + H + 20 * MIN),
        ("1 hour and 20 minutes", H + 20 * MIN),
        ("1 hour    and 20 minutes", H + 20 * MIN),
        ("100", 100),
        ("", 0),
        (100, 100),
        # Go's time.ParseDuration units, which Authelia passes through.
        ("1500ms", 1.5),
        ("2000000us", 2),
        ("2000000µs", 2),
        ("2000000μs", 2),
        ("3000000000ns", 3),
        *AUTHELIA_UNIT_FORMS,
    ],
)
def test_every_duration_form_authelia_accepts_is_accepted(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    # Authelia refuses these too. (Its regular expression skips what it cannot read, so it takes
    # '1h30' as one hour and '-5m' as five minutes; the portal refuses those rather than guess.)
    [
        "soon",
        "5 parsecs",
        "m5",
        "-5",
        True,
        "5 minutes ago",
        "h1",
        "10x",
        "10abcxyz",
        "and",
        "5 and",
        "1h30",
        "-5m",
    ],
)
def test_a_bad_duration_is_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("tcp://:9091", "tcp://:9091"),
        ("tcp://0.0.0.0:8080", "tcp://0.0.0.0:8080"),
        ("tcp://[::1]:9091", "tcp://[::1]:9091"),
        ("127.0.0.1:9000", "tcp://127.0.0.1:9000"),
        ("unix:///run/portal.sock", "unix:///run/portal.sock"),
        ("/run/portal.sock", "unix:///run/portal.sock"),  # Authelia: a bare path is a socket
    ],
)
def test_server_addresses(tmp_path: Path, address: str, shown: str) -> None:
    config, _ = read_config([with_changes(tmp_path, server={"address": address})], {})
    assert str(config.server.address) == shown


# --- Authelia-shaped files (tests/fixtures; tests/compat reads Authelia's own) -------------------

FILE_CONFIG = FIXTURES / "configuration.yml"
LDAP_CONFIG = FIXTURES / "configuration-ldap.yml"


def test_an_authelia_configuration_loads_and_warns_once_per_unsupported_key() -> None:
    environ = {"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET}
    config, warnings = read_config([FILE_CONFIG], environ)

    assert config.authentication_backend.file is not None
    assert config.authentication_backend.file.path == Path("/config/users_database.yml")
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
    # Issue 16: `webauthn` is read now, not warned about.
    assert not any(w.startswith("webauthn") for w in warnings)
    assert config.webauthn_display_name == "Example"
    # Issue 15: `totp` is read now, not warned about.
    assert not any(w.startswith("totp") for w in warnings)
    assert config.totp.issuer == "example.com"
    assert config.theme == "dark"  # Authelia's key, read (issue 12)
    assert not any(w.startswith("theme:") for w in warnings)
    # Authelia's key, read (issue 15): the elevation's start limit as the file sets it.
    elevation_start, _ = config.session_elevation_limits()
    assert [(b.period.total_seconds(), b.requests) for b in elevation_start.buckets] == [(60, 10)]
    assert not any(w.startswith("server.endpoints.rate_limits.session_") for w in warnings)


def test_an_authelia_ldap_configuration_loads_with_its_ldap_block() -> None:
    environ = {"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET}
    config, warnings = read_config([LDAP_CONFIG], environ)

    ldap = config.authentication_backend.ldap
    assert ldap is not None
    assert str(ldap.address) == "ldaps://openldap:636"
    assert ldap.pooling.enable and ldap.pooling.count == 4
    assert ldap.tls.skip_verify is True
    assert ldap.attributes.username == "uid"
    assert ldap.users_filter is not None and "{mail_attribute}={input}" in ldap.users_filter
    assert config.session.cookies[0].default_redirection_url == "https://home.example.com:8080/"
    assert warnings == []  # webauthn is read since issue 16
    assert config.webauthn.display_name == "Example"
    assert config.totp.issuer == "example.com"


LDAP_SECTION = {
    "address": "ldap://127.0.0.1:1",  # never contacted
    "base_dn": "dc=example,dc=com",
    "user": "cn=portal,dc=example,dc=com",
    "password": "service-password",
}


def test_loading_fills_ldap_keys_from_the_implementation(tmp_path: Path) -> None:
    ldap = {
        **LDAP_SECTION,
        "implementation": "lldap",
        "additional_groups_dn": "",  # empty means "not set", as in Authelia
        "attributes": {"display_name": "", "mail": "email"},
    }
    path = with_changes(tmp_path, authentication_backend={"file": None, "ldap": ldap})
    config, _ = read_config([path], {})
    loaded = config.authentication_backend.ldap
    assert loaded is not None
    assert loaded.users_filter == (
        "(&(|({username_attribute}={input})({mail_attribute}={input}))(objectClass=person))"
    )
    assert loaded.groups_filter == "(&(member={dn})(objectClass=groupOfUniqueNames))"
    assert (loaded.additional_users_dn, loaded.additional_groups_dn) == ("OU=people", "OU=groups")
    attributes = loaded.attributes
    assert (attributes.username, attributes.display_name, attributes.mail) == ("uid", "cn", "email")
    assert (attributes.member_of, attributes.group_name) == ("memberOf", "cn")
    assert attributes.distinguished_name is None


def test_what_an_ldap_implementation_leaves_missing_is_refused_naming_each_key(
    tmp_path: Path,
) -> None:
    ldap = {
        **LDAP_SECTION,
        "base_dn": "",
        "users_filter": "(uid=x)",
        "group_search_mode": "memberof",
        "groups_filter": "(|{memberof:dn})",
        "attributes": {"distinguished_name": "", "member_of": ""},
    }
    path = with_changes(tmp_path, authentication_backend={"file": None, "ldap": ldap})
    assert problems_of([path]) == [
        "authentication_backend.ldap.base_dn: is required",
        "authentication_backend.ldap.users_filter: must contain the {input} placeholder",
        "authentication_backend.ldap.attributes.distinguished_name: is required when "
        "groups_filter uses {memberof:dn} (OpenLDAP: entryDN; Active Directory: "
        "distinguishedName)",
        "authentication_backend.ldap.attributes.member_of: is required when groups_filter uses "
        "{memberof:rdn} or {memberof:dn}",
    ]


def test_authelia_access_control_rules_load_and_two_factor_no_longer_warns() -> None:
    environ = {"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET}
    config, warnings = read_config([FILE_CONFIG], environ)
    rules = config.access_control.rules
    assert config.access_control.default_policy == "deny"
    assert rules[0].domain == ("home.example.com", "public.example.com")
    assert (rules[1].policy, rules[1].methods) == ("bypass", ("OPTIONS",))
    assert (rules[3].policy, rules[4].policy) == ("two_factor", "two_factor")
    assert [w for w in warnings if "two_factor" in w or w.startswith("access_control")] == []


def test_two_factor_with_every_second_factor_disabled_is_warned_of(tmp_path: Path) -> None:
    rules = [{"domain": "secure.example.com", "policy": "two_factor"}]
    off = {"disable": True}
    path = with_changes(tmp_path, access_control={"rules": rules}, totp=off, webauthn=off)
    _, warnings = read_config([path], {})
    assert warnings == [
        "access_control asks for two_factor but every second-factor method is disabled "
        "(totp.disable, webauthn.disable): nobody can reach those resources"
    ]
    # Passkeys alone are a second factor.
    path = with_changes(tmp_path, access_control={"rules": rules}, totp=off)
    assert read_config([path], {})[1] == []
    _, enabled = read_config([with_changes(tmp_path, access_control={"rules": rules})], {})
    assert enabled == []


def test_access_control_subjects_keep_authelias_or_of_ands(tmp_path: Path) -> None:
    rules = [
        {"domain": "a.example.com", "policy": "one_factor", "subject": "user:john"},
        {
            "domain": "b.example.com",
            "policy": "one_factor",
            "subject": ["group:admins", ["group:dev", "user:bob"]],
            "networks": ["10.0.0.0/8"],
            "resources": ["^/api/"],
            "methods": ["get", "POST"],
        },
    ]
    config, _ = read_config([with_changes(tmp_path, access_control={"rules": rules})], {})
    first, second = config.access_control.rules
    assert first.subject == (("user:john",),)
    assert second.subject == (("group:admins",), ("group:dev", "user:bob"))
    assert second.methods == ("GET", "POST")
    assert [str(n) for n in second.networks] == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"policy": "bypass"}, "access_control.rules[0]: a rule needs 'domain' or 'domain_regex'"),
        (
            {"domain": "x.example.com", "policy": "allow"},
            "access_control.rules[0].policy: must be 'bypass', 'one_factor', 'two_factor' or "
            "'deny'",
        ),
        (
            {"domain": "x.example.com", "policy": "deny", "subject": "john"},
            "access_control.rules[0].subject: 'john' must be 'user:<name>' or 'group:<name>'",
        ),
        (
            {"domain": "x.example.com", "policy": "deny", "resources": ["^/(unclosed"]},
            "access_control.rules[0].resources[0]: '^/(unclosed' is not a regular expression in "
            "RE2 syntax (Go's, as Authelia): missing ): ^/(unclosed",
        ),
        (
            {"domain": "x.example.com", "policy": "deny", "networks": ["internal"]},
            "access_control.rules[0].networks: must be CIDR networks (named networks from "
            "'definitions' are not supported): 'internal' does not appear to be an IPv4 or IPv6 "
            "network",
        ),
    ],
)
def test_a_bad_access_control_rule_names_its_path(
    tmp_path: Path, rule: dict[str, Any], problem: str
) -> None:
    path = with_changes(tmp_path, access_control={"rules": [rule]})
    assert problems_of([path]) == [problem]


RE2 = "is not a regular expression in RE2 syntax (Go's, as Authelia)"


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (
            {"domain": "x.example.com", "resources": ["^/ok$", "^/(?=x)"]},
            rf"access_control.rules[0].resources[1]: '^/(?=x)' {RE2}: invalid perl operator: (?=",
        ),
        (
            {"domain": "x.example.com", "resources": [r"^/(a)\1$"]},
            rf"access_control.rules[0].resources[0]: '^/(a)\\1$' {RE2}: invalid escape "
            r"sequence: \1",
        ),
        (
            {"domain_regex": r"^(?<!www\.)example\.com$"},
            rf"access_control.rules[0].domain_regex[0]: '^(?<!www\\.)example\\.com$' {RE2}: "
            r"invalid perl operator: (?<!",
        ),
        (
            {"domain_regex": r"^x\.example\.com\Z"},
            rf"access_control.rules[0].domain_regex[0]: '^x\\.example\\.com\\Z' {RE2}: invalid "
            r"escape sequence: \Z (Go ends the text with \z)",
        ),
        (
            {"domain": "x.example.com", "resources": [r"^/\C"]},
            rf"access_control.rules[0].resources[0]: '^/\\C' {RE2}: \C (any byte) is not in Go's "
            "syntax",
        ),
        (
            {"domain": "x.example.com", "resources": [r"^/(?P<Usér>\w+)"]},
            rf"access_control.rules[0].resources[0]: '^/(?P<Usér>\\w+)' {RE2}: invalid named "
            "capture 'Usér' (Go allows letters, digits and '_')",
        ),
    ],
)
def test_a_pattern_go_regexp_would_refuse_is_refused_at_start_up_naming_its_path(
    tmp_path: Path, rule: dict[str, Any], problem: str
) -> None:
    path = with_changes(tmp_path, access_control={"rules": [{**rule, "policy": "bypass"}]})

    assert problems_of([path]) == [problem]


def test_every_bad_pattern_is_reported_at_once(tmp_path: Path) -> None:
    rules = [
        {"domain": "x.example.com", "resources": ["(?=a)", "^/fine$", r"(b)\1"], "policy": "deny"},
        {"domain_regex": ["^fine$", "(?!c)"], "policy": "bypass"},
    ]
    path = with_changes(tmp_path, access_control={"rules": rules})

    assert [p.split(":")[0] for p in problems_of([path])] == [
        "access_control.rules[0].resources[0]",
        "access_control.rules[0].resources[2]",
        "access_control.rules[1].domain_regex[1]",
    ]


def test_go_only_syntax_loads(tmp_path: Path) -> None:
    rules = [
        {
            "domain_regex": [r"^(?<User>\w+)\.example\.com\z", r"^(?P<Group>\w+)-(?P<Group>\w+)$"],
            "resources": [r"^/\Q(literal)\C\E$", r"^/[[:alpha:]]+\pL*$"],
            "policy": "one_factor",
        }
    ]
    config, _ = read_config([with_changes(tmp_path, access_control={"rules": rules})], {})

    assert config.access_control.rules[0].domain_regex == tuple(rules[0]["domain_regex"])


def test_a_short_jwt_secret_in_the_file_is_refused_without_an_override() -> None:
    problems = problems_of([LDAP_CONFIG])
    assert problems == [
        "identity_validation.reset_password.jwt_secret: must be at least 32 characters "
        "(generate one: portal crypto rand)"
    ]


# --- bad configurations ----------------------------------------------------------------------


def test_every_error_is_reported_at_once_each_naming_its_path(tmp_path: Path) -> None:
    path = with_changes(
        tmp_path,
        identity_validation={"reset_password": {"jwt_secret": "short", "jwt_algorithm": "RS256"}},
        server={"address": "http://:9091"},
        log={"level": "loud"},
        regulation={"find_time": "a while"},
    )
    problems = problems_of([path])

    assert (
        "identity_validation.reset_password.jwt_secret: must be at least 32 characters "
        "(generate one: portal crypto rand)" in problems
    )
    assert (
        "identity_validation.reset_password.jwt_algorithm: must be 'HS256', 'HS384' or "
        "'HS512'" in problems
    )
    assert any(p.startswith("server.address: scheme 'http' is not supported") for p in problems)
    assert any(p.startswith("log.level: must be") for p in problems)
    assert any(p.startswith("regulation.find_time: 'a while' is not a duration") for p in problems)
    assert len(problems) == 5


def test_missing_required_sections_are_named(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yml", {"log": {"level": "info"}})
    problems = problems_of([path])
    assert sorted(problems) == [
        "authentication_backend: option is required",
        "identity_validation: option is required",
        "notifier: option is required",
        "session: option is required",
        "storage: option is required",
    ]


@pytest.mark.parametrize(
    ("section", "value", "problem"),
    [
        ("authentication_backend", {}, "configure exactly one of 'file' or 'ldap'"),
        ("notifier", {}, "configure exactly one of 'smtp' or 'filesystem'"),
        (
            "storage",
            {"encryption_key": ENCRYPTION_KEY},
            "configure exactly one of 'local' or 'postgres'",
        ),
        (
            "storage",
            {
                "encryption_key": ENCRYPTION_KEY,
                "local": {"path": "/tmp/db.sqlite3"},  # noqa: S108
                "postgres": {"address": "tcp://127.0.0.1"},
            },
            "configure exactly one of 'local' or 'postgres'",
        ),
    ],
)
def test_a_section_takes_exactly_one_of_its_alternatives(
    tmp_path: Path, section: str, value: dict[str, Any], problem: str
) -> None:
    raw = minimal_raw(tmp_path)
    raw[section] = value
    assert problems_of([write_yaml(tmp_path / "c.yml", raw)]) == [f"{section}: {problem}"]


def test_the_exactly_one_check_names_every_alternative() -> None:
    class Backends(ExactlyOneOf):
        one_of = ("local", "postgres", "mysql")

        local: str | None = None
        postgres: str | None = None
        mysql: str | None = None

    assert Backends(mysql="db").mysql == "db"
    for given in ({}, {"local": "a", "mysql": "b"}):
        with pytest.raises(ValidationError, match="exactly one of 'local', 'postgres' or 'mysql'"):
            Backends(**given)


def test_a_key_neither_authelia_nor_the_portal_knows_is_an_error(tmp_path: Path) -> None:
    path = with_changes(tmp_path, server={"adress": "tcp://:1"}, colour="blue")
    problems = problems_of([path])
    assert sorted(problems) == [
        "colour: unknown option (check the spelling and the indentation)",
        "server.adress: unknown option (check the spelling and the indentation)",
    ]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"authentication_backend": {"ldap": {"address": "ldap://127.0.0.1"}}},
            "authentication_backend: configure exactly one of 'file' or 'ldap'",
        ),
        (
            {"notifier": {"smtp": {"address": "smtp://127.0.0.1", "sender": "a@b.c"}}},
            "notifier: configure exactly one of 'smtp' or 'filesystem'",
        ),
        (
            {
                "session": {
                    "cookies": [
                        {"domain": "example.com", "authelia_url": "http://auth.example.com"}
                    ]
                }
            },
            "session.cookies[0].authelia_url: must use https (plain http is only allowed for a "
            "loopback host)",
        ),
        (
            {
                "session": {
                    "cookies": [{"domain": "example.com", "authelia_url": "https://auth.evil.com"}]
                }
            },
            "session.cookies[0]: authelia_url must be on the domain 'example.com' or below it",
        ),
        (
            {"session": {"cookies": []}},
            "session.cookies: list at least one cookie domain with its authelia_url",
        ),
        (
            {"storage": {"encryption_key": "too-short"}},
            "storage.encryption_key: must be at least 20 characters (generate one: portal crypto "
            "rand)",
        ),
        (
            {"server": {"trusted_proxies": ["10.0.0.0/8", "not-a-network"]}},
            "server.trusted_proxies: must be a list of CIDR networks: 'not-a-network' does not "
            "appear to be an IPv4 or IPv6 network",
        ),
        (
            {"identity_validation": {"reset_password": {"jwt_lifespan": "2 days"}}},
            "identity_validation.reset_password.jwt_lifespan: must be at most 1 day (reset links "
            "should be short-lived)",
        ),
    ],
)
def test_semantic_errors_name_their_path(
    tmp_path: Path, changes: dict[str, Any], problem: str
) -> None:
    assert problems_of([with_changes(tmp_path, **changes)]) == [problem]


# --- notifier.smtp.sender ----------------------------------------------------------------------

SENDER_PROBLEM = (
    "notifier.smtp.sender: must be one email address such as 'Portal <portal@example.com>'; "
    "quote a display name holding a comma or another special character: "
    "'\"Doe, John\" <portal@example.com>'"
)


def with_sender(tmp_path: Path, sender: str) -> Path:
    raw = minimal_raw(tmp_path)
    raw["notifier"] = {"smtp": {"address": "submission://mail.example.com", "sender": sender}}
    return write_yaml(tmp_path / "configuration.yml", raw)


@pytest.mark.parametrize(
    ("sender", "header", "envelope"),
    [
        ("portal@example.com", "portal@example.com", "portal@example.com"),
        ("<portal@example.com>", "portal@example.com", "portal@example.com"),
        ("Portal <portal@example.com>", "Portal <portal@example.com>", "portal@example.com"),
        (
            '"Doe, John" <portal@example.com>',
            '"Doe, John" <portal@example.com>',
            "portal@example.com",
        ),
        ("Jöhn Doe <portal@example.com>", "Jöhn Doe <portal@example.com>", "portal@example.com"),
        ('"J. Doe" <portal@example.com>', '"J. Doe" <portal@example.com>', "portal@example.com"),
        ("Portal <portal@example.com> (bot)", "Portal <portal@example.com>", "portal@example.com"),
        ("  Portal <portal@example.com>  ", "Portal <portal@example.com>", "portal@example.com"),
    ],
)
def test_the_sender_is_read_once_as_an_rfc_5322_address(
    tmp_path: Path, sender: str, header: str, envelope: str
) -> None:
    config, _ = read_config([with_sender(tmp_path, sender)], {})

    assert config.notifier.smtp is not None
    assert str(config.notifier.smtp.sender) == header
    assert config.notifier.smtp.sender.addr_spec == envelope


@pytest.mark.parametrize(
    "sender",
    [
        "Doe, John <portal@example.com>",  # the comma splits it in two: 'Doe' and 'John <...>'
        "J. Doe <portal@example.com>",  # '.' is special too: only obsolete syntax allows it
        "portal@example.com, other@example.com",
        '"Doe, John" <portal@example.com>, other@example.com',
        "portal",
        "portal@",
        "@example.com",
        "Portal <portal@example.com",
        "Portal <@example.com>",
        "Portal portal@example.com",
        "Portal <portal@example.com>\r\nBcc: everyone@example.com",
        "Undisclosed: portal@example.com;",
        "",
    ],
)
def test_a_sender_that_is_not_one_address_is_refused_saying_how_to_quote(
    tmp_path: Path, sender: str
) -> None:
    assert problems_of([with_sender(tmp_path, sender)]) == [SENDER_PROBLEM]


def test_the_secret_must_be_as_long_as_the_hash_for_hs384_and_hs512(tmp_path: Path) -> None:
    reset = {"jwt_secret": "s" * 48, "jwt_algorithm": "HS512"}
    path = with_changes(tmp_path, identity_validation={"reset_password": reset})
    assert problems_of([path]) == [
        "identity_validation.reset_password: jwt_secret must be at least 64 bytes for HS512"
    ]
    reset["jwt_algorithm"] = "HS384"
    path = with_changes(tmp_path, identity_validation={"reset_password": reset})
    config, _ = read_config([path], {})
    assert config.identity_validation.reset_password.jwt_algorithm == "HS384"


def test_plain_http_is_allowed_for_a_loopback_portal(tmp_path: Path) -> None:
    cookies = [{"domain": "localhost", "authelia_url": "http://localhost:9091/"}]
    config, _ = read_config([with_changes(tmp_path, session={"cookies": cookies})], {})
    assert config.portal_url == "http://localhost:9091"


def test_the_error_never_echoes_a_secret(tmp_path: Path) -> None:
    secret = "hunter2-but-too-short"
    path = with_changes(tmp_path, identity_validation={"reset_password": {"jwt_secret": secret}})
    assert all(secret not in problem for problem in problems_of([path]))


def test_a_yaml_syntax_error_is_the_only_problem_with_its_line_and_column(tmp_path: Path) -> None:
    # Issue 12: the error came over several lines, then five consequential 'option is required'.
    broken = tmp_path / "broken.yml"
    broken.write_text("server:\n  address: 'tcp://:9091'\nlog: [unclosed\n")
    assert problems_of([broken]) == [
        f"{broken}: not valid YAML: expected ',' or ']', but got '<stream end>' (line 4, column 1)"
    ]


def test_a_missing_configuration_file_is_the_only_problem(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    assert problems_of([missing]) == [
        f"{missing}: cannot read the configuration file: No such file or directory"
    ]


def test_a_broken_file_among_several_is_the_only_problem(tmp_path: Path) -> None:
    good = write_yaml(tmp_path / "good.yml", {"log": {"level": "debug"}})
    broken = tmp_path / "broken.yml"
    broken.write_text("storage:\n\tlocal: {}\n")
    [problem] = problems_of([good, broken])
    assert problem.startswith(f"{broken}: not valid YAML: ")
    assert "(line 2, column 1)" in problem


def test_a_configuration_that_is_not_a_mapping_is_reported(tmp_path: Path) -> None:
    a_list = write_yaml(tmp_path / "list.yml", ["server"])
    assert problems_of([a_list]) == [f"{a_list}: the configuration must be a mapping of sections"]


def test_several_files_merge_later_ones_winning(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yml", minimal_raw(tmp_path))
    extra = write_yaml(tmp_path / "extra.yml", {"log": {"level": "debug"}})
    config, _ = read_config([base, extra], {})
    assert config.log.level == "debug"
    assert config.authentication_backend.file is not None


# --- the environment -------------------------------------------------------------------------


def test_environment_overrides_the_file(config_file: Path) -> None:
    environ = {
        "PORTAL_LOG_LEVEL": "debug",
        "PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_LIFESPAN": "10 minutes",
        "PORTAL_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
        "PORTAL_AUTHENTICATION_BACKEND_FILE_SEARCH_EMAIL": "true",
        "PORTAL_SESSION_COOKIES_0_AUTHELIA_URL": "https://login.example.com",
    }
    config, warnings = read_config([config_file], environ)

    assert warnings == []
    assert config.log.level == "debug"
    assert config.identity_validation.reset_password.jwt_lifespan == timedelta(minutes=10)
    assert [str(n) for n in config.server.trusted_proxies] == ["10.0.0.0/8", "192.168.1.1/32"]
    assert config.authentication_backend.file is not None
    assert config.authentication_backend.file.search.email is True
    assert config.portal_url == "https://login.example.com"


def test_portal_prefix_wins_over_authelia_prefix(config_file: Path) -> None:
    environ = {"AUTHELIA_LOG_LEVEL": "error", "PORTAL_LOG_LEVEL": "debug"}
    config, _ = read_config([config_file], environ)
    assert config.log.level == "debug"


def test_authelia_prefix_alone_is_accepted(config_file: Path) -> None:
    config, _ = read_config([config_file], {"AUTHELIA_LOG_FORMAT": "json"})
    assert config.log.format == "json"


def test_secrets_are_read_from_files(tmp_path: Path) -> None:
    raw = minimal_raw(tmp_path)
    del raw["identity_validation"]["reset_password"]["jwt_secret"]
    del raw["storage"]["encryption_key"]
    path = write_yaml(tmp_path / "c.yml", raw)
    jwt_file = tmp_path / "jwt"
    jwt_file.write_text("k" * 64 + "\n")
    key_file = tmp_path / "key"
    key_file.write_text("s" * 30)
    environ = {
        "PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE": str(jwt_file),
        "AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE": str(key_file),
    }
    config, _ = read_config([path], environ)

    assert config.identity_validation.reset_password.jwt_secret.get_secret_value() == "k" * 64
    assert config.storage.encryption_key.get_secret_value() == "s" * 30


def test_an_unreadable_secret_file_is_the_only_problem(tmp_path: Path) -> None:
    # Issue 12: 'jwt_secret: option is required' used to follow, though the file was the cause.
    raw = minimal_raw(tmp_path)
    del raw["identity_validation"]["reset_password"]["jwt_secret"]
    path = write_yaml(tmp_path / "c.yml", raw)
    nope = tmp_path / "nope"
    environ = {"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE": str(nope)}
    assert problems_of([path], environ) == [
        "identity_validation.reset_password.jwt_secret: cannot read the file "
        f"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE names ({nope}): No such file "
        "or directory"
    ]


def test_an_unreadable_file_for_a_secret_a_rule_needs_is_the_only_problem(tmp_path: Path) -> None:
    # The CAPTCHA vendor needs secret_key: that must not be reported as a second problem.
    path = with_changes(tmp_path, captcha={"provider": "turnstile", "site_key": "0x4AAA"})
    nope = tmp_path / "nope"
    problems = problems_of([path], {"PORTAL_CAPTCHA_SECRET_KEY_FILE": str(nope)})
    assert problems == [
        f"captcha.secret_key: cannot read the file PORTAL_CAPTCHA_SECRET_KEY_FILE names ({nope}): "
        "No such file or directory"
    ]


def test_file_variant_only_exists_for_secrets(config_file: Path, tmp_path: Path) -> None:
    level = tmp_path / "level"
    level.write_text("debug")
    config, warnings = read_config([config_file], {"PORTAL_LOG_LEVEL_FILE": str(level)})
    assert config.log.level == "info"
    assert warnings == ["environment variable PORTAL_LOG_LEVEL_FILE matches no configuration key"]


# Every key that takes a _FILE variable (README, "Secrets from files").
SECRET_KEYS = [
    "identity_validation.reset_password.jwt_secret",
    "session.secret",
    "storage.encryption_key",
    "storage.postgres.password",
    "storage.postgres.tls.private_key",
    "notifier.smtp.password",
    "notifier.smtp.tls.private_key",
    "authentication_backend.ldap.password",
    "authentication_backend.ldap.tls.private_key",
    "captcha.altcha.hmac_key",
    "captcha.secret_key",
]


def variable(key: str, prefix: str = "PORTAL_") -> str:
    return prefix + key.replace(".", "_").upper()


def nested(key: str, value: Any) -> dict[str, Any]:
    *parents, last = key.split(".")
    tree: dict[str, Any] = {last: value}
    for part in reversed(parents):
        tree = {part: tree}
    return tree


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_a_secret_in_the_yaml_and_in_its_file_variable_is_refused_naming_both(
    tmp_path: Path, key: str
) -> None:
    # Issue 12: the file silently won. Authelia refuses it ("already defined in other
    # configuration sources"), and the README said so.
    path = write_yaml(tmp_path / "c.yml", deep_merge(minimal_raw(tmp_path), nested(key, "y" * 64)))
    secret = tmp_path / "secret"
    secret.write_text("x" * 64)
    problems = problems_of([path], {f"{variable(key)}_FILE": str(secret)})
    assert (
        f"{key}: given in {path} and in {variable(key)}_FILE; give a secret in one place only"
        in problems
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("PORTAL_STORAGE_ENCRYPTION_KEY", "PORTAL_STORAGE_ENCRYPTION_KEY_FILE"),
        ("AUTHELIA_STORAGE_ENCRYPTION_KEY", "AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE"),
        ("AUTHELIA_STORAGE_ENCRYPTION_KEY", "PORTAL_STORAGE_ENCRYPTION_KEY_FILE"),
        ("AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE", "PORTAL_STORAGE_ENCRYPTION_KEY"),
        ("AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE", "PORTAL_STORAGE_ENCRYPTION_KEY_FILE"),
        ("AUTHELIA_STORAGE_ENCRYPTION_KEY", "PORTAL_STORAGE_ENCRYPTION_KEY"),
    ],
)
def test_a_secret_from_two_variables_is_refused_naming_both(
    tmp_path: Path, first: str, second: str
) -> None:
    raw = minimal_raw(tmp_path)
    del raw["storage"]["encryption_key"]
    path = write_yaml(tmp_path / "c.yml", raw)
    secret = tmp_path / "secret"
    secret.write_text("x" * 40)
    environ = {n: str(secret) if n.endswith("_FILE") else "y" * 40 for n in (first, second)}
    assert problems_of([path], environ) == [
        f"storage.encryption_key: given in {first} and in {second}; give a secret in one place only"
    ]


def test_a_value_and_its_file_together_are_an_error(config_file: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x" * 40)
    environ = {
        "PORTAL_STORAGE_ENCRYPTION_KEY": "y" * 40,
        "PORTAL_STORAGE_ENCRYPTION_KEY_FILE": str(secret),
    }
    assert problems_of([config_file], environ) == [
        f"storage.encryption_key: given in {config_file}, in PORTAL_STORAGE_ENCRYPTION_KEY and in "
        "PORTAL_STORAGE_ENCRYPTION_KEY_FILE; give a secret in one place only"
    ]


def test_an_empty_secret_in_the_yaml_leaves_the_place_to_its_file(tmp_path: Path) -> None:
    # As Authelia: an empty value (Authelia's own templates write `password: ''`) is not a value.
    raw = deep_merge(minimal_raw(tmp_path), {"storage": {"encryption_key": ""}})
    path = write_yaml(tmp_path / "c.yml", raw)
    secret = tmp_path / "secret"
    secret.write_text("x" * 40)
    config, _ = read_config([path], {"PORTAL_STORAGE_ENCRYPTION_KEY_FILE": str(secret)})
    assert config.storage.encryption_key.get_secret_value() == "x" * 40


def test_a_plain_variable_still_overrides_a_secret_in_the_yaml(config_file: Path) -> None:
    # As for every key (and as in Authelia): only a _FILE variable must be the one source.
    config, _ = read_config([config_file], {"PORTAL_STORAGE_ENCRYPTION_KEY": "z" * 40})
    assert config.storage.encryption_key.get_secret_value() == "z" * 40


@pytest.mark.parametrize(
    "key", ["identity_validation.reset_password.jwt_secret", "storage.encryption_key"]
)
def test_a_required_secret_names_the_variables_that_can_supply_it(tmp_path: Path, key: str) -> None:
    raw = minimal_raw(tmp_path)
    *parents, last = key.split(".")
    section = raw
    for part in parents:
        section = section[part]
    del section[last]
    problems = problems_of([write_yaml(tmp_path / "c.yml", raw)])
    assert problems == [
        f"{key}: option is required: write it into a file named by {variable(key)}_FILE (or set "
        f"{variable(key)}, or write it in the configuration file); generate one with "
        "'portal crypto rand'"
    ]


def test_a_misspelt_portal_variable_is_warned_about(config_file: Path) -> None:
    _, warnings = read_config([config_file], {"PORTAL_LOG_LEVLE": "debug", "PORTAL_CONFIG": "x"})
    assert warnings == ["environment variable PORTAL_LOG_LEVLE matches no configuration key"]


def test_environment_values_are_validated_like_file_values(config_file: Path) -> None:
    problems = problems_of([config_file], {"PORTAL_REGULATION_MAX_RETRIES": "many"})
    assert problems == [
        "regulation.max_retries: must be a valid integer, unable to parse string as an integer"
    ]


def test_load_config_logs_each_warning(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    environ = {"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET}
    config = load_config([LDAP_CONFIG], environ)
    assert config.authentication_backend.ldap is not None
    assert "configuration: " not in caplog.text  # webauthn is read since issue 16
    caplog.clear()
    path = with_changes(tmp_path, webauthn={"metadata": {"enabled": True}})
    load_config([path], {})
    assert "configuration: webauthn.metadata: not supported by the portal; ignored" in caplog.text


# --- security questions -------------------------------------------------------------------------

SQ = "identity_validation.reset_password.security_questions"


def questions_config(tmp_path: Path, **settings: Any) -> Path:
    reset = {"jwt_secret": JWT_SECRET, "security_questions": settings}
    return with_changes(tmp_path, identity_validation={"reset_password": reset})


def test_security_questions_are_off_by_default_with_a_sensible_list(config_file: Path) -> None:
    config, _ = read_config([config_file], {})
    questions = config.identity_validation.reset_password.security_questions
    assert not questions.enabled
    assert (questions.setup, questions.asked, questions.without_questions) == (3, 2, "send_email")
    assert len(questions.questions) >= 8
    assert questions.failure_window == timedelta(hours=1)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {"setup": 3, "questions": ["A?", "B?"]},
            f"{SQ}: setup (3) must not exceed the number of questions (2)",
        ),
        ({"setup": 2, "asked": 3}, f"{SQ}: asked (3) must not exceed setup (2)"),
        (
            {"questions": ["Pet?", "Town?", "pet?"]},
            f"{SQ}.questions: lists the same question twice: 'pet?'",
        ),
        ({"questions": []}, f"{SQ}.questions: must list at least one question"),
        ({"asked": 0}, f"{SQ}.asked: must be greater than or equal to 1"),
        ({"without_questions": "allow"}, f"{SQ}.without_questions: must be 'send_email' or 'deny'"),
    ],
)
def test_bad_security_question_settings_name_their_path(
    tmp_path: Path, settings: dict[str, Any], problem: str
) -> None:
    assert problems_of([questions_config(tmp_path, **settings)]) == [problem]


@pytest.mark.parametrize("domain", ["co.uk", "com", "github.io", "uk", "CO.UK", "com.", "co.uk."])
def test_a_public_suffix_is_no_cookie_domain(tmp_path: Path, domain: str) -> None:
    # Issue 12: 'co.uk' was accepted, then every sign-in set Domain=co.uk, which browsers refuse.
    cookies = [{"domain": domain, "authelia_url": f"https://auth.example.{domain}"}]
    [problem] = problems_of([with_changes(tmp_path, session={"cookies": cookies})])
    assert "session.cookies[0].domain" in problem
    assert "is a public suffix" in problem


@pytest.mark.parametrize("domain", ["example.co.uk", "example.com", "home.lan", "lan", "localhost"])
def test_a_domain_under_a_public_suffix_or_a_private_name_is_a_cookie_domain(
    tmp_path: Path, domain: str
) -> None:
    scheme = "http" if domain == "localhost" else "https"
    cookies = [{"domain": domain, "authelia_url": f"{scheme}://{domain}/"}]
    config, _ = read_config([with_changes(tmp_path, session={"cookies": cookies})], {})
    assert config.session.cookies[0].domain == domain


# --- session.redis ----------------------------------------------------------------------------


def test_an_authelia_session_redis_block_loads_with_authelias_defaults(tmp_path: Path) -> None:
    path = with_changes(
        tmp_path,
        session={
            "redis": {
                "host": "redis.internal",
                "username": "authelia",
                "password": "redis-password",
                "tls": {"server_name": "myredis.example.com", "minimum_version": "TLS1.2"},
            }
        },
    )

    config, warnings = read_config([path], {})

    redis = config.session.redis
    assert warnings == []
    assert redis is not None and redis.host == "redis.internal"
    assert (redis.port, redis.timeout, redis.max_retries, redis.database_index) == (
        6379,
        timedelta(seconds=5),
        0,
        0,
    )
    assert (redis.maximum_active_connections, redis.minimum_idle_connections) == (8, 0)
    assert redis.password is not None and redis.password.get_secret_value() == "redis-password"
    assert redis.tls is not None and redis.tls.server_name == "myredis.example.com"
    assert not redis.unix_socket


def test_session_redis_password_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("from-the-file\n")
    path = with_changes(tmp_path, session={"redis": {"host": "/var/run/redis/redis.sock"}})

    config, _ = read_config([path], {"PORTAL_SESSION_REDIS_PASSWORD_FILE": str(secret)})

    redis = config.session.redis
    assert redis is not None and redis.unix_socket
    assert redis.password is not None and redis.password.get_secret_value() == "from-the-file"


def test_session_redis_sentinel_nodes_default_to_port_26379(tmp_path: Path) -> None:
    path = with_changes(
        tmp_path,
        session={
            "redis": {
                "max_retries": 3,
                "high_availability": {
                    "sentinel_name": "mysentinel",
                    "sentinel_username": "sentinel_specific_user",
                    "sentinel_password": "sentinel-secret",
                    "nodes": [
                        {"host": "sentinel-node1"},
                        {"host": "sentinel-node2", "port": 26380},
                    ],
                    "route_by_latency": False,
                    "route_randomly": True,
                },
            }
        },
    )

    config, _ = read_config([path], {})

    redis = config.session.redis
    assert redis is not None and redis.high_availability is not None
    assert [(n.host, n.port) for n in redis.high_availability.nodes] == [
        ("sentinel-node1", 26379),
        ("sentinel-node2", 26380),
    ]
    assert redis.port == 26379 and redis.high_availability.route_randomly
    assert redis.high_availability.sentinel_username == "sentinel_specific_user"
    assert redis.max_retries == 3


@pytest.mark.parametrize(
    ("redis", "problem"),
    [
        ({"port": 6379}, "session.redis: host: option is required"),
        ({"host": "r", "port": 0}, "session.redis.port: must be greater than or equal to 1"),
        (
            {"host": "r", "minimum_idle_connections": 9},
            "session.redis: minimum_idle_connections: must not be above",
        ),
        ({"host": "r", "high_availability": {}}, "session.redis.high_availability.sentinel_name"),
    ],
)
def test_a_bad_session_redis_block_names_its_key(
    tmp_path: Path, redis: dict[str, Any], problem: str
) -> None:
    problems = problems_of([with_changes(tmp_path, session={"redis": redis})])

    assert any(p.startswith(problem) for p in problems), problems


def test_session_redis_without_session_secret_is_refused_as_authelia_does(tmp_path: Path) -> None:
    raw = deep_merge(minimal_raw(tmp_path), {"session": {"redis": {"host": "r"}}})
    del raw["session"]["secret"]  # it encrypts the records in Redis: nothing to encrypt with

    problems = problems_of([write_yaml(tmp_path / "configuration.yml", raw)])

    assert problems == ["session: option 'secret' is required when using the 'redis' provider"]


def test_a_session_redis_password_never_appears_in_a_problem(tmp_path: Path) -> None:
    path = with_changes(
        tmp_path, session={"redis": {"host": "r", "port": "x", "password": "hunter2-secret"}}
    )

    problems = problems_of([path])

    assert problems and not any("hunter2-secret" in p for p in problems)


# --- totp (issue 15) ----------------------------------------------------------------------------


def test_totp_gets_authelias_defaults_and_the_portals_name_as_issuer(config_file: Path) -> None:
    config, _ = read_config([config_file], {})
    totp = config.totp
    assert not totp.disable
    assert (totp.algorithm, totp.digits, totp.period, totp.skew) == ("SHA1", 6, 30, 1)
    assert totp.secret_size == 32
    assert (totp.allowed_algorithms, totp.allowed_digits, totp.allowed_periods) == (
        ("SHA1",),
        (6,),
        (30,),
    )
    assert not totp.disable_reuse_security_policy
    assert config.totp_issuer == "Portal"
    totp_limits = config.server.endpoints.rate_limits.second_factor_totp.buckets
    assert [(b.period.total_seconds(), b.requests) for b in totp_limits] == [
        (60, 30),
        (120, 40),
        (600, 50),
    ]


def test_the_totp_issuer_defaults_to_the_organization_name(tmp_path: Path) -> None:
    config, _ = read_config([with_changes(tmp_path, organization_name="Example Corp")], {})
    assert config.totp_issuer == "Example Corp"
    config, _ = read_config(
        [with_changes(tmp_path, organization_name="Example Corp", totp={"issuer": "x.org"})], {}
    )
    assert config.totp_issuer == "x.org"
    # Authelia reads an empty issuer as "not set".
    config, _ = read_config([with_changes(tmp_path, totp={"issuer": ""})], {})
    assert config.totp_issuer == "Portal"


def test_totp_algorithms_are_read_case_insensitively_and_the_configured_values_are_allowed(
    tmp_path: Path,
) -> None:
    totp = {
        "algorithm": "sha256",
        "digits": 8,
        "period": 60,
        "allowed_algorithms": ["sha1", "Sha512"],
        "allowed_digits": [6],
        "allowed_periods": [30],
    }
    config, warnings = read_config([with_changes(tmp_path, totp=totp)], {})
    assert warnings == []
    assert config.totp.algorithm == "SHA256"
    assert config.totp.allowed_algorithms == ("SHA1", "SHA512", "SHA256")
    assert config.totp.allowed_digits == (6, 8)
    assert config.totp.allowed_periods == (30, 60)


@pytest.mark.parametrize(
    ("totp", "problem"),
    [
        ({"algorithm": "md5"}, "totp.algorithm: must be one of SHA1, SHA256 or SHA512, not 'md5'"),
        (
            {"allowed_algorithms": ["SHA1", "sha3"]},
            "totp.allowed_algorithms: must be one of SHA1, SHA256 or SHA512, not 'sha3'",
        ),
        ({"digits": 7}, "totp.digits: must be 6 or 8, not 7"),
        ({"allowed_digits": [6, 10]}, "totp.allowed_digits: must be 6 or 8, not 10"),
        ({"period": 10}, "totp.period: must be 15 seconds or more, not 10"),
        ({"allowed_periods": [5]}, "totp.allowed_periods: must be 15 seconds or more, not 5"),
        ({"secret_size": 16}, "totp.secret_size: must be 20 or more, not 16"),
        ({"skew": -1}, "totp.skew: must be greater than or equal to 0"),
        ({"skew": 100_000_000}, "totp.skew: must be less than or equal to 10"),
        ({"secret_size": 4096}, "totp.secret_size: must be 128 or less, not 4096"),
        ({"skews": 1}, "totp.skews: unknown option (check the spelling and the indentation)"),
    ],
)
def test_a_bad_totp_setting_names_its_key(
    tmp_path: Path, totp: dict[str, Any], problem: str
) -> None:
    assert problems_of([with_changes(tmp_path, totp=totp)]) == [problem]


def test_authelias_password_change_switch_is_read_not_warned_about(
    config_file: Path, tmp_path: Path
) -> None:
    # Issue 16: authentication_backend.password_change.disable (Authelia's key, default false).
    config, _ = read_config([config_file], {})
    assert config.authentication_backend.password_change.disable is False
    changed = with_changes(tmp_path, authentication_backend={"password_change": {"disable": True}})
    config, warnings = read_config([changed], {})
    assert config.authentication_backend.password_change.disable is True
    assert not any("password_change" in w for w in warnings)


# --- webauthn (issue 16) ----------------------------------------------------------------------


def test_webauthn_gets_authelias_defaults(config_file: Path) -> None:
    config, _ = read_config([config_file], {})
    webauthn = config.webauthn
    assert not webauthn.disable and not webauthn.enable_passkey_login
    assert webauthn.attestation_conveyance_preference == "indirect"
    assert webauthn.timeout == timedelta(seconds=60)
    criteria = webauthn.selection_criteria
    assert (criteria.attachment, criteria.discoverability, criteria.user_verification) == (
        "",
        "preferred",
        "preferred",
    )
    assert webauthn.filtering.permitted_aaguids == webauthn.filtering.prohibited_aaguids == ()
    assert not webauthn.filtering.prohibit_backup_eligibility
    assert config.webauthn_display_name == "Portal"


def test_webauthn_keys_are_read(tmp_path: Path) -> None:
    aaguid = "08987058-cadc-4b81-b6e1-30de50dcbe96"
    path = with_changes(
        tmp_path,
        webauthn={
            "display_name": "ACME",
            "timeout": "2m",
            "attestation_conveyance_preference": "none",
            "enable_passkey_login": True,
            "selection_criteria": {"attachment": "platform", "user_verification": "required"},
            "filtering": {"permitted_aaguids": [aaguid], "prohibit_backup_eligibility": True},
        },
    )
    config, warnings = read_config([path], {})
    assert warnings == []
    assert config.webauthn_display_name == "ACME"
    assert config.webauthn.timeout == timedelta(minutes=2)
    assert config.webauthn.selection_criteria.attachment == "platform"
    assert [str(a) for a in config.webauthn.filtering.permitted_aaguids] == [aaguid]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"timeout": "1s"},
            "webauthn.timeout: must be between 10 seconds and 10 minutes",
        ),
        (
            {"attestation_conveyance_preference": "enterprise"},
            "webauthn.attestation_conveyance_preference",
        ),
        (
            {"selection_criteria": {"discoverability": "maybe"}},
            "webauthn.selection_criteria.discoverability",
        ),
        (
            {"filtering": {"permitted_aaguids": ["not-a-uuid"]}},
            "webauthn.filtering.permitted_aaguids",
        ),
        (
            {
                "filtering": {
                    "permitted_aaguids": ["08987058-cadc-4b81-b6e1-30de50dcbe96"],
                    "prohibited_aaguids": ["08987058-cadc-4b81-b6e1-30de50dcbe97"],
                }
            },
            "set permitted_aaguids or prohibited_aaguids, not both",
        ),
    ],
)
def test_bad_webauthn_keys_are_refused(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    problems = problems_of([with_changes(tmp_path, webauthn=change)], {})
    assert any(expected in p for p in problems), problems


def test_webauthn_metadata_is_warned_of_and_ignored(tmp_path: Path) -> None:
    path = with_changes(tmp_path, webauthn={"metadata": {"enabled": True}, "display_name": "X"})
    config, warnings = read_config([path], {})
    assert warnings == ["webauthn.metadata: not supported by the portal; ignored"]
    assert config.webauthn_display_name == "X"
