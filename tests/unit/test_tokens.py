"""Reset tokens: what a link carries, and every way a forged, stale or foreign token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from datetime import timedelta
from typing import Any, Literal

import jwt
import pytest
from pydantic import SecretStr

from portal.config import ResetPasswordConfig
from portal.errors import InvalidTokenError
from portal.tokens import ACTION, AUDIENCE, ResetClaims, ResetTokens
from tests.conftest import FakeClock

SECRET = "s" * 64  # long enough for HS512 too
OTHER_SECRET = "o" * 64
ISSUER = "https://auth.example.com"
START = 1_700_000_000.75  # a fraction above one half: iat is floored, not rounded
LIFESPAN = timedelta(minutes=5)
STATE = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
NEW_STATE = "$argon2id$v=19$m=65536,t=3,p=4$bmV3c2FsdA$bmV3aGFzaG5ld2hhc2g"
CLAIM_NAMES = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "action", "pwd")

Algorithm = Literal["HS256", "HS384", "HS512"]


def reset_config(
    secret: str = SECRET, lifespan: timedelta = LIFESPAN, algorithm: Algorithm = "HS256"
) -> ResetPasswordConfig:
    return ResetPasswordConfig(
        jwt_secret=SecretStr(secret), jwt_lifespan=lifespan, jwt_algorithm=algorithm
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def reason_of(tokens: ResetTokens, token: str) -> str:
    with pytest.raises(InvalidTokenError) as caught:
        tokens.verify(token)
    return caught.value.reason


@pytest.fixture
def tokens(clock: FakeClock) -> ResetTokens:
    return ResetTokens(reset_config(), issuer=ISSUER, clock=clock)


def good_claims(clock: FakeClock, tokens: ResetTokens, **changes: Any) -> dict[str, Any]:
    """Return the claims the portal would issue for john now, with changes (None drops one)."""
    now = math.floor(clock.now())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "john",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": b64url(b"\x01" * 16),
        "action": ACTION,
        "pwd": tokens.fingerprint("john", STATE),
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def signed(
    claims: dict[str, Any],
    *,
    secret: str = SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)


def signed_by_hand(header: dict[str, Any], claims: Any, secret: str = SECRET) -> str:
    """Sign with HMAC-SHA256 whatever the header says (PyJWT refuses to write some headers)."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


# --- issuing ----------------------------------------------------------------------------------


def test_an_issued_token_verifies_to_the_claims_it_was_issued_with(tokens: ResetTokens) -> None:
    token, claims = tokens.issue("john", STATE)

    assert tokens.verify(token) == claims
    assert claims.username == "john"
    assert claims.fingerprint == tokens.fingerprint("john", STATE)


def test_an_issued_token_carries_every_claim_with_its_value(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    token, claims = tokens.issue("john", STATE)

    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    payload = jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        # The fake clock is in 2023; the signature is still checked.
        options={"verify_signature": True, "verify_exp": False, "verify_iat": False},
    )
    assert set(payload) == set(CLAIM_NAMES)
    assert payload["iss"] == ISSUER
    assert payload["aud"] == AUDIENCE == "portal:reset-password"
    assert payload["sub"] == "john"
    assert payload["iat"] == payload["nbf"] == math.floor(START)
    assert payload["exp"] == math.floor(START) + 300
    assert payload["jti"] == claims.jti
    assert payload["action"] == ACTION == "ResetPassword"
    assert payload["pwd"] == claims.fingerprint
    assert (claims.issued_at, claims.expires_at) == (payload["iat"], payload["exp"])
    assert all(type(payload[name]) is int for name in ("iat", "nbf", "exp"))


def test_the_token_is_signed_with_the_configured_algorithm(clock: FakeClock) -> None:
    tokens = ResetTokens(reset_config(algorithm="HS512"), issuer=ISSUER, clock=clock)
    token, _ = tokens.issue("john", STATE)

    assert jwt.get_unverified_header(token) == {"alg": "HS512", "typ": "JWT"}
    jwt.decode(
        token,
        SECRET,
        algorithms=["HS512"],
        audience=AUDIENCE,
        options={"verify_exp": False, "verify_iat": False},
    )


