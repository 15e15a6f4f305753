"""The Storage seam: the records the portal keeps and one Protocol per role a backend plays.

The roles, named as Authelia's storage names them where it has the concept:

    StoreLifecycle              startup_check, close (every store, whatever it keeps)
    IdentityVerificationStore   reset-link records (Authelia: identity verifications)
    RateLimitStore              sliding-window event logs (rate limits, regulation, CAPTCHA)
    OutboxStore                 the durable queue of mail to send
    SessionRecordStore          server-side session records
    SessionProvider             session records kept apart from Storage (Redis: session.redis)
    SecurityAnswerStore         security questions and their answer hashes
    OneTimeCodeStore            mailed one-time codes elevating a session (Authelia: one_time_code)
    TotpStore                   TOTP registrations (secrets encrypted) and used time steps
    WebAuthnCredentialStore     passkeys and security keys (Authelia: webauthn_credentials)
    IdentityTokenKeyStore       the identity token's generated signing keys (encrypted)
    EncryptionKeyStore          re-encrypting every secret under a new storage.encryption_key
    Storage                     all of the above plus schema_version: one migrated database

Each consumer asks only for the roles it uses (sessions.py for session records, ratelimit.py and
regulation.py for rate-limit events, ...); deps.py picks the implementation and hands the whole
`Storage` around. The role docstrings are the contract every implementation (SQLite today,
PostgreSQL and a Redis session store later) must keep; tests/contract/ checks it, parametrised
over the backends. "Every instance" means every portal process sharing the store: the guarantees
hold across replicas, not only within one process.

Every time is a float of seconds since the epoch passed in by the caller: storage never reads the
clock (but for the Redis session store, which turns absolute times into Redis's relative TTLs).
Payloads and session data are JSON objects. Any method may raise StorageError (the store
cannot be reached, is not started or is closed); its message names the operation, never a bound
value (a jti, a session id, a username).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class IdentityVerification:
    """Record one reset link (a JWT's jti) and what became of it."""

    jti: str
    username: str
    action: str
    issued_at: float
    issued_ip: str
    expires_at: float
    consumed_at: float | None = None
    consumed_ip: str | None = None
    revoked_at: float | None = None
    revoked_ip: str | None = None

    def usable_at(self, at: float) -> bool:
        """Tell whether the link could still be consumed at `at`."""
        return self.consumed_at is None and self.revoked_at is None and self.expires_at > at


@dataclass(frozen=True)
class OutboxMessage:
    """Hold one unit of background work (a mail) as the worker sees it."""

    id: int
    kind: str
    payload: dict[str, Any]
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True)
class SessionRecord:
    """Hold one server-side session, keyed by a hash of its cookie."""

    # SECURITY: callers store a hash of the cookie value here, never the cookie itself, so a
    # leaked database file does not hand out live sessions.
    id: str
    username: str
    created_at: float
    last_active_at: float
    expires_at: float
    remember_me: bool
    data: dict[str, Any]


@dataclass(frozen=True)
class SecurityAnswer:
    """Hold one security question a user set up and the hash of its normalized answer."""

    position: int
    question: str
    # SECURITY: an argon2id hash, never the answer; the question text is kept with it so an
    # admin editing the configured list does not break the answers already given.
    answer_hash: str
    set_at: float


@dataclass(frozen=True)
class OneTimeCode:
    """Record one mailed one-time code (Authelia 4.39's one_time_code) and what became of it.

    `public_id` is random and public (the mail's revoke link, the API's delete_id); `intent` says
    what the code is for ("elevation"). Times are seconds since the epoch.
    """

    public_id: str
    username: str
    intent: str
    # SECURITY: an HMAC-SHA256 of the code under a key derived from the portal's secrets, never
    # the code: a database dump hands out no code that works.
    code_hash: str
    issued_at: float
    issued_ip: str
    expires_at: float
    consumed_at: float | None = None
    consumed_ip: str | None = None
    revoked_at: float | None = None
    revoked_ip: str | None = None

    def usable_at(self, at: float) -> bool:
        """Tell whether the code could still be consumed at `at`."""
        return self.consumed_at is None and self.revoked_at is None and self.expires_at > at


