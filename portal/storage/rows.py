"""What the SQL engines share: the records' column lists and the row <-> record conversions.

SQLite (sqlite/) and PostgreSQL (postgres/) keep the same tables with the same columns, so the
parts of their statements that name columns are written once here, as whole clauses; each engine
adds its own WHERE, VALUES and placeholders (`?` against `$1`). A row is whatever the driver
returns (sqlite3.Row, asyncpg's Record): both are read by column name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import astuple, fields
from typing import Any, Protocol

from portal.storage.base import (
    IdentityTokenSigningKey,
    IdentityVerification,
    OneTimeCode,
    OutboxMessage,
    SecurityAnswer,
    SessionRecord,
    TotpConfiguration,
    WebAuthnCredential,
)
from portal.storage.encryption import SecretBox, identity_token_key_aad, totp_aad

SELECT_IDENTITY_VERIFICATIONS = (
    "SELECT jti, username, action, issued_at, issued_ip, expires_at,"
    " consumed_at, consumed_ip, revoked_at, revoked_ip FROM identity_verifications"
)
INSERT_IDENTITY_VERIFICATION = (
    "INSERT INTO identity_verifications (jti, username, action, issued_at, issued_ip,"
    " expires_at, consumed_at, consumed_ip, revoked_at, revoked_ip)"
)
SELECT_SESSIONS = (
    "SELECT id, username, created_at, last_active_at, expires_at, remember_me, data FROM sessions"
)
INSERT_SESSION = (
    "INSERT INTO sessions (id, username, created_at, last_active_at, expires_at, remember_me, data)"
)
# Appended to INSERT_SESSION ... VALUES (...): saving a known id replaces the whole record.
ON_CONFLICT_REPLACE_SESSION = (
    " ON CONFLICT (id) DO UPDATE SET username = excluded.username,"
    " created_at = excluded.created_at, last_active_at = excluded.last_active_at,"
    " expires_at = excluded.expires_at, remember_me = excluded.remember_me,"
    " data = excluded.data"
)
SELECT_SECURITY_ANSWERS = "SELECT position, question, answer_hash, set_at FROM security_answers"
INSERT_SECURITY_ANSWER = (
    "INSERT INTO security_answers (username, position, question, answer_hash, set_at)"
)

SELECT_ONE_TIME_CODES = (
    "SELECT public_id, username, intent, code_hash, issued_at, issued_ip, expires_at,"
    " consumed_at, consumed_ip, revoked_at, revoked_ip FROM one_time_codes"
)
INSERT_ONE_TIME_CODE = (
    "INSERT INTO one_time_codes (public_id, username, intent, code_hash, issued_at, issued_ip,"
    " expires_at, consumed_at, consumed_ip, revoked_at, revoked_ip)"
)
SELECT_TOTP = (
    "SELECT username, created_at, last_used_at, issuer, algorithm, digits, period, secret"
    " FROM totp_configurations"
)
INSERT_TOTP = (
    "INSERT INTO totp_configurations (username, created_at, last_used_at, issuer, algorithm,"
    " digits, period, secret)"
)
# Appended to INSERT_TOTP ... VALUES (...): saving replaces the user's registration whole.
ON_CONFLICT_REPLACE_TOTP = (
    " ON CONFLICT (username) DO UPDATE SET created_at = excluded.created_at,"
    " last_used_at = excluded.last_used_at, issuer = excluded.issuer,"
    " algorithm = excluded.algorithm, digits = excluded.digits, period = excluded.period,"
    " secret = excluded.secret"
)

_VERIFICATION_FIELDS = fields(IdentityVerification)
_ONE_TIME_CODE_FIELDS = fields(OneTimeCode)


class Row(Protocol):
    """A result row read by column name (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: str, /) -> Any:
        """Return the value of column `key`."""
        ...