def test_the_jti_has_at_least_128_random_bits_and_is_unique_over_1000_issues(
    tokens: ResetTokens,
) -> None:
    jtis = {tokens.issue("john", STATE)[1].jti for _ in range(1000)}

    assert len(jtis) == 1000
    for jti in jtis:
        assert "=" not in jti
        assert len(base64.urlsafe_b64decode(jti + "=" * (-len(jti) % 4))) >= 16


def test_the_jti_comes_from_the_injected_randomness(clock: FakeClock) -> None:
    asked: list[int] = []

    def random_bytes(n: int) -> bytes:
        asked.append(n)
        return bytes(range(n))

    tokens = ResetTokens(reset_config(), issuer=ISSUER, clock=clock, random_bytes=random_bytes)
    _, claims = tokens.issue("john", STATE)

    assert asked and asked[0] >= 16
    assert claims.jti == b64url(bytes(range(asked[0])))


@pytest.mark.parametrize(
    ("lifespan", "seconds"),
    [(timedelta(minutes=5), 300), (timedelta(seconds=1), 1), (timedelta(seconds=90.5), 91)],
)
def test_exp_is_iat_plus_the_lifespan_in_whole_seconds(
    clock: FakeClock, lifespan: timedelta, seconds: int
) -> None:
    tokens = ResetTokens(reset_config(lifespan=lifespan), issuer=ISSUER, clock=clock)
    _, claims = tokens.issue("john", STATE)

    assert claims.issued_at == math.floor(START)
    assert claims.expires_at == claims.issued_at + seconds


# --- time -------------------------------------------------------------------------------------