@dataclass(frozen=True)
class TotpConfiguration:
    """Hold one user's TOTP registration (Authelia: totp_configurations), secret decrypted.

    The parameters are saved with the registration, so changing `totp` in the configuration
    affects new registrations only. Times are Unix seconds; `last_used_at` is None until a
    code is accepted.
    """

    username: str
    created_at: float
    last_used_at: float | None
    issuer: str
    algorithm: str  # "SHA1", "SHA256" or "SHA512"
    digits: int
    period: int  # seconds
    # SECURITY: the shared secret in clear, only in memory; the stores keep it encrypted
    # with storage.encryption_key (portal/storage/encryption.py). Never logged.
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class WebAuthnCredential:
    """Hold one passkey or security key of a user (Authelia: webauthn_credentials).

    `id` is the store's number for the row (0 before it is added); `credential_id` is the
    authenticator's id of the credential (WebAuthn Level 3 section 4, "Credential ID"),
    `public_key` its COSE_Key (section 6.5.1.1), `aaguid` the authenticator model's UUID as text
    (all zeros when not told), `transports` the hints the browser gave ("usb", "internal", ...).
    `backup_eligible`/`backup_state` are the BE/BS flags (section 6.1). Times are Unix seconds.
    """

    id: int
    username: str
    description: str
    credential_id: bytes
    public_key: bytes
    sign_count: int
    aaguid: str
    transports: tuple[str, ...]
    backup_eligible: bool
    backup_state: bool
    created_at: float
    last_used_at: float | None = None


@dataclass(frozen=True)
class IdentityTokenSigningKey:
    """Hold one signing key the portal generated for identity tokens, private key decrypted.

    `generation` numbers keys in creation order (1, 2, ...): the highest signs, the one before
    stays published for a while (portal/identity_token.py). `private_key` is PKCS#8 DER;
    `algorithm` is "ES256", "RS256" or "EdDSA"; `created_at` in Unix seconds.
    """

    generation: int
    key_id: str
    algorithm: str
    # SECURITY: the private key in clear, only in memory; stores keep it encrypted with
    # storage.encryption_key. Never logged.
    private_key: bytes = field(repr=False)
    created_at: float = 0.0


class StoreLifecycle(Protocol):
    """Open and close a store: what every store does, whichever roles it plays.

    Contract: methods called before `startup_check` or after `close` raise StorageError (never
    block, never act on a half-open store); `close` twice is harmless.
    """

    async def startup_check(self) -> None:
        """Open or create the store, migrate it and prove it can write; raise StartupCheckError."""
        ...

    async def close(self) -> None:
        """Release the store; later calls raise StorageError."""
        ...


class IdentityVerificationStore(Protocol):
    """Keep one record per reset link (a JWT's jti): Authelia's identity verifications.

    Contract, across every instance sharing the store:
    - `save` never overwrites: a known jti raises StorageError (without echoing the jti) and the
      stored record keeps its state (a consumed link is not revived).
    - `consume` is atomic: of any number of simultaneous calls for one usable record, exactly one
      returns True; the record remembers that call's time and address.
    - `release` undoes only the consume stamped with `consumed_at` (the caller's own), leaving the
      link usable again; anything else returns False and changes nothing.
    - `revoke` and `revoke_..._for` act only on usable records (not consumed, not revoked, not
      expired); the latter spares `keep_jti`, other actions and other users.
    - `purge` deletes records with expires_at strictly before the cutoff, nothing else.
    """

    async def save_identity_verification(self, record: IdentityVerification) -> None:
        """Insert a new record; an existing jti is never overwritten (StorageError)."""
        ...

    async def get_identity_verification(self, jti: str) -> IdentityVerification | None:
        """Return the record for `jti`, in whatever state, or None."""
        ...

    async def consume_identity_verification(self, jti: str, *, at: float, ip: str) -> bool:
        """Mark the record consumed if usable at `at`; True only for the single winner."""
        ...

    async def release_identity_verification(self, jti: str, *, consumed_at: float) -> bool:
        """Undo our own consume (the write it guarded failed); True if it was ours to undo."""
        ...

    async def revoke_identity_verification(self, jti: str, *, at: float, ip: str) -> bool:
        """Revoke the record; True if it was usable and is now revoked."""
        ...

    async def revoke_identity_verifications_for(
        self, username: str, action: str, *, at: float, ip: str, keep_jti: str | None = None
    ) -> int:
        """Revoke every usable record of that user and action except `keep_jti`; return how many."""
        ...

    async def purge_identity_verifications(self, *, expired_before: float) -> int:
        """Delete records that expired before `expired_before`; return how many."""
        ...


