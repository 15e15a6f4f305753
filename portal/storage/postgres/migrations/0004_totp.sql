-- Schema version 4: TOTP (Authelia's totp_configurations and totp_history, and its encryption
-- table). The secret is AES-256-GCM ciphertext (nonce || ciphertext || tag) bound to its row,
-- never the secret itself; `encryption` holds the check value that proves the configured
-- storage.encryption_key is the one the secrets were encrypted with.

CREATE TABLE totp_configurations (
    username     TEXT PRIMARY KEY,
    created_at   DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION,
    issuer       TEXT NOT NULL,
    algorithm    TEXT NOT NULL,
    digits       INTEGER NOT NULL,
    period       INTEGER NOT NULL,
    secret       BYTEA NOT NULL
);

-- Time steps whose code was accepted, kept for a while to refuse a code presented again.
CREATE TABLE totp_history (
    username   TEXT NOT NULL,
    step       BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (username, step)
);

CREATE TABLE encryption (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