def test_a_token_is_valid_one_second_before_it_expires(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    token, claims = tokens.issue("john", STATE)
    clock.time = claims.expires_at - 1

    assert tokens.verify(token) == claims


@pytest.mark.parametrize("after", [0, 1, 86400])
def test_a_token_is_expired_from_its_exp_on(
    tokens: ResetTokens, clock: FakeClock, after: int
) -> None:
    token, claims = tokens.issue("john", STATE)
    clock.time = claims.expires_at + after

    assert reason_of(tokens, token) == "expired"


def test_a_token_is_not_yet_valid_when_the_clock_is_moved_back(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    token, _ = tokens.issue("john", STATE)
    clock.advance(-1)

    assert reason_of(tokens, token) == "not_yet_valid"


def test_a_token_whose_iat_is_in_the_future_is_not_yet_valid(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    later = math.floor(clock.now()) + 60
    token = signed(good_claims(clock, tokens, iat=later))

    assert reason_of(tokens, token) == "not_yet_valid"


def test_a_token_whose_nbf_is_in_the_future_is_not_yet_valid(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    later = math.floor(clock.now()) + 60
    token = signed(good_claims(clock, tokens, nbf=later))

    assert reason_of(tokens, token) == "not_yet_valid"


# --- forgeries --------------------------------------------------------------------------------


def test_a_tampered_payload_fails_the_signature(tokens: ResetTokens) -> None:
    token, _ = tokens.issue("john", STATE)
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    flipped = "A" if payload[middle] != "A" else "B"
    tampered = f"{header}.{payload[:middle]}{flipped}{payload[middle + 1 :]}.{signature}"

    assert reason_of(tokens, tampered) == "signature"


def test_a_payload_swapped_for_another_user_fails_the_signature(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    token, _ = tokens.issue("john", STATE)
    header, _, signature = token.split(".")
    forged = f"{header}.{b64url_json(good_claims(clock, tokens, sub='admin'))}.{signature}"

    assert reason_of(tokens, forged) == "signature"


def test_a_token_signed_with_another_secret_fails_the_signature(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    other = ResetTokens(reset_config(secret=OTHER_SECRET), issuer=ISSUER, clock=clock)
    token, _ = other.issue("john", STATE)

    assert reason_of(tokens, token) == "signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_an_unsigned_alg_none_token_is_refused_for_its_algorithm(
    tokens: ResetTokens, clock: FakeClock, alg: str
) -> None:
    unsigned = f"{b64url_json({'alg': alg})}.{b64url_json(good_claims(clock, tokens))}."

    assert reason_of(tokens, unsigned) == "algorithm"


@pytest.mark.parametrize(
    ("configured", "presented"),
    [("HS256", "HS512"), ("HS512", "HS256"), ("HS256", "HS384"), ("HS384", "HS256")],
)
def test_a_token_signed_with_the_right_secret_but_another_hs_size_is_refused(
    clock: FakeClock, configured: Algorithm, presented: str
) -> None:
    tokens = ResetTokens(reset_config(algorithm=configured), issuer=ISSUER, clock=clock)
    token = signed(good_claims(clock, tokens), algorithm=presented)

    assert reason_of(tokens, token) == "algorithm"


def test_an_rs256_headed_token_is_refused_for_its_algorithm(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    # The key-confusion attack: claim RS256 but "sign" with the HMAC secret.
    token = signed_by_hand({"alg": "RS256", "typ": "JWT"}, good_claims(clock, tokens))

    assert reason_of(tokens, token) == "algorithm"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("kid", "other-key"),
        ("jku", "https://evil.example.com/jwks.json"),
        ("jwk", {"kty": "oct", "k": b64url(b"attacker key")}),
        ("x5u", "https://evil.example.com/cert.pem"),
        ("x5c", ["MIIB"]),
        ("x5t", "dGh1bWJwcmludA"),
        ("crit", ["exp"]),
        ("crit", ["b64"]),
        ("kid", 7),
        ("typ", "at+jwt"),
    ],
)
def test_a_validly_signed_token_with_a_key_selecting_header_is_refused(
    tokens: ResetTokens, clock: FakeClock, name: str, value: object
) -> None:
    header = {"alg": "HS256", "typ": "JWT", name: value}
    token = signed_by_hand(header, good_claims(clock, tokens))

    assert reason_of(tokens, token) == "header"


def test_the_hand_signed_control_token_is_accepted(tokens: ResetTokens, clock: FakeClock) -> None:
    # Proves the header tests fail on the header alone, not on the way they are signed.
    token = signed_by_hand({"alg": "HS256", "typ": "JWT"}, good_claims(clock, tokens))

    assert tokens.verify(token).username == "john"


def test_a_token_minted_for_another_audience_is_refused(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    token = signed(good_claims(clock, tokens, aud="portal:verify-email"))

    assert reason_of(tokens, token) == "audience"


def test_a_token_with_a_list_of_audiences_including_ours_is_refused(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    token = signed(good_claims(clock, tokens, aud=[AUDIENCE, "portal:other"]))

    assert reason_of(tokens, token) == "audience"


def test_a_token_from_another_issuer_is_refused(tokens: ResetTokens, clock: FakeClock) -> None:
    other = ResetTokens(reset_config(), issuer="https://auth.other.example", clock=clock)
    token, _ = other.issue("john", STATE)

    assert reason_of(tokens, token) == "issuer"


def test_a_token_for_another_action_is_refused(tokens: ResetTokens, clock: FakeClock) -> None:
    token = signed(good_claims(clock, tokens, action="ChangeEmail"))

    assert reason_of(tokens, token) == "action"


@pytest.mark.parametrize("missing", CLAIM_NAMES)
def test_a_signed_token_missing_a_required_claim_is_refused(
    tokens: ResetTokens, clock: FakeClock, missing: str
) -> None:
    claims = good_claims(clock, tokens)
    del claims[missing]

    assert reason_of(tokens, signed(claims)) == "claims"


@pytest.mark.parametrize(
    "changes",
    [
        {"sub": 42},
        {"sub": ""},
        {"sub": ["john"]},
        {"sub": "jo\0hn"},
        {"jti": "short"},
        {"jti": 12345678901234567890123},
        {"jti": "not base64url but long enough!"},
        {"pwd": 7},
        {"pwd": ""},
        {"iat": "1700000000"},
        {"nbf": 1700000000.5},
        {"exp": True},
        {"action": ["ResetPassword"]},
    ],
    ids=lambda changes: "-".join(f"{k}={v!r}" for k, v in changes.items()),
)
def test_a_signed_token_with_a_claim_of_the_wrong_type_or_shape_is_refused(
    tokens: ResetTokens, clock: FakeClock, changes: dict[str, Any]
) -> None:
    token = signed(good_claims(clock, tokens, **changes))

    assert reason_of(tokens, token) == "claims"


# --- garbage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "...",
        "%%%.%%%.%%%",
        "ü.ö.ä",
        "\x00.\x00.\x00",
        "\ud800.\ud800.\ud800",
        f"{b64url_json(['alg', 'HS256'])}.e30.",
        f"{b64url(b'not json')}.e30.",
        f"{b64url_json({'alg': 'HS256'})}.!!!.abc",
        signed_by_hand({"alg": "HS256", "typ": "JWT"}, [1, 2]),
        signed_by_hand({"alg": "HS256", "typ": "JWT"}, "a string"),
    ],
)
def test_garbage_is_refused_as_malformed(tokens: ResetTokens, garbage: str) -> None:
    assert reason_of(tokens, garbage) == "malformed"


def test_a_5000_character_string_is_refused_as_too_long(tokens: ResetTokens) -> None:
    assert reason_of(tokens, "a" * 5000) == "too_long"


def test_a_4096_character_string_is_parsed_not_refused_for_its_length(
    tokens: ResetTokens,
) -> None:
    assert reason_of(tokens, "a" * 4096) == "malformed"


# --- the fingerprint --------------------------------------------------------------------------


def test_the_fingerprint_is_an_hmac_under_a_sub_key_of_the_secret(tokens: ResetTokens) -> None:
    sub_key = hmac.new(SECRET.encode(), b"portal reset fingerprint v1", hashlib.sha256).digest()
    expected = hmac.new(sub_key, b"john\0" + STATE.encode(), hashlib.sha256).digest()

    assert tokens.fingerprint("john", STATE) == b64url(expected)
    assert STATE not in tokens.fingerprint("john", STATE)


def test_a_password_change_kills_the_token(tokens: ResetTokens) -> None:
    token, _ = tokens.issue("john", STATE)
    claims = tokens.verify(token)

    assert tokens.fingerprint("john", NEW_STATE) != tokens.fingerprint("john", STATE)
    assert tokens.fingerprint_matches(claims, STATE)
    assert not tokens.fingerprint_matches(claims, NEW_STATE)


def test_a_user_without_a_password_state_never_matches(tokens: ResetTokens) -> None:
    _, claims = tokens.issue("john", "")

    assert not tokens.fingerprint_matches(claims, None)


def test_the_fingerprint_differs_between_users_with_the_same_state(tokens: ResetTokens) -> None:
    assert tokens.fingerprint("john", STATE) != tokens.fingerprint("harry", STATE)


def test_the_fingerprint_differs_between_secrets(tokens: ResetTokens, clock: FakeClock) -> None:
    other = ResetTokens(reset_config(secret=OTHER_SECRET), issuer=ISSUER, clock=clock)

    assert tokens.fingerprint("john", STATE) != other.fingerprint("john", STATE)


def test_claims_for_another_user_do_not_match_their_state(tokens: ResetTokens) -> None:
    _, johns = tokens.issue("john", STATE)
    harrys = ResetClaims("harry", johns.jti, johns.issued_at, johns.expires_at, johns.fingerprint)

    assert not tokens.fingerprint_matches(harrys, STATE)


# --- what reaches the logs --------------------------------------------------------------------


def test_the_error_never_contains_the_token(tokens: ResetTokens, clock: FakeClock) -> None:
    token, claims = tokens.issue("john", STATE)
    header, payload, signature = token.split(".")
    failures = {
        "expired": token,
        "signature": f"{header}.{payload}.{b64url(bytes(32))}",
        "malformed": f"{header}.{payload}",
        "too_long": token * 20,
    }
    clock.time = claims.expires_at
    for reason, bad in failures.items():
        with pytest.raises(InvalidTokenError) as caught:
            tokens.verify(bad)
        error = caught.value
        assert error.reason == reason
        for text in (str(error), repr(error), *map(str, error.args)):
            assert token not in text and bad not in text
            assert payload not in text and signature not in text and claims.jti not in text
        # The PyJWT exception (and its message) is not chained onto ours.
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_the_client_sees_one_generic_message_whatever_the_reason(tokens: ResetTokens) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        tokens.verify("garbage")

    assert caught.value.status == 400
    assert caught.value.public_message == "This link is invalid or has expired."


def test_jti_hash_is_stable_short_and_not_the_jti() -> None:
    jti = b64url(bytes(range(16)))

    assert ResetTokens.jti_hash(jti) == ResetTokens.jti_hash(jti)
    assert ResetTokens.jti_hash(jti) == hashlib.sha256(jti.encode()).hexdigest()[:16]
    assert len(ResetTokens.jti_hash(jti)) == 16
    assert jti not in ResetTokens.jti_hash(jti)
    assert ResetTokens.jti_hash(jti) != ResetTokens.jti_hash(b64url(bytes(range(1, 17))))


# --- the revoke-only token (issue 10.4) ---------------------------------------------------------


def test_a_revoke_token_revokes_and_does_nothing_else(tokens: ResetTokens) -> None:
    token, claims = tokens.issue("john", STATE)
    revoke = tokens.revocation(claims)
    payload = jwt.decode(revoke, options={"verify_signature": False})
    assert payload["aud"] == "portal:revoke-reset-password"
    assert payload["action"] == "RevokeResetPassword"
    assert (payload["jti"], payload["sub"]) == (claims.jti, "john")
    assert "pwd" not in payload
    # everywhere a password can be set, it is a token for another audience
    assert reason_of(tokens, revoke) in {"audience", "claims"}
    revoking = tokens.verify(revoke, revoking=True)
    assert (revoking.jti, revoking.username, revoking.fingerprint) == (claims.jti, "john", "")
    assert not tokens.fingerprint_matches(revoking, STATE)
    # the reset token revokes too (mails sent before this change)
    assert tokens.verify(token, revoking=True) == claims


def test_a_revoke_token_with_the_reset_action_or_a_fingerprint_is_refused(
    tokens: ResetTokens, clock: FakeClock
) -> None:
    _, claims = tokens.issue("john", STATE)
    payload = jwt.decode(tokens.revocation(claims), options={"verify_signature": False})
    for changes in ({"action": ACTION}, {"aud": AUDIENCE, "action": "RevokeResetPassword"}):
        forged = jwt.encode({**payload, **changes}, SECRET, algorithm="HS256")
        with pytest.raises(InvalidTokenError):
            tokens.verify(forged, revoking=True)
    signed_elsewhere = jwt.encode(payload, OTHER_SECRET, algorithm="HS256")
    with pytest.raises(InvalidTokenError) as caught:
        tokens.verify(signed_elsewhere, revoking=True)
    assert caught.value.reason == "signature"


@pytest.mark.parametrize("claim", ["iat", "nbf", "exp"])
@pytest.mark.parametrize("value", [10**400, 2**63, -1, 253_402_300_800])
def test_a_signed_time_out_of_range_is_refused_not_an_overflow(
    tokens: ResetTokens, clock: FakeClock, claim: str, value: int
) -> None:
    # Issue 11.7: a valid signature over iat = 10**400 used to overflow float() (a 500).
    token = jwt.encode(good_claims(clock, tokens, **{claim: value}), SECRET, algorithm="HS256")
    assert reason_of(tokens, token) == "claims"