class RateLimitStore(Protocol):
    """Keep a sliding-window log of event times per key (rate limits, regulation, CAPTCHA).

    Contract, across every instance sharing the store:
    - `rate_limit_hit` records and reads in one atomic step: simultaneous hits on one key from
      any instances are all counted, and each caller sees a list that includes its own event.
    - Keys are independent; event lists come back ascending; `since` is inclusive.
    - `purge_rate_limits` deletes events strictly older than `before`, of every key.
    """

    async def rate_limit_hit(self, key: str, *, at: float, keep_for: float) -> list[float]:
        """Record an event, drop the key's events older than at-keep_for, return those kept."""
        ...

    async def rate_limit_events(self, key: str, *, since: float) -> list[float]:
        """Return the key's event times at or after `since`, ascending, without recording."""
        ...

    async def rate_limit_clear(self, key: str) -> int:
        """Delete every event of the key (a ban lifted); return how many."""
        ...

    async def rate_limit_keys(self, prefix: str, *, since: float) -> dict[str, list[float]]:
        """Return every key starting with `prefix` (compared as text, no wildcards) that has
        events at or after `since`, with those events ascending (`portal regulation list`)."""
        ...

    async def purge_rate_limits(self, *, before: float) -> int:
        """Delete every key's events older than `before`; return how many."""
        ...


class OutboxStore(Protocol):
    """Keep the durable queue of background work (mail) the outbox worker delivers.

    Contract, across every instance sharing the store:
    - `outbox_enqueue` is durable once it returns (a restart loses nothing) and refuses a payload
      that is not JSON with TypeError, queueing nothing.
    - `outbox_claim` hands each due message (next_attempt_at <= at) to exactly one claimer,
      oldest first, counting the attempt and leasing it until at+lease; a message whose claimer
      died comes back when the lease runs out (sent at least once, never lost).
    - `outbox_retry` makes a message due again at `next_attempt_at` with its last error;
      `outbox_done` removes it for good; `outbox_pending` counts leased and queued messages;
      `outbox_oldest` gives the oldest one's created_at (None when the queue is empty).
    """

    async def outbox_enqueue(self, kind: str, payload: Mapping[str, Any], *, at: float) -> int:
        """Queue a message due at `at` and return its id; TypeError if payload is not JSON."""
        ...

    async def outbox_claim(
        self, *, at: float, lease: float, limit: int = 10
    ) -> list[OutboxMessage]:
        """Take up to `limit` due messages, oldest first, leasing each until at+lease."""
        ...

    async def outbox_done(self, message_id: int) -> None:
        """Remove a delivered message."""
        ...

    async def outbox_retry(self, message_id: int, *, next_attempt_at: float, error: str) -> None:
        """Put a failed message back, due at `next_attempt_at`, remembering the error."""
        ...

    async def outbox_pending(self) -> int:
        """Return how many messages are queued, leased or not."""
        ...

    async def outbox_oldest(self) -> float | None:
        """Return when the oldest queued message was queued (epoch seconds), None if none."""
        ...


class SessionRecordStore(Protocol):
    """Keep server-side session records, keyed by the hash of the cookie value.

    This role stands alone so that a store keeping only sessions (Redis, issue 14) implements it
    and StoreLifecycle, nothing else. The session service (sessions.py) decides what expiry and
    inactivity mean; the store only keeps the times it is given.

    Contract, across every instance sharing the store:
    - `session_get` returns the record as saved (data unchanged), expired or not, or None.
    - `session_save` inserts or replaces whole; `session_update_data` never creates a record.
    - `session_touch` never moves last_active_at backwards and ignores unknown ids.
    - `session_delete_user` finds and deletes every session of that user (a store without a
      username column needs a per-user index) and leaves other users' sessions alone, and the
      one whose id is `keep` (a signed-in password change keeps the session that made it).
    - `sessions_of_user` returns every stored session of that user (expired or not, as
      `session_get` would return each), oldest created first, and no other user's.
    - `purge_sessions` deletes records with expires_at strictly before the cutoff, nothing else.
    """

    async def session_save(self, record: SessionRecord) -> None:
        """Insert the session or replace the one with the same id."""
        ...

    async def session_get(self, session_id: str) -> SessionRecord | None:
        """Return the session with that id, expired or not, or None."""
        ...

    async def session_touch(self, session_id: str, *, at: float) -> None:
        """Record activity on the session at `at` (never moving it backwards)."""
        ...

    async def session_update_data(self, session_id: str, data: dict[str, Any]) -> bool:
        """Replace the data of an existing session (never creating one); True if it existed."""
        ...

    async def session_delete(self, session_id: str) -> bool:
        """Delete the session; True if it existed."""
        ...

    async def session_delete_user(self, username: str, *, keep: str | None = None) -> int:
        """Delete every session of that user but the one with id `keep`; return how many."""
        ...

    async def sessions_of_user(self, username: str) -> list[SessionRecord]:
        """Return every session of that user, oldest created_at first (empty if none)."""
        ...

    async def purge_sessions(self, *, expired_before: float) -> int:
        """Delete sessions that expired before `expired_before`; return how many."""
        ...


