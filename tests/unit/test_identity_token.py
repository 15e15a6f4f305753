"""IdentityTokens on real SQLite storage and a fake clock: the generated key, its rotation (the
old key published until its last token expired, then gone), replicas agreeing on one key, the
token cache, and tokens checked by joserfc (an independent implementation) at the fake time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError
from joserfc.jwk import KeySet, OctKey

from portal.access_control import Target
from portal.config import IdentityTokenConfig
from portal.identity_token import (
    JWKS_MAX_AGE,
    JWKS_RELOAD,
    LEEWAY,
    PUBLISH_AHEAD,
    IdentityTokens,
    origin,
)
from portal.sessions import Session
from portal.storage.sqlite import SqliteStorage
from tests.conftest import ENCRYPTION_KEY, FakeClock

ISSUER = "https://auth.example.com"
LIFESPAN = 300
ROTATION = 86_400
APP = Target.from_url("https://app.example.com/x", "GET", "192.0.2.7")
WIKI = Target.from_url("https://wiki.example.com:8443/y", "GET", "192.0.2.7")


def john(**changes: Any) -> Session:
    base: dict[str, Any] = {
        "id": "stored-id-1",
        "username": "john",
        "display_name": "John Doe",
        "emails": ("john.doe@authelia.com",),
        "groups": ("admins", "dev"),
        "created_at": 1.0,
        "last_active_at": 1.0,
        "expires_at": 9e12,
        "remember_me": False,
        "auth_time": 1_699_999_000.0,
    }
    return Session(**{**base, **changes})


def tokens(store: SqliteStorage, clock: FakeClock, **config: Any) -> IdentityTokens:
    settings = {"enabled": True, "lifespan": f"{LIFESPAN}s", "rotation": f"{ROTATION}s"}
    return IdentityTokens(IdentityTokenConfig.model_validate({**settings, **config}), store, clock)


def verify(token: str, jwks: dict[str, Any], now: float, audience: str) -> dict[str, Any]:
    """Check the token as an app would with joserfc, at `now`; return its claims."""
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])  # type: ignore[arg-type]
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": audience},
    )
    registry.validate(decoded.claims)
    return decoded.claims


def kids(jwks: dict[str, Any]) -> list[str]:
    return [key["kid"] for key in jwks["keys"]]


def test_the_audience_is_the_sites_origin_without_a_default_port() -> None:
    assert origin(APP) == "https://app.example.com"
    assert origin(WIKI) == "https://wiki.example.com:8443"
    assert origin(Target.from_url("http://a.example.com:80/", "GET", "192.0.2.7")) == (
        "http://a.example.com"
    )
    assert origin(Target.from_url("http://[::1]:8080/", "GET", "192.0.2.7")) == "http://[::1]:8080"


async def test_a_token_carries_every_claim_and_verifies_with_the_published_key(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    signer = tokens(storage, clock)
    await signer.start()

    token = await signer.token(john(), APP, ISSUER)
    claims = verify(token, await signer.jwks(), clock.now(), "https://app.example.com")

    now = int(clock.now())
    assert claims.pop("jti")
    assert claims == {
        "iss": ISSUER,
        "aud": "https://app.example.com",
        "sub": "john",
        "name": "John Doe",
        "email": "john.doe@authelia.com",
        "groups": ["admins", "dev"],
        "amr": ["pwd"],
        "auth_time": 1_699_999_000,
        "iat": now,
        "nbf": now,
        "exp": now + LIFESPAN,
    }
    header = jwt.decode(token, KeySet.import_key_set(await signer.jwks())).header  # type: ignore[arg-type]
    assert header["alg"] == "ES256" and header["kid"] == kids(await signer.jwks())[0]


async def test_a_token_is_reused_until_a_fifth_of_its_life_is_left(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    signer = tokens(storage, clock)
    first = await signer.token(john(), APP, ISSUER)
    clock.advance(LIFESPAN * 4 / 5 - 1)
    assert await signer.token(john(), APP, ISSUER) == first
    assert await signer.token(john(), WIKI, ISSUER) != first  # another site, its own token
    clock.advance(1)
    renewed = await signer.token(john(), APP, ISSUER)
    assert renewed != first
    assert verify(renewed, await signer.jwks(), clock.now(), "https://app.example.com")


async def test_a_session_that_changes_gets_a_new_token_at_once(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    signer = tokens(storage, clock)
    first = await signer.token(john(), APP, ISSUER)
    second_factor = john(level=2, amr=("pwd", "otp"))
    raised = await signer.token(second_factor, APP, ISSUER)
    assert raised != first
    claims = verify(raised, await signer.jwks(), clock.now(), "https://app.example.com")
    assert claims["amr"] == ["pwd", "otp"]
    regrouped = await signer.token(john(groups=("dev",)), APP, ISSUER)
    assert verify(regrouped, await signer.jwks(), clock.now(), origin(APP))["groups"] == ["dev"]
    # Another session of the same user never gets this session's token.
    assert await signer.token(john(id="stored-id-2"), APP, ISSUER) != first


async def test_the_cache_is_bounded(storage: SqliteStorage, clock: FakeClock) -> None:
    signer = IdentityTokens(IdentityTokenConfig(enabled=True), storage, clock, cache_size=3)
    for n in range(10):
        await signer.token(john(id=f"s{n}"), APP, ISSUER)
    assert len(signer._cache) == 3


async def test_a_token_for_one_site_is_refused_by_an_app_expecting_another(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    signer = tokens(storage, clock)
    token = await signer.token(john(), APP, ISSUER)
    with pytest.raises(Exception, match="aud"):
        verify(token, await signer.jwks(), clock.now(), "https://wiki.example.com:8443")


async def test_rotation_keeps_the_old_key_until_its_last_token_expired(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    signer = tokens(storage, clock)
    await signer.start()
    (old_kid,) = kids(await signer.jwks())
    clock.advance(ROTATION - 10)
    before = await signer.token(john(), APP, ISSUER)  # signed 10 s before the rotation

    clock.advance(10)
    after = await signer.token(john(id="stored-id-2"), APP, ISSUER)
    jwks = await signer.jwks()
    (new_kid,) = [kid for kid in kids(jwks) if kid != old_kid]
    assert kids(jwks) == [old_kid, new_kid]
    assert jwt.decode(after, KeySet.import_key_set(jwks)).header["kid"] == new_kid  # type: ignore[arg-type]
    # The token signed before the rotation still verifies until it expires...
    clock.advance(LIFESPAN - 11)
    assert verify(before, await signer.jwks(), clock.now(), origin(APP))["sub"] == "john"
    # ... and once no token of the old key can be valid, the key leaves the set (and storage).
    clock.advance(LEEWAY + 11)
    assert kids(await signer.jwks()) == [new_kid]
    with pytest.raises(InvalidKeyIdError):  # no key in the set for the old kid
        verify(before, await signer.jwks(), clock.now() - LEEWAY - LIFESPAN, origin(APP))
    assert [k.key_id for k in await storage.identity_token_keys()] == [new_kid]


async def test_the_next_key_is_published_before_it_signs(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    """An app that fetched the key set shortly before a rotation (and caches it, as
    /.well-known/jwks.json's max-age allows) already holds the key that signs after it."""
    signer = tokens(storage, clock)
    await signer.start()
    (old_kid,) = kids(await signer.jwks())
    clock.advance(ROTATION - PUBLISH_AHEAD + 1)
    fetched_early = await signer.jwks()  # what an app caches now
    (next_kid,) = [kid for kid in kids(fetched_early) if kid != old_kid]
    # Published, but not signing yet: tokens made now still carry the old kid.
    early = await signer.token(john(), APP, ISSUER)
    assert jwt.decode(early, KeySet.import_key_set(fetched_early)).header["kid"] == old_kid  # type: ignore[arg-type]
    clock.advance(PUBLISH_AHEAD)
    late = await signer.token(john(id="stored-id-2"), APP, ISSUER)
    # The app verifies the new key's token with the set it fetched before the switch.
    assert jwt.decode(late, KeySet.import_key_set(fetched_early)).header["kid"] == next_kid  # type: ignore[arg-type]
    assert verify(late, fetched_early, clock.now(), origin(APP))["sub"] == "john"
    assert PUBLISH_AHEAD >= JWKS_MAX_AGE + JWKS_RELOAD


async def test_a_restarted_portal_signs_with_the_stored_key(
    storage: SqliteStorage, clock: FakeClock, db: Path
) -> None:
    first = tokens(storage, clock)
    await first.start()
    again = tokens(storage, clock)
    await again.start()
    assert await again.jwks() == await first.jwks()
    token = await again.token(john(), APP, ISSUER)
    assert verify(token, await first.jwks(), clock.now(), origin(APP))


async def test_two_replicas_starting_at_once_end_up_with_one_key(
    clock: FakeClock, db: Path
) -> None:
    stores = [SqliteStorage(db, encryption_key=ENCRYPTION_KEY) for _ in range(2)]
    for store in stores:
        await store.startup_check()
    try:
        replicas = [tokens(store, clock) for store in stores]
        await asyncio.gather(*(replica.start() for replica in replicas))
        one, other = [await replica.jwks() for replica in replicas]
        assert one == other and len(one["keys"]) == 1
        assert len(await stores[0].identity_token_keys()) == 1
        # And both rotate to the same next key.
        clock.advance(ROTATION)
        await asyncio.gather(*(replica.token(john(), APP, ISSUER) for replica in replicas))
        one, other = [await replica.jwks() for replica in replicas]
        assert one == other and len(one["keys"]) == 2
    finally:
        for store in stores:
            await store.close()


async def test_jwks_holds_public_members_only(storage: SqliteStorage, clock: FakeClock) -> None:
    for algorithm, kty in (("ES256", "EC"), ("RS256", "RSA"), ("EdDSA", "OKP")):
        await storage.purge_identity_token_keys(before_generation=10**9)
        signer = tokens(storage, clock, algorithm=algorithm)
        (key,) = (await signer.jwks())["keys"]
        assert key["kty"] == kty and key["alg"] == algorithm and key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


async def test_an_application_gets_its_own_hmac_token(
    storage: SqliteStorage, clock: FakeClock
) -> None:
    secret_a, secret_b = "a" * 32, "b" * 32
    signer = tokens(
        storage,
        clock,
        applications=[
            {"domain": "app.example.com", "secret": secret_a},
            {"domain": "*.example.com", "secret": secret_b},
        ],
    )
    token = await signer.token(john(), APP, ISSUER)
    decoded = jwt.decode(token, jwt_oct(secret_a), algorithms=["HS256"])
    assert decoded.header == {"alg": "HS256", "typ": "JWT"}
    assert decoded.claims["aud"] == "https://app.example.com"
    with pytest.raises(BadSignatureError):
        jwt.decode(token, jwt_oct(secret_b), algorithms=["HS256"])
    wiki = await signer.token(john(), WIKI, ISSUER)
    assert jwt.decode(wiki, jwt_oct(secret_b), algorithms=["HS256"]).claims["aud"] == origin(WIKI)


def jwt_oct(secret: str) -> OctKey:
    return OctKey.import_key(secret)
