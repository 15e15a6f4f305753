"""identity_token: defaults, keys from the file and from *_FILE variables, and the refusals
(bad PEM, a key of the wrong type, a short HS secret, an unknown algorithm), each one clear
line that never quotes a key or secret."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from portal.config import read_config
from portal.errors import ConfigError
from tests.conftest import deep_merge, minimal_raw
from tests.unit.test_config import write_yaml

SECRET = "s" * 32


def pem(key: Any) -> str:
    """Return a private key as unencrypted PKCS#8 PEM text."""
    text: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return text.decode("ascii")


EC_PEM = pem(ec.generate_private_key(ec.SECP256R1()))


def load(tmp_path: Path, environ: dict[str, str] | None = None, **section: Any) -> Any:
    raw = deep_merge(minimal_raw(tmp_path), {"identity_token": section})
    path = write_yaml(tmp_path / "configuration.yml", raw)
    return read_config([path], environ or {})


def problems(tmp_path: Path, **section: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **section)
    return caught.value.problems


def test_the_defaults_are_off_es256_five_minutes_and_a_monthly_rotation(tmp_path: Path) -> None:
    config, warnings = load(tmp_path)
    token = config.identity_token
    assert warnings == []
    assert (token.enabled, token.header, token.algorithm) == (False, "Remote-JWT", "ES256")
    assert token.lifespan == timedelta(minutes=5)
    assert token.rotation == timedelta(days=30)
    assert token.keys == () and token.applications == ()


def test_keys_and_applications_are_read_with_their_secrets(tmp_path: Path) -> None:
    config, _ = load(
        tmp_path,
        enabled=True,
        lifespan="2m",
        keys=[{"key_id": "main", "key": EC_PEM}],
        applications=[{"domain": "Wiki.Example.com", "algorithm": "HS384", "secret": "x" * 48}],
    )
    token = config.identity_token
    assert token.lifespan == timedelta(minutes=2)
    assert token.keys[0].key_id == "main"
    assert token.keys[0].key.get_secret_value() == EC_PEM
    assert token.applications[0].domain == ("wiki.example.com",)
    assert token.applications[0].algorithm == "HS384"


def test_secrets_come_from_file_variables_with_list_indexes(tmp_path: Path) -> None:
    key_file, secret_file = tmp_path / "key.pem", tmp_path / "app.secret"
    key_file.write_text(EC_PEM)
    secret_file.write_text(SECRET + "\n")
    environ = {
        "PORTAL_IDENTITY_TOKEN_KEYS_0_KEY_FILE": str(key_file),
        "PORTAL_IDENTITY_TOKEN_APPLICATIONS_0_SECRET_FILE": str(secret_file),
    }
    config, _ = load(
        tmp_path,
        environ,
        enabled=True,
        keys=[{"key_id": "main"}],
        applications=[{"domain": "wiki.example.com"}],
    )
    assert config.identity_token.keys[0].key.get_secret_value() == EC_PEM.rstrip("\n")
    assert config.identity_token.applications[0].secret.get_secret_value() == SECRET


def test_rs256_and_eddsa_take_their_own_key_types(tmp_path: Path) -> None:
    rsa_pem = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ed_pem = pem(ed25519.Ed25519PrivateKey.generate())
    config, _ = load(tmp_path, algorithm="RS256", keys=[{"key_id": "r", "key": rsa_pem}])
    assert config.identity_token.algorithm == "RS256"
    config, _ = load(tmp_path, algorithm="EdDSA", keys=[{"key_id": "e", "key": ed_pem}])
    assert config.identity_token.algorithm == "EdDSA"


def test_a_key_that_is_not_pem_is_refused_without_quoting_it(tmp_path: Path) -> None:
    found = problems(tmp_path, keys=[{"key_id": "main", "key": "not-a-key-SECRET123"}])
    assert found == ["identity_token: keys[0].key: is not an unencrypted PEM private key"]
    assert "SECRET123" not in " ".join(found)


