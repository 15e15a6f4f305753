"""portal/totp.py against RFC 6238's Appendix B test vectors, skew edges and bad input."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from portal.totp import (
    TotpParameters,
    code_at,
    matching_step,
    new_secret,
    otpauth_url,
    secret_base32,
)

# RFC 6238 Appendix B: the seed is "12345678901234567890" repeated to the hash's length.
SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
VECTORS = [
    (59, "SHA1", "94287082"),
    (59, "SHA256", "46119246"),
    (59, "SHA512", "90693936"),
    (1111111109, "SHA1", "07081804"),
    (1111111109, "SHA256", "68084774"),
    (1111111109, "SHA512", "25091201"),
    (1111111111, "SHA1", "14050471"),
    (1111111111, "SHA256", "67062674"),
    (1111111111, "SHA512", "99943326"),
    (1234567890, "SHA1", "89005924"),
    (1234567890, "SHA256", "91819424"),
    (1234567890, "SHA512", "93441116"),
    (2000000000, "SHA1", "69279037"),
    (2000000000, "SHA256", "90698825"),
    (2000000000, "SHA512", "38618901"),
    (20000000000, "SHA1", "65353130"),
    (20000000000, "SHA256", "77737706"),
    (20000000000, "SHA512", "47863826"),
]


@pytest.mark.parametrize(("at", "algorithm", "code"), VECTORS)
def test_rfc_6238_vectors_at_8_digits(at: int, algorithm: str, code: str) -> None:
    params = TotpParameters(algorithm, 8, 30)  # type: ignore[arg-type]  # from the table
    secret = SEEDS[algorithm]
    assert code_at(secret, params, at) == code
    assert matching_step(secret, params, code, at=at, skew=0) == at // 30


@pytest.mark.parametrize(("at", "algorithm", "code"), VECTORS)
def test_rfc_6238_vectors_truncated_to_6_digits(at: int, algorithm: str, code: str) -> None:
    # Dynamic truncation keeps the last digits: a 6-digit code is the 8-digit one mod 10^6.
    params = TotpParameters(algorithm, 6, 30)  # type: ignore[arg-type]  # from the table
    secret = SEEDS[algorithm]
    assert matching_step(secret, params, code[-6:], at=at, skew=0) == at // 30
    assert matching_step(secret, params, code, at=at, skew=0) is None  # 8 digits: wrong length


@pytest.mark.parametrize("skew", [0, 1, 2])
def test_exactly_skew_steps_either_side_are_accepted_and_one_more_is_refused(skew: int) -> None:
    params = TotpParameters()
    secret = new_secret(32)
    now = 1_700_000_015.0  # the middle of a step
    step = int(now // 30)
    for offset in range(-skew, skew + 1):
        code = code_at(secret, params, now + offset * 30)
        assert matching_step(secret, params, code, at=now, skew=skew) == step + offset
    for offset in (-(skew + 1), skew + 1):
        code = code_at(secret, params, now + offset * 30)
        # Another step's code could collide by chance (1 in a million); this one must not match.
        if all(code != code_at(secret, params, now + o * 30) for o in range(-skew, skew + 1)):
            assert matching_step(secret, params, code, at=now, skew=skew) is None


def test_the_step_edges_follow_the_period() -> None:
    params = TotpParameters(period=60)
    secret = new_secret(20)
    code = code_at(secret, params, 120.0)
    assert matching_step(secret, params, code, at=179.999, skew=0) == 2
    other = code_at(secret, params, 180.0)
    if other != code:
        assert matching_step(secret, params, code, at=180.0, skew=0) is None


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "12345a", " 123456", "123456 ", "١٢٣٤٥٦", "+12345", "12 456"]
)
def test_a_code_of_the_wrong_shape_matches_nothing(code: str) -> None:
    params = TotpParameters()
    assert matching_step(SEEDS["SHA1"], params, code, at=59, skew=10) is None


def test_a_wrong_code_matches_nothing() -> None:
    params = TotpParameters(digits=8)
    assert matching_step(SEEDS["SHA1"], params, "94287083", at=59, skew=1) is None


def test_new_secrets_are_random_and_sized() -> None:
    secrets = {new_secret(32) for _ in range(50)}
    assert len(secrets) == 50 and all(len(s) == 32 for s in secrets)
    with pytest.raises(ValueError):
        new_secret(0)


def test_the_otpauth_url_carries_the_parameters_as_key_uri_format_says() -> None:
    secret = new_secret(32)
    url = otpauth_url(secret, TotpParameters("SHA256", 8, 60), "Example Corp", "john")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/Example Corp:john"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret_base32(secret)]
    assert "=" not in query["secret"][0]
    assert query["issuer"] == ["Example Corp"]
    assert (query["algorithm"], query["digits"], query["period"]) == (["SHA256"], ["8"], ["60"])
