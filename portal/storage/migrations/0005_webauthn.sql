-- Schema version 5: WebAuthn credentials, several per user (Authelia's webauthn_credentials).
-- The public key is not a secret; credential_id is unique across users, a description within
-- one user's credentials.

CREATE TABLE webauthn_credentials (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL,
    description     TEXT NOT NULL,
    credential_id   BLOB NOT NULL UNIQUE,
    public_key      BLOB NOT NULL,
    sign_count      INTEGER NOT NULL,
    aaguid          TEXT NOT NULL,
    transports      TEXT NOT NULL,
    backup_eligible INTEGER NOT NULL,
    backup_state    INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    last_used_at    REAL,
    UNIQUE (username, description)
);