class SessionProvider(StoreLifecycle, SessionRecordStore, Protocol):
    """Keep session records apart from the storage, shared by replicas (Authelia: the session
    provider; Redis, portal/storage/redis/).

    Contract, beyond SessionRecordStore's: `healthy` never raises; `listen` calls `invalidate`
    with ("session", id) or ("user", username) for every session or user's sessions ended on any
    instance (session_delete, session_delete_user), and with ("all", "") when some may have been
    missed; it returns only when cancelled.
    """

    async def healthy(self) -> bool:
        """Tell whether the provider answers now (for /api/health)."""
        ...

    async def listen(self, invalidate: Callable[[str, str], None]) -> None:
        """Report every ended session or user to `invalidate`, until cancelled."""
        ...


class SecurityAnswerStore(Protocol):
    """Keep each user's security questions and the hashes of their answers.

    Contract: `get` returns the set by position; `set` replaces the whole set atomically (a
    reader sees the old set or the new one, and a failing set raises StorageError and keeps the
    old one); users are independent.
    """

    async def get_security_answers(self, username: str) -> list[SecurityAnswer]:
        """Return the user's questions and answer hashes by position (empty if none)."""
        ...

    async def set_security_answers(self, username: str, answers: Sequence[SecurityAnswer]) -> None:
        """Replace all of the user's questions and answer hashes at once."""
        ...

    async def delete_security_answers(self, username: str) -> int:
        """Delete the user's questions and answer hashes; return how many rows went."""
        ...


class OneTimeCodeStore(Protocol):
    """Keep one record per mailed one-time code (Authelia 4.39: one_time_code).

    Contract, across every instance sharing the store:
    - `save` never overwrites: a known public_id raises StorageError (without echoing it).
    - `consume` is atomic: of any number of simultaneous calls matching one usable record (not
      consumed, not revoked, expires_at after `at`) by username, intent and code_hash, exactly
      one returns True; the record remembers that call's time and address. A consumed, revoked
      or expired record, another user's or another intent's, is never consumed.
    - `revoke` acts only on a usable record, found by public_id; True once, then False.
    - `purge` deletes records with expires_at strictly before the cutoff, nothing else.
    """

    async def save_one_time_code(self, record: OneTimeCode) -> None:
        """Insert a new record; an existing public_id is never overwritten (StorageError)."""
        ...

    async def get_one_time_code(self, public_id: str) -> OneTimeCode | None:
        """Return the record with that public id, in whatever state, or None."""
        ...

    async def consume_one_time_code(
        self, username: str, intent: str, code_hash: str, *, at: float, ip: str
    ) -> bool:
        """Mark the usable record of that user, intent and code hash consumed; True only for the
        single winner."""
        ...

    async def revoke_one_time_code(self, public_id: str, *, at: float, ip: str) -> bool:
        """Revoke the record; True if it was usable and is now revoked."""
        ...

    async def purge_one_time_codes(self, *, expired_before: float) -> int:
        """Delete records that expired before `expired_before`; return how many."""
        ...


class TotpStore(Protocol):
    """Keep each user's TOTP registration and the time steps their codes already used.

    Contract, across every instance sharing the store:
    - Secrets are encrypted with storage.encryption_key on write, bound to their row (table and
      username), and decrypted on read: the stored column never holds the secret in clear, and
      a secret moved to another user's row does not open (DecryptionError).
    - `save_totp_configuration` inserts or replaces the user's one registration whole.
    - `delete_totp_configuration` deletes the registration and the user's used steps at once.
    - `totp_step_use` is atomic: of any number of simultaneous calls for one user and step,
      exactly one returns True (the code's first use), and a later call returns False while
      the step is kept, as does a call for an older step than one kept (a code from before the
      last one used: RFC 6238 section 5.2); each call first purges the user's steps used before
      at-keep_for.
    - `touch_totp` sets last_used_at and ignores unknown users.
    """

    async def get_totp_configuration(self, username: str) -> TotpConfiguration | None:
        """Return the user's registration with its secret decrypted, or None."""
        ...

    async def save_totp_configuration(self, configuration: TotpConfiguration) -> None:
        """Insert the registration or replace the user's existing one."""
        ...

    async def delete_totp_configuration(self, username: str) -> bool:
        """Delete the user's registration and used steps; True if there was a registration."""
        ...

    async def totp_step_use(self, username: str, step: int, *, at: float, keep_for: float) -> bool:
        """Record the use of a time step; True only for its first use, and when no later step
        of the user was used (replay prevention, RFC 6238 section 5.2)."""
        ...

    async def touch_totp(self, username: str, at: float) -> None:
        """Record that the user's code was accepted at `at` (last_used_at)."""
        ...