def to_json(value: Mapping[str, Any]) -> str:
    """Encode a JSON object compactly with sorted keys; TypeError if it is not JSON."""
    try:
        return json.dumps(dict(value), sort_keys=True, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # NaN/Infinity or a circular reference: not JSON either
        raise TypeError(f"value is not JSON-serialisable: {exc}") from exc


def identity_verification_params(record: IdentityVerification) -> tuple[Any, ...]:
    """Return the record's values in INSERT_IDENTITY_VERIFICATION's column order."""
    return astuple(record)


def identity_verification_from_row(row: Row) -> IdentityVerification:
    """Build the record from a row of SELECT_IDENTITY_VERIFICATIONS."""
    return IdentityVerification(**{field.name: row[field.name] for field in _VERIFICATION_FIELDS})


def session_params(record: SessionRecord) -> tuple[Any, ...]:
    """Return the record's values in INSERT_SESSION's column order, data as JSON text.

    TypeError if data is not JSON.
    """
    return (
        record.id,
        record.username,
        record.created_at,
        record.last_active_at,
        record.expires_at,
        record.remember_me,
        to_json(record.data),
    )


def session_from_row(row: Row) -> SessionRecord:
    """Build the record from a row of SELECT_SESSIONS (remember_me 0/1 or a boolean)."""
    return SessionRecord(
        id=row["id"],
        username=row["username"],
        created_at=row["created_at"],
        last_active_at=row["last_active_at"],
        expires_at=row["expires_at"],
        remember_me=bool(row["remember_me"]),
        data=json.loads(row["data"]),
    )


def check_claim(*, lease: float, limit: int) -> None:
    """Refuse an outbox claim's arguments before any I/O: ValueError unless limit >= 1, lease > 0.

    `lease` is in seconds, `limit` a number of messages (OutboxStore.outbox_claim).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if lease <= 0:
        raise ValueError("lease must be positive")


def outbox_message_from_row(row: Row) -> OutboxMessage:
    """Build the message from an outbox row with every column (payload as JSON text)."""
    return OutboxMessage(
        id=row["id"],
        kind=row["kind"],
        payload=json.loads(row["payload"]),
        created_at=row["created_at"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
    )


def security_answer_params(username: str, answer: SecurityAnswer) -> tuple[Any, ...]:
    """Return (username, *answer) in INSERT_SECURITY_ANSWER's column order."""
    return (username, *astuple(answer))


def security_answer_from_row(row: Row) -> SecurityAnswer:
    """Build the answer from a row of SELECT_SECURITY_ANSWERS."""
    return SecurityAnswer(row["position"], row["question"], row["answer_hash"], row["set_at"])


def one_time_code_params(record: OneTimeCode) -> tuple[Any, ...]:
    """Return the record's values in INSERT_ONE_TIME_CODE's column order."""
    return astuple(record)


def one_time_code_from_row(row: Row) -> OneTimeCode:
    """Build the record from a row of SELECT_ONE_TIME_CODES."""
    return OneTimeCode(**{field.name: row[field.name] for field in _ONE_TIME_CODE_FIELDS})


def totp_params(configuration: TotpConfiguration, box: SecretBox) -> tuple[Any, ...]:
    """Return INSERT_TOTP's values for the registration, its secret encrypted for its row."""
    c = configuration
    secret = box.encrypt(c.secret, totp_aad(c.username))
    return (
        c.username,
        c.created_at,
        c.last_used_at,
        c.issuer,
        c.algorithm,
        c.digits,
        c.period,
        secret,
    )


def totp_from_row(row: Row, box: SecretBox) -> TotpConfiguration:
    """Return the registration a SELECT_TOTP row holds, its secret decrypted (DecryptionError)."""
    username = str(row["username"])
    last_used = row["last_used_at"]
    return TotpConfiguration(
        username=username,
        created_at=float(row["created_at"]),
        last_used_at=None if last_used is None else float(last_used),
        issuer=str(row["issuer"]),
        algorithm=str(row["algorithm"]),
        digits=int(row["digits"]),
        period=int(row["period"]),
        secret=box.decrypt(bytes(row["secret"]), totp_aad(username)),
    )


SELECT_WEBAUTHN = (
    "SELECT id, username, description, credential_id, public_key, sign_count, aaguid,"
    " transports, backup_eligible, backup_state, created_at, last_used_at"
    " FROM webauthn_credentials"
)
INSERT_WEBAUTHN = (
    "INSERT INTO webauthn_credentials (username, description, credential_id, public_key,"
    " sign_count, aaguid, transports, backup_eligible, backup_state, created_at, last_used_at)"
)


def webauthn_params(credential: WebAuthnCredential) -> tuple[Any, ...]:
    """Return INSERT_WEBAUTHN's values for the credential (transports comma-joined)."""
    c = credential
    return (
        c.username,
        c.description,
        c.credential_id,
        c.public_key,
        c.sign_count,
        c.aaguid,
        ",".join(c.transports),
        c.backup_eligible,
        c.backup_state,
        c.created_at,
        c.last_used_at,
    )


def webauthn_from_row(row: Row) -> WebAuthnCredential:
    """Build the credential from a row of SELECT_WEBAUTHN."""
    last_used = row["last_used_at"]
    transports = str(row["transports"])
    return WebAuthnCredential(
        id=int(row["id"]),
        username=str(row["username"]),
        description=str(row["description"]),
        credential_id=bytes(row["credential_id"]),
        public_key=bytes(row["public_key"]),
        sign_count=int(row["sign_count"]),
        aaguid=str(row["aaguid"]),
        transports=tuple(transports.split(",")) if transports else (),
        backup_eligible=bool(row["backup_eligible"]),
        backup_state=bool(row["backup_state"]),
        created_at=float(row["created_at"]),
        last_used_at=None if last_used is None else float(last_used),
    )


SELECT_SIGNING_KEYS = (
    "SELECT generation, key_id, algorithm, private_key, created_at FROM identity_token_keys"
    " ORDER BY generation"
)
INSERT_SIGNING_KEY = (
    "INSERT INTO identity_token_keys (generation, key_id, algorithm, private_key, created_at)"
)


def identity_token_key_params(key: IdentityTokenSigningKey, box: SecretBox) -> tuple[Any, ...]:
    """Return INSERT_SIGNING_KEY's values, the private key encrypted for its row."""
    sealed = box.encrypt(key.private_key, identity_token_key_aad(key.key_id))
    return (key.generation, key.key_id, key.algorithm, sealed, key.created_at)


def identity_token_key_from_row(row: Row, box: SecretBox) -> IdentityTokenSigningKey:
    """Return the key a SELECT_SIGNING_KEYS row holds, decrypted (DecryptionError)."""
    key_id = str(row["key_id"])
    return IdentityTokenSigningKey(
        generation=int(row["generation"]),
        key_id=key_id,
        algorithm=str(row["algorithm"]),
        private_key=box.decrypt(bytes(row["private_key"]), identity_token_key_aad(key_id)),
        created_at=float(row["created_at"]),
    )
