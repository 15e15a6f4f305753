"""ALTCHA challenges on a real SQLite file with a fake clock, solved by the Python solver."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import altcha
import pytest
from pydantic import SecretStr

from portal.captcha import AltchaCaptcha, altcha_keys
from portal.config import AltchaConfig, CaptchaConfig, RegulationConfig, read_config
from portal.errors import ConfigError
from portal.regulation import Regulator
from portal.storage.sqlite import SqliteStorage
from tests.conftest import ENCRYPTION_KEY, JWT_SECRET, REPO, ConfigFactory, FakeClock

# Cheap enough for the Python solver; the browser default is in the e2e story.
EASY = AltchaConfig(cost=1, max_number=50, expiration=timedelta(minutes=5))
IP = "192.0.2.7"


def altcha_for(
    storage: SqliteStorage, clock: FakeClock, config: AltchaConfig = EASY, secret: str = JWT_SECRET
) -> AltchaCaptcha:
    """Build the ALTCHA check the portal would, with keys derived from the JWT secret."""
    return AltchaCaptcha(config, keys=altcha_keys(config, secret), storage=storage, clock=clock)


def solve(challenge: dict[str, Any]) -> str:
    """Solve a challenge the way the widget does and return the form field's value."""
    parsed = altcha.Challenge.from_dict(challenge)
    solution = altcha.solve_challenge(parsed, timeout=30)
    assert solution is not None, "the solver gave up"
    return altcha.Payload(parsed, solution).to_base64()


def edit(payload: str, change: Callable[[dict[str, Any]], object]) -> str:
    """Decode a payload, let change() edit it, and encode it again."""
    data = json.loads(base64.b64decode(payload))
    change(data)
    return base64.b64encode(json.dumps(data).encode()).decode()


async def test_a_solved_challenge_is_accepted(storage: SqliteStorage, clock: FakeClock) -> None:
    captcha = altcha_for(storage, clock)

    assert await captcha.verify(solve(await captcha.challenge()), IP) is True


async def test_the_challenge_names_the_configured_work_and_no_raw_secret(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    config = AltchaConfig(algorithm="SHA-256", cost=3, max_number=40)
    challenge = await altcha_for(storage, clock, config).challenge()

    parameters = challenge["parameters"]
    assert parameters["algorithm"] == "SHA-256"
    assert parameters["cost"] == 3
    assert parameters["keySignature"]
    assert int(parameters["data"]["expires"]) == int(clock.now()) + 300
    assert JWT_SECRET not in json.dumps(challenge)
    # The counter the browser must reach lies in [max_number / 2, max_number].
    solution = altcha.solve_challenge(altcha.Challenge.from_dict(challenge))
    assert solution is not None
    assert 20 <= solution.counter <= 40


async def test_the_same_solution_is_accepted_only_once(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    captcha = altcha_for(storage, clock)
    solution = solve(await captcha.challenge())

    assert await captcha.verify(solution, IP) is True
    assert await captcha.verify(solution, IP) is False
    # Not even from another address, nor from another portal instance on the same storage.
    assert await altcha_for(storage, clock).verify(solution, "198.51.100.1") is False


async def test_a_challenge_is_refused_once_it_expires(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    captcha = altcha_for(storage, clock)
    solution = solve(await captcha.challenge())
    still_good = solve(await captcha.challenge())

    clock.advance(299)
    assert await captcha.verify(still_good, IP) is True
    clock.advance(2)
    assert await captcha.verify(solution, IP) is False


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda d: d["challenge"]["parameters"]["data"].update(expires="9999999999"),
            id="longer-expiry",
        ),
        pytest.param(lambda d: d["challenge"]["parameters"].update(cost=0), id="cheaper"),
        pytest.param(lambda d: d["challenge"].update(signature="0" * 64), id="signature"),
        pytest.param(lambda d: d["challenge"].pop("signature"), id="no-signature"),
        pytest.param(
            lambda d: d["challenge"]["parameters"].pop("keySignature"), id="no-key-signature"
        ),
        pytest.param(lambda d: d["solution"].update(derivedKey="00" * 32), id="wrong-key"),
        pytest.param(lambda d: d["solution"].update(derivedKey=7), id="key-not-a-string"),
        pytest.param(lambda d: d["challenge"]["parameters"].update(nonce="zz"), id="bad-hex"),
        pytest.param(lambda d: d["challenge"]["parameters"].update(nonce=5), id="nonce-number"),
        pytest.param(lambda d: d["challenge"]["parameters"].update(cost=float("nan")), id="nan"),
        pytest.param(lambda d: d["challenge"]["parameters"].update(cost=10**400), id="huge"),
        pytest.param(
            lambda d: d["challenge"]["parameters"].update(keySignature=[1]), id="key-signature-list"
        ),
        pytest.param(
            lambda d: d["challenge"]["parameters"]["data"].update(__proto__=1), id="proto"
        ),
        pytest.param(lambda d: d["challenge"].update(signature=None), id="null-signature"),
        pytest.param(
            lambda d: d["challenge"]["parameters"].update(data="expires"), id="data-not-a-dict"
        ),
    ],
)
async def test_a_tampered_payload_is_refused(
    storage: SqliteStorage, clock: FakeClock, tamper: Callable[[dict[str, Any]], object]
) -> None:
    captcha = altcha_for(storage, clock)
    solution = solve(await captcha.challenge())

    assert await captcha.verify(edit(solution, tamper), IP) is False
    # The untouched solution still works: the refusal did not burn it.
    assert await captcha.verify(solution, IP) is True


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not base64!",
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b'{"challenge": "x", "solution": 1}').decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        "A" * 20000,
    ],
)
async def test_garbage_is_refused_without_an_error(
    storage: SqliteStorage, clock: FakeClock, garbage: str
) -> None:
    assert await altcha_for(storage, clock).verify(garbage, IP) is False