def test_a_key_of_the_wrong_type_for_the_algorithm_is_refused(tmp_path: Path) -> None:
    ed_pem = pem(ed25519.Ed25519PrivateKey.generate())
    p384 = pem(ec.generate_private_key(ec.SECP384R1()))
    assert problems(tmp_path, keys=[{"key_id": "a", "key": ed_pem}]) == [
        "identity_token: keys[0].key: must be an EC P-256 private key for algorithm ES256"
    ]
    assert problems(tmp_path, keys=[{"key_id": "a", "key": p384}]) == [
        "identity_token: keys[0].key: must be an EC P-256 private key for algorithm ES256"
    ]
    assert problems(tmp_path, algorithm="RS256", keys=[{"key_id": "a", "key": EC_PEM}]) == [
        "identity_token: keys[0].key: must be an RSA private key for algorithm RS256"
    ]
    assert problems(tmp_path, algorithm="EdDSA", keys=[{"key_id": "a", "key": EC_PEM}]) == [
        "identity_token: keys[0].key: must be an Ed25519 private key for algorithm EdDSA"
    ]


def test_a_short_rsa_key_and_a_key_id_used_twice_are_refused(tmp_path: Path) -> None:
    short = pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - refused
    found = problems(
        tmp_path,
        algorithm="RS256",
        keys=[{"key_id": "a", "key": short}, {"key_id": "a", "key": short}],
    )
    assert found == [
        "identity_token: keys[0].key: must be an RSA key of 2048 bits or more, not 1024; "
        "keys[1].key_id: 'a' is used twice; "
        "keys[1].key: must be an RSA key of 2048 bits or more, not 1024"
    ]


def test_a_short_hs_secret_is_refused_per_algorithm(tmp_path: Path) -> None:
    found = problems(tmp_path, applications=[{"domain": "a.example.com", "secret": "s" * 31}])
    assert found == [
        "identity_token.applications[0]: secret: must be at least 32 bytes for HS256 "
        "(RFC 7518 section 3.2); generate one with 'portal crypto rand'"
    ]
    app = {"domain": "a.example.com", "algorithm": "HS512", "secret": "s" * 63}
    assert "at least 64 bytes for HS512" in problems(tmp_path, applications=[app])[0]


def test_unknown_algorithms_and_bad_values_are_named(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        algorithm="PS256",
        lifespan="2h",
        header="Remote-User",
        applications=[{"domain": "a.example.com", "algorithm": "none", "secret": SECRET}],
    )
    assert found == [
        "identity_token.header: Remote-User is already one of the Remote-* headers",
        "identity_token.algorithm: must be 'ES256', 'RS256' or 'EdDSA'",
        "identity_token.lifespan: must be between 30 seconds and 1 hour",
        "identity_token.applications[0].algorithm: must be 'HS256', 'HS384' or 'HS512'",
    ]


@pytest.mark.parametrize(
    "name", ["Content-Length", "transfer-encoding", "Connection", "Location", "Set-Cookie", "Host"]
)
def test_a_header_that_frames_or_routes_the_answer_is_refused(tmp_path: Path, name: str) -> None:
    # As the header, the token would break every auth_request answer (Content-Length: eyJ...)
    # or be taken by nginx or the app for something else (the 401's Location, a cookie).
    assert problems(tmp_path, header=name) == [
        f"identity_token.header: {name} frames or routes HTTP messages; choose another name "
        "such as Remote-JWT"
    ]


def test_a_secret_shared_between_token_kinds_is_refused_without_quoting_it(
    tmp_path: Path,
) -> None:
    # Whoever holds one of them could sign what the other's verifier accepts: an app its
    # neighbour's identity tokens, a partner's sign-in tokens, or the portal's reset links.
    shared = "shared-secret-" + "x" * 50
    raw = deep_merge(
        minimal_raw(tmp_path),
        {
            "identity_validation": {"reset_password": {"jwt_secret": shared}},
            "identity_token": {
                "applications": [
                    {"domain": "wiki.example.com", "secret": shared},
                    {"domain": "crm.example.com", "secret": shared},
                    {"domain": "own.example.com", "secret": "own-secret-" + "o" * 30},
                ]
            },
            "trusted_issuers": [
                {"name": "Shop", "issuer": "https://shop.example", "algorithms": ["HS256"]}
                | {"secret": shared}
            ],
        },
    )
    path = write_yaml(tmp_path / "configuration.yml", raw)

    with pytest.raises(ConfigError) as caught:
        read_config([path], {})

    assert caught.value.problems == [
        f"{name}: is the same secret as identity_validation.reset_password.jwt_secret; give "
        "each its own (whoever holds one could sign the other's tokens)"
        for name in (
            "identity_token.applications[0].secret",
            "identity_token.applications[1].secret",
            "trusted_issuers[0].secret",
        )
    ]
    assert shared not in " ".join(caught.value.problems)