class WebAuthnCredentialStore(Protocol):
    """Keep users' WebAuthn credentials, several per user.

    Contract, across every instance sharing the store:
    - `add_webauthn_credential` returns the new row's id (> 0); it raises
      WebAuthnCredentialExistsError when the credential_id is known already (to any user) or
      the user has a credential with that description (both are unique).
    - `webauthn_credential_use` is atomic: it sets sign_count, backup_state and last_used_at
      only if the stored sign_count is still `previous` (a compare-and-set), so of two
      simultaneous uses of one counter value only one succeeds; True when it did.
    - rename/delete touch only the given user's row: another user's id is "not found" (False).
    """

    async def add_webauthn_credential(self, credential: WebAuthnCredential) -> int:
        """Insert the credential (its `id` is ignored) and return its new id."""
        ...

    async def list_webauthn_credentials(self, username: str) -> list[WebAuthnCredential]:
        """Return the user's credentials, oldest first."""
        ...

    async def get_webauthn_credential(self, credential_id: bytes) -> WebAuthnCredential | None:
        """Return the credential with this authenticator credential id, or None."""
        ...

    async def webauthn_credential_use(
        self, id: int, *, previous: int, sign_count: int, backup_state: bool, at: float
    ) -> bool:
        """Record a use: sign_count from `previous` to `sign_count` (compare-and-set)."""
        ...

    async def rename_webauthn_credential(self, username: str, id: int, description: str) -> bool:
        """Set the description; False when the user has no such credential.

        WebAuthnCredentialExistsError when another of the user's credentials has it already.
        """
        ...

    async def delete_webauthn_credential(self, username: str, id: int) -> bool:
        """Delete the user's credential; False when the user has no such credential."""
        ...


class IdentityTokenKeyStore(Protocol):
    """Keep the identity token's generated signing keys.

    Contract, across every instance sharing the store:
    - Private keys are encrypted with storage.encryption_key on write, bound to their key_id,
      and decrypted on read; the stored column never holds a key in clear.
    - `add_identity_token_key` is atomic on `generation` (and key_id): of any number of
      simultaneous calls for one generation exactly one returns True; the others return False
      and change nothing, so replicas starting at once end up with one key per generation.
    """

    async def identity_token_keys(self) -> list[IdentityTokenSigningKey]:
        """Return every generated key, decrypted, oldest generation first."""
        ...

    async def add_identity_token_key(self, key: IdentityTokenSigningKey) -> bool:
        """Insert the key; False (nothing written) when its generation or key_id exists."""
        ...

    async def purge_identity_token_keys(self, *, before_generation: int) -> int:
        """Delete the keys of generations below `before_generation`; return how many."""
        ...


class UserLanguageStore(Protocol):
    """Keep the language each user last used on the portal's pages, for their mails.

    Contract: `set_user_language` replaces the user's one record (last writer wins across
    instances); `user_language` returns it, or None when none was recorded. Usernames are
    compared exactly, as the user backend returns them.
    """

    async def user_language(self, username: str) -> str | None:
        """Return the language the user last used, None when none was recorded."""
        ...

    async def set_user_language(self, username: str, language: str, *, at: float) -> None:
        """Record language as the user's last used one (at: Unix seconds), replacing any."""
        ...


class EncryptionKeyStore(Protocol):
    """Re-encrypt what the store keeps encrypted under a new storage.encryption_key.

    Contract: `change_encryption_key` decrypts every secret with the current key and writes it
    and a new check value under the new key in one transaction (all or nothing); the instance
    then uses the new key. Other instances must be restarted with the new key.
    """

    async def change_encryption_key(self, new_key: str) -> int:
        """Re-encrypt every secret and the check value; return how many secrets."""
        ...


class Storage(
    StoreLifecycle,
    IdentityVerificationStore,
    RateLimitStore,
    OutboxStore,
    SessionRecordStore,
    SecurityAnswerStore,
    OneTimeCodeStore,
    TotpStore,
    WebAuthnCredentialStore,
    IdentityTokenKeyStore,
    UserLanguageStore,
    EncryptionKeyStore,
    Protocol,
):
    """Play every role at once in one migrated database (SQLite today; PostgreSQL later).

    deps.py builds it, the app's cleanup context starts and closes it, and /api/health asks its
    schema version; everything else sees only the roles it uses.
    """

    async def schema_version(self) -> int:
        """Return the schema version the store is at (its last applied migration)."""
        ...
