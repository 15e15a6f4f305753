-- Schema version 6: the identity token's generated signing keys (identity_token with no `keys`).
-- `generation` numbers the keys in the order they were made; its uniqueness lets exactly one of
-- two replicas creating the next key at once succeed (the other reads the winner's). The private
-- key is AES-256-GCM ciphertext of its PKCS#8 DER bound to its key_id, never the key itself.

CREATE TABLE identity_token_keys (
    generation  BIGINT PRIMARY KEY,
    key_id      TEXT NOT NULL UNIQUE,
    algorithm   TEXT NOT NULL,
    private_key BYTEA NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);
