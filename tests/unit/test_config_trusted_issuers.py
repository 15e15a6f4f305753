"""`trusted_issuers`: partners whose signed tokens sign users in; what loads and what is refused
at start-up, one line each naming its path."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from ruamel.yaml import YAML

from portal.config import Config, read_config
from portal.errors import ConfigError
from tests.conftest import REPO, deep_merge, minimal_raw

SECRET = "x" * 32


def pem(key: Any) -> str:
    text: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return text.decode()


EC_PEM = pem(ec.generate_private_key(ec.SECP256R1()))
ED_PEM = pem(ed25519.Ed25519PrivateKey.generate())
RSA_PEM = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
SHOP = {"name": "Shop", "issuer": "https://shop.example.com", "algorithms": ["HS256"]}


def load(
    tmp_path: Path, partners: list[dict[str, Any]], environ: dict[str, str] | None = None
) -> Config:
    raw = deep_merge(minimal_raw(tmp_path), {"trusted_issuers": partners})
    path = tmp_path / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    return read_config([path], environ or {})[0]


def problems(tmp_path: Path, partners: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, partners)
    return caught.value.problems


def test_a_shared_secret_partner_loads_with_its_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, [{**SHOP, "secret": SECRET}])

    [shop] = config.trusted_issuers
    assert shop.username_claim == "sub"
    assert shop.max_lifespan == timedelta(minutes=2)
    assert shop.allowed_groups == ()
    assert config.partner_audience(shop) == "https://auth.example.com", "authelia_url"
    assert SECRET not in repr(config), "the secret is marked secret"


def test_the_secret_comes_from_a_file_named_by_an_indexed_variable(tmp_path: Path) -> None:
    secret_file = tmp_path / "shop.secret"
    secret_file.write_text("f" * 40 + "\n")
    environ = {"PORTAL_TRUSTED_ISSUERS_0_SECRET_FILE": str(secret_file)}

    config = load(tmp_path, [SHOP], environ)

    secret = config.trusted_issuers[0].secret
    assert secret is not None and secret.get_secret_value() == "f" * 40


def test_public_keys_in_pem_load_for_ec_rsa_and_eddsa(tmp_path: Path) -> None:
    partner = {"name": "CRM", "issuer": "https://crm.example.com", "public_keys": [EC_PEM]}
    config = load(
        tmp_path,
        [
            {**partner, "algorithms": ["ES256"]},
            {
                **partner,
                "name": "ERP",
                "issuer": "erp",
                "algorithms": ["RS256"],
                "public_keys": [RSA_PEM],
            },
            {
                **partner,
                "name": "HR",
                "issuer": "hr",
                "algorithms": ["EdDSA"],
                "public_keys": [ED_PEM],
            },
            {
                "name": "Local",
                "issuer": "local",
                "algorithms": ["ES256"],
                "jwks_url": "http://127.0.0.1:8080/jwks",
            },
        ],
    )

    assert [p.name for p in config.trusted_issuers] == ["CRM", "ERP", "HR", "Local"]


@pytest.mark.parametrize(
    ("partner", "problem"),
    [
        (
            {**SHOP, "algorithms": ["HS256", "ES256"], "secret": SECRET},
            "trusted_issuers[0]: algorithms mixes shared-secret (HS*) and public-key algorithms",
        ),
        ({**SHOP}, "trusted_issuers[0]: secret is required with HS algorithms"),
        ({**SHOP, "secret": "short"}, "secret must be at least 32 bytes for HS256"),
        ({**SHOP, "algorithms": ["HS512"], "secret": SECRET}, "at least 64 bytes for HS512"),
        (
            {**SHOP, "secret": SECRET, "public_keys": [EC_PEM]},
            "HS algorithms take a secret, not public_keys or jwks_url",
        ),
        ({**SHOP, "algorithms": ["ES256"]}, "ES256 need public_keys or jwks_url (one of them)"),
        (
            {**SHOP, "algorithms": ["ES256"], "public_keys": [EC_PEM], "jwks_url": "https://x/j"},
            "need public_keys or jwks_url (one of them)",
        ),
        (
            {**SHOP, "algorithms": ["ES256"], "secret": SECRET, "public_keys": [EC_PEM]},
            "ES256 take public_keys or jwks_url, not secret",
        ),
        (
            {**SHOP, "algorithms": ["ES256"], "jwks_url": "http://partner.example.com/jwks"},
            "trusted_issuers[0].jwks_url: must use https",
        ),
        ({**SHOP, "algorithms": ["ES256"], "public_keys": ["nope"]}, "is not a PEM public key"),
        (
            {**SHOP, "algorithms": ["ES256"], "public_keys": [RSA_PEM]},
            "public_keys[0] fits none of ES256",
        ),
        (
            {**SHOP, "algorithms": ["none"], "secret": SECRET},
            "trusted_issuers[0].algorithms[0]: must be 'HS256'",
        ),
        ({**SHOP, "algorithms": []}, "trusted_issuers[0].algorithms: must have at least 1 item"),
        ({**SHOP, "secret": SECRET, "max_lifespan": "2h"}, "must be between 10 seconds and 1 hour"),
        ({**SHOP, "secret": SECRET, "username_claim": "name"}, "trusted_issuers[0].username_claim"),
        ({**SHOP, "secret": SECRET, "jku": "x"}, "trusted_issuers[0].jku: unknown option"),
    ],
)
def test_a_wrong_partner_is_refused_with_one_line_naming_it(
    tmp_path: Path, partner: dict[str, Any], problem: str
) -> None:
    found = problems(tmp_path, [partner])

    assert any(problem in line for line in found)
    assert all("\n" not in line and SECRET not in line for line in found)


def test_two_partners_with_one_issuer_are_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path, [{**SHOP, "secret": SECRET}, {**SHOP, "name": "Two", "secret": SECRET}]
    )

    assert found == ["trusted_issuers: two partners have the same issuer: https://shop.example.com"]


def test_the_reference_configurations_example_loads(tmp_path: Path) -> None:
    text = (REPO / "config" / "configuration.yml").read_text()
    block = re.search(r"^# trusted_issuers:\n((?:#   .*\n)+)", text, re.MULTILINE)
    assert block, "config/configuration.yml documents trusted_issuers with an example"
    example = "trusted_issuers:\n" + "".join(
        line[2:] + "\n" for line in block.group(1).splitlines()
    )
    partners = YAML(typ="safe", pure=True).load(example)["trusted_issuers"]

    config = load(tmp_path, partners)

    assert [p.name for p in config.trusted_issuers] == ["Shop", "CRM"]
