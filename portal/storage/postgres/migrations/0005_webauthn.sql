-- Schema version 5: WebAuthn credentials, several per user (Authelia's webauthn_credentials).
-- The public key is not a secret; credential_id is unique across users, a description within
-- one user's credentials.

CREATE TABLE webauthn_credentials (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        TEXT NOT NULL,
    description     TEXT NOT NULL,
    credential_id   BYTEA NOT NULL UNIQUE,
    public_key      BYTEA NOT NULL,
    sign_count      BIGINT NOT NULL,
    aaguid          TEXT NOT NULL,
    transports      TEXT NOT NULL,
    backup_eligible BOOLEAN NOT NULL,
    backup_state    BOOLEAN NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    last_used_at    DOUBLE PRECISION,
    UNIQUE (username, description)
);