async def test_a_challenge_signed_with_another_key_is_refused(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    theirs = altcha_for(storage, clock, secret="x" * 40)
    ours = altcha_for(storage, clock)

    assert await ours.verify(solve(await theirs.challenge()), IP) is False


async def test_an_unsigned_challenge_is_refused(storage: SqliteStorage, clock: FakeClock) -> None:
    challenge = altcha.create_challenge("PBKDF2/SHA-256", 1, counter=3)

    assert await altcha_for(storage, clock).verify(solve(challenge.to_dict()), IP) is False


async def test_a_configured_hmac_key_replaces_the_derived_one(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    keyed = AltchaConfig(cost=1, max_number=50, hmac_key=SecretStr("k" * 32))
    derived = altcha_for(storage, clock)
    configured = altcha_for(storage, clock, keyed)

    assert altcha_keys(keyed, JWT_SECRET) != altcha_keys(EASY, JWT_SECRET)
    assert JWT_SECRET.encode() not in altcha_keys(EASY, JWT_SECRET)
    assert await configured.verify(solve(await derived.challenge()), IP) is False
    assert await configured.verify(solve(await configured.challenge()), IP) is True


# --- configuration --------------------------------------------------------------------------------


def test_captcha_is_off_by_default_and_altcha_is_the_provider(make_config: ConfigFactory) -> None:
    captcha = make_config().captcha

    assert (captcha.provider, captcha.enabled_on, captcha.login_after_failures) == ("altcha", (), 0)
    assert (captcha.altcha.algorithm, captcha.altcha.cost, captcha.altcha.max_number) == (
        "PBKDF2/SHA-256",
        5000,
        1000,
    )
    assert captcha.altcha.expiration == timedelta(minutes=5)
    assert captcha.timeout == timedelta(seconds=5)


def test_the_embedded_configuration_documents_the_captcha_defaults() -> None:
    environ = {
        "PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET,
        "PORTAL_STORAGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
    }
    config, _ = read_config([REPO / "config" / "configuration.yml"], environ)
    text = (REPO / "config" / "configuration.yml").read_text()

    assert config.captcha == CaptchaConfig()
    for key in (
        "enabled_on:",
        "login_after_failures:",
        "hmac_key:",
        "site_key:",
        "secret_key:",
        "verify_url:",
        "max_number:",
        "expiration:",
    ):
        assert key in text, key


def test_captcha_secrets_come_from_files(make_config: ConfigFactory, tmp_path: Path) -> None:
    make_config(captcha={"provider": "turnstile", "site_key": "site", "secret_key": "in-file"})
    # the secret lives in a file only: a secret given twice is refused (issue 12)
    path = tmp_path / "configuration.yml"
    path.write_text(path.read_text().replace("secret_key: in-file, ", ""))
    assert "in-file" not in path.read_text()
    secret = tmp_path / "captcha_secret"
    secret.write_text("vendor-secret\n")
    hmac_key = tmp_path / "hmac_key"
    hmac_key.write_text("h" * 40 + "\n")
    environ = {
        "PORTAL_CAPTCHA_SECRET_KEY_FILE": str(secret),
        "PORTAL_CAPTCHA_ALTCHA_HMAC_KEY_FILE": str(hmac_key),
        "PORTAL_CAPTCHA_ENABLED_ON": "login, reset_password_start",
    }
    config, warnings = read_config([tmp_path / "configuration.yml"], environ)

    assert warnings == []
    assert config.captcha.secret_key is not None
    assert config.captcha.secret_key.get_secret_value() == "vendor-secret"
    assert config.captcha.altcha.hmac_key is not None
    assert config.captcha.altcha.hmac_key.get_secret_value() == "h" * 40
    assert config.captcha.enabled_on == ("login", "reset_password_start")
    assert "vendor-secret" not in repr(config)


@pytest.mark.parametrize(
    ("captcha", "problem"),
    [
        ({"provider": "turnstile"}, "captcha: provider turnstile needs site_key and secret_key"),
        ({"provider": "hcaptcha", "site_key": "s"}, "captcha: provider hcaptcha needs secret_key"),
        ({"provider": "none", "enabled_on": ["login"]}, "captcha: enabled_on needs a provider"),
        ({"enabled_on": ["logout"]}, "captcha.enabled_on[0]: must be "),
        ({"verify_url": "http://verify.example.com/x"}, "captcha.verify_url: must use https"),
        ({"altcha": {"hmac_key": "short"}}, "captcha.altcha.hmac_key: must be at least 32 bytes"),
        ({"altcha": {"expiration": "1 day"}}, "captcha.altcha.expiration: must be between"),
        ({"altcha": {"cost": 0}}, "captcha.altcha.cost: "),
        ({"login_after_failures": -1}, "captcha.login_after_failures: "),
        ({"timeout": "0s"}, "captcha.timeout: must be more than 0"),
    ],
)
def test_captcha_configuration_errors_name_their_path(
    make_config: ConfigFactory, captcha: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(captcha=captcha)
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


# --- what sign-in's CAPTCHA reads from regulation -------------------------------------------------


def regulator(storage: SqliteStorage, clock: FakeClock) -> Regulator:
    """Authelia's default regulation: 3 failures in 2 minutes ban for 5."""
    return Regulator(storage, clock, RegulationConfig())


async def test_recent_failures_count_the_user_or_the_address_within_find_time(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulation = regulator(storage, clock)
    await regulation.record_failure("john", IP)
    await regulation.record_failure("JOHN", "198.51.100.1")

    assert await regulation.recent_failures(None, IP) == 1
    assert await regulation.recent_failures("john", IP) == 2
    assert await regulation.recent_failures("bob", "203.0.113.1") == 0
    clock.advance(121)
    assert await regulation.recent_failures("john", IP) == 0


async def test_an_address_failure_bans_the_address_and_not_the_account(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    regulation = regulator(storage, clock)
    for _ in range(3):
        await regulation.record_failure(None, IP)

    assert await regulation.banned_until("john", IP) is not None
    assert await regulation.banned_until("john", "198.51.100.1") is None
    assert await regulation.recent_failures("john", "198.51.100.1") == 0
